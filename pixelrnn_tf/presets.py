"""Pretrained models shipped inside the package, loaded by name as keras-hub loads presets.

    model = pixelrnn_tf.PixelRNN.from_preset("binarized_mnist")
    pixelrnn_tf.list_presets()        # ["binarized_mnist"]
    presets.entry("binarized_mnist")  # a `Preset`: what it is, how well it does, its sha256

Each preset is one .keras file under `pixelrnn_tf/preset_weights/` (package data: a wheel and
`pip install .` carry it). Loading checks the file's sha256 against the registry, then reads
it through the one loader, `pixelrnn_tf.workdir.load_model` (safe_mode on). These are
pretrained *models*; the training presets of `train.py --preset` (`pixelrnn_tf.config.PRESETS`)
are configurations to train from. `train.py --evaluate SPLIT --preset NAME --data DIR` scores a
pretrained preset on a prepared dataset (`evaluation_config`, `pixelrnn_tf.evaluation`).

Adding a preset: copy the run's model.keras to `preset_weights/NAME.keras`, add its `Preset`
to `PRESETS` with the numbers of its run's eval_test.json, and run tests/test_presets.py (it
checks the sha256, the recorded model arguments and the numbers against the source run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import pathlib
from collections.abc import Mapping

WEIGHTS_DIR = "preset_weights"  # inside the pixelrnn_tf package


class PresetError(ValueError):
    """An unknown preset, a preset of another model class, or a weights file that is missing
    or does not match its sha256 (one-line message)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """One pretrained model of the registry.

    name: what `from_preset` takes.
    description: one line for people.
    model_class: "PixelRNN" or "MultiScalePixelRNN" (the class whose `from_preset` loads it).
    architecture, num_layers, hidden_dim, parameters: the model's body and size.
    num_classes: K > 0 for a class-conditional model p(x | y) (labels in [0, K)).
    small_size: side of a MultiScalePixelRNN's stage-1 image (0: single-scale).
    dataset, image_shape, levels: the data it models (the data_prep manifest's dataset name).
    binarize: its data is read with dynamic binarization (`data.make_dataset(binarize=True)`,
      a no-op on binary data), as in its training; an evaluation reads it the same way.
    test_nats, test_bits_per_dim, test_images: its measured test NLL, per image, over that
      many test images: the "nats" and "bits_per_dim" of the eval JSON (for a
      class-conditional model -log p(x | y) given the true labels).
    test_extra: further test numbers, e.g. a class-conditional model's {"marginal_nats",
      "marginal_bits_per_dim", "classifier_accuracy"}.
    data_command: prepares the test data; evaluation_command: measured `test_nats` on it.
    source: the work directory (under the repository) whose model.keras `file` is a copy of.
    file: the weights file's name under `pixelrnn_tf/preset_weights/`.
    sha256: the file's SHA-256, checked on every load.
    """

    name: str
    description: str
    model_class: str
    architecture: str
    num_layers: int
    hidden_dim: int
    parameters: int
    num_classes: int = 0
    small_size: int = 0
    dataset: str
    image_shape: tuple[int, int, int]
    levels: int
    binarize: bool
    test_nats: float
    test_bits_per_dim: float
    test_images: int
    test_extra: Mapping[str, float] = dataclasses.field(default_factory=dict)
    data_command: str
    evaluation_command: str
    source: str
    file: str
    sha256: str

    def summary(self) -> str:
        """One line: name, model, data and test NLL (for --help and listings)."""
        shape = "x".join(map(str, self.image_shape))
        given = f", given the label ({self.num_classes} classes)" if self.num_classes else ""
        return (f"{self.name}: {self.description}; {self.model_class} {self.architecture}, "
                f"{self.num_layers} layers, h={self.hidden_dim}, {self.parameters:,} "
                f"parameters; {self.dataset} {shape}, {self.levels} levels; test "
                f"{self.test_nats:.2f} nats ({self.test_bits_per_dim:.4f} bits/dim){given}")


