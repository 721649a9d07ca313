"""Pretrained presets (`pixelrnn_tf.presets`): each registry entry against its file and the run
it came from, the refusals of `from_preset` (unknown name, another model class, a damaged
file), and `--preset` in the train, sample and export CLIs. The wheel that ships the weights
is tested in test_preset_wheel.py."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf

import pixelrnn_tf
from pixelrnn_tf import data, presets, sampling, workdir
from pixelrnn_tf.cli import export as export_cli
from pixelrnn_tf.cli import sample as sample_cli
from pixelrnn_tf.cli import train as train_cli

from cli_fixtures import ROOT, run_main
from draws import assert_same_draws
from export_fixtures import randomize_weights

NAME = "binarized_mnist"


def error_of(call):
    """The message of the ValueError `call()` raises, checked to be one line."""
    with pytest.raises(ValueError) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message, message
    return message


# --------------------------------------------------------------------------------------------
# The registry


def test_list_presets():
    assert NAME in pixelrnn_tf.list_presets()
    assert pixelrnn_tf.list_presets() == list(presets.PRESETS)


@pytest.mark.parametrize("name", presets.list_presets())
def test_entry_describes_its_file_and_model(name):
    preset = presets.entry(name)
    assert presets.file_sha256(presets.weights_path(preset)) == preset.sha256
    model_class = getattr(pixelrnn_tf, preset.model_class)
    model = model_class.from_preset(name)
    assert type(model) is model_class
    config = model.get_config()
    assert (config["architecture"], config["num_layers"], config["hidden_dim"]) == (
        preset.architecture, preset.num_layers, preset.hidden_dim)
    assert (tuple(model.image_shape), model.levels) == (preset.image_shape, preset.levels)
    assert (model.num_classes, config.get("small_size", 0)) == (preset.num_classes,
                                                                preset.small_size)
    assert model.count_params() == preset.parameters
    assert preset.summary().startswith(f"{name}: ") and "\n" not in preset.summary()


@pytest.mark.parametrize("name", presets.list_presets())
def test_entry_is_its_source_run(name):
    """The shipped file is the run's final model and the numbers are its eval_test.json."""
    preset = presets.entry(name)
    source = ROOT / preset.source
    if not source.is_dir():
        pytest.skip(f"{source} is not in this checkout")
    assert (source / "model.keras").read_bytes() == presets.weights_path(preset).read_bytes()
    measured = json.loads((source / "eval_test.json").read_text())
    assert (measured["split"], measured["num_images"]) == ("test", preset.test_images)
    assert round(measured["nats"], 4) == preset.test_nats
    assert round(measured["bits_per_dim"], 4) == preset.test_bits_per_dim
    run = json.loads((source / "config.json").read_text())
    assert run["config"]["binarize"] == preset.binarize
    assert run["data"]["dataset"] == preset.dataset
    assert f"--workdir {preset.source} --evaluate test" in preset.evaluation_command


# --------------------------------------------------------------------------------------------
# Refusals, all before the file is deserialized


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if a preset's file reaches the loader."""
    def load_model(*args, **kwargs):
        raise AssertionError("the file was loaded")

    monkeypatch.setattr(workdir, "load_model", load_model)


@pytest.mark.parametrize("model_class", [pixelrnn_tf.PixelRNN, pixelrnn_tf.MultiScalePixelRNN])
def test_unknown_name_lists_the_presets(model_class, no_loading):
    message = error_of(lambda: model_class.from_preset("mnist"))
    assert "unknown pretrained preset 'mnist'" in message
    assert all(name in message for name in presets.list_presets())


def test_a_preset_of_another_class_is_refused(no_loading):
    message = error_of(lambda: pixelrnn_tf.MultiScalePixelRNN.from_preset(NAME))
    assert f"is a PixelRNN, not a MultiScalePixelRNN; load it with PixelRNN.from_preset" \
           f"('{NAME}')" in message


