"""Training and evaluating a class-conditional PixelRNN: num_classes=auto, the label prior,
the TensorBoard grid of one row per class, and the marginal NLL and classifier accuracy of
`--evaluate`."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pixelrnn_tf import class_conditional
from pixelrnn_tf import config as config_lib
from pixelrnn_tf.config import ConfigError
from pixelrnn_tf.data import make_dataset
from pixelrnn_tf.evaluation import evaluate
from pixelrnn_tf.trainer import train_and_evaluate
from pixelrnn_tf.workdir import load_model, model_variables


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from data_prep.convert import convert

    out = tmp_path_factory.mktemp("data") / "digits"
    convert(["digits"], str(out), val_fraction=0.1, test_fraction=0.1, seed=0)
    return str(out)


def split_arrays(data_dir, split):
    """(images uint8 [N, 8, 8, 1], labels int32 [N]) of a split, in file order."""
    images, labels = [], []
    for x, y in make_dataset(data_dir, split, 64, False, return_labels=True):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """The `test` preset, conditional on the digits' 10 classes: 6 steps, 2 epochs of 3."""
    workdir = str(tmp_path_factory.mktemp("run") / "work")
    config = config_lib.apply_overrides(config_lib.get_preset("test"), ["num_classes=auto"])
    results = train_and_evaluate(config, workdir, digits)
    return workdir, results


def test_auto_takes_the_classes_from_the_manifest_and_stores_the_label_frequencies(
        trained, digits):
    workdir, results = trained
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["config"]["num_classes"] == 10
    model = load_model(workdir)
    assert model.num_classes == 10
    _, labels = split_arrays(digits, "train")
    counts = np.bincount(labels, minlength=10)
    np.testing.assert_allclose(np.exp(model.label_log_prior.numpy()), counts / counts.sum(),
                               rtol=1e-6)
    # the label weights are in the checkpoints, the final .keras file restores them too
    assert {"label_embedding/embeddings", "label_log_prior"} <= set(model_variables(model))
    final = load_model(os.path.join(workdir, "model.keras"))
    np.testing.assert_array_equal(final.label_embedding.embeddings.numpy(),
                                  model.label_embedding.embeddings.numpy())
    assert results["validation"] is not None and math.isfinite(results["validation"])


def test_tensorboard_sample_grid_has_one_row_per_class(trained):
    workdir, _ = trained
    accumulator = EventAccumulator(os.path.join(workdir, "train"), size_guidance={"tensors": 0})
    accumulator.Reload()
    for tag, rows in (("samples", 10), ("completions", 3)):
        width, height, png = tf.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto)
        picture = tf.io.decode_png(png).numpy()
        assert picture.shape[0] == rows * 9 + 1, tag  # 8x8 digits, 1-pixel borders
        assert picture.shape[1] == 8 * 9 + 1, tag


def test_evaluate_reports_conditional_and_marginal_nll_and_accuracy(trained, digits):
    workdir, _ = trained
    result = evaluate(workdir, digits, "test")
    with open(os.path.join(workdir, "eval_test.json")) as f:
        written = json.load(f)
    assert written["marginal"]["nats"] == pytest.approx(result["marginal"]["nats"])
    images, labels = split_arrays(digits, "test")
    model = load_model(workdir)
    conditional = -model.log_prob(images.astype(np.int32), labels).numpy().mean()
    marginal = -class_conditional.marginal_log_prob(model, images.astype(np.int32)).numpy()
    predicted, _ = class_conditional.classify(model, images.astype(np.int32))
    assert result["conditioned_on_labels"] is True
    assert result["num_images"] == len(images)
    assert result["nats"] == pytest.approx(conditional, rel=1e-5)
    assert result["marginal"]["nats"] == pytest.approx(marginal.mean(), rel=1e-5)
    assert result["marginal"]["bits_per_dim"] == pytest.approx(
        marginal.mean() / (64 * math.log(2)), rel=1e-5)
    assert result["classifier_accuracy"] == pytest.approx(
        np.mean(predicted.numpy() == labels), abs=1e-6)
    # log p(x) >= log p(x | y) + log p(y) for the true y: the marginal NLL is at most the
    # conditional NLL minus the log prior of the labels
    prior = model.label_log_prior.numpy()
    assert result["marginal"]["nats"] <= conditional - prior[labels].mean() + 1e-3


def test_unlabelled_data_is_refused_before_anything_is_written(tmp_path):
    from data_prep.convert import convert

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", train=rng.integers(0, 2, (20, 4, 4), dtype=np.uint8))
    data_dir = tmp_path / "unlabelled"
    convert([f"npz:{tmp_path / 'x.npz'}"], str(data_dir), val_fraction=0.2, seed=0)
    workdir = tmp_path / "work"
    config = config_lib.apply_overrides(config_lib.get_preset("test"), ["num_classes=auto"])
    with pytest.raises(ConfigError, match="num_classes=auto: .* has no labels"):
        train_and_evaluate(config, str(workdir), str(data_dir))
    assert not workdir.exists()


def test_fewer_classes_than_the_data_has_are_refused(digits, tmp_path):
    config = config_lib.apply_overrides(config_lib.get_preset("test"), ["num_classes=3"])
    with pytest.raises(ConfigError, match="num_classes=3 but .* has 10 classes"):
        train_and_evaluate(config, str(tmp_path / "work"), digits)
    assert not (tmp_path / "work").exists()


def test_num_classes_values():
    assert config_lib.parse_value("num_classes", "auto") == config_lib.AUTO_CLASSES
    assert config_lib.parse_value("num_classes", "10") == 10
    with pytest.raises(ConfigError, match="expected an integer"):
        config_lib.parse_value("num_layers", "auto")
    with pytest.raises(ConfigError, match="num_classes must be >= 0 or auto"):
        config_lib.replace_keys(config_lib.get_preset("test"), num_classes=-2)


def test_a_conditional_multi_scale_model_trains_and_evaluates(digits, tmp_path):
    config = config_lib.apply_overrides(config_lib.get_preset("test"), [
        "num_classes=auto", "small_size=4", "train_steps=2", "steps_per_epoch=2",
        "image_every_epochs=1", "eval_batches=1"])
    workdir = str(tmp_path / "work")
    train_and_evaluate(config, workdir, digits)
    result = evaluate(workdir, digits, "test")
    assert set(result["terms"]) == {"small", "conditional"}
    assert result["terms"]["small"]["nats"] + result["terms"]["conditional"]["nats"] == \
        pytest.approx(result["nats"])
    assert 0.0 <= result["classifier_accuracy"] <= 1.0
    assert math.isfinite(result["marginal"]["nats"])
    model = load_model(workdir)
    np.testing.assert_allclose(model.small.label_log_prior.numpy(),
                               model.full.label_log_prior.numpy())
