"""A training work directory: what lives where, and the one way to load the model it holds.

Only the chief worker writes it:

    WORKDIR/config.json          {"format": "pixelrnn_tf.workdir", "version": 1,
                                  "config": {TrainConfig keys, flat (config.to_dict)},
                                  "data": {"data_dir", "dataset", "image_shape", "levels"}}
                                 (an average of checkpoints adds "averaged", see
                                 `pixelrnn_tf.averaging`; a resume that changed settings
                                 appends to "changes")
    WORKDIR/checkpoints/         the latest `keep_checkpoints` checkpoints, ckpt-<step>.*, of
                                 tf.train.Checkpoint(model=, model_variables=, optimizer=,
                                 step=, best_validation_nats=) (`make_checkpoint`)
    WORKDIR/checkpoints/best/    the checkpoint with the lowest validation NLL
    WORKDIR/model.keras          the final model (keras.saving.load_model, safe_mode on)
    WORKDIR/train/, validation/  TensorBoard event files (`tensorboard --logdir WORKDIR`)
    WORKDIR/eval_<split>.json    {"split", "num_images", "nats", "bits_per_dim",
                                  "checkpoint", "step"}; Multi-Scale adds "terms":
                                  {"small"|"conditional": {"nats", "bits_per_dim", "dims"}};
                                  a class-conditional model's "nats" is -log p(x | y), and
                                  it adds "conditioned_on_labels", "marginal": {"nats",
                                  "bits_per_dim"} and "classifier_accuracy"; a pretrained
                                  preset's evaluation adds "preset" and "sha256"

`load_model` reads a work directory (one of its checkpoints) or a .keras file; training,
evaluation, export, sampling, averaging and the benchmarks all load through it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import keras
import tensorflow as tf

from pixelrnn_tf import MODEL_CLASSES, data
from pixelrnn_tf.config import (
    AUTO_CLASSES,
    ConfigError,
    TrainConfig,
    changed_settings,
    check_data_shape,
    from_dict,
    incompatible_keys,
    model_arguments,
    replace_keys,
    to_dict,
)
from pixelrnn_tf.model import PixelRNN
from pixelrnn_tf.multiscale import MultiScalePixelRNN

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = os.path.join(CHECKPOINT_DIR, "best")
FINAL_MODEL = "model.keras"
AVERAGED_KEY = "averaged"  # config.json of a work directory written by pixelrnn_tf.averaging
WORKDIR_FORMAT = "pixelrnn_tf.workdir"
WORKDIR_VERSION = 1


class TrainingError(RuntimeError):
    """A problem with the work directory, the checkpoints or the run (one-line message)."""


# --------------------------------------------------------------------------------------------
# The data a run trains on


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What the model needs to know about the data: from the manifest (and `binarize`)."""

    data_dir: str
    dataset: str
    image_shape: tuple[int, int, int]
    levels: int  # the model's levels: 2 when binarizing, else the manifest's

    def describe(self):
        return f"{'x'.join(map(str, self.image_shape))} images with {self.levels} levels"


def resolve_data(config: TrainConfig, data_dir: str, splits=None) -> DataSpec:
    """Reads the manifest; checks that the shards of `splits` (default: the train split) and
    of the validation split are all there, before anything is written."""
    manifest = data.read_manifest(data_dir)
    splits = (config.optimization.train_split,) if splits is None else splits
    validation_split = config.runtime.validation_split
    if validation_split and validation_split not in manifest.splits:
        raise ConfigError(
            f"{data_dir} has no split {validation_split!r} (it has: "
            f"{', '.join(manifest.splits)}); convert with --val-fraction or "
            f"--set validation_split=''")
    for split in (*splits, *([validation_split] if validation_split else [])):
        data.check_files(manifest, split)
    levels = 2 if config.model.binarize else manifest.levels
    return DataSpec(str(data_dir), manifest.dataset, tuple(manifest.image_shape), levels)


def resolve_num_classes(config: TrainConfig, data_dir: str) -> TrainConfig:
    """`config` with num_classes=auto replaced by the manifest's K; ConfigError when a
    class-conditional config meets data without labels, or fewer classes than the data has."""
    wanted = config.model.num_classes
    if not wanted:
        return config
    manifest = data.read_manifest(data_dir)
    shown = "auto" if wanted == AUTO_CLASSES else wanted
    if not manifest.has_labels or not manifest.num_classes:
        raise ConfigError(f"num_classes={shown}: {data_dir} has no labels (convert a labelled "
                          "source, or set num_classes=0 for an unconditional model)")
    if wanted == AUTO_CLASSES:
        return replace_keys(config, num_classes=manifest.num_classes)
    if wanted < manifest.num_classes:
        raise ConfigError(f"num_classes={wanted} but {data_dir} has {manifest.num_classes} "
                          "classes (set num_classes=auto)")
    return config


