"""The sample CLI on a class-conditional model (issue 18), from a .keras file and from its
SavedModel (made by export.py, which checks a conditional export's scores and classify before
publishing it): --labels, --per-class and labelled completions (--labels, or the npz file's
label array, --label-key), the grids and raw draws they write, and one-line errors that leave
no file behind. Draws are compared as in test_conditional_export.py (`assert_same_draws` given
the labels' per-block conditioning)."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import PixelRNN, sampling, serving
from pixelrnn_tf.cli import export as export_cli
from pixelrnn_tf.cli import sample as sample_cli

from cli_fixtures import run_main
from draws import assert_same_draws
from export_fixtures import random_images

SHAPE = (6, 6, 1)
LEVELS = 4
K = 3
MAX_BATCH = 4  # requests of more images are split: the CLI must split the labels too
CELL = 6 * 11 + 2  # a 6 x 6 image zoomed 11 times (to >= 64 pixels), plus a 2-pixel border


def grid_size(rows, columns):
    """(width, height) of a PNG grid of rows x columns cells."""
    return columns * CELL + 2, rows * CELL + 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"model": a conditional PixelCNN (the architecture does not matter to the CLI; it
    exports quickest), "keras": it as .keras, "saved": its export by export.py, "plain": an
    unconditional .keras model}."""
    tf.keras.utils.set_random_seed(0)
    model = PixelRNN("pixelcnn", image_shape=SHAPE, levels=LEVELS, num_layers=2, hidden_dim=4,
                     output_dim=8, first_kernel=3, num_classes=K)
    model.build()
    rng = np.random.default_rng(0)
    for weight in model.weights:  # N(0, 1): the label changes most draws (N(0, 0.3): few)
        weight.assign(rng.normal(0.0, 1.0, weight.shape).astype(np.float32))
    model.set_label_prior([5, 3, 2])
    root = tmp_path_factory.mktemp("conditional_sample_cli")
    model.save(root / "model.keras")
    code = export_cli.main(["--keras-model", str(root / "model.keras"), "--export-base",
                            str(root / "base"), "--max-batch", str(MAX_BATCH)])
    assert code == 0 and os.listdir(root / "base") == ["1"]
    assert serving.read_metadata(root / "base" / "1")["num_classes"] == K
    plain = PixelRNN("pixelcnn", image_shape=SHAPE, levels=LEVELS, num_layers=1, hidden_dim=3,
                     output_dim=8, first_kernel=3)
    plain.build()
    plain.save(root / "plain.keras")
    return {"model": model, "keras": root / "model.keras", "saved": root / "base" / "1",
            "plain": root / "plain.keras"}


SOURCES = ["keras", "saved"]


def source_args(models, source):
    flag = {"keras": "--keras-model", "saved": "--saved-model"}[source]
    return [flag, models[source]]


def assert_draws(model, got, labels, seed, draw, source):
    """`got` [N, ...] (drawn given `labels` [N]) is the CLI's draw: `draw(start, stop, seed)`
    of the in-memory model, at once from a .keras file; from the SavedModel in requests of
    at most MAX_BATCH images, request k with seed + k and its slice of the labels."""
    num = len(got)
    step = num if source == "keras" else MAX_BATCH
    for k, start in enumerate(range(0, num, step)):
        stop = min(num, start + step)
        assert_same_draws(model, got[start:stop], draw(start, stop, seed + k), seed + k,
                          where=f"{source} draws {start}:{stop}",
                          conditioning=model.block_conditioning(
                              tf.constant(labels[start:stop], tf.int32)))


def assert_no_files(directory):
    left = [name for name in os.listdir(directory) if name.endswith((".png", ".npz"))
            or name.startswith(".")]
    assert not left, left


