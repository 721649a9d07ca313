"""The training library in-process: work directory, TensorBoard, checkpoints, evaluation."""

import json
import math
import os
import re
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pixelrnn_tf import config as config_lib
from pixelrnn_tf.data import DataError
from pixelrnn_tf.distribution import Distribution, epoch_seed, use_jit
from pixelrnn_tf.evaluation import evaluate
from pixelrnn_tf.images import image_grid
from pixelrnn_tf.steps import make_learning_rate
from pixelrnn_tf.trainer import Trainer, train_and_evaluate
from pixelrnn_tf.workdir import TrainingError, Workdir, build_model, load_model, model_variables

from export_fixtures import run_process


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from data_prep.convert import convert

    out = tmp_path_factory.mktemp("data") / "digits"
    convert(["digits"], str(out), val_fraction=0.1, test_fraction=0.1, seed=0)
    return str(out)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """A `test` preset run: 6 steps, 2 epochs of 3 steps, validation and images every epoch."""
    workdir = str(tmp_path_factory.mktemp("run") / "work")
    config = config_lib.get_preset("test")
    results = train_and_evaluate(config, workdir, digits)
    return workdir, config, results


def read_split(data_dir, split):
    """Images of a split read straight from the TFRecords (not through pixelrnn_tf.data)."""
    with open(os.path.join(data_dir, "manifest.json")) as f:
        manifest = json.load(f)
    shape = manifest["image_shape"]
    files = [os.path.join(data_dir, s["file"]) for s in manifest["splits"][split]["shards"]]
    images = []
    for record in tf.data.TFRecordDataset(files):
        example = tf.train.Example.FromString(record.numpy())
        raw = example.features.feature["image"].bytes_list.value[0]
        images.append(np.frombuffer(raw, np.uint8).reshape(shape))
    return np.stack(images)


