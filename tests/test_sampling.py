"""Samplers: the cached per-pixel path against the teacher-forced full forward pass, cached
against naive, completion, temperature, the distribution sampled, and bad arguments."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import ARCHITECTURES, PixelRNN, sampling

from draws import assert_argmax_up_to_ties, assert_same_draws

# (channels, levels): binary grey images, and RGB with several levels per channel.
SETTINGS = {"grey_binary": (1, 2), "rgb_5": (3, 5)}
HEIGHT, WIDTH = 4, 5  # not square, so a swapped axis shows


def make_model(architecture, channels, levels, height=HEIGHT, width=WIDTH, seed=3,
               **overrides):
    """A small model whose every weight, including the biases and learned initial states
    (zero at initialisation), is random, so every term of the cache is exercised."""
    tf.keras.utils.set_random_seed(seed)
    config = dict(num_layers=2, hidden_dim=6, output_dim=12, first_kernel=5)
    config.update(overrides)
    model = PixelRNN(architecture, image_shape=(height, width, channels), levels=levels,
                     **config)
    model.build()
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype(np.float32))
    return model


def random_images(model, n, seed=0):
    return np.random.default_rng(seed).integers(0, model.levels, (n, *model.image_shape))


def full_forward(model, images, conditioning=None):
    return model.head(model.features(model.scale_inputs(images), conditioning))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_logits_equal_full_forward_pass(architecture, setting):
    channels, levels = SETTINGS[setting]
    model = make_model(architecture, channels, levels)
    images = tf.constant(random_images(model, 2))
    want = tf.function(model.__call__)(images).numpy()
    got = tf.function(lambda x: sampling.cached_logits(model, x))(images).numpy()
    assert got.shape == (2, HEIGHT, WIDTH, channels, levels)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5,
                               err_msg=f"{architecture} {setting}: cached logits differ")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_logits_other_options_and_conditioning(architecture):
    """No residual, no skip, other kernel sizes, a tall image, per-layer conditioning."""
    model = make_model(architecture, 3, 4, height=6, width=3, residual=False, skip=False,
                       first_kernel=3, row_kernel=5, num_layers=3)
    images = tf.constant(random_images(model, 2, seed=1))
    width = 4 * model.hidden_dim if architecture != "pixelcnn" else model.hidden_dim
    rng = np.random.default_rng(5)
    conditioning = [tf.constant(rng.normal(size=(2, 6, 3, width)), tf.float32)
                    for _ in range(model.num_layers)]
    want = full_forward(model, images, conditioning).numpy()
    got = tf.function(lambda x, c: sampling.cached_logits(model, x, c))(
        images, conditioning).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    draw = {method: tf.function(lambda c, method=method: sampling.sample_graph(
        model, 2, 7, 1.0, method, conditioning=c))(conditioning).numpy()
        for method in sampling.METHODS}
    assert_same_draws(model, draw["cached"], draw["naive"], 7, conditioning=conditioning)
    assert np.abs(want - full_forward(model, images).numpy()).max() > 1e-2  # it matters


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_and_naive_samplers_agree(architecture, setting):
    channels, levels = SETTINGS[setting]
    model = make_model(architecture, channels, levels)
    cached = sampling.sample(model, 3, seed=11).numpy()
    naive = sampling.sample(model, 3, seed=11, method="naive").numpy()
    assert cached.dtype == np.uint8 and cached.shape == (3, HEIGHT, WIDTH, channels)
    assert cached.max() < levels
    assert_same_draws(model, cached, naive, 11)
    # The same call twice: the same computation, bit for bit.
    np.testing.assert_array_equal(sampling.sample(model, 3, seed=11).numpy(), cached)
    assert not np.array_equal(sampling.sample(model, 3, seed=12).numpy(), cached)
    # Sample n has the noise of (seed, n) whatever the batch size; its logits may round
    # differently in another batch shape.
    assert_same_draws(model, sampling.sample(model, 1, seed=11).numpy(), cached[:1], 11)


def test_a_planted_fault_fails_the_draw_comparison():
    """`assert_same_draws` forgives only rounding ties: another seed's noise, or another
    model's conditionals, fail it."""
    model = make_model("diagonal_bilstm", 3, 5)
    other = make_model("diagonal_bilstm", 3, 5, seed=4)
    cached = sampling.sample(model, 3, seed=11).numpy()
    for got, where in [(sampling.sample(model, 3, seed=12).numpy(), "another seed"),
                       (sampling.sample(other, 3, seed=11).numpy(), "another model")]:
        with pytest.raises(AssertionError, match="not a rounding tie"):
            assert_same_draws(model, got, cached, 11, where=where)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_completion(architecture):
    model = make_model(architecture, 3, 5)
    images = random_images(model, 2, seed=2)
    num_pixels = HEIGHT * WIDTH
    known = 7
    cached = sampling.complete(model, images, known, seed=4).numpy()
    flat = cached.reshape(2, num_pixels, 3)
    np.testing.assert_array_equal(flat[:, :known], images.reshape(2, num_pixels, 3)[:, :known])
    assert_same_draws(model, sampling.complete(model, images, known, seed=4,
                                               method="naive").numpy(), cached, 4)
    # The pixels to resample do not matter.
    changed = images.reshape(2, num_pixels, 3).copy()
    changed[:, known:] = (changed[:, known:] + 1) % model.levels
    np.testing.assert_array_equal(
        sampling.complete(model, changed.reshape(images.shape), known, seed=4).numpy(),
        cached)
    # All known: the input comes back; none known: a plain sample with the same seed.
    np.testing.assert_array_equal(
        sampling.complete(model, images, num_pixels, seed=4).numpy(), images)
    assert_same_draws(model, sampling.complete(model, images, 0, seed=4).numpy(),
                      sampling.sample(model, 2, seed=4).numpy(), 4)
    # Top-k rows convenience.
    np.testing.assert_array_equal(
        sampling.complete_rows(model, images, 2, seed=4).numpy(),
        sampling.complete(model, images, 2 * WIDTH, seed=4).numpy())


