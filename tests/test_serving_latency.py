"""benchmarks/serving_latency.py: its argument and export errors (one line, no traceback), and
(slow) a real run with a short soak on a small export: every bad request rejected with
InvalidArgumentError, no good request failed, the serving process alive to the end."""

import json
import sys

import pytest
import tensorflow as tf

from pixelrnn_tf import PixelRNN, serving

from cli_fixtures import ROOT, load_script, run_main
from export_fixtures import randomize_weights, run_process

SCRIPT = ROOT / "benchmarks" / "serving_latency.py"
PROG = "serving_latency.py"


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/serving_latency.py")


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "argument --threads: expected a positive integer, got 0"),
    (["--soak", "-1"], "argument --soak: expected an integer >= 0, got '-1'"),
    (["--batch-sizes", "1,0"], "argument --batch-sizes: expected comma-separated integers"),
])
def test_bad_flags(bench, tmp_path, capsys, args, message):
    code, out, err = run_main(bench.main, [tmp_path, *args], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"{PROG}: error: {message}") and err.count("\n") == 1, err


def test_exports_it_cannot_benchmark(bench, tmp_path, capsys):
    code, _, err = run_main(bench.main, [tmp_path / "missing"], capsys)
    assert code == 1 and "no saved_model.pb" in err and err.count("\n") == 1, err
    (tmp_path / "saved_model.pb").write_bytes(b"")
    code, _, err = run_main(bench.main, [tmp_path], capsys)
    assert code == 1 and f"no {serving.METADATA_PATH}" in err and err.count("\n") == 1, err
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / serving.METADATA_PATH).write_text(json.dumps({"format":
                                                              serving.METADATA_FORMAT}))
    code, _, err = run_main(bench.main, [tmp_path], capsys)
    assert code == 1 and "no warm-up records" in err and "--no-warmup" in err, err
    assert err.count("\n") == 1, err


def table_rows(text, heading):
    """The rows (lists of cells) of the markdown table under `heading`."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_benchmark_with_a_short_soak(tmp_path):
    tf.keras.utils.set_random_seed(0)
    model = PixelRNN("diagonal_bilstm", image_shape=(4, 5, 1), levels=3, num_layers=1,
                     hidden_dim=4, output_dim=8, first_kernel=3)
    model.build()
    export_dir = tmp_path / "1"
    serving.write_saved_model(randomize_weights(model), export_dir, max_batch=4)
    result = run_process([sys.executable, str(SCRIPT), str(export_dir), "--soak", "5",
                          "--threads", "3", "--repeats", "3", "--batch-sizes", "1,4,16",
                          "--sample-sizes", "1,2"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout

    first = table_rows(out, "### First response")
    assert [row[0] for row in first] == ["cold", "after warm-up"]
    assert first[0][2] == "-" and first[1][2].endswith("(5)")  # five warm-up records
    warmup = table_rows(out, "replayed in order")
    assert [row[0] for row in warmup] == ["serving_default", "serving_default", "sample",
                                          "complete", "serve_examples"]
    steady = table_rows(out, "### Steady state")
    assert [(row[0].split()[0], row[1]) for row in steady] == [
        ("serving_default", "1"), ("serving_default", "4"),  # 16 > max_batch: left out
        ("sample", "1"), ("sample", "2"), ("complete", "1")]
    assert all(float(row[2]) > 0 and float(row[3]) >= float(row[2]) for row in steady)

    soak = table_rows(out, "### Soak")
    good = [row for row in soak if row[1] == "served"]
    bad = [row for row in soak if row[1] == "InvalidArgumentError"]
    assert len(good) == 2 and len(bad) == 5 and len(soak) == 7, soak
    for kind, _, sent, served, errors, failures, _ in good:
        assert int(sent) > 0 and served == sent and errors == "-" and failures == "0", kind
    for kind, _, sent, served, errors, failures, message in bad:
        assert int(sent) > 0 and served == "0" and failures == "0" and message != "-", kind
        assert errors == f"InvalidArgumentError x{sent}", (kind, errors)
    assert "exited normally" in out