def test_a_damaged_or_missing_file_is_refused(tmp_path, monkeypatch, no_loading):
    preset = presets.entry(NAME)
    damaged = bytearray(presets.weights_path(preset).read_bytes())
    damaged[len(damaged) // 2] ^= 1
    path = tmp_path / preset.file
    path.write_bytes(bytes(damaged))
    monkeypatch.setattr(presets, "weights_path", lambda p: tmp_path / p.file)
    message = error_of(lambda: pixelrnn_tf.PixelRNN.from_preset(NAME))
    assert message.startswith(f"{path}: sha256 {hashlib.sha256(damaged).hexdigest()} does "
                              f"not match {preset.sha256}"), message
    assert "refusing to load" in message
    path.unlink()
    assert "are missing" in error_of(lambda: pixelrnn_tf.PixelRNN.from_preset(NAME))


def test_a_registry_hash_that_does_not_match_is_refused(monkeypatch, no_loading):
    preset = presets.entry(NAME)
    monkeypatch.setitem(presets.PRESETS, NAME, dataclasses.replace(preset, sha256="0" * 64))
    message = error_of(lambda: pixelrnn_tf.PixelRNN.from_preset(NAME))
    assert f"sha256 {preset.sha256} does not match {'0' * 64}" in message


# --------------------------------------------------------------------------------------------
# The CLIs, with a tiny preset registered for the test


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from data_prep.convert import convert

    out = tmp_path_factory.mktemp("data") / "digits"
    convert(["digits"], str(out), val_fraction=0.1, test_fraction=0.1, seed=0)
    return str(out)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """(model, preset): a 1-layer Row LSTM on the 8x8 17-level digits, registered as the
    pretrained preset "tiny_digits" with its file in tmp_path."""
    model = pixelrnn_tf.PixelRNN("row_lstm", image_shape=(8, 8, 1), levels=17, num_layers=1,
                                 hidden_dim=4, output_dim=8)
    model.build()
    randomize_weights(model, seed=3)
    path = tmp_path / "tiny_digits.keras"
    model.save(path)
    preset = dataclasses.replace(
        presets.entry(NAME), name="tiny_digits", description="a test model",
        architecture="row_lstm", num_layers=1, hidden_dim=4,
        parameters=model.count_params(), dataset="digits", image_shape=(8, 8, 1), levels=17,
        binarize=False, source="", file=path.name, sha256=presets.file_sha256(path))
    monkeypatch.setitem(presets.PRESETS, preset.name, preset)
    shipped = presets.weights_path
    monkeypatch.setattr(presets, "weights_path",
                        lambda p: path if p.name == preset.name else shipped(p))
    return model, preset


def mean_nll(model, data_dir, split):
    images = np.concatenate([b.numpy() for b in data.make_dataset(
        data_dir, split, 64, training=False, dtype=tf.int32)])
    return float(-np.mean(model.log_prob(images).numpy())), len(images)


def test_train_evaluates_a_preset(tiny, digits, tmp_path, capsys):
    model, preset = tiny
    nats, count = mean_nll(model, digits, "test")
    code, out, err = run_main(train_cli.main, ["--evaluate", "test", "--preset", preset.name,
                                               "--data", digits], capsys)
    assert code == 0, err
    assert out.startswith(f"test: {nats:.4f} nats per image, ") and \
        f"over {count} images (preset tiny_digits)\n" in out, out
    assert "wrote" not in out and "recorded for the preset" in out
    assert not list(tmp_path.glob("**/eval_*.json"))
    ev = tmp_path / "ev"
    code, out, err = run_main(train_cli.main, ["--evaluate", "test", "--preset", preset.name,
                                               "--data", digits, "--workdir", ev,
                                               "--set", "eval_batch_size=7"], capsys)
    assert code == 0 and f"wrote {ev / 'eval_test.json'}" in out, err
    result = json.loads((ev / "eval_test.json").read_text())
    assert result["num_images"] == count and result["preset"] == preset.name
    assert result["sha256"] == preset.sha256
    np.testing.assert_allclose(result["nats"], nats, rtol=1e-5)


def test_train_preset_evaluation_errors(tiny, digits, tmp_path, capsys):
    _, preset = tiny
    run = tmp_path / "run"
    workdir.Workdir(str(run)).write(presets.evaluation_config(preset),
                                    workdir.DataSpec(digits, "digits", (8, 8, 1), 17))
    base = ["--evaluate", "test", "--data", digits]
    for args, message in [
            (["--preset", "demo"], "--preset demo is a training config; with --evaluate, "
                                   "--preset names a pretrained model: "),
            (["--preset", "nope"], "unknown pretrained preset 'nope'; the package ships: "),
            (["--preset", preset.name, "--checkpoint", "best"], "does not apply to a pretrained"),
            (["--preset", preset.name, "--workdir", run], "holds a training run"),
            (["--preset", preset.name, "--set", "num_layers=3"], "--set num_layers: preset "),
            (["--preset", NAME], "has 8x8x1 images with 2 levels but the model takes 28x28x1 "
                                 "images with 2 levels")]:
        code, _, err = run_main(train_cli.main, [*base, *args], capsys)
        assert code == 1 and message in err and err.count("\n") == 1, (args, err)
    code, _, err = run_main(train_cli.main, ["--evaluate", "test", "--preset", preset.name],
                            capsys)
    assert code == 1 and "--data DIR is required" in err, err
    code, _, err = run_main(train_cli.main, ["--evaluate", "test", "--data", digits], capsys)
    assert code == 2 and "required: --workdir" in err, err
    code, out, _ = run_main(train_cli.main, ["--help"], capsys)
    assert code == 0 and "pretrained presets (--preset with --evaluate):" in out
    assert f"\n  {NAME}: " in out


def test_sample_cli_takes_a_preset(tiny, tmp_path, capsys):
    model, preset = tiny
    code, out, err = run_main(sample_cli.main, [
        "--preset", preset.name, "--num", "3", "--seed", "2", "--out", tmp_path / "s.png",
        "--npz", tmp_path / "s.npz"], capsys)
    assert code == 0 and (tmp_path / "s.png").exists(), err
    assert_same_draws(model, np.load(tmp_path / "s.npz")["samples"],
                      sampling.sample(model, 3, seed=2).numpy(), 2)
    code, _, err = run_main(sample_cli.main, ["--preset", "nope", "--out", tmp_path / "x.png"],
                            capsys)
    assert code == 1 and "unknown pretrained preset 'nope'" in err and err.count("\n") == 1
    code, _, err = run_main(sample_cli.main, ["--preset", preset.name, "--workdir", tmp_path,
                                              "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and "not allowed with argument" in err, err


def test_export_cli_takes_a_preset(tiny, tmp_path, capsys):
    model, preset = tiny
    base = tmp_path / "exports"
    # --no-verify: export.py's own check would score as below.
    code, out, err = run_main(export_cli.main, ["--preset", preset.name, "--export-base", base,
                                                "--no-examples", "--no-verify"], capsys)
    assert code == 0 and out.strip() == f"exported {base / '1'}", err
    images = np.random.default_rng(0).integers(0, 17, (3, 8, 8, 1)).astype(np.uint8)
    got = tf.saved_model.load(str(base / "1")).signatures["serving_default"](
        images=tf.constant(images))["log_prob"].numpy()
    np.testing.assert_allclose(got, model.log_prob(images).numpy(), rtol=1e-5, atol=1e-4)
    code, _, err = run_main(export_cli.main, ["--preset", "nope", "--export-base", base],
                            capsys)
    assert code == 1 and "unknown pretrained preset 'nope'" in err and err.count("\n") == 1
