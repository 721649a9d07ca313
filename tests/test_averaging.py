"""`train.py --average-from`: a work directory with the mean weights of a run's checkpoints."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from test_report import load_report

from pixelrnn_tf import averaging, data
from pixelrnn_tf.cli import train
from pixelrnn_tf.evaluation import evaluate
from pixelrnn_tf.workdir import Workdir, load_model, model_variables

from cli_fixtures import load_script, run_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-layer h=4 Row LSTM trained 6 steps on 8x8 digits with checkpoints at steps 2, 4
    and 6 (all kept); returns (run dir, root for new directories)."""
    from data_prep.convert import convert

    root = tmp_path_factory.mktemp("averaging")
    data_dir = str(root / "digits")
    convert(["digits"], data_dir, val_fraction=0.1, test_fraction=0.1, seed=0)
    run = str(root / "run")
    assert train.main(["--data", data_dir, "--workdir", run, "--preset", "test",
                       "--set", "checkpoint_every_steps=2", "--set", "keep_checkpoints=3"]) == 0
    return run, root


def weights(model):
    return {name: v.numpy() for name, v in model_variables(model).items()}


def test_average_holds_the_mean_of_the_last_checkpoints(trained, tmp_path, capsys):
    run, _ = trained
    out = str(tmp_path / "avg")
    code, stdout, err = run_main(train.main, ["--workdir", out, "--average-from", run,
                                              "--average-last", "2"], capsys)
    assert code == 0, err
    assert "ckpt-4, ckpt-6" in stdout
    at4 = weights(load_model(run, os.path.join(run, "checkpoints", "ckpt-4")))
    at6 = weights(load_model(run, os.path.join(run, "checkpoints", "ckpt-6")))
    averaged = weights(load_model(out))
    assert averaged.keys() == at6.keys()
    moved = 0
    for name, value in averaged.items():
        np.testing.assert_allclose(value, (at4[name] + at6[name]) / 2, rtol=1e-6, atol=1e-7)
        moved += not np.allclose(at4[name], at6[name])
    assert moved > 0  # the two checkpoints differ, so the mean is neither of them

    keras_model = keras.saving.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    for name, value in weights(keras_model).items():
        np.testing.assert_array_equal(value, averaged[name])
    saved = json.load(open(os.path.join(out, "config.json")))
    assert saved["averaged"] == {"from": os.path.relpath(run, out),
                                 "checkpoints": ["ckpt-4", "ckpt-6"], "steps": [4, 6]}
    assert saved["config"] == json.load(open(os.path.join(run, "config.json")))["config"]
    assert sorted(os.listdir(out)) == ["checkpoints", "config.json", "model.keras"]


def test_averaged_run_exports_for_serving(trained, tmp_path, capsys):
    """export.py reads an average like any run: the SavedModel scores with its weights."""
    import tensorflow as tf

    from pixelrnn_tf.cli import export

    run, _ = trained
    out = str(tmp_path / "avg")
    assert run_main(train.main, ["--workdir", out, "--average-from", run], capsys)[0] == 0
    # --no-verify: export.py's own check would score as below.
    code, _, err = run_main(export.main, ["--workdir", out, "--export-base",
                                          tmp_path / "exports", "--no-verify"], capsys)
    assert code == 0, err
    images = np.arange(2 * 8 * 8).reshape(2, 8, 8, 1).astype(np.uint8) % 17
    served = tf.saved_model.load(str(tmp_path / "exports" / "1"))
    scores = served.signatures["serving_default"](images=tf.constant(images))
    expected = load_model(out).log_prob(images).numpy()
    np.testing.assert_allclose(scores["log_prob"].numpy(), expected, rtol=1e-5)
    other = load_model(run).log_prob(images).numpy()  # the last checkpoint alone
    assert not np.allclose(other, expected, rtol=1e-5)


def test_averaged_run_evaluates_reports_and_refuses_training(trained, capsys):
    run, root = trained
    out = str(root / "avg_all")
    assert run_main(train.main, ["--workdir", out, "--average-from", run], capsys)[0] == 0
    assert json.load(open(os.path.join(out, "config.json")))["averaged"]["steps"] == [2, 4, 6]

    code, stdout, err = run_main(train.main, ["--workdir", out, "--evaluate", "validation"],
                                 capsys)
    assert code == 0, err
    result = json.load(open(os.path.join(out, "eval_validation.json")))
    assert result["step"] == 6 and np.isfinite(result["nats"]) and result["nats"] > 0

    code, _, err = run_main(train.main, ["--workdir", out], capsys)
    assert code == 1
    assert "holds an average of checkpoints" in err and "cannot be trained" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_main(train.main, ["--workdir", out, "--evaluate", "validation",
                                         "--checkpoint", "best"], capsys)
    assert code == 1 and "has no best checkpoint, only latest" in err

    # The report: the source's steps, the average's own validation NLL, no curves of its own.
    summary = load_report().summarize(out)
    assert summary["steps"] == 6 and summary["wall_hours"] > 0
    assert summary["averaged"]["checkpoints"] == ["ckpt-2", "ckpt-4", "ckpt-6"]
    assert summary["curves"] == {"train_bits_per_dim": [], "validation_bits_per_dim": []}
    row = load_report().table([summary]).splitlines()[-1]
    assert f"| {result['nats']:.2f} | {result['bits_per_dim']:.4f} |" in row
    moved = root / "moved_avg"
    shutil.copytree(out, moved / "avg")  # its source, "../run", is not beside it any more
    report = load_report()
    with pytest.raises(report.ReportError, match="which is missing"):
        report.summarize(str(moved / "avg"))


