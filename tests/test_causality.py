"""Causality of FRESH (untrained) models, by gradients and by perturbation.

Sub-pixel k = (i, j, c) may depend on every pixel before (i, j) in raster order and on
channels c' < c of pixel (i, j); on nothing else, and never on another batch element.
"""

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import ARCHITECTURES, PixelRNN

SETTINGS = {"grey_binary": dict(channels=1, levels=2), "rgb_256": dict(channels=3, levels=256)}
HEIGHT, WIDTH = 6, 8
FIRST_KERNEL = 7


def make_model(architecture, channels, levels):
    tf.keras.utils.set_random_seed(7)
    return PixelRNN(architecture, image_shape=(HEIGHT, WIDTH, channels), levels=levels,
                    num_layers=2, hidden_dim=12, output_dim=48, first_kernel=FIRST_KERNEL)


def target_positions(channels, rng):
    """First, last, corners, edges and random sub-pixels (i, j, c)."""
    h, w, c_last = HEIGHT - 1, WIDTH - 1, channels - 1
    fixed = [(0, 0, 0), (h, w, c_last), (0, w, c_last), (h, 0, 0), (0, 3, c_last),
             (h, 4, c_last), (2, 0, 0), (3, w, 0), (1, 1, c_last)]
    randoms = [tuple(int(v) for v in (rng.integers(HEIGHT), rng.integers(WIDTH),
                                      rng.integers(channels))) for _ in range(3)]
    return fixed + randoms


def allowed(i, j, c, channels):
    """[H, W, C] bool: sub-pixels sub-pixel (i, j, c) may depend on."""
    mask = np.zeros((HEIGHT, WIDTH, channels), bool)
    mask[:i] = True
    mask[i, :j] = True
    mask[i, j, :c] = True
    return mask


def must_see(architecture, i, j, c, channels):
    """[H, W, C] bool: sub-pixels that must have a non-zero gradient."""
    seen = np.zeros((HEIGHT, WIDTH, channels), bool)
    seen[i, j, :c] = True  # earlier channels of the same pixel
    if architecture == "diagonal_bilstm":
        # One layer sees the whole causal context, with one exception that follows from the
        # paper's architecture: the last channel of the previous row's last pixel enters the
        # network only at later positions within the first layer's kernel, all of them after
        # (i, j) when j < W - 1 - k // 2 (see README, "Receptive field").
        seen |= allowed(i, j, c, channels)
        if i >= 1 and j < WIDTH - 1 - FIRST_KERNEL // 2:
            seen[i - 1, WIDTH - 1, channels - 1] = False
    else:
        # Row LSTM (triangular context) and PixelCNN: at least the first layer's 7x7 window.
        r = FIRST_KERNEL // 2
        window = np.zeros((HEIGHT, WIDTH), bool)
        window[max(0, i - r): i, max(0, j - r): j + r + 1] = True
        window[i, max(0, j - r): j] = True
        seen |= window[:, :, None]
    return seen


def gradient_fn(model):
    @tf.function
    def grad(scaled, i, j, c, weights):
        with tf.GradientTape() as tape:
            tape.watch(scaled)
            logits = model.head(model.features(scaled))  # [B, H, W, C, L]
            target = tf.reduce_sum(logits[0, i, j, c] * weights)
        return tape.gradient(target, scaled)
    return grad


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_causality_by_gradients(architecture, setting, rng):
    channels, levels = SETTINGS[setting]["channels"], SETTINGS[setting]["levels"]
    model = make_model(architecture, channels, levels)
    images = rng.integers(0, levels, (2, HEIGHT, WIDTH, channels))
    scaled = model.scale_inputs(tf.constant(images))
    grad = gradient_fn(model)
    weights = tf.constant(rng.normal(size=levels), tf.float32)
    for i, j, c in target_positions(channels, rng):
        g = grad(scaled, i, j, c, weights).numpy()
        where = f"{architecture} {setting} target (i={i}, j={j}, c={c})"
        assert np.all(g[1] == 0), f"{where}: gradient leaks across batch elements"
        leak = (g[0] != 0) & ~allowed(i, j, c, channels)
        assert not leak.any(), f"{where}: depends on later sub-pixels {np.argwhere(leak)}"
        blind = (g[0] == 0) & must_see(architecture, i, j, c, channels)
        assert not blind.any(), f"{where}: does not see {np.argwhere(blind)}"


def test_row_lstm_context_is_triangular(rng):
    """The Row LSTM does not see the far upper-right (unlike the Diagonal BiLSTM)."""
    for architecture, sees in [("row_lstm", False), ("diagonal_bilstm", True)]:
        model = make_model(architecture, 1, 2)
        scaled = model.scale_inputs(tf.constant(rng.integers(0, 2, (1, HEIGHT, WIDTH, 1))))
        g = gradient_fn(model)(scaled, 2, 0, 0, tf.ones(2)).numpy()
        # pixel (0, W-1): two rows up and W-1 columns to the right of (2, 0)
        assert (g[0, 0, WIDTH - 1, 0] != 0) == sees, architecture


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_causality_by_perturbation(architecture, setting, rng):
    """Randomising sub-pixel k and everything after it leaves logits at positions <= k
    bit-identical (black box: integer images in, logits out).

    Exact equality holds on every CPU by construction: the base and the perturbed images go
    through one traced function with the same batch shape, so every kernel blocks its sums
    the same way; a logit that cannot see the change is computed from bit-identical inputs,
    and masked taps add exact zeros. Any leak, however faint, changes some bits (a planted
    1e-6 tap on the next pixel fails it). Do not compare calls with different batch shapes:
    their sums may round 1 ULP apart."""
    channels, levels = SETTINGS[setting]["channels"], SETTINGS[setting]["levels"]
    model = make_model(architecture, channels, levels)
    call = tf.function(model.__call__)
    images = rng.integers(0, levels, (1, HEIGHT, WIDTH, channels))
    base = call(tf.constant(images)).numpy().reshape(-1, levels)
    num = HEIGHT * WIDTH * channels
    for k in [0, 1, channels, WIDTH * channels - 1, num // 2, num - 2, num - 1]:
        perturbed = images.reshape(-1).copy()
        # change sub-pixel k for sure, randomise all later ones
        perturbed[k] = (perturbed[k] + 1 + rng.integers(levels - 1)) % levels
        perturbed[k + 1:] = rng.integers(0, levels, num - k - 1)
        out = call(tf.constant(perturbed.reshape(images.shape))).numpy().reshape(-1, levels)
        np.testing.assert_array_equal(
            out[: k + 1], base[: k + 1],
            err_msg=f"{architecture} {setting}: changing sub-pixel {k} changed earlier logits")
        if k < num - 1:
            assert np.any(out[k + 1:] != base[k + 1:]), "later logits ignore the change"