@pytest.mark.parametrize("source", SOURCES)
def test_per_class_and_labels(models, source, tmp_path, capsys, load_each_saved_model_once):
    from PIL import Image

    model = models["model"]

    def sampled(labels):
        return lambda start, stop, seed: sampling.sample(
            model, stop - start, seed, labels=labels[start:stop]).numpy()

    # --per-class 2: 2 samples of each of the 3 classes, one row per class
    code, out, err = run_main(sample_cli.main, [
        *source_args(models, source), "--per-class", "2", "--seed", "3", "--out",
        tmp_path / "classes.png", "--npz", tmp_path / "classes.npz"], capsys)
    assert code == 0, err
    assert "2 of each of 3 classes" in out
    assert Image.open(tmp_path / "classes.png").size == grid_size(rows=3, columns=2)
    saved = np.load(tmp_path / "classes.npz")
    np.testing.assert_array_equal(saved["labels"], [0, 0, 1, 1, 2, 2])
    samples = saved["samples"]
    assert samples.shape == (6, *SHAPE) and samples.dtype == np.uint8
    assert_draws(model, samples, saved["labels"], 3, sampled(saved["labels"]), source)

    # --columns still sets the grid
    code, _, err = run_main(sample_cli.main, [
        *source_args(models, source), "--per-class", "2", "--columns", "3", "--out",
        tmp_path / "three.png"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "three.png").size == grid_size(rows=2, columns=3)

    # --labels: one sample per label (more than the export's max_batch: split into requests)
    labels = np.array([2, 2, 0, 1, 1], np.int32)
    code, out, err = run_main(sample_cli.main, [
        *source_args(models, source), "--labels", "2,2,0,1,1", "--num", "5", "--seed", "4",
        "--out", tmp_path / "labels.png", "--npz", tmp_path / "labels.npz"], capsys)
    assert code == 0, err
    assert "labels 2,2,0,1,1" in out
    assert Image.open(tmp_path / "labels.png").size == grid_size(rows=1, columns=5)
    saved = np.load(tmp_path / "labels.npz")
    np.testing.assert_array_equal(saved["labels"], labels)
    assert_draws(model, saved["samples"], labels, 4, sampled(labels), source)


@pytest.mark.parametrize("source", SOURCES)
def test_labelled_completions(models, source, tmp_path, capsys, load_each_saved_model_once):
    model = models["model"]
    images = random_images(3, SHAPE, LEVELS, seed=2)
    file_labels = np.array([1, 0, 2])
    np.savez(tmp_path / "labelled.npz", images=images, labels=file_labels)
    np.savez(tmp_path / "other_key.npz", images=images, y=file_labels[::-1].copy())
    np.savez(tmp_path / "unlabelled.npz", images=images)
    runs = [  # (extra flags, the labels of the completed images)
        (["--complete", tmp_path / "labelled.npz"], file_labels),
        (["--complete", tmp_path / "other_key.npz", "--label-key", "y"], file_labels[::-1]),
        (["--complete", tmp_path / "unlabelled.npz", "--labels", "2,2"], np.array([2, 2])),
        (["--complete", tmp_path / "labelled.npz", "--labels", "0,1,0"], np.array([0, 1, 0])),
    ]
    for flags, labels in runs[:2] if source == "saved" else runs:
        code, out, err = run_main(sample_cli.main, [
            *source_args(models, source), *flags, "--known-rows", "2", "--completions", "2",
            "--seed", "6", "--out", tmp_path / "c.png", "--npz", tmp_path / "c.npz"], capsys)
        assert code == 0, (flags, err)
        saved = np.load(tmp_path / "c.npz")
        n = len(labels)
        np.testing.assert_array_equal(saved["labels"], labels)
        np.testing.assert_array_equal(saved["originals"], images[:n])
        completions = saved["completions"]
        assert completions.shape == (n, 2, *SHAPE)
        np.testing.assert_array_equal(completions[:, :, :2],
                                      np.repeat(images[:n, None, :2], 2, axis=1))
        repeated, repeated_labels = np.repeat(images[:n], 2, 0), np.repeat(labels, 2)
        assert_draws(model, completions.reshape(2 * n, *SHAPE), repeated_labels, 6,
                     lambda start, stop, seed, images=repeated, labels=repeated_labels:
                     sampling.complete(model, images[start:stop].astype(np.int32),
                                       2 * SHAPE[1], seed, labels=labels[start:stop]).numpy(),
                     source)


def test_errors_leave_no_files(models, tmp_path, capsys, load_each_saved_model_once):
    images = random_images(3, SHAPE, LEVELS, seed=2)
    np.savez(tmp_path / "unlabelled.npz", images=images)
    np.savez(tmp_path / "short.npz", images=images, labels=np.array([0, 1]))
    np.savez(tmp_path / "floats.npz", images=images, labels=np.array([0.0, 1.0, 2.0]))
    np.savez(tmp_path / "big.npz", images=images, labels=np.array([0, 1, 3]))
    saved, keras_file, plain = (["--saved-model", models["saved"]],
                                ["--keras-model", models["keras"]],
                                ["--keras-model", models["plain"]])
    # an export without pixelrnn_tf metadata: K unknown, the export's own checks judge labels
    bare = tmp_path / "bare"
    shutil.copytree(models["saved"], bare / "1", ignore=shutil.ignore_patterns("assets.extra"))
    bare_args = ["--saved-model", bare / "1", "--levels", str(LEVELS)]
    work = tmp_path / "out"
    work.mkdir()
    failures = [  # (args, exit code, words the one-line error must contain)
        ([*saved], 1, ["class-conditional (3 classes)", "--labels", "--per-class"]),
        ([*keras_file], 1, ["class-conditional (3 classes)", "--labels", "--per-class"]),
        ([*saved, "--complete", tmp_path / "unlabelled.npz"], 1,
         ["class-conditional", "--labels", "--label-key"]),
        ([*plain, "--labels", "0,1"], 1, ["--labels needs a class-conditional model"]),
        ([*plain, "--per-class", "2"], 1, ["--per-class needs a class-conditional model"]),
        ([*plain, "--complete", tmp_path / "unlabelled.npz", "--label-key", "labels"], 1,
         ["--label-key needs a class-conditional model"]),
        ([*saved, "--labels", "0,3"], 1, ["--labels", "[0, 3)", "got 3"]),
        ([*keras_file, "--labels", "0,3"], 1, ["--labels", "[0, 3)", "got 3"]),
        ([*saved, "--labels=-1,0"], 1, ["--labels", "got -1"]),
        ([*saved, "--labels", "0,1", "--num", "3"], 1, ["--labels gives 2 labels", "--num"]),
        ([*saved, "--per-class", "2", "--num", "5"], 1, ["--per-class 2", "--num"]),
        ([*saved, "--complete", tmp_path / "unlabelled.npz", "--labels", "0,1,2,0"], 1,
         ["--labels gives 4 labels", "holds 3 images"]),
        ([*saved, "--complete", tmp_path / "unlabelled.npz", "--labels", "0,5"], 1,
         ["--labels", "got 5"]),
        ([*saved, "--complete", tmp_path / "short.npz"], 1, ["2 labels for 3 images"]),
        ([*saved, "--complete", tmp_path / "floats.npz"], 1, ["float64", "integer labels"]),
        ([*saved, "--complete", tmp_path / "big.npz"], 1, ["[labels]", "got 3"]),
        ([*saved, "--complete", tmp_path / "unlabelled.npz", "--label-key", "y"], 1,
         ["--label-key", "no array 'y'"]),
        ([*saved, "--per-class", "1", "--complete", tmp_path / "unlabelled.npz"], 1,
         ["--per-class", "--complete"]),
        ([*saved, "--label-key", "labels"], 1, ["--label-key needs --complete"]),
        ([*bare_args, "--labels", "0,5"], 1, ["refused the labels", "labels must be < 3"]),
        ([*bare_args, "--per-class", "2"], 1, ["--per-class", "does not record"]),
        ([*bare_args], 1, ["class-conditional", "--labels"]),
        ([*saved, "--labels", "a,b"], 2, ["--labels", "comma-separated integer"]),
        ([*saved, "--labels", "1.5"], 2, ["--labels", "comma-separated integer"]),
        ([*saved, "--labels", "0," + "9" * 20], 2, ["--labels", "out of range"]),
        ([*saved, "--labels", "0", "--per-class", "1"], 2, ["not allowed with"]),
        ([*saved, "--per-class", "0"], 2, ["--per-class", "positive integer"]),
    ]
    for args, exit_code, words in failures:
        code, out, err = run_main(sample_cli.main, [*args, "--out", work / "x.png", "--npz",
                                                    work / "x.npz"], capsys)
        assert code == exit_code, (args, code, err)
        assert len(err.strip().splitlines()) == 1 and not out, (args, err)
        for word in words:
            assert word in err, (args, word, err)
        assert_no_files(work)

    # the bare export still samples with good labels
    code, _, err = run_main(sample_cli.main, [*bare_args, "--labels", "0,2", "--out",
                                              work / "bare.png"], capsys)
    assert code == 0, err