@pytest.mark.parametrize("args, message", [
    (["--average-from", "{missing}"], "no config.json"),
    (["--average-from", "{run}", "--average-last", "4"], "asked to average the last 4"),
    (["--average-from", "{run}", "--evaluate", "test"], "cannot be combined with --evaluate"),
    (["--average-from", "{run}", "--set", "seed=1"], "cannot be combined with --set"),
    (["--average-last", "2"], "--average-last only applies to --average-from"),
])
def test_bad_average_is_one_line_and_writes_nothing(trained, tmp_path, capsys, args, message):
    run, _ = trained
    out = tmp_path / "avg"
    args = [a.format(run=run, missing=tmp_path / "nothing") for a in args]
    code, _, err = run_main(train.main, ["--workdir", out, *args], capsys)
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage, message", [
    ("index", "listed in"), ("state", "unreadable")])
def test_damaged_source_checkpoints_are_one_line_errors(trained, tmp_path, capsys, damage,
                                                        message):
    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if damage == "index":  # a kept checkpoint lost its files: not silently skipped
        os.remove(copy / "checkpoints" / "ckpt-6.index")
    else:
        (copy / "checkpoints" / "checkpoint").write_text("")
    code, _, err = run_main(train.main, ["--workdir", tmp_path / "avg", "--average-from", copy],
                            capsys)
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_average_never_overwrites_and_a_failed_write_leaves_nothing(trained, tmp_path, capsys,
                                                                   monkeypatch):
    run, _ = trained
    existing = tmp_path / "existing"
    existing.mkdir()
    code, _, err = run_main(train.main, ["--workdir", existing, "--average-from", run], capsys)
    assert code == 1 and "already exists" in err
    assert os.listdir(existing) == []

    first = tmp_path / "first"
    assert run_main(train.main, ["--workdir", first, "--average-from", run], capsys)[0] == 0
    code, _, err = run_main(train.main, ["--workdir", tmp_path / "again", "--average-from",
                                         first], capsys)
    assert code == 1 and "itself an average" in err

    def full_disk(model, path):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(averaging, "save_keras_model", full_disk)
    code, _, err = run_main(train.main, ["--workdir", tmp_path / "avg", "--average-from", run],
                            capsys)
    assert code == 1 and "No space left on device" in err
    assert sorted(os.listdir(tmp_path)) == ["existing", "first"]


def load_compare():
    return load_script("benchmarks/compare_nll.py")


def test_compare_nll_scores_the_same_images_and_pairs_them(trained, capsys):
    """benchmarks/compare_nll.py: the means equal `evaluate`'s, a model paired with itself
    differs by exactly 0, and the paired difference is the difference of the means."""
    run, root = trained
    out = str(root / "avg_compare")
    assert run_main(train.main, ["--workdir", out, "--average-from", run], capsys)[0] == 0
    compare = load_compare()
    rows = compare.compare([run, out, run], "validation")
    data_dir = Workdir(run).read()[1].data_dir
    assert [r["images"] for r in rows] == [data.num_examples(data_dir, "validation")] * 3
    for row, workdir in zip(rows, (run, out)):
        expected = evaluate(workdir, None, "validation")["nats"]
        assert abs(row["nats"] - expected) < 1e-3 * expected
    assert rows[0]["standard_error"] > 0
    assert abs(rows[1]["difference"] - (rows[1]["nats"] - rows[0]["nats"])) < 1e-9
    assert rows[1]["difference"] != 0 and rows[1]["difference_standard_error"] > 0
    # Paired on the same images, two close models differ far more precisely than either mean
    # is known; pairing the images wrongly would make it about 1.4 times the standard error.
    assert rows[1]["difference_standard_error"] < 0.5 * rows[0]["standard_error"]
    assert rows[2]["difference"] == 0 and rows[2]["difference_standard_error"] == 0

    assert compare.main([run, out, "--split", "validation"]) == 0
    assert "| minus the first run (paired) |" in capsys.readouterr().out
    assert compare.main([run, str(root / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "not a train.py workdir" in err and len(err.strip().splitlines()) == 1
