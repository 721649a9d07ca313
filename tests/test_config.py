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
    config = config_lib.get_preset(name)
    m, opt = config.model, config.optimization
    assert (m.architecture, m.num_layers, m.hidden_dim, m.residual) == (
        architecture, layers, hidden, residual)
    assert m.optimizer == "rmsprop" and opt.batch_size == 16  # the paper's training set-up
    assert opt.clip_norm > 0 and opt.lr_schedule != "constant"
    # MNIST: binary with 32 output maps; CIFAR / ImageNet: 256 levels, 1024 output maps.
    assert (m.binarize, m.output_dim) == ((True, 32) if name.startswith("mnist") else
                                          (False, 1024))


def test_demo_and_test_presets_are_small():
    demo, test = config_lib.get_preset("demo"), config_lib.get_preset("test")
    assert demo.model.num_layers <= 3 and demo.model.hidden_dim <= 16
    assert demo.optimization.train_steps <= 3000
    assert test.model.num_layers == 1 and test.model.hidden_dim <= 4
    assert test.optimization.train_steps <= 10
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
    assert (c.model.hidden_dim, c.runtime.cpu_replicas, c.runtime.jit_compile) == (8, 2, "off")
    assert c.model.num_layers == config_lib.get_preset("test").model.num_layers
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
        config_lib.replace_keys(TrainConfig(), **changes)


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
    runtime = config_lib.replace_keys(base, train_steps=100, cpu_replicas=2, learning_rate=0.1,
                                  batch_size=4)
    assert config_lib.incompatible_keys(base, runtime) == []
    model = config_lib.replace_keys(base, hidden_dim=8, binarize=True, optimizer="adam")
    assert config_lib.incompatible_keys(base, model) == ["hidden_dim", "binarize", "optimizer"]


def test_help_text_lists_every_key_and_preset():
    keys = config_lib.describe_keys()
    for group in dataclasses.fields(TrainConfig):
        for f in dataclasses.fields(getattr(TrainConfig(), group.name)):
            assert f"  {f.name} (" in keys
    assert "[auto|on|off]" in keys
    presets = config_lib.describe_presets()
    for name in config_lib.PRESETS:
        assert f"  {name}:" in presets


def test_changed_settings_lists_every_key_that_differs_with_both_values():
    base = config_lib.get_preset("test")
    assert config_lib.changed_settings(base, base) == {}
    later = config_lib.replace_keys(base, train_steps=100, hidden_dim=8, lr_schedule="cosine")
    assert config_lib.changed_settings(base, later) == {
        "hidden_dim": [base.model.hidden_dim, 8],
        "train_steps": [base.optimization.train_steps, 100],
        "lr_schedule": [base.optimization.lr_schedule, "cosine"]}


def test_groups_hold_every_key_once_and_the_model_group_is_the_model_keys():
    config = config_lib.get_preset("cifar10_multiscale")
    groups = {group.name: getattr(config, group.name) for group in dataclasses.fields(config)}
    assert list(groups) == ["model", "optimization", "runtime"]
    keys = [f.name for group in groups.values() for f in dataclasses.fields(group)]
    assert len(keys) == len(set(keys)) == 37
    assert list(config_lib.to_dict(config)) == keys  # config.json stays flat, in key order
    assert config_lib.MODEL_KEYS == tuple(f.name for f in dataclasses.fields(config.model))
    assert config.optimization.learning_rate == config_lib.to_dict(config)["learning_rate"]
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        config_lib.replace_keys(config, bogus=1)


def test_model_arguments_are_the_model_class_arguments():
    test = config_lib.get_preset("test")
    assert config_lib.model_arguments(test.model) == dict(
        architecture="row_lstm", num_layers=1, hidden_dim=4, output_dim=8, residual=True,
        skip=True, first_kernel=3, row_kernel=3, num_classes=0)
    # 0 lets the model class choose (output_dim from the levels, conditioning_dim = h);
    # the multi-scale keys only go to a MultiScalePixelRNN.
    auto = config_lib.replace_keys(test, output_dim=0)
    assert config_lib.model_arguments(auto.model)["output_dim"] is None
    multi = config_lib.replace_keys(test, small_size=4)
    assert config_lib.model_arguments(multi.model) == dict(
        config_lib.model_arguments(test.model), small_size=4, conditioning_dim=None)
    sized = config_lib.replace_keys(multi, conditioning_dim=6)
    assert config_lib.model_arguments(sized.model)["conditioning_dim"] == 6


def test_ranges_are_declared_with_the_fields():
    for key, text in [("hidden_dim", ">= 1"), ("eval_batches", ">= 0"),
                      ("sample_temperature", "> 0"), ("clip_norm", ">= 0")]:
        _, field = config_lib.KEYS[key]
        assert field.metadata["bound"].text == text
    with pytest.raises(ConfigError, match="sample_temperature must be > 0, got 0.0"):
        config_lib.replace_keys(TrainConfig(), sample_temperature=0.0)
    with pytest.raises(ConfigError, match="clip_norm must be >= 0, got -1.0"):
        config_lib.replace_keys(TrainConfig(), clip_norm=-1.0)
    with pytest.raises(ConfigError, match="row_kernel must be odd, got 2"):
        config_lib.replace_keys(TrainConfig(), row_kernel=2)
