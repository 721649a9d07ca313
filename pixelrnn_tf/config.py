"""Typed training configuration and the paper's presets.

One flat dataclass, `TrainConfig`: every field is a key of `train.py --set key=value`, with its
type, default and help text taken from the dataclass itself. Presets (`PRESETS`) follow the
paper (van den Oord et al., 2016, Table 1 and section 5): RMSProp, batch 16, the paper's depth
and width per dataset. Image shape and levels are not configuration: they come from the data
manifest (`binarize` turns a grey dataset into the paper's 2-level MNIST). `small_size` > 0
makes the model a Multi-Scale PixelRNN (`*_multiscale` presets); whether it fits the image
side is checked once the data's image shape is known (`check_data_shape`).

    config = get_preset("mnist_diagonal_bilstm")
    config = apply_overrides(config, ["hidden_dim=32", "cpu_replicas=2"])
"""

from __future__ import annotations

import dataclasses
import typing

from pixelrnn_tf.model import ARCHITECTURES


class ConfigError(ValueError):
    """An unknown preset or key, a value of the wrong type, or an inconsistent config."""


def _field(default, help, choices=None):  # noqa: A002 (help mirrors argparse)
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `train_and_evaluate` needs besides the data and the work directory."""

    # Model (these must not change when a run is resumed; see MODEL_KEYS).
    architecture: str = _field("diagonal_bilstm", "body layer type", ARCHITECTURES)
    num_layers: int = _field(7, "residual blocks in the body")
    hidden_dim: int = _field(16, "h: LSTM units per gate; blocks carry 2h feature maps")
    output_dim: int = _field(0, "feature maps of the two output layers (0: 32 for <= 16 "
                                "levels, else 1024)")
    residual: bool = _field(True, "residual connections around every block")
    skip: bool = _field(True, "learnable skip connections from every block to the output")
    first_kernel: int = _field(7, "size of the first (mask A) convolution, odd")
    row_kernel: int = _field(3, "width of the Row LSTM input-to-state convolution, odd")
    binarize: bool = _field(False, "dynamic binarization: pixel ~ Bernoulli(x / top level), "
                                   "so the model has 2 levels (a no-op on binary data)")
    optimizer: str = _field("rmsprop", "optimizer (the paper uses RMSProp)", ("rmsprop", "adam"))
    small_size: int = _field(0, "Multi-Scale PixelRNN: side s of the subsampled image (a "
                                "strided pick, x[::n/s, ::n/s]; s must divide the image side n "
                                "and be smaller); 0: single-scale. Both stages train jointly "
                                "on the exact -log p(x) = -log p(x_small) - log p(rest | "
                                "x_small) (no bound: stage 2 does not score the small image's "
                                "pixels)")
    conditioning_dim: int = _field(0, "Multi-Scale: feature maps c of the upsampled small "
                                      "image (0: hidden_dim)")

    # Optimisation.
    batch_size: int = _field(16, "global batch, split evenly across all replicas")
    train_steps: int = _field(100_000, "total optimizer steps")
    steps_per_epoch: int = _field(0, "steps per epoch (0: train images // batch_size)")
    learning_rate: float = _field(1e-3, "peak learning rate")
    lr_schedule: str = _field("cosine", "learning-rate schedule over train_steps",
                              ("constant", "cosine", "exponential"))
    warmup_steps: int = _field(0, "linear warm-up steps (cosine schedule only)")
    final_lr_fraction: float = _field(0.1, "learning rate at the last step as a fraction of "
                                           "learning_rate (cosine and exponential)")
    clip_norm: float = _field(1.0, "clip the global gradient norm (summed over replicas) to "
                                   "this value; 0 turns clipping off")
    seed: int = _field(0, "seed of the initial weights, the data order and the binarization")

    train_split: str = _field("train", "split(s) trained on; join several with '+', e.g. "
                                       "train+validation for a final model (then set "
                                       "validation_split='')")

    # Evaluation, checkpoints, monitoring.
    validation_split: str = _field("validation", "split evaluated during training ('' for none)")
    eval_every_epochs: int = _field(1, "evaluate the validation split every N epochs")
    eval_batches: int = _field(0, "validation batches per evaluation during training "
                                  "(0: the whole split)")
    eval_batch_size: int = _field(0, "global batch of evaluation (0: 4 x batch_size)")
    checkpoint_every_steps: int = _field(1000, "save a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _field(3, "latest checkpoints kept (the best is kept separately)")
    log_every_steps: int = _field(50, "write training scalars every N steps")
    image_every_epochs: int = _field(5, "write sample and completion grids every N epochs "
                                        "and at the end (0: never)")
    num_image_samples: int = _field(16, "images in the sample grid (and up to 8 completions)")
    sample_temperature: float = _field(1.0, "temperature of the sample and completion grids")
    shuffle_buffer: int = _field(10_000, "records in the training shuffle buffer")
    progress_bar: bool = _field(True, "show a progress bar per epoch on the console")

    # Runtime.
    cpu_replicas: int = _field(0, "split the CPU into N logical devices and train N replicas "
                                  "(0: one replica per GPU, or the CPU)")
    jit_compile: str = _field("auto", "XLA-compile the forward and backward pass (auto: on "
                                      "for row_lstm / diagonal_bilstm with cpu_replicas >= 2)",
                              ("auto", "on", "off"))

    def __post_init__(self):
        validate(self)


# Keys that define the model or the checkpoint layout: a resumed run must keep them.
MODEL_KEYS = ("architecture", "num_layers", "hidden_dim", "output_dim", "residual", "skip",
              "first_kernel", "row_kernel", "binarize", "optimizer", "small_size",
              "conditioning_dim")

_POSITIVE = ("num_layers", "hidden_dim", "first_kernel", "row_kernel", "batch_size",
             "train_steps", "eval_every_epochs", "checkpoint_every_steps", "keep_checkpoints",
             "log_every_steps", "num_image_samples", "shuffle_buffer")
_NON_NEGATIVE = ("output_dim", "small_size", "conditioning_dim", "steps_per_epoch",
                 "warmup_steps", "eval_batches", "eval_batch_size", "image_every_epochs",
                 "cpu_replicas")


def validate(config: TrainConfig) -> None:
    """Raises ConfigError naming the first key with a bad value."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices is not None and value not in choices:
            raise ConfigError(f"{f.name}={value!r} is not one of: {', '.join(choices)}")
    for key in _POSITIVE:
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(config, key)}")
    for key in _NON_NEGATIVE:
        if getattr(config, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(config, key)}")
    for key in ("first_kernel", "row_kernel"):
        if getattr(config, key) % 2 == 0:
            raise ConfigError(f"{key} must be odd, got {getattr(config, key)}")
    if not config.learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0, got {config.learning_rate}")
    if not 0 < config.final_lr_fraction <= 1:
        raise ConfigError(f"final_lr_fraction must be in (0, 1], got {config.final_lr_fraction}")
    if not config.clip_norm >= 0:
        raise ConfigError(f"clip_norm must be >= 0, got {config.clip_norm}")
    if not config.sample_temperature > 0:
        raise ConfigError(f"sample_temperature must be > 0, got {config.sample_temperature}")
    train_parts = config.train_split.split("+")
    if not all(train_parts):
        raise ConfigError(f"train_split={config.train_split!r} must be split names joined by '+'")
    if config.validation_split in train_parts:
        raise ConfigError(f"validation_split {config.validation_split!r} is part of train_split "
                          f"{config.train_split!r}: its NLL would not be held out; set "
                          "validation_split='' (or another split)")
    if config.warmup_steps and config.lr_schedule != "cosine":
        raise ConfigError("warmup_steps needs lr_schedule=cosine")
    if config.warmup_steps >= config.train_steps:
        raise ConfigError(f"warmup_steps ({config.warmup_steps}) must be < train_steps "
                          f"({config.train_steps})")
    if config.conditioning_dim and not config.small_size:
        raise ConfigError("conditioning_dim needs small_size > 0 (a Multi-Scale PixelRNN)")


