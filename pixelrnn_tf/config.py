"""Typed training configuration and the paper's presets.

`TrainConfig` is three groups, each a frozen dataclass:

    config.model          ModelConfig: the model a run trains and its checkpoint layout; a
                          resumed run must keep every key (`incompatible_keys`)
    config.optimization   OptimizationConfig: batch, steps, learning-rate schedule, clipping,
                          seed and the training split
    config.runtime        RuntimeConfig: validation, checkpoints, logs, image grids, the input
                          pipeline and the devices

Users see one flat namespace: every field of every group is a key of `train.py --set
key=value` (the names are unique across groups), with its type, default, help text, choices
and range declared with the field; `replace_keys`, `to_dict`, `from_dict` and config.json
use the flat keys. Presets (`PRESETS`) follow the paper (van den Oord et al., 2016, Table 1 and
section 5): RMSProp, batch 16, the paper's depth and width per dataset. Image shape and levels
are not configuration: they come from the data manifest (`binarize` turns a grey dataset into
the paper's 2-level MNIST). `small_size` > 0 makes the model a Multi-Scale PixelRNN
(`*_multiscale` presets); whether it fits the image side is checked once the data's image
shape is known (`check_data_shape`).

    config = get_preset("mnist_diagonal_bilstm")
    config = apply_overrides(config, ["hidden_dim=32", "cpu_replicas=2"])
    config.model.hidden_dim, config.runtime.cpu_replicas    # 32, 2
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable

from pixelrnn_tf.model import ARCHITECTURES


class ConfigError(ValueError):
    """An unknown preset or key, a value of the wrong type, or an inconsistent config."""


class Bound(typing.NamedTuple):
    """The range of a numeric key: `holds(value)`, else "KEY must be TEXT, got VALUE"."""

    text: str
    holds: Callable[[float], bool]


AT_LEAST_1 = Bound(">= 1", lambda v: v >= 1)
AT_LEAST_0 = Bound(">= 0", lambda v: v >= 0)
ABOVE_0 = Bound("> 0", lambda v: v > 0)
FRACTION = Bound("in (0, 1]", lambda v: 0 < v <= 1)
AUTO_CLASSES = -1  # num_classes=auto: K from the data's manifest (`workdir.resolve_num_classes`)
CLASSES = Bound(">= 0 or auto", lambda v: v >= AUTO_CLASSES)


def _field(default, help, *, choices=None, bound=None, odd=False,
           auto=False, argument=True, multiscale=False):
    """A config key. choices: its allowed values; bound: its range; odd: odd values only.
    Model keys only: auto: 0 lets the model class choose (passed as None); argument=False:
    not an argument of the model class; multiscale: an argument of MultiScalePixelRNN only
    (see `model_arguments`)."""
    metadata = {"help": help, "bound": bound, "odd": odd, "auto": auto, "argument": argument,
                "multiscale": multiscale}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model a run trains and its checkpoint layout: a resumed run must keep every key.
    All but binarize (which fixes the model's levels) and optimizer (its checkpoint's slot
    variables) are arguments of the model class (`model_arguments`)."""

    architecture: str = _field("diagonal_bilstm", "body layer type", choices=ARCHITECTURES)
    num_layers: int = _field(7, "residual blocks in the body", bound=AT_LEAST_1)
    hidden_dim: int = _field(16, "h: LSTM units per gate; blocks carry 2h feature maps",
                             bound=AT_LEAST_1)
    output_dim: int = _field(0, "feature maps of the two output layers (0: 32 for <= 16 "
                                "levels, else 1024)", bound=AT_LEAST_0, auto=True)
    residual: bool = _field(True, "residual connections around every block")
    skip: bool = _field(True, "learnable skip connections from every block to the output")
    first_kernel: int = _field(7, "size of the first (mask A) convolution, odd",
                               bound=AT_LEAST_1, odd=True)
    row_kernel: int = _field(3, "width of the Row LSTM input-to-state convolution, odd",
                             bound=AT_LEAST_1, odd=True)
    binarize: bool = _field(False, "dynamic binarization: pixel ~ Bernoulli(x / top level), "
                                   "so the model has 2 levels (a no-op on binary data)",
                            argument=False)
    optimizer: str = _field("rmsprop", "optimizer (the paper uses RMSProp)",
                            choices=("rmsprop", "adam"), argument=False)
    small_size: int = _field(0, "Multi-Scale PixelRNN: side s of the subsampled image (a "
                                "strided pick, x[::n/s, ::n/s]; s must divide the image side n "
                                "and be smaller); 0: single-scale. Both stages train jointly "
                                "on the exact -log p(x) = -log p(x_small) - log p(rest | "
                                "x_small) (no bound: stage 2 does not score the small image's "
                                "pixels)", bound=AT_LEAST_0, multiscale=True)
    conditioning_dim: int = _field(0, "Multi-Scale: feature maps c of the upsampled small "
                                      "image (0: hidden_dim)", bound=AT_LEAST_0, auto=True,
                                   multiscale=True)
    num_classes: int = _field(0, "class-conditional p(x | y) over K labels (0: "
                                 "unconditional; auto: K from the data's manifest, which must "
                                 "have labels)", bound=CLASSES)