def tensor_events(logdir, tag):
    accumulator = EventAccumulator(logdir, size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator.Tensors(tag)


def test_workdir_layout(trained):
    workdir, config, results = trained
    assert results["step"] == config.optimization.train_steps == 6
    names = set(os.listdir(workdir))
    assert {"config.json", "checkpoints", "model.keras", "train", "validation",
            "eval_validation.json"} <= names
    assert not [n for n in names if "tmp" in n or "partial" in n]
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-6")
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints", "best")) is not None
    saved, spec = Workdir(workdir).read()
    assert saved == config
    assert (spec.image_shape, spec.levels) == ((8, 8, 1), 17)
    with open(os.path.join(workdir, "eval_validation.json")) as f:
        evaluation = json.load(f)
    assert evaluation["nats"] == pytest.approx(results["validation"])
    assert evaluation["num_images"] == config.runtime.eval_batches * config.runtime.eval_batch_size


def test_checkpoint_holds_every_model_weight(trained):
    """tf.train.Checkpoint(model=model) alone misses the blocks kept in Python lists."""
    workdir, _, _ = trained
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    model = load_model(workdir)
    for name in model_variables(model):
        escaped = name.replace("/", ".S")
        assert f"model_variables/{escaped}/.ATTRIBUTES/VARIABLE_VALUE" in keys, name


def test_load_model_restores_the_final_weights(trained):
    workdir, config, _ = trained
    restored = load_model(workdir)
    final = keras.saving.load_model(os.path.join(workdir, "model.keras"))  # safe_mode on
    fresh = build_model(config, Workdir(workdir).read()[1])
    assert len(restored.variables) == len(final.variables)
    for a, b in zip(restored.variables, final.variables):
        assert a.path.split("/", 1)[1] == b.path.split("/", 1)[1]
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(not np.array_equal(a.numpy(), c.numpy())
               for a, c in zip(restored.variables, fresh.variables))
    best = load_model(workdir, "best")
    assert isinstance(best, type(restored))
    with pytest.raises(TrainingError, match="no such checkpoint"):
        load_model(workdir, os.path.join(workdir, "checkpoints", "ckpt-999"))


def test_tensorboard_scalars_images_and_hparams(trained):
    workdir, config, _ = trained
    train_dir, validation_dir = os.path.join(workdir, "train"), os.path.join(workdir, "validation")
    steps = list(range(1, config.optimization.train_steps + 1))
    for tag in ("nll_nats", "bits_per_dim", "learning_rate", "gradient_norm",
                "images_per_second"):
        events = tensor_events(train_dir, tag)
        assert [e.step for e in events] == steps, tag
        assert all(math.isfinite(tf.make_ndarray(e.tensor_proto)) for e in events)
    nats = [float(tf.make_ndarray(e.tensor_proto)) for e in tensor_events(train_dir, "nll_nats")]
    bits = [float(tf.make_ndarray(e.tensor_proto))
            for e in tensor_events(train_dir, "bits_per_dim")]
    np.testing.assert_allclose(bits, np.array(nats) / (64 * math.log(2)), rtol=1e-5)
    rates = [float(tf.make_ndarray(e.tensor_proto))
             for e in tensor_events(train_dir, "learning_rate")]
    np.testing.assert_allclose(rates, config.optimization.learning_rate, rtol=1e-6)
    for tag in ("nll_nats", "bits_per_dim"):
        assert [e.step for e in tensor_events(validation_dir, tag)] == [3, 6]
    # tf.summary.image stores [width, height, PNG...] strings as a tensor summary.
    for tag, rows in (("samples", 1), ("completions", 3)):
        events = tensor_events(train_dir, tag)
        assert [e.step for e in events] == [3, 6]
        width, height, png = tf.make_ndarray(events[-1].tensor_proto)
        picture = tf.io.decode_png(png).numpy()
        assert picture.shape == (int(height), int(width), 1)
        assert picture.shape[0] == rows * 9 + 1
    assert tensor_events(train_dir, "_hparams_/session_start_info")


def test_evaluate_equals_an_independent_computation(trained, digits):
    workdir, _, _ = trained
    result = evaluate(workdir, digits, "test")
    images = read_split(digits, "test")
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    logits = model(images.astype(np.int32)).numpy().astype(np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    picked = np.take_along_axis(log_probs, images[..., None].astype(np.int64), -1)
    nats = -picked.sum(axis=(1, 2, 3, 4)).mean()
    assert result["num_images"] == len(images) == 180
    assert result["nats"] == pytest.approx(nats, rel=1e-5)
    assert result["bits_per_dim"] == pytest.approx(nats / (64 * math.log(2)), rel=1e-5)
    with open(os.path.join(workdir, "eval_test.json")) as f:
        written = json.load(f)
    assert written["split"] == "test" and written["nats"] == pytest.approx(result["nats"])
    assert written["step"] == 6


def test_rerun_resumes_and_refuses_incompatible_settings(trained, digits, capsys):
    workdir, config, _ = trained
    longer = config_lib.replace_keys(config, train_steps=8, image_every_epochs=0, jit_compile="off")
    assert train_and_evaluate(longer, workdir, digits)["step"] == 8
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-8")
    # config.json is the new config plus the record of what changed at which step.
    assert "settings changed at step 6: train_steps 6 -> 8, image_every_epochs " \
        f"{config.runtime.image_every_epochs} -> 0" in capsys.readouterr().out
    assert Workdir(workdir).read()[0] == longer
    runtime = config.runtime
    expected = [{"step": 6, "changed": {"train_steps": [6, 8],
                                        "image_every_epochs": [runtime.image_every_epochs, 0],
                                        "jit_compile": [runtime.jit_compile, "off"]}}]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["changes"] == expected
    train_and_evaluate(longer, workdir, digits)  # same settings: nothing to record
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["changes"] == expected
    with pytest.raises(TrainingError, match=r"hidden_dim=4 \(now 8\)"):
        train_and_evaluate(config_lib.replace_keys(longer, hidden_dim=8), workdir, digits)


def test_resume_refuses_data_of_another_shape(trained, tmp_path):
    from data_prep.convert import convert

    workdir, config, _ = trained
    npz = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, train=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8),
             validation=rng.integers(0, 256, (8, 6, 6), dtype=np.uint8))
    other = tmp_path / "small"
    convert([f"npz:{npz}"], str(other))
    with pytest.raises(TrainingError, match="6x6x1 images with 256 levels.*8x8x1"):
        train_and_evaluate(config, workdir, str(other))


