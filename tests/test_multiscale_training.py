"""Training, evaluating, resuming and exporting a Multi-Scale PixelRNN through train.py,
pixelrnn_tf.training and export.py (8x8 digits, a 4x4 stage 1, 1 layer, h=4)."""

import contextlib
import io
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pixelrnn_tf import MultiScalePixelRNN, serving
from pixelrnn_tf import config as config_lib
from pixelrnn_tf.cli import export as export_cli
from pixelrnn_tf.cli import train
from pixelrnn_tf.config import ConfigError
from pixelrnn_tf.trainer import train_and_evaluate
from pixelrnn_tf.workdir import TrainingError, Workdir, load_model, model_variables

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = 4
STEPS = 6  # the test preset: epochs of 3 steps, validation, checkpoints and images every epoch
COMMON = ["--preset", "test", "--set", f"small_size={SMALL}"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from data_prep.__main__ import main as data_prep_main

    out = tmp_path_factory.mktemp("data") / "digits"  # 8x8x1, 17 levels
    assert data_prep_main(["convert", "digits", "--out", str(out), "--limit", "120",
                           "--val-fraction", "0.25", "--test-fraction", "0.2"]) == 0
    return str(out)


def run_main(*args):
    """`train.py ARGS` in this process -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = train.main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """(workdir, stdout) of `train.py --preset test --set small_size=4`."""
    workdir = tmp_path_factory.mktemp("run") / "work"
    code, out, err = run_main("--data", data_dir, "--workdir", workdir, *COMMON)
    assert code == 0, err
    return str(workdir), out


def tensor_values(logdir, tag):
    accumulator = EventAccumulator(logdir, size_guidance={"tensors": 0})
    accumulator.Reload()
    return [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]


def scalars(logdir, tag):
    return [(step, float(value)) for step, value in tensor_values(logdir, tag)]


def read_split(data_dir, split):
    """Images of a split read straight from the TFRecords (not through pixelrnn_tf.data)."""
    with open(os.path.join(data_dir, "manifest.json")) as f:
        manifest = json.load(f)
    files = [os.path.join(data_dir, s["file"]) for s in manifest["splits"][split]["shards"]]
    images = []
    for record in tf.data.TFRecordDataset(files):
        example = tf.train.Example.FromString(record.numpy())
        raw = example.features.feature["image"].bytes_list.value[0]
        images.append(np.frombuffer(raw, np.uint8).reshape(manifest["image_shape"]))
    return np.stack(images)


def log_softmax_picked(logits, images):
    """float64 numpy: log p of each sub-pixel's value; logits [..., L], images [...]."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return np.take_along_axis(log_probs, images[..., None].astype(np.int64), -1)[..., 0]


# --------------------------------------------------------------------------------------------
# Config and presets


@pytest.mark.parametrize("name, single, shape", [
    ("mnist_multiscale", "mnist_diagonal_bilstm", (28, 28, 1)),
    ("cifar10_multiscale", "cifar10_row_lstm", (32, 32, 3)),
    ("imagenet64_multiscale", "imagenet64_row_lstm", (64, 64, 3)),
])
def test_multiscale_presets_halve_the_side_with_the_single_scale_model(name, single, shape):
    multi, base = config_lib.get_preset(name), config_lib.get_preset(single)
    assert multi.model.small_size == shape[0] // 2
    assert config_lib.replace_keys(multi, small_size=0) == base
    config_lib.check_data_shape(multi, shape)  # fits its data
    with pytest.raises(ConfigError, match=f"small_size={multi.model.small_size} must divide"):
        config_lib.check_data_shape(multi, (shape[0] + 2, shape[0] + 2, shape[2]))


def test_small_size_is_a_model_key_and_checked_against_the_data():
    base = config_lib.get_preset("test")
    multi = config_lib.replace_keys(base, small_size=SMALL)
    assert config_lib.incompatible_keys(base, multi) == ["small_size"]
    assert config_lib.incompatible_keys(multi, config_lib.replace_keys(multi, conditioning_dim=8)) \
        == ["conditioning_dim"]
    config_lib.check_data_shape(base, (7, 5, 1))  # single-scale: any shape
    for size, shape, message in [(3, (8, 8, 1), "must divide the image side 8"),
                                 (8, (8, 8, 1), "must divide the image side 8 and be smaller"),
                                 (4, (8, 12, 1), "needs square images")]:
        with pytest.raises(ConfigError, match=message):
            config_lib.check_data_shape(config_lib.replace_keys(base, small_size=size), shape)
    with pytest.raises(ConfigError, match="small_size must be >= 0"):
        config_lib.replace_keys(base, small_size=-1)
    with pytest.raises(ConfigError, match="conditioning_dim needs small_size"):
        config_lib.replace_keys(base, conditioning_dim=8)


@pytest.mark.parametrize("extra, message", [
    (["--set", "small_size=3"], "small_size=3 must divide the image side 8"),
    (["--set", "small_size=8"], "small_size=8 must divide the image side 8 and be smaller"),
    (["--set", "small_size=-2"], "small_size must be >= 0"),
])
def test_bad_small_size_is_one_line_and_writes_nothing(data_dir, tmp_path, extra, message):
    workdir = tmp_path / "work"
    code, _, err = run_main("--data", data_dir, "--workdir", workdir, "--preset", "test",
                            *extra)
    assert code == 1, err
    assert err.startswith("train.py: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err
    assert not workdir.exists()


# --------------------------------------------------------------------------------------------
# Training


def test_train_cli_writes_checkpoints_and_both_terms(run):
    workdir, out = run
    assert "training from scratch: multi-scale 4x4 -> 8x8, row_lstm" in out
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-6")
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints", "best"))
    config, spec = Workdir(workdir).read()
    assert config.model.small_size == SMALL and spec.image_shape == (8, 8, 1)
    train_dir, validation_dir = (os.path.join(workdir, d) for d in ("train", "validation"))
    dims = {"": 64, "small_": SMALL * SMALL, "conditional_": 64 - SMALL * SMALL}
    for logdir, steps in ((train_dir, list(range(1, STEPS + 1))), (validation_dir, [3, 6])):
        series = {}
        for prefix, count in dims.items():
            nats = scalars(logdir, f"{prefix}nll_nats")
            bits = scalars(logdir, f"{prefix}bits_per_dim")
            assert [s for s, _ in nats] == [s for s, _ in bits] == steps, (logdir, prefix)
            series[prefix] = np.array([v for _, v in nats])
            np.testing.assert_allclose([v for _, v in bits],
                                       series[prefix] / (count * math.log(2)), rtol=1e-5)
        np.testing.assert_allclose(series[""], series["small_"] + series["conditional_"],
                                   rtol=1e-5)
        assert (series["small_"] > 0).all() and (series["conditional_"] > 0).all()
        # Both terms fall (the first training value is that of the initial weights).
        assert series["small_"][-1] < series["small_"][0], logdir
        assert series["conditional_"][-1] < series["conditional_"][0], logdir
    # Sample and completion grids of 8x8 images (one row of 4 samples; 3 rows of completions).
    for tag, rows in (("samples", 1), ("completions", 3)):
        events = tensor_values(train_dir, tag)
        assert [step for step, _ in events] == [3, 6]
        width, height, png = events[-1][1]
        picture = tf.io.decode_png(png).numpy()
        assert picture.shape == (int(height), int(width), 1) and int(height) == rows * 9 + 1
    with open(os.path.join(workdir, "eval_validation.json")) as f:
        validation = json.load(f)
    terms = validation["terms"]
    assert validation["nats"] == pytest.approx(terms["small"]["nats"]
                                               + terms["conditional"]["nats"], rel=1e-12)
    assert validation["nats"] == pytest.approx(scalars(validation_dir, "nll_nats")[-1][1],
                                               rel=1e-5)


@pytest.mark.slow  # a training process of its own: about 30 s on 2 busy cores
def test_two_replicas_give_the_same_terms(run, data_dir, tmp_path):
    """The terms are summed over replicas like the total: 2 logical-CPU replicas (a fresh
    process) follow the 1-replica run step by step."""
    workdir = tmp_path / "two"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        ["timeout", "-k", "10", "300", sys.executable, str(ROOT / "train.py"), "--data",
         data_dir, "--workdir", str(workdir), *COMMON, "--set", "cpu_replicas=2",
         "--set", "train_steps=3", "--set", "validation_split=", "--set",
         "image_every_epochs=0"], capture_output=True, text=True, env=env,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 replica(s) x 4 images" in proc.stdout
    for tag in ("nll_nats", "small_nll_nats", "conditional_nll_nats"):
        one = scalars(os.path.join(run[0], "train"), tag)[:3]
        two = scalars(str(workdir / "train"), tag)
        assert [s for s, _ in two] == [s for s, _ in one] == [1, 2, 3]
        np.testing.assert_allclose([v for _, v in two], [v for _, v in one], rtol=2e-4,
                                   err_msg=tag)


def test_checkpoints_hold_every_variable_of_both_stages(run):
    workdir, _ = run
    model = load_model(workdir)
    assert isinstance(model, MultiScalePixelRNN) and model.small_size == SMALL
    names = model_variables(model)
    assert len(names) == len(model.variables)
    for expected in ("small/block_0/rnn/state_kernel", "full/block_0/rnn/state_kernel",
                     "encoder_0/kernel", "encoder_1/kernel", "upsample/kernel",
                     "condition_0/kernel"):
        assert expected in names, sorted(names)
    keys = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    ).get_variable_to_shape_map()
    for name in names:
        assert f"model_variables/{name.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE" in keys
    # The latest checkpoint holds the final weights (model.keras), those of step 3 others.
    final = keras.saving.load_model(os.path.join(workdir, "model.keras"))  # safe_mode on
    assert isinstance(final, MultiScalePixelRNN)
    for a, b in zip(model.variables, final.variables):
        assert a.path.split("/", 1)[1] == b.path.split("/", 1)[1]
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    earlier = load_model(workdir, os.path.join(workdir, "checkpoints", "ckpt-3"))
    for prefix in ("small/", "full/", "multi_scale"):
        assert any(not np.array_equal(a.numpy(), c.numpy())
                   for a, c in zip(model.variables, earlier.variables)
                   if a.path.startswith(prefix)), prefix
    assert isinstance(load_model(workdir, "best"), MultiScalePixelRNN)


def test_resuming_from_a_checkpoint_reaches_the_same_weights(run, data_dir, tmp_path):
    """A work directory holding only the straight run's step-3 checkpoint, resumed to step 6,
    ends with the straight run's weights: model, optimizer state and data position restored."""
    straight_dir, _ = run
    workdir = tmp_path / "work"
    (workdir / "checkpoints").mkdir(parents=True)
    shutil.copy(os.path.join(straight_dir, "config.json"), workdir)
    for name in os.listdir(os.path.join(straight_dir, "checkpoints")):
        if name.startswith("ckpt-3."):
            shutil.copy(os.path.join(straight_dir, "checkpoints", name), workdir / "checkpoints")
    (workdir / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-3"\n')
    halfway = load_model(str(workdir))
    config, _ = Workdir(str(workdir)).read()
    with pytest.raises(TrainingError, match=r"small_size=4 \(now 2\)"):
        train_and_evaluate(config_lib.replace_keys(config, small_size=2), str(workdir),
                                    data_dir)
    # Validation and images do not touch the weights: leave them out to save time.
    quick = config_lib.replace_keys(config, image_every_epochs=0, validation_split="")
    assert train_and_evaluate(quick, str(workdir), data_dir)["step"] == STEPS
    resumed, straight = load_model(str(workdir)), load_model(straight_dir)
    assert len(resumed.variables) == len(straight.variables)
    for a, b in zip(resumed.variables, straight.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6, err_msg=a.path)
    # Not vacuous: every part of the model moved on after the resume.
    for prefix in ("small/", "full/", "multi_scale"):
        assert any(not np.allclose(a.numpy(), b.numpy())
                   for a, b in zip(resumed.variables, halfway.variables)
                   if a.path.startswith(prefix)), prefix


# --------------------------------------------------------------------------------------------
# Evaluation and export


def test_evaluate_reports_both_terms_equal_to_an_independent_computation(run, data_dir):
    workdir, _ = run
    code, out, err = run_main("--workdir", workdir, "--evaluate", "test")
    assert code == 0, err
    with open(os.path.join(workdir, "eval_test.json")) as f:
        result = json.load(f)
    terms = result["terms"]
    assert result["split"] == "test" and result["step"] == STEPS
    assert {name: term["dims"] for name, term in terms.items()} == {"small": 16,
                                                                     "conditional": 48}
    assert result["nats"] == pytest.approx(terms["small"]["nats"]
                                           + terms["conditional"]["nats"], rel=1e-12)

    # Independently: the logits of the final model (model.keras), the likelihood in numpy.
    images = read_split(data_dir, "test")
    assert result["num_images"] == len(images) == 24
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    small_logits, full_logits = (t.numpy() for t in model(images.astype(np.int32)))
    small_images = images[:, ::2, ::2]  # the strided pick, 8 -> 4
    small = log_softmax_picked(small_logits, small_images).sum(axis=(1, 2, 3))
    on_grid = np.zeros((8, 8, 1), bool)
    on_grid[::2, ::2] = True
    conditional = np.where(on_grid, 0.0, log_softmax_picked(full_logits, images)).sum(
        axis=(1, 2, 3))
    assert terms["small"]["nats"] == pytest.approx(-small.mean(), rel=1e-5)
    assert terms["conditional"]["nats"] == pytest.approx(-conditional.mean(), rel=1e-5)
    assert result["nats"] == pytest.approx(-(small + conditional).mean(), rel=1e-5)
    assert result["nats"] == pytest.approx(
        -model.log_prob(images.astype(np.int32)).numpy().mean(), rel=1e-5)
    for name, dims in (("small", 16), ("conditional", 48)):
        assert terms[name]["bits_per_dim"] == pytest.approx(
            terms[name]["nats"] / (dims * math.log(2)), rel=1e-9)
    assert result["bits_per_dim"] == pytest.approx(result["nats"] / (64 * math.log(2)),
                                                   rel=1e-9)

    lines = out.splitlines()
    assert lines[0].startswith(f"test: {result['nats']:.4f} nats per image, "
                               f"{result['bits_per_dim']:.4f} bits/dim over 24 images (step 6)")
    assert lines[1] == (f"  small (stage 1, the 4x4 image): {terms['small']['nats']:.4f} nats "
                        f"per image, {terms['small']['bits_per_dim']:.4f} bits/dim over its 16 "
                        "sub-pixels")
    assert lines[2].startswith(f"  conditional (stage 2, the other pixels given it): "
                               f"{terms['conditional']['nats']:.4f} nats per image")
    assert lines[3] == "  total = small + conditional: the exact -log p(x)"


def test_export_of_the_workdir_scores_like_the_model(run, tmp_path):
    workdir, _ = run
    base = tmp_path / "exports"
    # --no-verify: this test checks the scores itself (export.py's check of a Multi-Scale
    # export runs in test_multiscale_export.py).
    code = export_cli.main(["--workdir", workdir, "--export-base", str(base),
                            "--max-batch", "8", "--no-examples", "--no-verify"])
    assert code == 0 and os.listdir(base) == ["1"]
    metadata = serving.read_metadata(base / "1")
    assert metadata["model"] == "MultiScalePixelRNN" and metadata["small_size"] == SMALL
    signatures = tf.saved_model.load(str(base / "1")).signatures
    assert set(serving.SIGNATURES) <= set(signatures)

    model = load_model(workdir)
    images = np.random.default_rng(0).integers(0, 17, (3, 8, 8, 1)).astype(np.uint8)
    scored = signatures["serving_default"](images=tf.constant(images))
    want = model.log_prob(images.astype(np.int32)).numpy()
    np.testing.assert_allclose(scored["log_prob"].numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(scored["pixel_log_prob"].numpy().sum(axis=(1, 2, 3)), want,
                               rtol=1e-5)
    np.testing.assert_allclose(scored["bits_per_dim"].numpy(), -want / (64 * math.log(2)),
                               rtol=1e-5)
    scalars_ = dict(seed=tf.constant(7, tf.int64), temperature=tf.constant(1.0))
    drawn = signatures["sample"](num_samples=tf.constant(2), **scalars_)["images"].numpy()
    assert drawn.shape == (2, 8, 8, 1) and drawn.dtype == np.uint8 and drawn.max() < 17
    known = 8 * 4  # the top half
    completed = signatures["complete"](images=tf.constant(images), known_pixels=tf.constant(
        known), **scalars_)["images"].numpy()
    assert completed.shape == images.shape and completed.max() < 17
    np.testing.assert_array_equal(completed[:, :4], images[:, :4])
    # Stage 1 drew the grid pixels of the bottom half, and stage 2 the others.
    assert not np.array_equal(completed[:, 4:], images[:, 4:])
