"""benchmarks/report.py reads run directories (config, TensorBoard scalars, eval JSON)."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pixelrnn_tf.images import to_display

from cli_fixtures import load_script
from data_fixtures import read_split


def load_report():
    return load_script("benchmarks/report.py")


def fake_run(path, **config):
    os.makedirs(path)
    config = {"architecture": "diagonal_bilstm", "num_layers": 7, "hidden_dim": 16, **config}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"config": config, "data": {"data_dir": "/nonexistent",
                                              "dataset": "binarized_mnist"},
                   "changes": [{"step": 200, "changed": {"train_steps": [900, 300]}}]}, f)
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
    assert summary["config_changes"] == [{"step": 200, "changed": {"train_steps": [900, 300]}}]
    assert abs(summary["best_validation_bits_per_dim"] - 0.19) < 1e-6
    assert summary["eval_test"]["nats"] == 85.5
    table = open(os.path.join(out, "results.md")).read()
    assert "| mnist_diag | binarized_mnist | train | diagonal_bilstm | 7 x 16 | 300 |" in table
    assert "85.50" in table and "79.2 nats" in table
    final = str(tmp_path / "final")
    fake_run(final, train_split="train+validation")
    assert report.main([final, "--out", out]) == 0
    table = open(os.path.join(out, "results.md")).read()
    assert "| final | binarized_mnist | train+validation | diagonal_bilstm |" in table
    assert os.path.getsize(os.path.join(out, "curves.png")) > 1000
    assert "mnist_diag" in capsys.readouterr().out


def test_report_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert load_report().main([str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "not a train.py workdir" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# --figures: sample grids and the completion figure (paper Figure 1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 1-layer h=4 Row LSTM trained for 6 steps on 8x8 digits (17 levels) by train.py, with
    a best checkpoint; returns (run dir, data dir)."""
    from data_prep.convert import convert
    from pixelrnn_tf.cli import train

    root = tmp_path_factory.mktemp("figures")
    data_dir = str(root / "digits")
    convert(["digits"], data_dir, val_fraction=0.1, test_fraction=0.1, seed=0)
    run = str(root / "digits_row")
    assert train.main(["--data", data_dir, "--workdir", run, "--preset", "test"]) == 0
    return run, data_dir


def read_png(path):
    with Image.open(path) as image:
        return np.asarray(image)


def tile(picture, row, col, height, width):
    """Image (row, col) of an unzoomed `pixelrnn_tf.images.grid` picture (1-pixel borders)."""
    top, left = 1 + row * (height + 1), 1 + col * (width + 1)
    return picture[top: top + height, left: left + width]


