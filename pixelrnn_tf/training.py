"""Training, evaluation and checkpoints of a `PixelRNN` or `MultiScalePixelRNN` under
`tf.distribute`.

One custom loop serves every strategy: `MirroredStrategy` over the GPUs, the CPU, or
`cpu_replicas` logical CPU devices, and `MultiWorkerMirroredStrategy` when `TF_CONFIG` is set
(Keras 3 `model.fit` fails under the latter, keras-team/keras#20585). Each replica computes
the summed NLL of its share of the global batch divided by the global batch, so the gradients
summed over replicas are those of the mean over the global batch.

A Multi-Scale PixelRNN (config `small_size` > 0) trains both stages jointly on the one loss
-log p(x) = -log p1(x_small) - log p2(rest | x_small), which is exact (stage 2 does not score
the pixels of the strided-picked small image). Its two terms are logged beside the total,
as `small_*` and `conditional_*` scalars, and reported by `evaluate`.

Work directory (only the chief worker writes it; the others save their checkpoints to a
local temporary directory that they delete right away):

    WORKDIR/config.json          {"format": "pixelrnn_tf.workdir", "version": 1,
                                  "config": {TrainConfig keys},
                                  "data": {"data_dir", "dataset", "image_shape", "levels"}}
    WORKDIR/checkpoints/         the latest `keep_checkpoints` checkpoints, ckpt-<step>.*, of
                                 tf.train.Checkpoint(model=, model_variables=, optimizer=,
                                 step=, best_validation_nats=) by a CheckpointManager
                                 (`make_checkpoint`; restore with `load_model`)
    WORKDIR/checkpoints/best/    the checkpoint with the lowest validation NLL (own manager)
    WORKDIR/model.keras          the final model (keras.saving.load_model, safe_mode on)
    WORKDIR/train/, validation/  TensorBoard event files (`tensorboard --logdir WORKDIR`)
    WORKDIR/eval_<split>.json    {"split", "num_images", "nats", "bits_per_dim",
                                  "checkpoint", "step"}; Multi-Scale adds "terms":
                                  {"small"|"conditional": {"nats", "bits_per_dim", "dims"}}

Resuming is exact: the data order of epoch e depends only on (seed, e), a resumed run skips
the batches of the interrupted epoch it already trained on, and the optimizer state is in the
checkpoint, so an interrupted and resumed run reaches the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from pixelrnn_tf import data
from pixelrnn_tf.config import (ConfigError, TrainConfig, changed_settings, check_data_shape,
                                from_dict, incompatible_keys, to_dict)
from pixelrnn_tf.losses import nats_to_bits_per_dim
from pixelrnn_tf.model import PixelRNN
from pixelrnn_tf.multiscale import MultiScalePixelRNN

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = os.path.join(CHECKPOINT_DIR, "best")
FINAL_MODEL = "model.keras"
AVERAGED_KEY = "averaged"  # config.json of a work directory written by pixelrnn_tf.averaging
WORKDIR_FORMAT = "pixelrnn_tf.workdir"
WORKDIR_VERSION = 1
_BEST_KEY = "best_validation_nats/.ATTRIBUTES/VARIABLE_VALUE"


class TrainingError(RuntimeError):
    """A problem with the work directory, the checkpoints or the run (one-line message)."""


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint of the last finished step was saved."""


# --------------------------------------------------------------------------------------------
# Work directory


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
    splits = (config.train_split,) if splits is None else splits
    if config.validation_split and config.validation_split not in manifest.splits:
        raise ConfigError(
            f"{data_dir} has no split {config.validation_split!r} (it has: "
            f"{', '.join(manifest.splits)}); convert with --val-fraction or "
            f"--set validation_split=''")
    for split in (*splits, *([config.validation_split] if config.validation_split else [])):
        data.check_files(manifest, split)
    levels = 2 if config.binarize else manifest.levels
    return DataSpec(str(data_dir), manifest.dataset, tuple(manifest.image_shape), levels)


