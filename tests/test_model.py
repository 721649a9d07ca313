"""The PixelRNN model contract: shapes, exact likelihood, input validation, saving, fitting."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import ARCHITECTURES, PixelRNN


def small_model(architecture="diagonal_bilstm", image_shape=(5, 6, 3), levels=7, **kwargs):
    kwargs = {"num_layers": 2, "hidden_dim": 6, "output_dim": 12, **kwargs}
    return PixelRNN(architecture, image_shape=image_shape, levels=levels, **kwargs)


def log_softmax_np(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_log_prob_matches_independent_computation(architecture, rng):
    model = small_model(architecture)
    images = rng.integers(0, 7, (3, 5, 6, 3))
    logits = model(images).numpy()
    assert logits.shape == (3, 5, 6, 3, 7)
    log_p = np.take_along_axis(log_softmax_np(logits.astype(np.float64)),
                               images[..., None], axis=-1)[..., 0]
    expected = log_p.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(model.log_prob(images).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(model.pixel_log_prob(images).numpy(), log_p, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(model.bits_per_dim(images).numpy(),
                               -expected / (5 * 6 * 3 * math.log(2)), rtol=1e-5)
    assert np.all(expected < 0)


def test_probabilities_of_every_value_sum_to_one(rng):
    """Summing p(x) over ALL images of a tiny space gives 1: the model is a distribution."""
    model = small_model("diagonal_bilstm", image_shape=(2, 2, 1), levels=3)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 4, indexing="ij"), -1).reshape(-1, 2, 2, 1)
    total = np.exp(model.log_prob(grid).numpy().astype(np.float64)).sum()
    assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((1, 5, 6, 3), np.float32), "integer"),
    (np.zeros((5, 6, 3), np.int32), "rank 4"),
    (np.zeros((1, 5, 6, 1), np.int32), "channels is 1"),
    (np.zeros((1, 6, 6, 3), np.int32), "height is 6"),
    (np.zeros((1, 5, 7, 3), np.int32), "width is 7"),
    (np.full((1, 5, 6, 3), 7, np.int32), r"\[0, 7\)"),
    (np.full((1, 5, 6, 3), -1, np.int32), r"\[0, 7\)"),
])
def test_bad_images_raise_clear_value_error(bad, match):
    model = small_model("pixelcnn")
    with pytest.raises(ValueError, match=match):
        model(bad)
    with pytest.raises(ValueError, match=match):
        model.log_prob(bad)


def test_out_of_range_values_in_graph_mode_fail_an_assert():
    model = small_model("pixelcnn")
    fn = tf.function(model.__call__)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must lie in"):
        fn(tf.fill((1, 5, 6, 3), 9))


@pytest.mark.parametrize("kwargs,match", [
    (dict(architecture="gru"), "architecture"),
    (dict(levels=1), "levels"),
    (dict(hidden_dim=2), "hidden_dim"),
    (dict(num_layers=0), "num_layers"),
    (dict(image_shape=(5, 6)), "image_shape"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = dict(architecture="row_lstm", image_shape=(5, 6, 3), levels=7, hidden_dim=6)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PixelRNN(**args)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_keras_file_round_trip(architecture, tmp_path, rng):
    model = small_model(architecture, residual=architecture != "row_lstm",
                        skip=architecture != "pixelcnn", row_kernel=5)
    images = rng.integers(0, 7, (2, 5, 6, 3))
    expected = model(images).numpy()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode stays on
    assert isinstance(loaded, PixelRNN)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(images).numpy(), expected)


def test_digits_fit_lowers_the_loss():
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.int32)[..., None]  # [1797, 8, 8, 1] in 0..16
    tf.keras.utils.set_random_seed(0)
    model = PixelRNN("diagonal_bilstm", image_shape=(8, 8, 1), levels=17, num_layers=1,
                     hidden_dim=8, output_dim=32)
    model.compile(optimizer=keras.optimizers.RMSprop(3e-3))
    ds = tf.data.Dataset.from_tensor_slices(images[:512]).batch(32)
    history = model.fit(ds, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] - 5.0, losses  # nats per image
    assert history.history["bits_per_dim"][-1] == pytest.approx(
        losses[-1] / (64 * math.log(2)), rel=0.05)
    test_nll = -model.log_prob(images[1500:1600]).numpy().mean()
    assert test_nll < 64 * math.log(17)  # better than uniform over 17 levels