@dataclasses.dataclass(frozen=True)
class OptimizationConfig:
    """What the optimizer does: batch, steps, learning-rate schedule, clipping, seed and the
    split(s) trained on."""

    batch_size: int = _field(16, "global batch, split evenly across all replicas",
                             bound=AT_LEAST_1)
    train_steps: int = _field(100_000, "total optimizer steps", bound=AT_LEAST_1)
    steps_per_epoch: int = _field(0, "steps per epoch (0: train images // batch_size)",
                                  bound=AT_LEAST_0)
    learning_rate: float = _field(1e-3, "peak learning rate", bound=ABOVE_0)
    lr_schedule: str = _field("cosine", "learning-rate schedule over train_steps",
                              choices=("constant", "cosine", "exponential"))
    warmup_steps: int = _field(0, "linear warm-up steps (cosine schedule only)",
                               bound=AT_LEAST_0)
    final_lr_fraction: float = _field(0.1, "learning rate at the last step as a fraction of "
                                           "learning_rate (cosine and exponential)",
                                      bound=FRACTION)
    clip_norm: float = _field(1.0, "clip the global gradient norm (summed over replicas) to "
                                   "this value; 0 turns clipping off", bound=AT_LEAST_0)
    seed: int = _field(0, "seed of the initial weights, the data order and the binarization")
    train_split: str = _field("train", "split(s) trained on; join several with '+', e.g. "
                                       "train+validation for a final model (then set "
                                       "validation_split='')")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How the run is carried out and watched: validation, checkpoints, logs, image grids, the
    input pipeline and the devices."""

    validation_split: str = _field("validation", "split evaluated during training ('' for none)")
    eval_every_epochs: int = _field(1, "evaluate the validation split every N epochs",
                                    bound=AT_LEAST_1)
    eval_batches: int = _field(0, "validation batches per evaluation during training "
                                  "(0: the whole split)", bound=AT_LEAST_0)
    eval_batch_size: int = _field(0, "global batch of evaluation (0: 4 x batch_size)",
                                  bound=AT_LEAST_0)
    checkpoint_every_steps: int = _field(1000, "save a checkpoint every N steps (and at the "
                                               "end)", bound=AT_LEAST_1)
    keep_checkpoints: int = _field(3, "latest checkpoints kept (the best is kept separately)",
                                   bound=AT_LEAST_1)
    log_every_steps: int = _field(50, "write training scalars every N steps", bound=AT_LEAST_1)
    image_every_epochs: int = _field(5, "write sample and completion grids every N epochs "
                                        "and at the end (0: never)", bound=AT_LEAST_0)
    num_image_samples: int = _field(16, "images in the sample grid (and up to 8 completions)",
                                    bound=AT_LEAST_1)
    sample_temperature: float = _field(1.0, "temperature of the sample and completion grids",
                                       bound=ABOVE_0)
    shuffle_buffer: int = _field(10_000, "records in the training shuffle buffer",
                                 bound=AT_LEAST_1)
    progress_bar: bool = _field(True, "show a progress bar per epoch on the console")
    cpu_replicas: int = _field(0, "split the CPU into N logical devices and train N replicas "
                                  "(0: one replica per GPU, or the CPU)", bound=AT_LEAST_0)
    jit_compile: str = _field("auto", "XLA-compile the forward and backward pass (auto: on "
                                      "for row_lstm / diagonal_bilstm with cpu_replicas >= 2)",
                              choices=("auto", "on", "off"))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `train_and_evaluate` needs besides the data and the work directory."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimization: OptimizationConfig = dataclasses.field(default_factory=OptimizationConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    def __post_init__(self):
        validate(self)


# --------------------------------------------------------------------------------------------
# The flat keys: every field of every group, in order


_GROUPS: dict[str, type] = typing.get_type_hints(TrainConfig)  # group name -> dataclass
# key -> (group name, the field), in order; the names must be unique across groups
KEYS: dict[str, tuple[str, dataclasses.Field]] = {
    f.name: (group, f) for group, kind in _GROUPS.items() for f in dataclasses.fields(kind)}
assert len(KEYS) == sum(len(dataclasses.fields(kind)) for kind in _GROUPS.values())

# Keys that define the model or the checkpoint layout: a resumed run must keep them.
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def field_types() -> dict[str, type]:
    """Key -> Python type (int, float, bool or str)."""
    return {key: typing.get_type_hints(_GROUPS[group])[key] for key, (group, _) in KEYS.items()}


def to_dict(config: TrainConfig) -> dict:
    """{key: value} for every flat key, in order (the "config" record of config.json)."""
    return {key: getattr(getattr(config, group), key) for key, (group, _) in KEYS.items()}


def replace_keys(config: TrainConfig, **changes) -> TrainConfig:
    """`config` with the flat keys `changes` set (validated); ConfigError for an unknown key."""
    by_group = {}
    for key, value in changes.items():
        if key not in KEYS:
            raise ConfigError(f"unknown config key {key!r} (`train.py --help` lists the keys)")
        by_group.setdefault(KEYS[key][0], {})[key] = value
    return dataclasses.replace(config, **{
        group: dataclasses.replace(getattr(config, group), **values)
        for group, values in by_group.items()})


def model_arguments(model: ModelConfig) -> dict:
    """The keyword arguments of the model class besides the data's image_shape and levels:
    PixelRNN's, plus the multi-scale ones for a MultiScalePixelRNN (small_size > 0); 0 for an
    `auto` key is None (the model class chooses, e.g. output_dim from the levels)."""
    args = {}
    for f in dataclasses.fields(model):
        if not f.metadata["argument"] or (f.metadata["multiscale"] and not model.small_size):
            continue
        value = getattr(model, f.name)
        args[f.name] = None if f.metadata["auto"] and not value else value
    return args


# --------------------------------------------------------------------------------------------
# Checks


def validate(config: TrainConfig) -> None:
    """Raises ConfigError naming the first key with a bad value."""
    values = to_dict(config)
    for key, (_, f) in KEYS.items():
        choices = f.metadata.get("choices")
        if choices is not None and values[key] not in choices:
            raise ConfigError(f"{key}={values[key]!r} is not one of: {', '.join(choices)}")
    for key, (_, f) in KEYS.items():
        bound = f.metadata["bound"]
        if bound is not None and not bound.holds(values[key]):
            raise ConfigError(f"{key} must be {bound.text}, got {values[key]}")
        if f.metadata["odd"] and values[key] % 2 == 0:
            raise ConfigError(f"{key} must be odd, got {values[key]}")
    _check_combinations(config)


def _check_combinations(config: TrainConfig) -> None:
    """The checks of keys that depend on each other."""
    opt, model = config.optimization, config.model
    validation_split = config.runtime.validation_split
    train_parts = opt.train_split.split("+")
    if not all(train_parts):
        raise ConfigError(f"train_split={opt.train_split!r} must be split names joined by '+'")
    if validation_split in train_parts:
        raise ConfigError(f"validation_split {validation_split!r} is part of train_split "
                          f"{opt.train_split!r}: its NLL would not be held out; set "
                          "validation_split='' (or another split)")
    if opt.warmup_steps and opt.lr_schedule != "cosine":
        raise ConfigError("warmup_steps needs lr_schedule=cosine")
    if opt.warmup_steps >= opt.train_steps:
        raise ConfigError(f"warmup_steps ({opt.warmup_steps}) must be < train_steps "
                          f"({opt.train_steps})")
    if model.conditioning_dim and not model.small_size:
        raise ConfigError("conditioning_dim needs small_size > 0 (a Multi-Scale PixelRNN)")


def check_data_shape(config: TrainConfig, image_shape) -> None:
    """Raises ConfigError unless the config fits images of `image_shape` (H, W, C): a
    Multi-Scale `small_size` must divide the side of a square image and be smaller."""
    small_size = config.model.small_size
    if not small_size:
        return
    height, width = image_shape[0], image_shape[1]
    shape = "x".join(str(d) for d in image_shape)
    if height != width:
        raise ConfigError(f"small_size={small_size}: Multi-Scale PixelRNN needs square "
                          f"images, the data has {shape}")
    if height % small_size or small_size >= height:
        divisors = [d for d in range(1, height) if height % d == 0]
        raise ConfigError(f"small_size={small_size} must divide the image side "
                          f"{height} and be smaller ({shape} images: one of "
                          f"{', '.join(map(str, divisors))}; 0 for single-scale)")


# --------------------------------------------------------------------------------------------
# `--set key=value`, config.json and `--help`


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_value(key: str, text: str):
    """Parses the text of `--set key=text` to the key's type; ConfigError if it does not fit."""
    types = field_types()
    if key not in types:
        raise ConfigError(f"unknown config key {key!r} (`train.py --help` lists the keys)")
    kind = types[key]
    text = text.strip()
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{key}={text!r}: expected true or false")
    if key == "num_classes" and text.lower() == "auto":
        return AUTO_CLASSES
    if kind is int:
        try:
            return int(text.replace("_", ""), 10)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected an integer") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}={text!r}: expected a finite number")
        return value
    return text