def check_data_shape(config: TrainConfig, image_shape) -> None:
    """Raises ConfigError unless the config fits images of `image_shape` (H, W, C): a
    Multi-Scale `small_size` must divide the side of a square image and be smaller."""
    if not config.small_size:
        return
    height, width = image_shape[0], image_shape[1]
    shape = "x".join(str(d) for d in image_shape)
    if height != width:
        raise ConfigError(f"small_size={config.small_size}: Multi-Scale PixelRNN needs square "
                          f"images, the data has {shape}")
    if height % config.small_size or config.small_size >= height:
        divisors = [d for d in range(1, height) if height % d == 0]
        raise ConfigError(f"small_size={config.small_size} must divide the image side "
                          f"{height} and be smaller ({shape} images: one of "
                          f"{', '.join(map(str, divisors))}; 0 for single-scale)")


def field_types() -> dict[str, type]:
    """Key -> Python type (int, float, bool or str)."""
    return typing.get_type_hints(TrainConfig)


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
    return dataclasses.replace(config, **changes)


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


def from_dict(values: dict, where: str = "config") -> TrainConfig:
    """The inverse of `to_dict`, checking keys and types (e.g. a config.json)."""
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
    return TrainConfig(**values)


def changed_settings(saved: TrainConfig, new: TrainConfig) -> dict:
    """Every key whose value differs, in field order: {key: [saved value, new value]}."""
    return {f.name: [getattr(saved, f.name), getattr(new, f.name)]
            for f in dataclasses.fields(TrainConfig)
            if getattr(saved, f.name) != getattr(new, f.name)}


def incompatible_keys(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """Model keys whose values differ: a run with `new` cannot resume checkpoints of `saved`."""
    return [k for k in changed_settings(saved, new) if k in MODEL_KEYS]


def describe_keys() -> str:
    """One line per key: name, type, default, help (and choices) for `--help`."""
    lines = []
    types = field_types()
    for f in dataclasses.fields(TrainConfig):
        choices = f.metadata.get("choices")
        extra = f" [{'|'.join(choices)}]" if choices else ""
        lines.append(f"  {f.name} ({types[f.name].__name__}, default {f.default!r}){extra}: "
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
    return TrainConfig(**PRESETS[name])


def describe_presets() -> str:
    """One line per preset with its architecture and size, for `--help`."""
    lines = []
    for name in PRESETS:
        c = get_preset(name)
        extra = "" if c.residual else ", no residual"
        extra += ", binarized" if c.binarize else ""
        extra += f", multi-scale with a {c.small_size}x{c.small_size} stage 1" \
            if c.small_size else ""
        layers = f"{c.num_layers} layer{'s' if c.num_layers > 1 else ''}"
        lines.append(f"  {name}: {c.architecture}, {layers}, h={c.hidden_dim}"
                     f"{extra}, batch {c.batch_size}, {c.train_steps} steps")
    return "\n".join(lines)
