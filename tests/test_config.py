"""TrainConfig, presets and `--set` parsing (no training here)."""

import dataclasses

import pytest

from pixelrnn_tf import config as config_lib
from pixelrnn_tf.config import ConfigError, TrainConfig


@pytest.mark.parametrize("name, architecture, layers, hidden, residual", [
    ("mnist_diagonal_bilstm", "diagonal_bilstm", 7, 16, True),
    ("mnist_row_lstm", "row_lstm", 7, 16, True),
    ("mnist_pixelcnn", "pixelcnn", 15, 16, True),
    ("cifar10_row_lstm", "row_lstm", 12, 128, True),
    ("cifar10_diagonal_bilstm", "diagonal_bilstm", 12, 128, True),
    ("cifar10_pixelcnn", "pixelcnn", 15, 128, True),
    ("imagenet32_row_lstm", "row_lstm", 12, 384, True),
    ("imagenet64_row_lstm", "row_lstm", 4, 512, False),
])
def test_paper_presets(name, architecture, layers, hidden, residual):
    c = config_lib.get_preset(name)
    assert (c.architecture, c.num_layers, c.hidden_dim, c.residual) == (
        architecture, layers, hidden, residual)
    assert c.optimizer == "rmsprop" and c.batch_size == 16  # the paper's training set-up
    assert c.clip_norm > 0 and c.lr_schedule != "constant"
    # MNIST: binary with 32 output maps; CIFAR / ImageNet: 256 levels, 1024 output maps.
    assert (c.binarize, c.output_dim) == ((True, 32) if name.startswith("mnist") else
                                          (False, 1024))


def test_demo_and_test_presets_are_small():
    demo, test = config_lib.get_preset("demo"), config_lib.get_preset("test")
    assert demo.num_layers <= 3 and demo.hidden_dim <= 16 and demo.train_steps <= 3000
    assert test.num_layers == 1 and test.hidden_dim <= 4 and test.train_steps <= 10
    assert set(config_lib.PRESETS) >= {"demo", "test"}


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*demo"):
        config_lib.get_preset("nope")


def test_parse_values_by_type():
    parse = config_lib.parse_value
    assert parse("hidden_dim", "32") == 32 and parse("train_steps", "10_000") == 10000
    assert parse("learning_rate", "3e-4") == pytest.approx(3e-4)
    assert parse("residual", "false") is False and parse("skip", "YES") is True
    assert parse("architecture", "row_lstm") == "row_lstm"


@pytest.mark.parametrize("key, text, message", [
    ("hidden_dim", "abc", "expected an integer"),
    ("hidden_dim", "1.5", "expected an integer"),
    ("learning_rate", "fast", "expected a number"),
    ("learning_rate", "nan", "expected a finite number"),
    ("residual", "maybe", "expected true or false"),
    ("no_such_key", "1", "unknown config key 'no_such_key'"),
])
def test_parse_value_errors(key, text, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.parse_value(key, text)


def test_apply_overrides():
    c = config_lib.apply_overrides(config_lib.get_preset("test"),
                                   ["hidden_dim=8", " cpu_replicas = 2", "jit_compile=off"])
    assert (c.hidden_dim, c.cpu_replicas, c.jit_compile) == (8, 2, "off")
    assert c.num_layers == config_lib.get_preset("test").num_layers
    with pytest.raises(ConfigError, match="expected key=value"):
        config_lib.apply_overrides(c, ["hidden_dim"])


@pytest.mark.parametrize("changes, message", [
    (dict(architecture="lstm"), "architecture='lstm' is not one of"),
    (dict(jit_compile="yes"), "jit_compile='yes' is not one of"),
    (dict(num_layers=0), "num_layers must be >= 1"),
    (dict(batch_size=-16), "batch_size must be >= 1"),
    (dict(cpu_replicas=-1), "cpu_replicas must be >= 0"),
    (dict(first_kernel=4), "first_kernel must be odd"),
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(final_lr_fraction=1.5), "final_lr_fraction must be in"),
    (dict(lr_schedule="constant", warmup_steps=10), "warmup_steps needs lr_schedule=cosine"),
    (dict(train_steps=10, warmup_steps=10), r"warmup_steps \(10\) must be < train_steps"),
    (dict(train_split="train+"), "must be split names joined by"),
    (dict(train_split="train+validation"), "validation_split 'validation' is part of"),
])
def test_validation_names_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TrainConfig(), **changes)


def test_dict_round_trip_and_checks():
    c = config_lib.get_preset("cifar10_pixelcnn")
    assert config_lib.from_dict(config_lib.to_dict(c)) == c
    with pytest.raises(ConfigError, match="unknown config key.*bogus"):
        config_lib.from_dict(dict(config_lib.to_dict(c), bogus=1))
    with pytest.raises(ConfigError, match="hidden_dim='128' is not a int"):
        config_lib.from_dict(dict(config_lib.to_dict(c), hidden_dim="128"))
    with pytest.raises(ConfigError, match="residual=1 is not a bool"):
        config_lib.from_dict(dict(config_lib.to_dict(c), residual=1))


def test_incompatible_keys_are_the_model_keys():
    base = config_lib.get_preset("test")
    runtime = dataclasses.replace(base, train_steps=100, cpu_replicas=2, learning_rate=0.1,
                                  batch_size=4)
    assert config_lib.incompatible_keys(base, runtime) == []
    model = dataclasses.replace(base, hidden_dim=8, binarize=True, optimizer="adam")
    assert config_lib.incompatible_keys(base, model) == ["hidden_dim", "binarize", "optimizer"]


def test_help_text_lists_every_key_and_preset():
    keys = config_lib.describe_keys()
    for f in dataclasses.fields(TrainConfig):
        assert f"  {f.name} (" in keys
    assert "[auto|on|off]" in keys
    presets = config_lib.describe_presets()
    for name in config_lib.PRESETS:
        assert f"  {name}:" in presets


def test_changed_settings_lists_every_key_that_differs_with_both_values():
    base = config_lib.get_preset("test")
    assert config_lib.changed_settings(base, base) == {}
    later = dataclasses.replace(base, train_steps=100, hidden_dim=8, lr_schedule="cosine")
    assert config_lib.changed_settings(base, later) == {
        "hidden_dim": [base.hidden_dim, 8], "train_steps": [base.train_steps, 100],
        "lr_schedule": [base.lr_schedule, "cosine"]}
