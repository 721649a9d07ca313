"""Multi-Scale PixelRNN sampling and completion: stage 1 then stage 2, the subsampled pixels
copied from stage 1 (never resampled), cached against naive, the distribution sampled, and
completion's known prefix on both scales."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import ARCHITECTURES, sampling
from pixelrnn_tf.multiscale import MultiScalePixelRNN

from draws import assert_argmax_up_to_ties, assert_same_draws

N, S, F = 8, 4, 2  # full side, small side, factor
LEVELS = 5
# RGB for one architecture; grey for the others keeps the naive reference quick.
CHANNELS = {"diagonal_bilstm": 3, "row_lstm": 1, "pixelcnn": 1}


def make_model(architecture, image_shape=(N, N, 3), small_size=S, levels=LEVELS,
               seed=3, scale=0.3, **overrides):
    """A tiny model whose every weight (biases, learned initial states) is random."""
    tf.keras.utils.set_random_seed(seed)
    config = dict(num_layers=1, hidden_dim=6, output_dim=12, first_kernel=3)
    config.update(overrides)
    model = MultiScalePixelRNN(architecture, image_shape, small_size, levels=levels, **config)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, scale, weight.shape).astype(np.float32))
    return model


def random_images(model, n, seed=0):
    return np.random.default_rng(seed).integers(0, model.levels, (n, *model.image_shape))


def brute_force_small_known(n, s, k):
    """Small-image pixels (a, b) whose full-image pixel (f a, f b) is among the first k."""
    f = n // s
    return [(a, b) for a in range(s) for b in range(s) if f * a * n + f * b < k]


@pytest.fixture(scope="module")
def models():
    """One model per architecture, shared so that the traced samplers are reused."""
    return {architecture: make_model(architecture, image_shape=(N, N, CHANNELS[architecture]))
            for architecture in ARCHITECTURES}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_and_naive_agree_and_stage_1_is_the_small_model(models, architecture):
    model = models[architecture]
    cached = sampling.sample(model, 3, seed=11).numpy()
    assert cached.dtype == np.uint8 and cached.shape == (3, *model.image_shape)
    assert cached.max() < LEVELS
    assert_same_draws(model, sampling.sample(model, 3, seed=11, method="naive").numpy(),
                      cached, 11)
    # Stage 1 is the small model's own sample with that seed, placed on the grid.
    assert_same_draws(model.small, sampling.sample(model.small, 3, seed=11).numpy(),
                      cached[:, ::F, ::F], 11)
    np.testing.assert_array_equal(sampling.sample(model, 3, seed=11).numpy(), cached)
    assert not np.array_equal(sampling.sample(model, 3, seed=12).numpy(), cached)
    assert_same_draws(model, sampling.sample(model, 1, seed=11).numpy(), cached[:1], 11)


def test_cached_logits_are_the_model_s_logits_on_both_scales(models):
    """The cached path, teacher-forced, gives the logits of `model(images)`."""
    model = models["diagonal_bilstm"]
    images = tf.constant(random_images(model, 2))
    got = tf.function(lambda x: sampling.cached_logits(model, x))(images)
    want = tf.function(model.__call__)(images)
    for g, w, name in zip(got, want, ("small", "full")):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("architecture", ["row_lstm", "pixelcnn"])
def test_subsampled_pixels_are_copied_from_stage_1_not_resampled(models, architecture):
    """Stage 1 always says 0, stage 2 always says the top level (even on the grid, where it
    is not trained): the grid must hold stage 1's zeros, everything else the top level."""
    model = models[architecture]
    channels = model.image_shape[2]
    saved = [stage.output_logits.bias.numpy() for stage in (model.small, model.full)]
    on_grid = np.zeros(model.image_shape, bool)
    on_grid[::F, ::F] = True
    want = np.broadcast_to(np.where(on_grid, 0, LEVELS - 1), (2, *model.image_shape))
    known = 5
    try:
        for stage, level in ((model.small, 0), (model.full, LEVELS - 1)):
            bias = np.zeros((channels, LEVELS), np.float32)
            bias[:, level] = 100.0
            stage.output_logits.bias.assign(bias.reshape(-1))
        for method in sampling.METHODS:
            np.testing.assert_array_equal(sampling.sample(model, 2, 0, method=method), want)
            images = random_images(model, 2)
            completed = sampling.complete(model, images, known, 0, method=method).numpy()
            want_completed = want.reshape(2, -1, channels).copy()
            want_completed[:, :known] = images.reshape(2, -1, channels)[:, :known]
            np.testing.assert_array_equal(completed.reshape(2, -1, channels), want_completed)
    finally:
        for stage, bias in zip((model.small, model.full), saved):
            stage.output_logits.bias.assign(bias)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_low_temperature_picks_each_stage_s_most_likely_value(models, architecture):
    """At temperature -> 0 every grid sub-pixel is the argmax of stage 1 and every other the
    argmax of stage 2 given the small image, both computed by an independent teacher-forced
    forward pass on the sample."""
    model = models[architecture]
    images = sampling.sample(model, 3, seed=1, temperature=1e-5).numpy()
    small_logits, full_logits = (x.numpy() for x in model(images))
    assert_argmax_up_to_ties(images[:, ::F, ::F], small_logits)
    off_grid = np.ones((N, N), bool)
    off_grid[::F, ::F] = False
    assert_argmax_up_to_ties(images[:, off_grid], full_logits[:, off_grid])