class WorkdirConfig(NamedTuple):
    """WORKDIR/config.json: the run's config and the data it was trained on."""

    config: TrainConfig
    data: DataSpec


# --------------------------------------------------------------------------------------------
# The work directory


def write_atomic(path: str, text: str):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_keras_model(model, path: str):
    """model.save(path) through a temporary name in the same directory."""
    tmp = os.path.join(os.path.dirname(path), f".partial-{os.getpid()}.keras")
    model.save(tmp)
    os.replace(tmp, path)


class Workdir:
    """The files of one work directory (see the module docstring); nothing is read or
    written until a method is called."""

    def __init__(self, path):
        self.path = str(path)
        self.config_path = os.path.join(self.path, CONFIG_NAME)
        self.checkpoint_dir = os.path.join(self.path, CHECKPOINT_DIR)
        self.best_dir = os.path.join(self.path, BEST_DIR)
        self.final_model = os.path.join(self.path, FINAL_MODEL)

    def eval_path(self, split: str) -> str:
        return os.path.join(self.path, f"eval_{split}.json")

    def read(self) -> WorkdirConfig | None:
        """config.json -> WorkdirConfig, or None when there is none."""
        if not os.path.exists(self.config_path):
            return None
        try:
            with open(self.config_path) as f:
                raw = json.load(f)
            if raw.get("format") != WORKDIR_FORMAT or not isinstance(raw.get("data"), dict):
                raise ValueError("not a pixelrnn_tf work directory config")
            if raw.get("version", 0) > WORKDIR_VERSION:
                raise ValueError(f"version {raw.get('version')} is newer than this pixelrnn_tf")
            d = raw["data"]
            spec = DataSpec(str(d["data_dir"]), str(d["dataset"]),
                            tuple(int(v) for v in d["image_shape"]), int(d["levels"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TrainingError(f"{self.config_path}: unreadable ({e})") from None
        return WorkdirConfig(from_dict(raw["config"], where=self.config_path), spec)

    def require(self) -> WorkdirConfig:
        """`read`, or TrainingError when there is no config.json."""
        saved = self.read()
        if saved is None:
            raise TrainingError(f"{self.path}: no {CONFIG_NAME} (not a training work "
                                "directory)")
        return saved

    def raw_config(self) -> dict:
        """config.json as written, every record included."""
        with open(self.config_path) as f:
            return json.load(f)

    def averaged_source(self) -> dict | None:
        """The "averaged" record of config.json ({"from", "checkpoints", "steps"}, see
        `pixelrnn_tf.averaging`), or None for a trained work directory or one without
        config."""
        if not os.path.exists(self.config_path):
            return None
        try:
            return self.raw_config().get(AVERAGED_KEY)
        except (ValueError, AttributeError) as e:
            raise TrainingError(f"{self.config_path}: unreadable ({e})") from None

    def write(self, config: TrainConfig, spec: DataSpec, change: dict | None = None):
        """Writes config.json. Its "changes" list keeps how the run was trained when a
        resume changed settings: `change`, {"step": s, "changed": {key: [old, new]}}, is
        appended to the list already in the file."""
        os.makedirs(self.path, exist_ok=True)
        changes = []
        if os.path.exists(self.config_path):
            changes = self.raw_config().get("changes", [])
        if change:
            changes.append(change)
        raw = {"format": WORKDIR_FORMAT, "version": WORKDIR_VERSION, "config": to_dict(config),
               "data": {"data_dir": os.path.abspath(spec.data_dir), "dataset": spec.dataset,
                        "image_shape": list(spec.image_shape), "levels": spec.levels}}
        if changes:
            raw["changes"] = changes
        write_atomic(self.config_path, json.dumps(raw, indent=2) + "\n")

    def check_resumable(self, config: TrainConfig, spec: DataSpec, saved: WorkdirConfig | None):
        """Refuses a config or data that the checkpoints in the work directory do not fit."""
        if saved is None:
            if tf.train.latest_checkpoint(self.checkpoint_dir):
                raise TrainingError(f"{self.path} has checkpoints but no {CONFIG_NAME}; use a "
                                    "new --workdir")
            return
        changed = changed_settings(saved.config, config)
        diffs = ", ".join(f"{k}={changed[k][0]!r} (now {changed[k][1]!r})"
                          for k in incompatible_keys(saved.config, config))
        if diffs:
            raise TrainingError(f"{self.path} holds a model trained with {diffs}; resume with "
                                "the same settings or use a new --workdir")
        if (spec.image_shape, spec.levels) != (saved.data.image_shape, saved.data.levels):
            raise TrainingError(f"{spec.data_dir} has {spec.describe()} but the model in "
                                f"{self.path} was trained on {saved.data.describe()}; use the "
                                "original data or a new --workdir")

    def checkpoint_path(self, checkpoint: str = "latest") -> str:
        """"latest", "best" or an explicit checkpoint prefix -> the prefix to restore."""
        if checkpoint in ("latest", "best"):
            directory = self.checkpoint_dir if checkpoint == "latest" else self.best_dir
            path = tf.train.latest_checkpoint(directory)
            if path is None:
                what = "no checkpoint; train first" if checkpoint == "latest" else (
                    "no best checkpoint (training writes one at its first validation; a run "
                    "without validation_split, or an average of checkpoints, has no best "
                    "checkpoint, only latest)")
                raise TrainingError(f"{directory}: {what}")
            return path
        if not tf.io.gfile.exists(f"{checkpoint}.index"):
            raise TrainingError(f"{checkpoint}: no such checkpoint (expected latest, best or a "
                                "checkpoint prefix such as WORKDIR/checkpoints/ckpt-1000)")
        return checkpoint

    def write_eval(self, split: str, result: dict):
        """eval_<split>.json (see the module docstring)."""
        os.makedirs(self.path, exist_ok=True)
        write_atomic(self.eval_path(split), json.dumps(result, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# The model and its checkpoints


def build_model(config: TrainConfig, spec: DataSpec) -> PixelRNN | MultiScalePixelRNN:
    """The (built) model of a config for data of `spec`: a MultiScalePixelRNN when
    `small_size` > 0, else a PixelRNN, of the model keys' arguments (`model_arguments`) and
    the data's image shape and levels; ConfigError if config and data do not fit."""
    check_data_shape(config, spec.image_shape)
    model_class = MultiScalePixelRNN if config.model.small_size else PixelRNN
    try:
        model = model_class(image_shape=spec.image_shape, levels=spec.levels,
                            **model_arguments(config.model))
    except ValueError as e:  # e.g. hidden_dim smaller than the channel count
        raise ConfigError(f"{e} (data: {spec.describe()})") from None
    model.build()
    return model


def model_variables(model) -> dict:
    """{path inside the model, e.g. "block_0/rnn/state_kernel": variable} for every variable.

    PixelRNN keeps its blocks in Python lists: Keras 3 tracks them for `model.variables`, but
    tf.train.Checkpoint's object graph does not reach them, so `Checkpoint(model=model)` alone
    silently leaves out every block's weights. Checkpoints therefore name each variable.
    The model's own (auto-numbered) name is dropped from the path. A MultiScalePixelRNN's
    stages are models named "small" and "full" whose variable paths start with that name
    (e.g. "small/block_0/rnn/state_kernel"); its encoder, upsampling and per-layer
    conditioning convolutions keep the model's prefix ("encoder_0/kernel", ...).
    """
    prefix = f"{model.name}/"
    named = {v.path.removeprefix(prefix): v for v in model.variables}
    if len(named) != len(model.variables):
        raise TrainingError("model variables have duplicate paths; cannot checkpoint them")
    return named


def make_checkpoint(model, **objects) -> tf.train.Checkpoint:
    """tf.train.Checkpoint(model=, model_variables=, **objects) (see `model_variables`)."""
    return tf.train.Checkpoint(model=model, model_variables=model_variables(model), **objects)


def restore_checkpoint(checkpoint: tf.train.Checkpoint, path: str, partial: bool = False):
    """Restores `path`; every object of `checkpoint` must find its value (TrainingError)."""
    try:
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise TrainingError(f"{path}: cannot restore ({str(e).splitlines()[0]})") from None


def load_model(source, checkpoint: str = "latest") -> PixelRNN | MultiScalePixelRNN:
    """The model a work directory or a .keras file holds.

    source: a work directory, whose model is rebuilt from config.json with the weights of
      `checkpoint` ("latest", "best" (lowest validation NLL) or a checkpoint prefix); or a
      .keras file (loaded with safe_mode on; `checkpoint` does not apply), which must hold one
      of `pixelrnn_tf.MODEL_CLASSES`.
    Raises TrainingError (or ConfigError for a config that does not fit its data) with a
    one-line message.
    """
    source = str(source)
    if os.path.isdir(source):
        workdir = Workdir(source)
        config, spec = workdir.require()
        path = workdir.checkpoint_path(checkpoint)
        model = build_model(config, spec)
        restore_checkpoint(make_checkpoint(model), path, partial=True)
        return model
    if not os.path.isfile(source):
        raise TrainingError(f"{source}: no such work directory or .keras file")
    try:
        model = keras.saving.load_model(source, safe_mode=True)
    except Exception as e:
        text = str(e).strip()
        raise TrainingError(f"{source}: cannot load ("
                            f"{text.splitlines()[0] if text else type(e).__name__})") from None
    if not isinstance(model, MODEL_CLASSES):
        names = " or ".join(cls.__name__ for cls in MODEL_CLASSES)
        raise TrainingError(f"{source} holds a {type(model).__name__}, not a {names}")
    return model