def test_figures_writes_samples_and_completions_of_the_best_checkpoint(trained_run, tmp_path,
                                                                      capsys):
    report = load_report()
    run, data_dir = trained_run
    best = tf.train.latest_checkpoint(os.path.join(run, "checkpoints", "best"))
    assert best is not None
    out = str(tmp_path / "out")
    zoom, samples, images, per_image = 2, 5, 3, 2
    assert report.main([run, "--out", out, "--figures", "--num-samples", str(samples),
                        "--num-completions", str(images), "--completions-per-image",
                        str(per_image), "--zoom", str(zoom)]) == 0
    stdout = capsys.readouterr().out
    # The existing outputs are still written.
    for name in ("digits_row.json", "results.md", "curves.png"):
        assert os.path.exists(os.path.join(out, name))
    samples_png = os.path.join(out, "digits_row_samples.png")
    completions_png = os.path.join(out, "digits_row_completions.png")
    assert f"wrote {samples_png}" in stdout and f"wrote {completions_png}" in stdout
    assert os.path.basename(best) in stdout  # the best checkpoint was the one sampled
    assert sorted(os.listdir(out)) == sorted([
        "digits_row.json", "results.md", "curves.png", "digits_row_samples.png",
        "digits_row_completions.png"])  # no temporary files left behind

    levels, size = 17, 8
    allowed = {v * 255 // (levels - 1) for v in range(levels)}
    # 5 samples: a 2 x 3 grid of 8x8 images with 1-pixel borders, zoomed 2x.
    grid = read_png(samples_png)
    assert grid.shape == (zoom * (2 * (size + 1) + 1), zoom * (3 * (size + 1) + 1))
    assert np.array_equal(grid, np.repeat(np.repeat(grid[::zoom, ::zoom], zoom, 0), zoom, 1))
    grid = grid[::zoom, ::zoom]
    for k in range(samples):
        assert set(np.unique(tile(grid, k // 3, k % 3, size, size))) <= allowed

    # Completions: one row per test image, columns occluded | 2 completions | original.
    figure = read_png(completions_png)
    assert figure.shape == (zoom * (images * (size + 1) + 1),
                            zoom * ((per_image + 2) * (size + 1) + 1))
    figure = figure[::zoom, ::zoom]
    originals = read_split(data_dir, "test")[0][:images, ..., 0]  # file order, independently
    shown = (originals.astype(np.int64) * 255 // (levels - 1)).astype(np.uint8)
    half = size // 2
    for r in range(images):
        occluded = tile(figure, r, 0, size, size)
        assert np.array_equal(occluded[:half], shown[r, :half])
        assert np.all(occluded[half:] == report.HIDDEN_GREY)
        assert np.array_equal(tile(figure, r, per_image + 1, size, size), shown[r])
        for c in range(1, per_image + 1):
            completion = tile(figure, r, c, size, size)
            assert np.array_equal(completion[:half], shown[r, :half])
            assert set(np.unique(completion)) <= allowed


@pytest.mark.parametrize("levels,channels", [(2, 1), (256, 3)])
def test_completion_figure_keeps_the_known_half(levels, channels):
    """Built directly on a fresh model: 2-level grey and 256-level colour images."""
    from pixelrnn_tf.model import PixelRNN

    report = load_report()
    size, per_image = 6, 3
    model = PixelRNN("pixelcnn", image_shape=(size, size, channels), levels=levels,
                     num_layers=1, hidden_dim=6, first_kernel=3)
    originals = np.random.default_rng(0).integers(0, levels, (2, size, size, channels))
    completions = report.draw_completions(model, originals, per_image, seed=3)
    assert completions.shape == (2, per_image, size, size, channels)
    assert completions.min() >= 0 and completions.max() < levels
    half = size // 2
    known = np.broadcast_to(originals[:, None, :half], completions[:, :, :half].shape)
    assert np.array_equal(completions[:, :, :half], known)
    # Each copy of an image draws its own noise: the completions are not all the same.
    assert not all(np.array_equal(completions[:, 0], completions[:, k])
                   for k in range(1, per_image))

    scaled = lambda v: (np.asarray(v, np.int64) * 255 // (levels - 1)).astype(np.uint8)
    figure = report.completion_figure(originals, completions, levels)
    assert figure.shape == (2 * (size + 1) + 1, (per_image + 2) * (size + 1) + 1, channels)
    white = np.full((size, size, channels), 255, np.uint8)
    for r in range(2):
        shown = scaled(originals[r])
        occluded = tile(figure, r, 0, size, size)
        assert np.array_equal(occluded[:half], shown[:half])
        assert np.all(occluded[half:] == report.HIDDEN_GREY)
        assert np.array_equal(tile(figure, r, per_image + 1, size, size), shown)
        for c in range(per_image):
            assert np.array_equal(tile(figure, r, c + 1, size, size),
                                  scaled(completions[r, c]))
        # The top level renders white whatever the number of levels.
        assert np.array_equal(to_display(np.full_like(originals[r], levels - 1), levels),
                              white)

    samples = report.draw_samples(model, 4, seed=1)
    assert samples.shape == (4, size, size, channels)
    assert samples.min() >= 0 and samples.max() < levels
    grid = report.samples_figure(samples, levels, zoom=3)
    assert grid.shape == (3 * (2 * (size + 1) + 1), 3 * (2 * (size + 1) + 1), channels)


def test_figures_use_the_latest_checkpoint_without_a_best_one(trained_run, tmp_path):
    report = load_report()
    run = str(tmp_path / "no_best")
    shutil.copytree(trained_run[0], run)
    assert report.figure_checkpoint(run) == "best"
    shutil.rmtree(os.path.join(run, "checkpoints", "best"))
    assert report.figure_checkpoint(run) == "latest"
    inputs = report.prepare_figures(run, "test", 2)
    assert inputs.checkpoint == tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    assert inputs.originals.shape == (2, 8, 8, 1)


def test_figures_with_a_missing_data_dir_is_one_line_and_writes_nothing(trained_run, tmp_path,
                                                                         capsys):
    report = load_report()
    # The data directory recorded in the run's config.json is gone.
    run = str(tmp_path / "moved")
    shutil.copytree(trained_run[0], run)
    with open(os.path.join(run, "config.json")) as f:
        saved = json.load(f)
    saved["data"]["data_dir"] = str(tmp_path / "moved_away")
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(saved, f)
    out = tmp_path / "out"
    assert report.main([run, "--out", str(out), "--figures"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "moved_away" in err and "not found" in err and "--data DIR" in err
    assert not out.exists()
    # A --data override that does not exist either.
    assert report.main([trained_run[0], "--out", str(out), "--figures", "--data",
                        str(tmp_path / "elsewhere")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "elsewhere" in err and "not found" in err
    assert not out.exists()


def test_figures_bad_count_is_a_one_line_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_report().main([str(tmp_path), "--figures", "--num-samples", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--num-samples" in err