def test_samples_follow_the_exact_likelihood():
    """A 2x2 binary model (1x1 small image) has 16 images: the frequencies of 4000 samples
    match exp(model.log_prob), the exact likelihood (6 sigma per image)."""
    model = make_model("diagonal_bilstm", image_shape=(2, 2, 1), small_size=1, levels=2,
                       hidden_dim=4, scale=1.0)
    every = np.array(list(itertools.product([0, 1], repeat=4))).reshape(16, 2, 2, 1)
    q = np.exp(model.log_prob(every).numpy().astype(np.float64))
    assert abs(q.sum() - 1) < 1e-5 and q.max() > 2 * q.min()
    n = 4000
    draws = sampling.sample(model, n, seed=123).numpy()
    freq = np.bincount(draws.reshape(n, 4) @ np.array([8, 4, 2, 1]), minlength=16) / n
    sigma = np.sqrt(q * (1 - q) / n)
    assert np.all(np.abs(freq - q) <= 6 * sigma + 1e-3), (freq, q)


def test_a_uniform_model_gives_independent_pixels():
    """With every logit zero both stages are uniform, so all 64 pixels must be independent
    fair coins: no pixel of stage 2 may reuse the noise of a pixel of stage 1 (small pixel 1
    is full pixel 2, full pixel 1 has the same raster index)."""
    model = make_model("row_lstm", image_shape=(N, N, 1), levels=2)
    for stage in (model.small, model.full):
        for weight in stage.output_logits.weights:
            weight.assign(tf.zeros_like(weight))
    n = 2000
    bits = sampling.sample(model, n, seed=5).numpy().reshape(n, -1).astype(np.float64)
    sigma = np.sqrt(0.25 / n)
    assert np.all(np.abs(bits.mean(0) - 0.5) <= 6 * sigma)
    agree = (bits[:, :, None] == bits[:, None, :]).mean(0)[np.triu_indices(N * N, 1)]
    assert np.all(np.abs(agree - 0.5) <= 6 * sigma), agree.max()


@pytest.mark.parametrize("n, s", [(8, 4), (6, 2), (6, 3), (9, 3), (4, 1), (4, 4)])
def test_known_small_pixels_are_a_raster_prefix_of_the_small_image(n, s):
    small_raster = [(a, b) for a in range(s) for b in range(s)]
    for k in range(n * n + 1):
        known = brute_force_small_known(n, s, k)
        assert known == small_raster[: len(known)], (n, s, k)
        assert int(sampling.small_known_pixels((n, n, 1), s, k)) == len(known), (n, s, k)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_completion(models, architecture):
    model = models[architecture]
    images = random_images(model, 2, seed=2)
    flat = images.reshape(2, N * N, -1)
    for known in (13, 27):
        cached = sampling.complete(model, images, known, seed=4).numpy()
        np.testing.assert_array_equal(cached.reshape(2, N * N, -1)[:, :known],
                                      flat[:, :known])
        # Stage 1 completed the small image from its known prefix.
        known_small = len(brute_force_small_known(N, S, known))
        assert_same_draws(
            model.small,
            sampling.complete(model.small, images[:, ::F, ::F], known_small, seed=4).numpy(),
            cached[:, ::F, ::F], 4)
        # The unknown pixels of the input, on the grid or not, do not matter.
        changed = flat.copy()
        changed[:, known:] = (changed[:, known:] + 1) % LEVELS
        np.testing.assert_array_equal(
            sampling.complete(model, changed.reshape(images.shape), known, seed=4).numpy(),
            cached)
    np.testing.assert_array_equal(sampling.complete(model, images, N * N, seed=4).numpy(),
                                  images)
    assert_same_draws(model, sampling.complete(model, images, 0, seed=4).numpy(),
                      sampling.sample(model, 2, seed=4).numpy(), 4)
    np.testing.assert_array_equal(
        sampling.complete_rows(model, images, 3, seed=4).numpy(),
        sampling.complete(model, images, 3 * N, seed=4).numpy())


# The Diagonal BiLSTM's case is slow: its naive completion of RGB images takes ~10 s, and its
# naive samples are compared with the cached ones in the default run
# (test_cached_and_naive_agree_and_stage_1_is_the_small_model).
@pytest.mark.parametrize("architecture", [
    pytest.param(a, marks=pytest.mark.slow) if a == "diagonal_bilstm" else a
    for a in ARCHITECTURES])
def test_cached_and_naive_completions_agree(models, architecture):
    model = models[architecture]
    images = random_images(model, 2, seed=2)
    assert_same_draws(model, sampling.complete(model, images, 27, seed=4, method="naive").numpy(),
                      sampling.complete(model, images, 27, seed=4).numpy(), 4)


def test_bad_arguments(models):
    model = models["pixelcnn"]
    images = random_images(model, 2)
    conditioning = model.conditioning(model.small.scale_inputs(images[:, ::F, ::F]))
    cases = [
        lambda: sampling.sample_graph(model, 2, 0, conditioning=conditioning),
        lambda: sampling.cached_logits(model, images, conditioning),
        lambda: sampling.complete(model, images, N * N + 1, seed=0),
        lambda: sampling.complete(model, images[:, ::F, ::F], 3, seed=0),  # the small shape
        lambda: sampling.complete(model, images + LEVELS, 3, seed=0),
        lambda: sampling.sample(model, 2, seed=0, method="fast"),
    ]
    for k, case in enumerate(cases):
        with pytest.raises(ValueError):
            case()
            pytest.fail(f"case {k} did not raise")