def apply_overrides(config: TrainConfig, assignments) -> TrainConfig:
    """Applies `key=value` strings (from `--set`) in order."""
    changes = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        changes[key.strip()] = parse_value(key.strip(), text)
    return replace_keys(config, **changes)


def from_dict(values: dict, where: str = "config") -> TrainConfig:
    """The inverse of `to_dict`, checking keys and types (e.g. a config.json); keys it lacks
    take their defaults."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a JSON object of config keys")
    types = field_types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"{where}: unknown config key(s): {', '.join(unknown)}")
    for key, value in values.items():
        kind = types[key]
        ok = (isinstance(value, bool) if kind is bool else
              isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
              else isinstance(value, int) and not isinstance(value, bool) if kind is int
              else isinstance(value, str))
        if not ok:
            raise ConfigError(f"{where}: {key}={value!r} is not a {kind.__name__}")
    return replace_keys(TrainConfig(), **values)


def changed_settings(saved: TrainConfig, new: TrainConfig) -> dict:
    """Every key whose value differs, in key order: {key: [saved value, new value]}."""
    old_values, new_values = to_dict(saved), to_dict(new)
    return {key: [old_values[key], new_values[key]] for key in KEYS
            if old_values[key] != new_values[key]}


def incompatible_keys(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """Model keys whose values differ: a run with `new` cannot resume checkpoints of `saved`."""
    return [k for k in changed_settings(saved, new) if k in MODEL_KEYS]


def describe_keys() -> str:
    """One line per key: name, type, default, help (and choices) for `--help`."""
    lines = []
    types = field_types()
    for key, (_, f) in KEYS.items():
        choices = f.metadata.get("choices")
        extra = f" [{'|'.join(choices)}]" if choices else ""
        lines.append(f"  {key} ({types[key].__name__}, default {f.default!r}){extra}: "
                     f"{f.metadata['help']}")
    return "\n".join(lines)


# The paper's optimiser settings shared by every paper preset: RMSProp, batch 16.
_PAPER = dict(optimizer="rmsprop", batch_size=16, learning_rate=1e-3, lr_schedule="cosine",
              clip_norm=1.0, checkpoint_every_steps=2000, image_every_epochs=5,
              eval_batches=0)

PRESETS: dict[str, dict] = {
    # Binarized MNIST (28x28, 2 levels): Diagonal BiLSTM 7 layers h=16, 79.20 nats (Table 4).
    # binarize=True gives the paper's 2 levels from grey MNIST and is a no-op on the
    # Larochelle & Murray binarized MNIST.
    "mnist_diagonal_bilstm": dict(_PAPER, architecture="diagonal_bilstm", num_layers=7,
                                  hidden_dim=16, output_dim=32, binarize=True,
                                  train_steps=200_000),
    "mnist_row_lstm": dict(_PAPER, architecture="row_lstm", num_layers=7, hidden_dim=16,
                           output_dim=32, binarize=True, train_steps=200_000),
    "mnist_pixelcnn": dict(_PAPER, architecture="pixelcnn", num_layers=15, hidden_dim=16,
                           output_dim=32, binarize=True, train_steps=200_000),
    # CIFAR-10 (32x32x3, 256 levels): 12 layers h=128 (PixelCNN 15 layers), 1024 output maps.
    "cifar10_row_lstm": dict(_PAPER, architecture="row_lstm", num_layers=12, hidden_dim=128,
                             output_dim=1024, train_steps=500_000),
    "cifar10_diagonal_bilstm": dict(_PAPER, architecture="diagonal_bilstm", num_layers=12,
                                    hidden_dim=128, output_dim=1024, train_steps=500_000),
    "cifar10_pixelcnn": dict(_PAPER, architecture="pixelcnn", num_layers=15, hidden_dim=128,
                             output_dim=1024, train_steps=500_000),
    # ImageNet 32x32: Row LSTM 12 layers h=384; 64x64: Row LSTM 4 layers h=512, no residual.
    "imagenet32_row_lstm": dict(_PAPER, architecture="row_lstm", num_layers=12, hidden_dim=384,
                                output_dim=1024, train_steps=1_000_000, eval_batches=100),
    "imagenet64_row_lstm": dict(_PAPER, architecture="row_lstm", num_layers=4, hidden_dim=512,
                                output_dim=1024, residual=False, train_steps=1_000_000,
                                eval_batches=100),
    # Multi-Scale PixelRNN (section 3.6): both stages have the depth and width of the
    # single-scale model they stand beside; the small image is a strided pick of every
    # second pixel. MNIST: the Diagonal BiLSTM of mnist_diagonal_bilstm, 14 -> 28.
    "mnist_multiscale": dict(_PAPER, architecture="diagonal_bilstm", num_layers=7,
                             hidden_dim=16, output_dim=32, binarize=True, train_steps=200_000,
                             small_size=14),
    # CIFAR-10: the Row LSTM of cifar10_row_lstm, 16 -> 32 (the paper's multi-scale models
    # are Row LSTMs).
    "cifar10_multiscale": dict(_PAPER, architecture="row_lstm", num_layers=12, hidden_dim=128,
                               output_dim=1024, train_steps=500_000, small_size=16),
    # ImageNet 64x64: the Row LSTM of imagenet64_row_lstm (4 layers h=512, no residual),
    # 32 -> 64.
    "imagenet64_multiscale": dict(_PAPER, architecture="row_lstm", num_layers=4,
                                  hidden_dim=512, output_dim=1024, residual=False,
                                  train_steps=1_000_000, eval_batches=100, small_size=32),
    # The built-in digits (8x8, 17 levels): a couple of minutes on 2 CPU cores.
    "demo": dict(architecture="diagonal_bilstm", num_layers=2, hidden_dim=16, output_dim=32,
                 first_kernel=5, batch_size=16, train_steps=2000, learning_rate=3e-3,
                 lr_schedule="cosine", warmup_steps=100, clip_norm=1.0,
                 checkpoint_every_steps=500, eval_every_epochs=2, log_every_steps=20,
                 image_every_epochs=10, num_image_samples=32),
    # Tiny, for tests: seconds on any data.
    "test": dict(architecture="row_lstm", num_layers=1, hidden_dim=4, output_dim=8,
                 first_kernel=3, batch_size=8, train_steps=6, steps_per_epoch=3,
                 learning_rate=1e-2, lr_schedule="constant", checkpoint_every_steps=3,
                 keep_checkpoints=2, eval_batches=2, eval_batch_size=16, log_every_steps=1,
                 image_every_epochs=1, num_image_samples=4, shuffle_buffer=64,
                 progress_bar=False),
}


def get_preset(name: str) -> TrainConfig:
    """The preset `name` as a TrainConfig; ConfigError for an unknown name."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace_keys(TrainConfig(), **PRESETS[name])


def describe_presets() -> str:
    """One line per preset with its architecture and size, for `--help`."""
    lines = []
    for name in PRESETS:
        config = get_preset(name)
        c, opt = config.model, config.optimization
        extra = "" if c.residual else ", no residual"
        extra += ", binarized" if c.binarize else ""
        extra += f", multi-scale with a {c.small_size}x{c.small_size} stage 1" \
            if c.small_size else ""
        layers = f"{c.num_layers} layer{'s' if c.num_layers > 1 else ''}"
        lines.append(f"  {name}: {c.architecture}, {layers}, h={c.hidden_dim}"
                     f"{extra}, batch {opt.batch_size}, {opt.train_steps} steps")
    return "\n".join(lines)
