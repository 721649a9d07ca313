"""benchmarks/report.py reads run directories (config, TensorBoard scalars, eval JSON)."""

import importlib.util
import json
import os

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_report():
    spec = importlib.util.spec_from_file_location(
        "report", os.path.join(ROOT, "benchmarks", "report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(path):
    os.makedirs(path)
    config = {"architecture": "diagonal_bilstm", "num_layers": 7, "hidden_dim": 16}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"config": config, "data": {"data_dir": "/nonexistent",
                                              "dataset": "binarized_mnist"}}, f)
    with open(os.path.join(path, "eval_test.json"), "w") as f:
        json.dump({"split": "test", "num_images": 10, "nats": 85.5, "bits_per_dim": 0.157}, f)
    for split, values in (("train", [0.30, 0.20, 0.18]), ("validation", [0.25, 0.19])):
        writer = tf.summary.create_file_writer(os.path.join(path, split))
        with writer.as_default():
            for step, value in enumerate(values):
                tf.summary.scalar("bits_per_dim", value, step=100 * (step + 1))
                tf.summary.scalar("nll_nats", value * 784 * 0.6931, step=100 * (step + 1))
        writer.close()


def test_report_table_json_and_curves(tmp_path, capsys):
    report = load_report()
    run = str(tmp_path / "mnist_diag")
    fake_run(run)
    out = str(tmp_path / "out")
    assert report.main([run, "--out", out]) == 0
    summary = json.load(open(os.path.join(out, "mnist_diag.json")))
    assert summary["steps"] == 300
    assert abs(summary["best_validation_bits_per_dim"] - 0.19) < 1e-6
    assert summary["eval_test"]["nats"] == 85.5
    table = open(os.path.join(out, "results.md")).read()
    assert "| mnist_diag | binarized_mnist | diagonal_bilstm | 7 x 16 | 300 |" in table
    assert "85.50" in table and "79.2 nats" in table
    assert os.path.getsize(os.path.join(out, "curves.png")) > 1000
    assert "mnist_diag" in capsys.readouterr().out


def test_report_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert load_report().main([str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "not a train.py workdir" in capsys.readouterr().err
