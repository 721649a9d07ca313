"""Multi-Scale PixelRNN: exact likelihood, stage-2 causality given the small image,
dependence on the whole small image, serialization, training."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import ARCHITECTURES
from pixelrnn_tf.multiscale import MultiScalePixelRNN, subsample_positions

N, S = 8, 4


def make(architecture, channels=3, levels=5):
    tf.keras.utils.set_random_seed(3)
    return MultiScalePixelRNN(architecture, (N, N, channels), S, levels=levels, num_layers=2,
                              hidden_dim=6, output_dim=24)


def test_subsample_is_a_strided_pick():
    x = np.arange(2 * 8 * 8 * 1).reshape(2, 8, 8, 1)
    model = MultiScalePixelRNN("pixelcnn", (8, 8, 1), 4, levels=2, num_layers=1, hidden_dim=4)
    np.testing.assert_array_equal(model.subsample(x), x[:, ::2, ::2])
    mask = subsample_positions((4, 4, 1), 2)[..., 0]
    np.testing.assert_array_equal(mask, [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0] * 4])


def test_likelihood_is_exact_and_normalised():
    """Summed over every 2x2 ternary image p(x) is 1: the stage-2 model does not pay for the
    known subsampled pixels, so log p1 + log p2 is the exact log-likelihood."""
    model = MultiScalePixelRNN("diagonal_bilstm", (2, 2, 1), 1, levels=3, num_layers=1,
                               hidden_dim=4)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 4, indexing="ij"), -1).reshape(-1, 2, 2, 1)
    assert np.exp(model.log_prob(grid).numpy().astype(np.float64)).sum() == pytest.approx(
        1.0, abs=1e-4)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_terms_add_up(architecture, rng):
    model = make(architecture)
    x = rng.integers(0, 5, (2, N, N, 3))
    terms = model.log_prob_terms(x)
    small_direct = model.small.log_prob(x[:, ::2, ::2])
    np.testing.assert_allclose(terms["small"], small_direct, rtol=1e-5)
    np.testing.assert_allclose(terms["small"] + terms["conditional"], model.log_prob(x),
                               rtol=1e-5)
    np.testing.assert_allclose(model.pixel_log_prob(x).numpy().sum((1, 2, 3)),
                               model.log_prob(x), rtol=1e-5)
    # the training loss is the mean exact NLL
    loss = model.compute_loss(x=tf.constant(x), y_pred=model(x))
    np.testing.assert_allclose(loss, -np.mean(model.log_prob(x)), rtol=1e-5)


def allowed(i, j, c, channels):
    mask = np.zeros((N, N, channels), bool)
    mask[:i] = True
    mask[i, :j] = True
    mask[i, j, :c] = True
    return mask


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_stage2_causal_in_full_image_and_sees_whole_small_image(architecture, rng):
    model = make(architecture)
    x = rng.integers(0, 5, (2, N, N, 3))
    full_scaled = model.full.scale_inputs(tf.constant(x))
    small_scaled = model.small.scale_inputs(tf.constant(x[:, ::2, ::2]))

    @tf.function
    def grads(i, j, c):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([full_scaled, small_scaled])
            logits = model.full.head(model.full.features(
                full_scaled, model.conditioning(small_scaled)))
            target = tf.reduce_sum(logits[0, i, j, c] * tf.range(1.0, 6.0))
        return tape.gradient(target, full_scaled), tape.gradient(target, small_scaled)

    for i, j, c in [(0, 0, 0), (3, 5, 1), (N - 1, N - 1, 2), (5, 0, 2)]:
        g_full, g_small = (g.numpy() for g in grads(i, j, c))
        assert not ((g_full[0] != 0) & ~allowed(i, j, c, 3)).any(), (i, j, c)
        # stage 2 uses the full image too: earlier channels, the left and upper neighbours
        must = np.zeros((N, N, 3), bool)
        must[i, j, :c] = True
        must[i, max(j - 1, 0):j] = True
        must[max(i - 1, 0):i, j] = True
        assert np.all(g_full[0][must] != 0), (i, j, c)
        assert np.all(g_full[1] == 0) and np.all(g_small[1] == 0)
        assert np.all(g_small[0] != 0), f"({i}, {j}, {c}) ignores part of the small image"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_stage2_perturbation_given_fixed_small_image(architecture, rng):
    model = make(architecture, channels=1, levels=2)
    x = rng.integers(0, 2, (1, N, N, 1))
    small = x[:, ::2, ::2]
    logits = tf.function(model.full_logits)
    # Exact comparisons: one function, one batch shape (see test_causality_by_perturbation).
    base = logits(x, small).numpy().reshape(-1, 2)
    for k in [0, 9, 30, N * N - 2]:
        y = x.reshape(-1).copy()
        y[k] = 1 - y[k]
        y[k + 1:] = rng.integers(0, 2, y.size - k - 1)
        out = logits(y.reshape(x.shape), small).numpy().reshape(-1, 2)
        np.testing.assert_array_equal(out[: k + 1], base[: k + 1])
        assert np.any(out[k + 1:] != base[k + 1:]), "stage 2 ignores the full image"


def test_stage1_causal(rng):
    model = make("diagonal_bilstm")
    scaled = model.small.scale_inputs(tf.constant(rng.integers(0, 5, (1, S, S, 3))))
    with tf.GradientTape() as tape:
        tape.watch(scaled)
        target = tf.reduce_sum(model.small.head(model.small.features(scaled))[0, 1, 2, 1])
    g = tape.gradient(target, scaled).numpy()[0]
    later = np.ones((S, S, 3), bool)
    later[:1] = False
    later[1, :2] = False
    later[1, 2, :1] = False
    assert np.all(g[later] == 0) and np.all(g[~later] != 0)


def test_keras_round_trip(tmp_path, rng):
    model = make("row_lstm")
    x = rng.integers(0, 5, (2, N, N, 3))
    expected = model.log_prob(x).numpy()
    model.save(tmp_path / "ms.keras")
    loaded = keras.saving.load_model(tmp_path / "ms.keras")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.log_prob(x).numpy(), expected)


def test_short_training_lowers_both_terms():
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.int32)[:256, :, :, None]
    tf.keras.utils.set_random_seed(0)
    model = MultiScalePixelRNN("pixelcnn", (8, 8, 1), 4, levels=17, num_layers=2,
                               hidden_dim=8, output_dim=32)
    before = {k: -v.numpy().mean() for k, v in model.log_prob_terms(images).items()}
    model.compile(keras.optimizers.Adam(3e-3))
    model.fit(tf.data.Dataset.from_tensor_slices(images).batch(32), epochs=4, verbose=0)
    after = {k: -v.numpy().mean() for k, v in model.log_prob_terms(images).items()}
    assert after["small"] < before["small"] - 1.0, (before, after)
    assert after["conditional"] < before["conditional"] - 1.0, (before, after)
    assert after["small"] + after["conditional"] < 64 * math.log(17)