def test_more_than_256_levels_give_int32_samples():
    model = make_model("row_lstm", 1, 300, height=2, width=3, num_layers=1)
    cached = sampling.sample(model, 2, seed=1).numpy()
    assert cached.dtype == np.int32 and cached.max() < 300
    assert_same_draws(model, sampling.sample(model, 2, seed=1, method="naive").numpy(),
                      cached, 1)


def test_sampling_inside_a_tf_function():
    model = make_model("diagonal_bilstm", 1, 2)

    @tf.function
    def draw(seed):
        return sampling.sample(model, 2, seed)

    assert_same_draws(model, draw(tf.constant(9, tf.int64)).numpy(),
                      sampling.sample(model, 2, seed=9).numpy(), 9)


@pytest.mark.parametrize("architecture", ["row_lstm", "diagonal_bilstm"])
def test_low_temperature_picks_the_most_likely_value(architecture):
    """At temperature -> 0 every sub-pixel is the argmax of the model's own conditional
    given the sampled image (checked with an independent full forward pass)."""
    model = make_model(architecture, 3, 5)
    images = sampling.sample(model, 4, seed=1, temperature=1e-5).numpy()
    assert_argmax_up_to_ties(images, model(images).numpy())


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_samples_follow_the_model_distribution(temperature):
    """A 2x2 binary model has 16 images: the empirical frequencies of 4000 samples match
    prod_k softmax(logits_k / T)[x_k], computed by teacher forcing (6 sigma per image)."""
    model = make_model("diagonal_bilstm", 1, 2, height=2, width=2, first_kernel=3)
    every = np.array(list(itertools.product([0, 1], repeat=4))).reshape(16, 2, 2, 1)
    log_q = tf.nn.log_softmax(model(every) / temperature, axis=-1).numpy()
    log_q = np.take_along_axis(log_q, every[..., None], axis=-1).sum(axis=(1, 2, 3, 4))
    q = np.exp(log_q)
    assert abs(q.sum() - 1) < 1e-5
    n = 4000
    draws = sampling.sample(model, n, seed=123, temperature=temperature).numpy()
    index = draws.reshape(n, 4) @ np.array([8, 4, 2, 1])
    freq = np.bincount(index, minlength=16) / n
    sigma = np.sqrt(q * (1 - q) / n)
    assert np.all(np.abs(freq - q) <= 6 * sigma + 1e-3), (freq, q)


def test_bad_arguments_raise_value_errors():
    model = make_model("row_lstm", 1, 2)
    images = random_images(model, 2)
    cases = [
        lambda: sampling.sample(model, 2, seed=0, method="fast"),
        lambda: sampling.sample(model, -1, seed=0),
        lambda: sampling.sample(model, 2.5, seed=0),
        lambda: sampling.sample(model, 2, seed=1.5),
        lambda: sampling.sample(model, 2, seed=0, temperature=0.0),
        lambda: sampling.sample(model, 2, seed=0, temperature=float("nan")),
        lambda: sampling.complete(model, images, -1, seed=0),
        lambda: sampling.complete(model, images, HEIGHT * WIDTH + 1, seed=0),
        lambda: sampling.complete(model, images[0], 3, seed=0),  # no batch dimension
        lambda: sampling.complete(model, images.astype(np.float32), 3, seed=0),
        lambda: sampling.complete(model, images + 1, 3, seed=0),  # value 2 >= levels
        lambda: sampling.complete_rows(model, images, HEIGHT + 1, seed=0),
    ]
    for k, case in enumerate(cases):
        with pytest.raises(ValueError):
            case()
            pytest.fail(f"case {k} did not raise")


def test_in_graph_checks_reject_bad_values():
    model = make_model("pixelcnn", 1, 2)

    @tf.function
    def draw(temperature, known):
        return sampling.complete(model, tf.zeros((1, HEIGHT, WIDTH, 1), tf.int32), known, 0,
                                 temperature)

    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature"):
        draw(tf.constant(-1.0), tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="known_pixels"):
        draw(tf.constant(1.0), tf.constant(HEIGHT * WIDTH + 1))
