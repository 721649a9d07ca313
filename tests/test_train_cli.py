"""`train.py` as a user runs it: errors, 1 vs 2 replicas, kill -9 and SIGTERM resume."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf.cli import train
from pixelrnn_tf.config import PRESETS, TrainConfig, get_preset, to_dict
from pixelrnn_tf.workdir import DataSpec, Workdir, load_model

from cli_fixtures import run_main

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 600


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from data_prep.convert import convert

    out = tmp_path_factory.mktemp("data") / "digits"
    convert(["digits"], str(out), val_fraction=0.1, test_fraction=0.1, seed=0)
    return str(out)


def main_in_process(capsys, *args):
    return run_main(train.main, args, capsys)


def scalar_series(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]


def test_help_documents_every_key_and_preset(capsys):
    code, out, _ = main_in_process(capsys, "--help")
    assert code == 0
    for key in to_dict(TrainConfig()):
        assert f"\n  {key} (" in out, key
    for name in PRESETS:
        assert f"\n  {name}: " in out, name
    assert "--evaluate SPLIT" in out and "TF_CONFIG" in out and "tensorboard --logdir" in out


@pytest.mark.parametrize("args", [["--data", "x"], ["--workdir", "w", "--bogus"],
                                  ["--workdir", "w", "--stop-at-step", "0"]])
def test_bad_flags_exit_2(capsys, args):
    code, _, err = main_in_process(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "error:" in err


def _one_line_error(code, err, message):
    assert code == 1, err
    assert err.startswith("train.py: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and message in err, err


@pytest.mark.parametrize("extra, message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--set", "no_such_key=1"], "unknown config key 'no_such_key'"),
    (["--set", "hidden_dim=big"], "hidden_dim='big': expected an integer"),
    (["--set", "residual=maybe"], "residual='maybe': expected true or false"),
    (["--set", "hidden_dim"], "expected key=value"),
    (["--set", "num_layers=0"], "num_layers must be >= 1"),
    (["--set", "architecture=gru"], "architecture='gru' is not one of"),
])
def test_bad_config_is_one_line(capsys, tmp_path, digits, extra, message):
    workdir = tmp_path / "work"
    code, _, err = main_in_process(capsys, "--data", digits, "--workdir", workdir,
                                   "--preset", "test", *extra)
    _one_line_error(code, err, message)
    assert not workdir.exists()


def test_bad_data_is_one_line(capsys, tmp_path, digits):
    workdir = tmp_path / "work"
    code, _, err = main_in_process(capsys, "--data", tmp_path / "missing", "--workdir",
                                   workdir, "--preset", "test")
    _one_line_error(code, err, "manifest.json: not found (no such directory)")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text('{"format": "something else"}')
    code, _, err = main_in_process(capsys, "--data", corrupt, "--workdir", workdir,
                                   "--preset", "test")
    _one_line_error(code, err, "invalid manifest")
    # A shard listed in the manifest but gone.
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(digits):
        if not name.startswith("train-"):
            (broken / name).write_bytes((pathlib.Path(digits) / name).read_bytes())
    code, _, err = main_in_process(capsys, "--data", broken, "--workdir", workdir,
                                   "--preset", "test")
    _one_line_error(code, err, "shard listed in the manifest is missing")
    assert not workdir.exists()


def test_resume_with_other_data_or_model_is_one_line(capsys, tmp_path, digits):
    workdir = tmp_path / "work"
    other = DataSpec(digits, "mnist", (28, 28, 1), 2)
    Workdir(str(workdir)).write(get_preset("test"), other)
    code, _, err = main_in_process(capsys, "--data", digits, "--workdir", workdir)
    _one_line_error(code, err, "has 8x8x1 images with 17 levels but the model in")
    code, _, err = main_in_process(capsys, "--data", digits, "--workdir", workdir,
                                   "--set", "num_layers=3")
    _one_line_error(code, err, "num_layers=1 (now 3)")
    right = DataSpec(digits, "digits", (8, 8, 1), 17)
    Workdir(str(workdir)).write(get_preset("test"), right)
    code, _, err = main_in_process(capsys, "--workdir", workdir, "--evaluate", "test")
    _one_line_error(code, err, "no checkpoint; train first")
    code, _, err = main_in_process(capsys, "--workdir", workdir, "--evaluate", "test",
                                   "--preset", "demo")
    _one_line_error(code, err, "--preset demo is a training config; with --evaluate")
    code, _, err = main_in_process(capsys, "--workdir", tmp_path / "empty", "--evaluate",
                                   "test")
    _one_line_error(code, err, "no config.json; train first")
    code, _, err = main_in_process(capsys, "--workdir", workdir, "--checkpoint", "best")
    _one_line_error(code, err, "--checkpoint only applies to --evaluate")
    code, _, err = main_in_process(capsys, "--workdir", workdir, "--evaluate", "test",
                                   "--stop-at-step", "5")
    _one_line_error(code, err, "--stop-at-step only applies to training")


def test_one_and_two_replicas_follow_the_same_trajectory(capsys, tmp_path, digits):
    """Same global batch and seed: 1 replica (XLA off by default) and 2 logical-CPU replicas
    (XLA on by default) give the same losses; evaluation is the same on 1 and 2 replicas."""
    # Validation on the whole split with a partial last batch: 180 = 12 x 14 + 12, at the
    # last step only (each one on the 2 replicas takes seconds).
    common = ["--data", digits, "--preset", "test", "--set", "train_steps=9",
              "--set", "image_every_epochs=0", "--set", "clip_norm=0.5",
              "--set", "eval_batches=0", "--set", "eval_batch_size=14",
              "--set", "eval_every_epochs=100"]
    # The 2 replicas need a fresh process (cpu_replicas): it runs while this one trains.
    two = _popen_train(*common, "--workdir", tmp_path / "two", "--set", "cpu_replicas=2")
    try:
        code, out, _ = main_in_process(capsys, *common, "--workdir", tmp_path / "one")
        two_out, two_err = two.communicate(timeout=TIMEOUT)
    finally:
        if two.poll() is None:
            two.kill()
            two.communicate()
    assert code == 0 and "1 replica(s) x 8 images, jit_compile=off" in out
    assert two.returncode == 0, two_err[-3000:]
    assert "2 replica(s) x 4 images, jit_compile=on" in two_out
    losses_one = scalar_series(tmp_path / "one" / "train", "nll_nats")
    losses_two = scalar_series(tmp_path / "two" / "train", "nll_nats")
    assert [s for s, _ in losses_one] == [s for s, _ in losses_two] == list(range(1, 10))
    np.testing.assert_allclose([v for _, v in losses_one], [v for _, v in losses_two],
                               rtol=2e-4)
    assert losses_one[-1][1] < losses_one[0][1]  # it learns
    with open(tmp_path / "two" / "eval_validation.json") as f:
        two_replicas = json.load(f)  # evaluated by the 2-replica run at its last step
    code, out, err = main_in_process(capsys, "--workdir", tmp_path / "two", "--evaluate",
                                   "validation", "--set", "cpu_replicas=0")
    assert code == 0 and "nats per image" in out, err
    with open(tmp_path / "two" / "eval_validation.json") as f:
        one_replica = json.load(f)
    assert two_replicas["num_images"] == one_replica["num_images"] == 180
    assert two_replicas["step"] == one_replica["step"] == 9
    assert two_replicas["nats"] == pytest.approx(one_replica["nats"], rel=1e-5)


def _popen_train(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _wait_for(path, proc, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"train.py ended early: {proc.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear")
        time.sleep(0.01)


@pytest.mark.slow  # three training runs: about a minute on 2 idle cores
def test_kill_9_then_rerun_resumes_to_the_same_weights(capsys, tmp_path, digits):
    # Epochs of 7 steps and checkpoints every 10: the kill lands mid-epoch.
    command = ["--data", digits, "--preset", "test", "--set", "train_steps=150",
               "--set", "steps_per_epoch=7", "--set", "checkpoint_every_steps=10",
               "--set", "eval_every_epochs=100", "--set", "image_every_epochs=0",
               "--set", "log_every_steps=10"]
    straight_dir = str(tmp_path / "straight")
    code, _, err = main_in_process(capsys, *command, "--workdir", straight_dir)
    assert code == 0, err

    workdir = tmp_path / "killed"
    proc = _popen_train(*command, "--workdir", workdir)
    _wait_for(workdir / "checkpoints" / "checkpoint", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    last = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    killed_at = int(last.rsplit("-", 1)[1])
    assert 10 <= killed_at < 150 and killed_at % 10 == 0

    at_kill = load_model(str(workdir), last)  # pruned by keep_checkpoints later
    code, out, err = main_in_process(capsys, *command, "--workdir", workdir)  # the same command
    assert code == 0, err
    assert f"resuming from {last} (step {killed_at})" in out
    straight = load_model(straight_dir)
    again = load_model(str(workdir))
    # Both runs take the same steps on the same batches with the same shapes in one process
    # kind on one machine, so the weights should agree bit for bit; 1e-6 forgives only a
    # rounding difference, while one step more or less (a batch skipped or repeated on resume)
    # moves weights by ~the learning rate, 1e-2 in the test preset.
    for a, b in zip(straight.variables, again.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6, err_msg=a.path)
    # Not vacuous: the weights moved away from those of the checkpoint it resumed from.
    assert any(not np.allclose(a.numpy(), b.numpy())
               for a, b in zip(again.variables, at_kill.variables))


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, digits):
    workdir = tmp_path / "work"
    proc = _popen_train("--data", digits, "--workdir", workdir, "--preset", "test",
                        "--set", "train_steps=100000", "--set", "checkpoint_every_steps=100000",
                        "--set", "image_every_epochs=0")
    _wait_for(workdir / "checkpoints" / "best" / "checkpoint", proc)  # after step 3
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == train.EXIT_PREEMPTED, err[-3000:]
    last = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    step = int(last.rsplit("-", 1)[1])
    assert step >= 3
    assert f"SIGTERM: saved the checkpoint of step {step}" in err
    assert "Traceback" not in err
    model = load_model(str(workdir), last)
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)