def _write_atomic(path: str, text: str):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_workdir_config(workdir: str):
    """WORKDIR/config.json -> (TrainConfig, DataSpec), or None when there is none."""
    path = os.path.join(workdir, CONFIG_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            raw = json.load(f)
        if raw.get("format") != WORKDIR_FORMAT or not isinstance(raw.get("data"), dict):
            raise ValueError("not a pixelrnn_tf work directory config")
        if raw.get("version", 0) > WORKDIR_VERSION:
            raise ValueError(f"version {raw.get('version')} is newer than this pixelrnn_tf")
        d = raw["data"]
        spec = DataSpec(str(d["data_dir"]), str(d["dataset"]),
                        tuple(int(v) for v in d["image_shape"]), int(d["levels"]))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TrainingError(f"{path}: unreadable ({e})") from None
    return from_dict(raw["config"], where=path), spec


def averaged_source(workdir: str) -> dict | None:
    """The "averaged" record of WORKDIR/config.json ({"from", "checkpoints", "steps"}, see
    `pixelrnn_tf.averaging`), or None for a trained work directory or one without config."""
    path = os.path.join(workdir, CONFIG_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f).get(AVERAGED_KEY)
    except (ValueError, AttributeError) as e:
        raise TrainingError(f"{path}: unreadable ({e})") from None


def write_workdir_config(workdir: str, config: TrainConfig, spec: DataSpec,
                         change: dict | None = None):
    """Writes WORKDIR/config.json. Its "changes" list keeps how the run was trained when a
    resume changed settings: `change`, {"step": s, "changed": {key: [old, new]}}, is appended
    to the list already in the file."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_NAME)
    changes = []
    if os.path.exists(path):
        with open(path) as f:
            changes = json.load(f).get("changes", [])
    if change:
        changes.append(change)
    raw = {"format": WORKDIR_FORMAT, "version": WORKDIR_VERSION, "config": to_dict(config),
           "data": {"data_dir": os.path.abspath(spec.data_dir), "dataset": spec.dataset,
                    "image_shape": list(spec.image_shape), "levels": spec.levels}}
    if changes:
        raw["changes"] = changes
    _write_atomic(path, json.dumps(raw, indent=2) + "\n")


def check_resumable(workdir: str, config: TrainConfig, spec: DataSpec, saved):
    """Refuses a config or data that the checkpoints in `workdir` do not fit."""
    if saved is None:
        if tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR)):
            raise TrainingError(f"{workdir} has checkpoints but no {CONFIG_NAME}; use a new "
                                "--workdir")
        return
    saved_config, saved_spec = saved
    changed = incompatible_keys(saved_config, config)
    if changed:
        diffs = ", ".join(f"{k}={getattr(saved_config, k)!r} (now {getattr(config, k)!r})"
                          for k in changed)
        raise TrainingError(f"{workdir} holds a model trained with {diffs}; resume with the "
                            "same settings or use a new --workdir")
    if (spec.image_shape, spec.levels) != (saved_spec.image_shape, saved_spec.levels):
        raise TrainingError(f"{spec.data_dir} has {spec.describe()} but the model in {workdir} "
                            f"was trained on {saved_spec.describe()}; use the original data "
                            "or a new --workdir")


def checkpoint_path(workdir: str, checkpoint: str = "latest") -> str:
    """"latest", "best" or an explicit checkpoint prefix -> the checkpoint prefix to restore."""
    if checkpoint in ("latest", "best"):
        directory = os.path.join(workdir, CHECKPOINT_DIR if checkpoint == "latest" else BEST_DIR)
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


# --------------------------------------------------------------------------------------------
# Model, optimizer, strategy


def build_model(config: TrainConfig, spec: DataSpec) -> PixelRNN | MultiScalePixelRNN:
    """The (built) model of a config for data of `spec`: a MultiScalePixelRNN when
    `small_size` > 0, else a PixelRNN; ConfigError if config and data do not fit."""
    check_data_shape(config, spec.image_shape)
    args = dict(architecture=config.architecture, image_shape=spec.image_shape,
                levels=spec.levels, num_layers=config.num_layers, hidden_dim=config.hidden_dim,
                output_dim=config.output_dim or None, residual=config.residual,
                skip=config.skip, first_kernel=config.first_kernel,
                row_kernel=config.row_kernel)
    try:
        if config.small_size:
            model = MultiScalePixelRNN(small_size=config.small_size,
                                       conditioning_dim=config.conditioning_dim or None, **args)
        else:
            model = PixelRNN(**args)
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


def make_learning_rate(config: TrainConfig):
    """A float or a keras LearningRateSchedule over `train_steps`."""
    rate, steps, fraction = config.learning_rate, config.train_steps, config.final_lr_fraction
    schedules = keras.optimizers.schedules
    if config.lr_schedule == "constant":
        return rate
    if config.lr_schedule == "exponential":
        return schedules.ExponentialDecay(rate, decay_steps=steps, decay_rate=fraction)
    if config.warmup_steps:
        return schedules.CosineDecay(0.0, decay_steps=steps - config.warmup_steps,
                                     alpha=fraction, warmup_target=rate,
                                     warmup_steps=config.warmup_steps)
    return schedules.CosineDecay(rate, decay_steps=steps, alpha=fraction)


def make_optimizer(config: TrainConfig):
    # Gradient clipping is done by the train step on the gradient summed over replicas:
    # Keras 3 clips each replica's gradient before aggregating, which would differ.
    rate = make_learning_rate(config)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    return keras.optimizers.RMSprop(rate)


@dataclasses.dataclass
class Distribution:
    strategy: tf.distribute.Strategy
    is_chief: bool
    worker_id: int
    num_workers: int

    @property
    def num_replicas(self):
        return self.strategy.num_replicas_in_sync


def _split_cpu(num_devices: int):
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError:  # TensorFlow is already initialised
        pass
    have = len(tf.config.list_logical_devices("CPU"))
    if have < num_devices:
        raise TrainingError(
            f"cpu_replicas={num_devices}: TensorFlow was already initialised with {have} "
            "logical CPU device(s); set cpu_replicas at the start of a fresh process "
            "(e.g. train.py)")


def make_distribution(cpu_replicas: int = 0) -> Distribution:
    """MultiWorkerMirroredStrategy when TF_CONFIG is set, else MirroredStrategy over the GPUs,
    `cpu_replicas` logical CPU devices, or the CPU. Call it before any other TensorFlow work."""
    if os.environ.get("TF_CONFIG"):
        if cpu_replicas > 1:
            raise ConfigError("cpu_replicas cannot be combined with TF_CONFIG: a multi-worker "
                              "run has one replica per worker CPU (or per GPU)")
        try:
            tf_config = json.loads(os.environ["TF_CONFIG"])
            cluster = tf_config["cluster"]
            task_type, task_id = tf_config["task"]["type"], int(tf_config["task"]["index"])
            workers = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"TF_CONFIG is not a valid cluster spec ({e!r})") from None
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        is_chief = task_type == "chief" or (
            task_type == "worker" and task_id == 0 and "chief" not in cluster)
        worker_id = task_id + (1 if "chief" in cluster and task_type == "worker" else 0)
        return Distribution(strategy, is_chief, worker_id, workers)
    if cpu_replicas:
        _split_cpu(cpu_replicas)
        devices = [f"/cpu:{i}" for i in range(cpu_replicas)]
    else:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or ["/cpu:0"]
    return Distribution(tf.distribute.MirroredStrategy(devices), True, 0, 1)


def use_jit(config: TrainConfig, distribution: Distribution) -> bool:
    """XLA for the whole forward and backward pass of each replica.

    "auto": on for the recurrent architectures when one worker runs several replicas, off
    otherwise. The recurrent layers compile their own loops while training and run one loop
    per direction, so a single replica keeps both CPU cores busy without XLA (XLA over the
    whole step runs the directions in one loop: 1.4x slower); with one replica per core, XLA
    over each replica's step is 1.35x faster (benchmarks/train_throughput.py, README).
    XLA makes PixelCNN's convolutions about 5x slower than oneDNN's on CPU.
    """
    if config.jit_compile == "auto":
        return (config.architecture != "pixelcnn" and distribution.num_replicas > 1
                and distribution.num_workers == 1)
    return config.jit_compile == "on"


# --------------------------------------------------------------------------------------------
# Steps


def nll_sums(model, images) -> dict:
    """Summed NLL (nats) of a batch of images [B, H, W, C], per term of the model's
    `log_prob_terms`: {"total": float32 []}, plus for a MultiScalePixelRNN {"small": -sum log
    p1(x_small), "conditional": -sum log p2(rest | x_small)}, whose sum is the total."""
    return {name: -tf.reduce_sum(lp) for name, lp in model.log_prob_terms(images).items()}


def nll_dims(model) -> dict:
    """Sub-pixels each key of `nll_sums` scores: {"total": H*W*C}, plus for a
    MultiScalePixelRNN {"small": s*s*C, "conditional": (H*W - s*s)*C}."""
    return dict(model.term_dims)


def describe_nll(means: dict, dims: dict) -> dict:
    """Mean NLL per image {"total", ["small", "conditional"]} (nats) -> {"nats",
    "bits_per_dim"} of the total, plus for a Multi-Scale model "terms": {term: {"nats",
    "bits_per_dim", "dims"}}. A term's bits/dim is per the sub-pixels it scores (`nll_dims`);
    the nats of the terms add up to the total."""
    terms = {name: {"nats": means[name],
                    "bits_per_dim": nats_to_bits_per_dim(means[name], dims[name]),
                    "dims": dims[name]}
             for name in means if name != "total"}
    # The total of the terms' (float64) means, so that the report adds up exactly.
    total = sum(term["nats"] for term in terms.values()) if terms else means["total"]
    result = {"nats": total, "bits_per_dim": nats_to_bits_per_dim(total, dims["total"])}
    if terms:
        result["terms"] = terms
    return result


def nll_scalars(means: dict, dims: dict) -> dict:
    """TensorBoard scalars of mean NLLs: "nll_nats", "bits_per_dim" and, for a Multi-Scale
    model, "small_nll_nats", "small_bits_per_dim", "conditional_nll_nats", ..."""
    described = describe_nll(means, dims)
    scalars = {"nll_nats": described["nats"], "bits_per_dim": described["bits_per_dim"]}
    for name, term in described.get("terms", {}).items():
        scalars[f"{name}_nll_nats"] = term["nats"]
        scalars[f"{name}_bits_per_dim"] = term["bits_per_dim"]
    return scalars


def make_train_step(model, optimizer, strategy, global_batch, clip_norm, jit_compile):
    """A tf.function (batch, stop) -> (mean NLL nats, global gradient norm, stop).

    batch: per-replica int32 images [global_batch / replicas, H, W, C]; stop: float32 scalar,
    > 0 on a worker that wants to stop (summed over all replicas so every worker agrees).
    The mean NLL is a dict of scalars like `nll_sums` (the total, and a Multi-Scale model's
    terms), per image of the global batch; the loss is the total.
    """
    variables = model.trainable_variables

    def nll_and_gradients(images):
        with tf.GradientTape() as tape:
            sums = nll_sums(model, images)
            loss = sums["total"] / global_batch
        return sums, tape.gradient(loss, variables)

    if jit_compile:
        nll_and_gradients = tf.function(nll_and_gradients, jit_compile=True)

    def replica_step(images, stop):
        context = tf.distribute.get_replica_context()
        sum_ = tf.distribute.ReduceOp.SUM
        sums, gradients = nll_and_gradients(images)
        gradients = context.all_reduce(sum_, gradients)
        norm = tf.linalg.global_norm(gradients)
        if clip_norm:
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm, use_norm=norm)
        # Keras sums the gradients over replicas again inside apply(): hand it 1/n of the
        # (identical) clipped global gradient on every replica.
        replicas = context.num_replicas_in_sync
        optimizer.apply([g / replicas for g in gradients], variables)
        # tf.identity places the host-side flag on this replica's device for the all-reduce.
        names = sorted(sums)
        *reduced, stop = context.all_reduce(sum_, [sums[k] for k in names] + [tf.identity(stop)])
        return {k: v / global_batch for k, v in zip(names, reduced)}, norm, stop

    @tf.function
    def train_step(batch, stop):
        results = strategy.run(replica_step, args=(batch, stop))
        return tf.nest.map_structure(lambda r: strategy.experimental_local_results(r)[0],
                                     results)

    return train_step


def make_eval_step(model, strategy, jit_compile):
    """A tf.function batch -> (summed NLL nats as a dict like `nll_sums`, number of images)
    over all replicas."""

    def batch_sums(images):
        return nll_sums(model, images)

    if jit_compile:
        batch_sums = tf.function(batch_sums, jit_compile=True)

    def replica_step(images):
        return batch_sums(images), tf.cast(tf.shape(images)[0], tf.float32)

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        sums, count = strategy.run(replica_step, args=(batch,))

        def total(value):
            return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

        return tf.nest.map_structure(total, sums), total(count)

    return eval_step


def epoch_seed(seed: int, epoch: int) -> int:
    """The data seed of one epoch: a function of (seed, epoch) only, so resuming is exact."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)[0])


def distributed_dataset(distribution, spec, config, split, training, global_batch, seed,
                        skip_steps=0, max_steps=0):
    """The split as a distributed dataset of per-replica int32 image batches."""
    strategy = distribution.strategy

    def dataset_fn(context):
        local_replicas = strategy.num_replicas_in_sync // context.num_input_pipelines
        ds = data.make_dataset(
            spec.data_dir, split, context.get_per_replica_batch_size(global_batch), training,
            expected_shape=spec.image_shape, expected_levels=spec.levels, seed=seed,
            deterministic=True, shuffle_buffer=config.shuffle_buffer, input_context=context,
            binarize=config.binarize, dtype=tf.int32)
        if skip_steps:
            ds = ds.skip(skip_steps * local_replicas)
        if max_steps:
            ds = ds.take(max_steps * local_replicas)
        return ds

    return strategy.distribute_datasets_from_function(dataset_fn)


def evaluate_nll(eval_step, distribution, spec, config, split, global_batch, max_batches=0):
    """Mean NLL (nats per image) over the split (or its first `max_batches` global batches).

    Returns ({"total": mean nats, and a Multi-Scale model's "small", "conditional"},
    number of images)."""
    dataset = distributed_dataset(distribution, spec, config, split, False, global_batch,
                                  seed=config.seed, max_steps=max_batches)
    totals, count = {}, 0.0
    for batch in dataset:
        batch_sums, batch_count = eval_step(batch)
        for name, value in batch_sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        count += float(batch_count)
    if count == 0:
        raise TrainingError(f"{spec.data_dir}: split {split!r} gave no images")
    return {name: value / count for name, value in totals.items()}, int(count)


# --------------------------------------------------------------------------------------------
# Images for TensorBoard and the demo


def image_grid(images, levels: int, columns: int = 8) -> np.ndarray:
    """uint8 [N, H, W, C] in [0, levels) -> one uint8 [rows*(H+1)+1, cols*(W+1)+1, C'] picture
    scaled to 0..255 with 1-pixel grey borders (C' = C for 1, 3, 4 channels, else 1)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    if c not in (1, 3, 4):
        images, c = images[..., :1], 1
    scaled = (images.astype(np.int32) * 255 // max(levels - 1, 1)).astype(np.uint8)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 128, np.uint8)
    for k in range(n):
        r, q = divmod(k, columns)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = \
            scaled[k]
    return grid


def sample_grids(model, originals, num_samples: int, seed: int, temperature: float):
    """A sample grid and a completion grid (top half given, bottom half sampled).

    originals: uint8/int [K, H, W, C]. Returns {"samples": [num_samples, H, W, C] uint8,
    "completions": [3K, H, W, C] uint8 (rows: originals, the given top halves, completions)}.
    """
    from pixelrnn_tf import sampling  # imported here: only training with images needs it

    height, width, _ = model.image_shape
    known_pixels = (height // 2) * width
    samples = sampling.sample(model, num_samples, seed=seed, temperature=temperature)
    originals = np.asarray(originals).astype(np.int32)
    completed = sampling.complete(model, originals, known_pixels, seed=seed + 1,
                                  temperature=temperature)
    given = originals.copy()
    given[:, height // 2:] = 0
    rows = np.concatenate([originals, given, np.asarray(completed)]).astype(np.uint8)
    return {"samples": np.asarray(samples), "completions": rows}


def first_images(spec, config, split, count):
    """The first `count` images of a split (file order) as uint8 [count, H, W, C]."""
    ds = data.make_dataset(spec.data_dir, split, count, training=False,
                           expected_shape=spec.image_shape, expected_levels=spec.levels,
                           binarize=config.binarize, seed=config.seed)
    for batch in ds.take(1):
        return batch.numpy()
    raise TrainingError(f"{spec.data_dir}: split {split!r} is empty")


# --------------------------------------------------------------------------------------------
# Checkpoints and summaries


class Checkpoints:
    """The latest-N and best managers over one tf.train.Checkpoint.

    Saving is collective under MultiWorkerMirroredStrategy, so every worker saves; workers
    other than the chief save to a scratch directory and delete it.
    """

    def __init__(self, workdir, checkpoint, keep, distribution):
        self.checkpoint = checkpoint
        self.directory = os.path.join(workdir, CHECKPOINT_DIR)
        self.best_directory = os.path.join(workdir, BEST_DIR)
        self.scratch = None
        latest_dir, best_dir = self.directory, self.best_directory
        if not distribution.is_chief:
            self.scratch = tempfile.mkdtemp(prefix=f"pixelrnn-worker{distribution.worker_id}-")
            latest_dir = os.path.join(self.scratch, "checkpoints")
            best_dir = os.path.join(self.scratch, "best")
        self.latest = tf.train.CheckpointManager(checkpoint, latest_dir, max_to_keep=keep,
                                                 checkpoint_name="ckpt")
        self.best = tf.train.CheckpointManager(checkpoint, best_dir, max_to_keep=1,
                                               checkpoint_name="ckpt")

    def restore_latest(self):
        """Restores the chief's latest checkpoint; returns its path or None."""
        path = tf.train.latest_checkpoint(self.directory)
        if path is not None:
            restore_checkpoint(self.checkpoint, path)
        return path

    def best_nats(self):
        """The validation NLL stored with the best checkpoint (inf when there is none)."""
        path = tf.train.latest_checkpoint(self.best_directory)
        if path is None:
            return math.inf
        return float(tf.train.load_checkpoint(path).get_tensor(_BEST_KEY))

    def _save(self, manager, step):
        path = manager.save(checkpoint_number=step)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return path

    def save_latest(self, step):
        return self._save(self.latest, step)

    def save_best(self, step):
        return self._save(self.best, step)

    def latest_path(self):
        return tf.train.latest_checkpoint(self.directory)


class Summaries:
    """TensorBoard writers WORKDIR/train and WORKDIR/validation (no-ops off the chief, and
    for validation when the run has no validation split)."""

    def __init__(self, workdir, is_chief, validation):
        def writer(name, wanted=True):
            if is_chief and wanted:
                return tf.summary.create_file_writer(os.path.join(workdir, name))
            return tf.summary.create_noop_writer()

        self.train = writer("train")
        self.validation = writer("validation", validation)

    def scalars(self, writer, step, values):
        with writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def images(self, step, grids, levels):
        with self.train.as_default(step=step):
            for name, images in grids.items():
                columns = len(images) // 3 if name == "completions" else 8
                tf.summary.image(name, image_grid(images, levels, columns)[None])

    def hparams(self, config: TrainConfig, spec: DataSpec):
        from tensorboard.plugins.hparams import api as hp

        values = dict(to_dict(config), dataset=spec.dataset, levels=spec.levels,
                      image_shape="x".join(map(str, spec.image_shape)))
        with self.train.as_default():
            hp.hparams(values)

    def flush(self):
        self.train.flush()
        self.validation.flush()

    def close(self):
        self.train.close()
        self.validation.close()


@contextlib.contextmanager
def _sigterm_flag():
    """A dict whose "stop" becomes True when SIGTERM arrives (main thread only)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["stop"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------
# Training


class _Interval:
    """Running sums of the training scalars between two summary writes."""

    def __init__(self):
        self.nats = {}  # running sums of the mean NLLs of each step, like `nll_sums`
        self.norm = 0.0
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, nats: dict, norm: float):
        for name, value in nats.items():
            self.nats[name] = self.nats.get(name, 0.0) + value
        self.norm += norm
        self.steps += 1


class Trainer:
    """One training run over a work directory: set-up, resume, the loop, the final outputs.

    `train_and_evaluate` is the entry point; the class only keeps the run's state together.
    """

    def __init__(self, config: TrainConfig, workdir: str, data_dir: str | None = None,
                 stop_at_step: int | None = None):
        workdir = str(workdir)
        # This run ends here; the learning-rate schedule still runs over train_steps.
        self.end_step = (config.train_steps if stop_at_step is None
                         else min(config.train_steps, stop_at_step))
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise TrainingError(f"--workdir {workdir} is a file, not a directory")
        saved = read_workdir_config(workdir)
        averaged = averaged_source(workdir)
        if averaged is not None:
            raise TrainingError(f"{workdir} holds an average of checkpoints of "
                                f"{os.path.normpath(os.path.join(workdir, averaged['from']))} "
                                "and cannot be trained; train that run instead")
        if data_dir is None:
            if saved is None:
                raise TrainingError(f"no data directory given and no {CONFIG_NAME} in {workdir}")
            data_dir = saved[1].data_dir
        # The strategy comes first: MultiWorkerMirroredStrategy must precede other TF work.
        self.distribution = distribution = make_distribution(config.cpu_replicas)
        self.config, self.workdir = config, workdir
        self.spec = spec = resolve_data(config, data_dir)
        check_resumable(workdir, config, spec, saved)
        replicas = distribution.num_replicas
        if config.batch_size % replicas:
            raise ConfigError(f"batch_size={config.batch_size} must be a multiple of the "
                              f"number of replicas ({replicas})")
        eval_batch = config.eval_batch_size or 4 * config.batch_size
        self.eval_batch = max(replicas, eval_batch - eval_batch % replicas)
        num_train = data.read_manifest(data_dir).num_examples(config.train_split)
        self.steps_per_epoch = config.steps_per_epoch or max(1, num_train // config.batch_size)
        self.num_epochs = -(-config.train_steps // self.steps_per_epoch)
        jit = use_jit(config, distribution)

        keras.utils.set_random_seed(config.seed)
        with distribution.strategy.scope():
            self.model = build_model(config, spec)
            self.dims = nll_dims(self.model)
            self.optimizer = make_optimizer(config)
            self.optimizer.build(self.model.trainable_variables)
            self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.best_var = tf.Variable(math.inf, dtype=tf.float32, trainable=False,
                                        name="best_validation_nats")
        checkpoint = make_checkpoint(self.model, optimizer=self.optimizer, step=self.step_var,
                                     best_validation_nats=self.best_var)
        self.checkpoints = Checkpoints(workdir, checkpoint, config.keep_checkpoints,
                                       distribution)
        restored = self.checkpoints.restore_latest()
        if config.lr_schedule == "constant":
            # A constant rate is an optimizer variable, restored with the checkpoint: the
            # rate of this run's config wins.
            self.optimizer.learning_rate = config.learning_rate
        self.step = int(self.step_var.numpy())
        changed = changed_settings(saved[0], config) if restored and saved else {}
        if changed:
            self.log(f"settings changed at step {self.step}: " + ", ".join(
                f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items()))
        if distribution.is_chief:  # the config is sound: the work directory may be written
            write_workdir_config(workdir, config, spec,
                                 {"step": self.step, "changed": changed} if changed else None)
        self.best_nats = self.checkpoints.best_nats()
        start = f"resuming from {restored} (step {self.step})" if restored else \
            "training from scratch"
        scales = (f"multi-scale {config.small_size}x{config.small_size} -> "
                  f"{spec.image_shape[0]}x{spec.image_shape[1]}, " if config.small_size else "")
        self.log(f"{start}: {scales}{config.architecture}, {config.num_layers} layers, "
                 f"h={config.hidden_dim}, {self.model.count_params()} parameters on "
                 f"{spec.describe()}; {replicas} replica(s) x {config.batch_size // replicas} "
                 f"images, jit_compile={'on' if jit else 'off'}")

        self.train_step = make_train_step(self.model, self.optimizer, distribution.strategy,
                                          config.batch_size, config.clip_norm, jit)
        self.eval_step = make_eval_step(self.model, distribution.strategy, jit)
        self.summaries = Summaries(workdir, distribution.is_chief,
                                   bool(config.validation_split))
        if self.step == 0:
            self.summaries.hparams(config, spec)
        self.originals = None  # images for the completion grid, read once
        self.results = {"step": self.step, "validation": None, "validation_bits_per_dim": None,
                        "validation_terms": None, "validation_images": None,
                        "train_images_per_second": None, "checkpoint": restored}
        self.last_saved = self.step if restored else -1
        self.last_validated = self.last_images = -1
        self.throughput = []

    def log(self, message):
        if self.distribution.is_chief:
            print(message, flush=True)

    def run(self) -> dict:
        config = self.config
        start_step = self.step
        try:
            with _sigterm_flag() as flag:
                while self.step < self.end_step:
                    self.run_epoch(flag)
                if self.step > start_step:
                    if config.validation_split and self.last_validated != self.step:
                        self.validate()
                    if self.last_saved != self.step:
                        self.save()
                    if config.image_every_epochs and self.last_images != self.step:
                        self.write_images()
                elif start_step >= config.train_steps:
                    self.log(f"already trained to step {self.step} (train_steps="
                             f"{config.train_steps}); raise train_steps to train longer")
                else:
                    self.log(f"already at step {self.step} (stop at step {self.end_step})")
        finally:
            self.summaries.close()

        steady = self.throughput[1:] or self.throughput  # the first includes tracing
        self.results.update(step=self.step, train_images_per_second=(
            float(np.median(steady)) if steady else None))
        final_model = os.path.join(self.workdir, FINAL_MODEL)
        if self.distribution.is_chief:
            if self.step > start_step or not os.path.exists(final_model):
                save_keras_model(self.model, final_model)
            if self.results["validation"] is not None:
                terms = self.results["validation_terms"]
                write_eval_json(self.workdir, config.validation_split, {
                    "split": config.validation_split,
                    "num_images": self.results["validation_images"],
                    "nats": self.results["validation"],
                    "bits_per_dim": self.results["validation_bits_per_dim"],
                    **({"terms": terms} if terms else {}),
                    "checkpoint": self.results["checkpoint"], "step": self.step,
                    "max_batches": config.eval_batches or None})
        if self.step < config.train_steps:
            self.log(f"stopped at step {self.step} of {config.train_steps}: rerun to continue")
        self.log(f"done at step {self.step}: checkpoints in {self.checkpoints.directory}, "
                 f"final model {final_model}; TensorBoard: tensorboard --logdir {self.workdir}")
        return self.results

    def run_epoch(self, flag):
        """Trains to the end of the current epoch (or to end_step); raises Preempted when a
        worker got SIGTERM, TrainingError on a non-finite loss."""
        config, chief = self.config, self.distribution.is_chief
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        count = min(self.steps_per_epoch - offset, self.end_step - self.step)
        dataset = distributed_dataset(self.distribution, self.spec, config, config.train_split,
                                      True, config.batch_size,
                                      seed=epoch_seed(config.seed, epoch), skip_steps=offset)
        iterator = iter(dataset)
        show = config.progress_bar and chief
        if show:
            print(f"epoch {epoch + 1}/{self.num_epochs}", flush=True)
        # A live bar on a terminal; one line per epoch in a log file.
        progress = keras.utils.Progbar(offset + count, verbose=(
            (1 if sys.stdout.isatty() else 2) if show else 0))
        interval = _Interval()
        for _ in range(count):
            stop = tf.constant(1.0 if flag["stop"] else 0.0)
            step_nats, norm, stopping = self.train_step(next(iterator), stop)
            step_nats = {name: float(value) for name, value in step_nats.items()}
            nats, norm, stopping = step_nats["total"], float(norm), float(stopping) > 0
            if not (math.isfinite(nats) and math.isfinite(norm)):
                raise TrainingError(
                    f"non-finite loss ({nats}) or gradient norm ({norm}) at step "
                    f"{self.step + 1}: training stopped; the last good checkpoint is "
                    f"{self.checkpoints.latest_path() or 'none'} (lower learning_rate or "
                    "clip_norm, then rerun to resume from it)")
            self.step += 1
            progress.update(self.step - epoch * self.steps_per_epoch, [
                ("nll", nats), ("bits/dim", nats_to_bits_per_dim(nats, self.dims["total"])),
                *((f"{name}_nll", value) for name, value in step_nats.items()
                  if name != "total")])
            interval.add(step_nats, norm)
            if self.step % config.log_every_steps == 0:
                self.write_train_scalars(interval)
                interval = _Interval()
            epochs_done = self.step // self.steps_per_epoch
            epoch_end = self.step % self.steps_per_epoch == 0
            if epoch_end and config.validation_split and (
                    epochs_done % config.eval_every_epochs == 0
                    or self.step >= config.train_steps):
                self.validate()  # before saving, so the checkpoint holds the best value
            if self.step % config.checkpoint_every_steps == 0 or stopping:
                self.save()
            if stopping:
                raise Preempted(f"SIGTERM: saved the checkpoint of step {self.step} in "
                                f"{self.checkpoints.directory}; rerun the same command to "
                                "resume")
            if epoch_end and config.image_every_epochs and \
                    epochs_done % config.image_every_epochs == 0:
                self.write_images()
        self.summaries.flush()

    def write_train_scalars(self, interval):
        seconds = time.perf_counter() - interval.start
        images_per_second = interval.steps * self.config.batch_size / seconds
        means = {name: value / interval.steps for name, value in interval.nats.items()}
        self.summaries.scalars(self.summaries.train, self.step, {
            **nll_scalars(means, self.dims),
            "learning_rate": float(tf.convert_to_tensor(self.optimizer.learning_rate)),
            "gradient_norm": interval.norm / interval.steps,
            "images_per_second": images_per_second})
        self.throughput.append(images_per_second)

    def validate(self):
        config = self.config
        means, count = evaluate_nll(self.eval_step, self.distribution, self.spec, config,
                                    config.validation_split, self.eval_batch,
                                    config.eval_batches)
        described = describe_nll(means, self.dims)
        nats, bits = described["nats"], described["bits_per_dim"]
        self.summaries.scalars(self.summaries.validation, self.step,
                               nll_scalars(means, self.dims))
        self.results.update(validation=nats, validation_bits_per_dim=bits,
                            validation_terms=described.get("terms"), validation_images=count)
        self.last_validated = self.step
        improved = nats < self.best_nats
        if improved:  # every worker sees the same all-reduced value: the save stays collective
            self.best_nats = nats
            self.best_var.assign(nats)
            self.step_var.assign(self.step)
            self.checkpoints.save_best(self.step)
        terms = "".join(f", {name} {term['nats']:.3f}"
                        for name, term in described.get("terms", {}).items())
        self.log(f"step {self.step}: validation {nats:.3f} nats ({bits:.4f} bits/dim{terms}) "
                 f"on {count} images{', new best' if improved else ''}")

    def write_images(self):
        self.last_images = self.step
        if not self.distribution.is_chief:
            return
        config = self.config
        if self.originals is None:
            self.originals = first_images(self.spec, config,
                                          config.validation_split or config.train_split, 8)
        grids = sample_grids(self.model, self.originals, config.num_image_samples,
                             config.seed, config.sample_temperature)
        self.summaries.images(self.step, grids, self.spec.levels)

    def save(self):
        self.step_var.assign(self.step)
        path = self.checkpoints.save_latest(self.step)
        self.last_saved = self.step
        self.results["checkpoint"] = (path if self.distribution.is_chief
                                      else self.checkpoints.latest_path())


def train_and_evaluate(config: TrainConfig, workdir: str, data_dir: str | None = None,
                       stop_at_step: int | None = None) -> dict:
    """Trains (or resumes) a PixelRNN on the data in `data_dir`, writing `workdir`.

    `stop_at_step` ends this run early, at that step, with a checkpoint (as at the end); the
    schedule is still the one over train_steps, so a rerun continues it.

    Validates every `eval_every_epochs` epochs and at the end, keeps the best checkpoint,
    writes TensorBoard summaries, the final WORKDIR/model.keras and
    WORKDIR/eval_<validation_split>.json. data_dir defaults to the one recorded in
    WORKDIR/config.json.

    Returns {"step", "validation" (mean nats, or None), "validation_bits_per_dim",
    "validation_terms" (a Multi-Scale model's terms as in `describe_nll`, else None),
    "validation_images", "train_images_per_second" (median over log intervals after the
    first), "checkpoint" (latest path)}.

    Raises ConfigError / data.DataError / TrainingError with one-line messages, and
    Preempted on SIGTERM after saving a checkpoint.
    """
    return Trainer(config, workdir, data_dir, stop_at_step).run()


def save_keras_model(model, path):
    tmp = os.path.join(os.path.dirname(path), f".partial-{os.getpid()}.keras")
    model.save(tmp)
    os.replace(tmp, path)


def write_eval_json(workdir, split, result):
    os.makedirs(workdir, exist_ok=True)
    _write_atomic(os.path.join(workdir, f"eval_{split}.json"),
                  json.dumps(result, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Evaluation and loading


def load_model(workdir: str, checkpoint: str = "latest") -> PixelRNN | MultiScalePixelRNN:
    """Rebuilds the model from WORKDIR/config.json and restores the weights of a checkpoint
    (a MultiScalePixelRNN for a run with `small_size` > 0).

    checkpoint: "latest", "best" (lowest validation NLL) or a checkpoint prefix.
    """
    saved = read_workdir_config(workdir)
    if saved is None:
        raise TrainingError(f"{workdir}: no {CONFIG_NAME} (not a training work directory)")
    config, spec = saved
    path = checkpoint_path(workdir, checkpoint)
    model = build_model(config, spec)
    restore_checkpoint(make_checkpoint(model), path, partial=True)
    return model


def evaluate(workdir: str, data_dir: str | None, split: str, checkpoint: str = "latest",
             config: TrainConfig | None = None) -> dict:
    """Mean NLL of a checkpoint on a whole split; writes WORKDIR/eval_<split>.json.

    config: runtime settings (cpu_replicas, eval_batch_size, jit_compile); defaults to the
    config saved in the workdir, whose model keys it must match.
    Returns {"split", "num_images", "nats", "bits_per_dim", "checkpoint", "step"}, and for
    a Multi-Scale model "terms": {"small", "conditional"} each {"nats", "bits_per_dim",
    "dims"} (see `describe_nll`; total nats = small + conditional).
    """
    saved = read_workdir_config(workdir)
    if saved is None:
        raise TrainingError(f"{workdir}: no {CONFIG_NAME} (not a training work directory)")
    saved_config, saved_spec = saved
    config = config or saved_config
    data_dir = data_dir or saved_spec.data_dir
    distribution = make_distribution(config.cpu_replicas)
    spec = resolve_data(dataclasses.replace(config, validation_split=""), data_dir, (split,))
    check_resumable(workdir, config, spec, saved)
    path = checkpoint_path(workdir, checkpoint)
    replicas = distribution.num_replicas
    eval_batch = config.eval_batch_size or 4 * config.batch_size
    eval_batch = max(replicas, eval_batch - eval_batch % replicas)
    with distribution.strategy.scope():
        model = build_model(config, spec)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    restore_checkpoint(make_checkpoint(model, step=step_var), path, partial=True)
    eval_step = make_eval_step(model, distribution.strategy, use_jit(config, distribution))
    means, count = evaluate_nll(eval_step, distribution, spec, config, split, eval_batch)
    result = {"split": split, "num_images": count, **describe_nll(means, nll_dims(model)),
              "checkpoint": path, "step": int(step_var.numpy())}
    if distribution.is_chief:
        write_eval_json(workdir, split, result)
    return result