def test_missing_or_corrupt_data(tmp_path):
    config = config_lib.get_preset("test")
    with pytest.raises(DataError, match="manifest.json: not found"):
        train_and_evaluate(config, str(tmp_path / "work"), str(tmp_path / "none"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        train_and_evaluate(config, str(tmp_path / "work"), str(bad))
    assert not (tmp_path / "work").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(trained, digits, tmp_path):
    workdir = str(tmp_path / "work")
    shutil.copytree(trained[0], workdir)
    os.remove(os.path.join(workdir, "model.keras"))
    config, _ = Workdir(workdir).read()
    last = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    # A constant learning rate is restored with the checkpoint: the new one must win.
    exploding = config_lib.replace_keys(config, train_steps=100, learning_rate=1e30, clip_norm=0.0,
                                    jit_compile="off")
    with pytest.raises(TrainingError, match="non-finite loss") as error:
        train_and_evaluate(exploding, workdir, digits)
    match = re.search(r"at step (\d+): training stopped; the last good checkpoint is (\S+) ",
                      str(error.value))
    bad_step, good = int(match[1]), match[2]
    assert good == tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    assert int(last.rsplit("-", 1)[1]) <= int(good.rsplit("-", 1)[1]) < bad_step
    assert not os.path.exists(os.path.join(workdir, "model.keras"))
    model = load_model(workdir)
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)


def test_train_on_joined_splits_and_stop_at_a_step(digits, tmp_path, capsys):
    """A final model's run: train+validation, no validation, stopped early then resumed to
    the same weights as a run straight through (the schedule runs over train_steps)."""
    config = config_lib.replace_keys(
        config_lib.get_preset("test"), train_split="train+validation", validation_split="",
        steps_per_epoch=0, batch_size=64, train_steps=5, image_every_epochs=0)
    straight = str(tmp_path / "straight")
    train_and_evaluate(config, straight, digits)
    stopped = str(tmp_path / "stopped")
    assert train_and_evaluate(config, stopped, digits, stop_at_step=3)["step"] == 3
    assert "stopped at step 3 of 5: rerun to continue" in capsys.readouterr().out
    assert tf.train.latest_checkpoint(os.path.join(stopped, "checkpoints")).endswith("ckpt-3")
    trainer = Trainer(config, stopped, digits)
    num_images = read_split(digits, "train").shape[0] + read_split(digits, "validation").shape[0]
    assert trainer.steps_per_epoch == num_images // 64  # both splits make the epoch
    assert trainer.run()["step"] == 5
    for a, b in zip(load_model(straight).weights, load_model(stopped).weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert not os.path.exists(os.path.join(stopped, "eval_validation.json"))
    assert not os.path.exists(os.path.join(stopped, "validation"))  # no empty TensorBoard run


def test_learning_rate_schedules():
    base = config_lib.get_preset("test")
    cosine = make_learning_rate(config_lib.replace_keys(
        base, lr_schedule="cosine", learning_rate=0.01, train_steps=100, warmup_steps=10,
        final_lr_fraction=0.1))
    assert float(cosine(0)) == pytest.approx(0.0)
    assert float(cosine(10)) == pytest.approx(0.01)
    assert float(cosine(100)) == pytest.approx(0.001)
    exponential = make_learning_rate(config_lib.replace_keys(
        base, lr_schedule="exponential", learning_rate=0.01, train_steps=100,
        final_lr_fraction=0.25))
    assert float(exponential(50)) == pytest.approx(0.005)
    assert float(exponential(100)) == pytest.approx(0.0025)


def test_epoch_seeds_depend_on_seed_and_epoch_only():
    assert epoch_seed(0, 3) == epoch_seed(0, 3)
    seeds = {epoch_seed(s, e) for s in range(3) for e in range(50)}
    assert len(seeds) == 150


def test_image_grid():
    images = np.arange(2 * 2 * 3 * 1).reshape(2, 2, 3, 1) % 5
    grid = image_grid(images, levels=5, columns=2)
    assert grid.shape == (1 + 3, 1 + 2 * 4, 1) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[1:3, 1:4, 0], images[0, ..., 0] * 255 // 4)
    np.testing.assert_array_equal(grid[1:3, 5:8, 0], images[1, ..., 0] * 255 // 4)
    assert (grid[0] == 128).all() and (grid[:, 4] == 128).all()


def test_jit_auto_is_on_for_recurrent_layers_with_several_local_replicas():
    class Strategy:
        def __init__(self, replicas):
            self.num_replicas_in_sync = replicas

    one, two = (Distribution(Strategy(n), True, 0, 1) for n in (1, 2))
    workers = Distribution(Strategy(2), True, 0, 2)
    test = config_lib.get_preset("test")
    assert use_jit(test, two)
    assert not use_jit(test, one) and not use_jit(test, workers)
    assert not use_jit(config_lib.replace_keys(test, architecture="pixelcnn"), two)
    assert use_jit(config_lib.replace_keys(test, jit_compile="on"), one)
    assert not use_jit(config_lib.replace_keys(test, jit_compile="off"), two)


@pytest.mark.parametrize("user_setting, allocator", [(None, "bfc"), ("false", "default")])
def test_importing_the_package_selects_the_bfc_cpu_allocator(user_setting, allocator, tmp_path):
    """Imported before any TF op, pixelrnn_tf makes TF's CPU allocator the BFC allocator (it
    keeps freed memory: without it, a process that ran the Trainer page-faulted every step,
    issue 20); a TF_CPU_ALLOCATOR_USE_BFC set by the user wins. Only the BFC allocator keeps
    the statistics get_memory_info reads. A fresh process, whose environment lacks the value
    this process's own import of pixelrnn_tf set."""
    code = ("import pixelrnn_tf, tensorflow as tf\n"
            "tf.reduce_sum(tf.ones([256, 256])).numpy()\n"
            "try:\n"
            "    print('bfc' if tf.config.experimental.get_memory_info('CPU:0')['peak'] > 0 "
            "else 'empty')\n"
            "except ValueError:\n"
            "    print('default')\n")
    proc = run_process([sys.executable, "-c", code], tmp_path,
                       env_changes={"TF_CPU_ALLOCATOR_USE_BFC": user_setting})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [allocator]