_BINARIZED_MNIST_DATA = ("python -m data_prep convert "
                         "npz:../shared/data/binarized_mnist/binarized_mnist.npz "
                         "--out out/data/binarized_mnist")

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        name="binarized_mnist",
        description="the paper's binarized-MNIST model (paper: 79.20 nats), trained on "
                    "train+validation, its last 3 checkpoints averaged",
        model_class="PixelRNN", architecture="diagonal_bilstm", num_layers=7, hidden_dim=16,
        parameters=72_610,
        dataset="binarized_mnist", image_shape=(28, 28, 1), levels=2, binarize=True,
        test_nats=79.1865, test_bits_per_dim=0.1457, test_images=10_000,
        data_command=_BINARIZED_MNIST_DATA,
        evaluation_command="python train.py --workdir "
                           "results/runs/mnist_diagonal_bilstm_trainval_avg3 --evaluate test "
                           "--data out/data/binarized_mnist",
        source="results/runs/mnist_diagonal_bilstm_trainval_avg3",
        file="binarized_mnist.keras",
        sha256="c4e2e9616cfbb3438fd9a075261d0941111a75d9ac3f5c8b44a9675d99d3d368"),
)}


def list_presets() -> list[str]:
    """The names of the pretrained models shipped with the package."""
    return list(PRESETS)


def entry(name: str) -> Preset:
    """The registry entry of `name`; PresetError listing the names when there is none."""
    if name not in PRESETS:
        raise PresetError(f"unknown pretrained preset {name!r}; the package ships: "
                          f"{', '.join(PRESETS)}")
    return PRESETS[name]


def describe_presets() -> str:
    """One indented line per pretrained preset (`Preset.summary`), for --help."""
    return "\n".join(f"  {preset.summary()}" for preset in PRESETS.values())


def weights_path(preset: Preset) -> pathlib.Path:
    """Where the installed package keeps the preset's weights file."""
    return pathlib.Path(str(importlib.resources.files("pixelrnn_tf") / WEIGHTS_DIR
                            / preset.file))


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checked_weights_path(preset: Preset) -> pathlib.Path:
    """`weights_path`, after checking that the file is there and has the registry's
    sha256 (PresetError otherwise)."""
    path = weights_path(preset)
    if not path.is_file():
        raise PresetError(f"{path}: the weights of preset {preset.name!r} are missing "
                          "(reinstall pixelrnn_tf; a build must include its package data)")
    actual = file_sha256(path)
    if actual != preset.sha256:
        raise PresetError(f"{path}: sha256 {actual} does not match {preset.sha256} recorded "
                          f"for preset {preset.name!r}; refusing to load a damaged or "
                          "replaced file (reinstall pixelrnn_tf)")
    return path


def load_preset(name: str, model_class: type | None = None):
    """The pretrained model `name`: its file checked against its sha256, then loaded with
    safe_mode on (`pixelrnn_tf.workdir.load_model`).

    model_class: the class whose `from_preset` asks (PixelRNN or MultiScalePixelRNN); a
      preset of another class is refused.
    Raises PresetError (a ValueError) with a one-line message.
    """
    preset = entry(name)
    if model_class is not None and model_class.__name__ != preset.model_class:
        raise PresetError(f"preset {name!r} is a {preset.model_class}, not a "
                          f"{model_class.__name__}; load it with "
                          f"{preset.model_class}.from_preset({name!r})")
    from pixelrnn_tf.workdir import load_model  # imports the model classes, which import this

    return load_model(checked_weights_path(preset))


def evaluation_config(preset: Preset, overrides=()):
    """The TrainConfig an evaluation of `preset` reads its data and runs with: the preset's
    model keys (architecture, small_size, num_classes) and `binarize`, no validation split,
    and the `--set key=value` `overrides`, which may change runtime keys only (cpu_replicas,
    eval_batch_size, jit_compile, ...); ConfigError for a model key."""
    from pixelrnn_tf import config as config_lib

    base = config_lib.replace_keys(
        config_lib.TrainConfig(), architecture=preset.architecture,
        num_layers=preset.num_layers, hidden_dim=preset.hidden_dim,
        small_size=preset.small_size, num_classes=preset.num_classes,
        binarize=preset.binarize, validation_split="")
    config = config_lib.apply_overrides(base, overrides)
    fixed = config_lib.incompatible_keys(base, config)
    if fixed:
        raise config_lib.ConfigError(f"--set {fixed[0]}: preset {preset.name!r} fixes its "
                                     "model; only runtime keys may be set")
    return config
