"""benchmarks/equal_time.py run for real: two tiny train.py runs side by side, then evaluated."""

import json
import math
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from cli_fixtures import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "equal_time.py"
TIMEOUT = 300  # seconds, for the whole script (it runs train.py processes)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from data_prep.convert import convert

    out = tmp_path_factory.mktemp("data") / "digits"
    convert(["digits"], str(out), val_fraction=0.1, test_fraction=0.1, seed=0)
    return str(out)


def run_script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    command = ["timeout", "-k", "10", str(TIMEOUT), sys.executable, str(SCRIPT),
               *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=TIMEOUT + 30)


def table_rows(stdout):
    """{run name: [cells]} of the markdown table printed by the script."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("run", "---"):
            rows[cells[0]] = cells
    return rows


def processes_mentioning(text):
    """PIDs of live processes whose command line contains `text`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry))
    return pids


@pytest.mark.slow  # trains for real for ~40 s, then evaluates: `make test-all`
def test_two_runs_share_the_budget_and_are_evaluated(digits, tmp_path):
    out = tmp_path / "bench"
    minutes = 0.6
    # "short" ends on its own after the test preset's 6 steps; "long" is stopped by SIGTERM.
    proc = run_script("--data", digits, "--out", out, "--minutes", minutes,
                      "--split", "validation", "--run", "short", "test",
                      "--run", "long", "test", "hidden_dim=2", "train_steps=100000")
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = table_rows(proc.stdout)
    assert set(rows) == {"short", "long"}, proc.stdout
    steps = {name: int(cells[3]) for name, cells in rows.items()}
    assert 0 < steps["short"] <= 6 and steps["long"] > 0

    with open(out / "results.json") as f:
        results = json.load(f)
    assert results["split"] == "validation" and results["minutes"] == minutes
    assert [r["name"] for r in results["runs"]] == ["short", "long"]
    from pixelrnn_tf import data

    num_validation = data.read_manifest(digits).num_examples("validation")
    for r in results["runs"]:
        workdir = out / r["name"]
        with open(workdir / "eval_validation.json") as f:
            saved = json.load(f)
        assert saved["split"] == "validation" and saved["num_images"] == num_validation
        assert r["nats"] == pytest.approx(saved["nats"])
        assert r["bits_per_dim"] == pytest.approx(saved["bits_per_dim"])
        assert r["bits_per_dim"] == pytest.approx(r["nats"] / (8 * 8 * math.log(2)))
        # The latest checkpoint of the run was the one evaluated.
        assert r["step"] == saved["step"] == steps[r["name"]]
        latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
        assert latest.endswith(f"ckpt-{r['step']}")
        assert r["images_seen"] == 8 * r["step"]  # the test preset's batch size
        assert rows[r["name"]][6] == f"{r['nats']:.2f}"
        with open(workdir / "config.json") as f:
            hidden_dim = json.load(f)["config"]["hidden_dim"]
        assert hidden_dim == (2 if r["name"] == "long" else 4)  # each run's own settings
    walls = {r["name"]: r["wall_seconds"] for r in results["runs"]}
    assert walls["long"] >= 60 * minutes  # stopped at the deadline, not before
    assert not processes_mentioning(str(out))


@pytest.mark.slow
def test_a_failing_run_stops_the_others_and_exits_1(digits, tmp_path):
    out = tmp_path / "bench"
    try:
        proc = run_script("--data", digits, "--out", out, "--minutes", 0.15,
                          "--run", "bad", "test", "hidden_dim=0",
                          "--run", "long", "test", "train_steps=100000")
        assert proc.returncode == 1
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and "run bad exited with status" in err[0], proc.stderr
        if "run bad exited with status 1;" in err[0]:  # not SIGTERMed while still starting
            assert "hidden_dim" in (out / "bad.log").read_text()
        assert not (out / "results.json").exists()
        assert not processes_mentioning(str(out))  # "long" was stopped, not left running
    finally:
        for pid in processes_mentioning(str(out)):
            os.kill(pid, signal.SIGKILL)


def load_equal_time():
    return load_script("benchmarks/equal_time.py")


def usage_error(capsys, *args):
    with pytest.raises(SystemExit) as exit_:
        load_equal_time().main([str(a) for a in args])
    return exit_.value.code, capsys.readouterr().err


def test_an_existing_out_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    code, err = usage_error(capsys, "--data", tmp_path, "--out", out, "--minutes", 1,
                            "--run", "a", "test")
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "exists" in err
    assert sorted(os.listdir(out)) == ["keep.txt"]


@pytest.mark.parametrize("minutes", ["0", "-1"])
def test_a_budget_that_is_not_positive_is_refused(tmp_path, capsys, minutes):
    out = tmp_path / "bench"
    code, err = usage_error(capsys, "--data", tmp_path, "--out", out, "--minutes", minutes,
                            "--run", "a", "test")
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "--minutes must be positive" in err
    assert not out.exists()


def test_a_run_without_a_preset_is_refused(tmp_path, capsys):
    code, err = usage_error(capsys, "--data", tmp_path, "--out", tmp_path / "bench",
                            "--minutes", 1, "--run", "lonely")
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "NAME PRESET" in err
