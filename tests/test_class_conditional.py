"""Class-conditional PixelRNN (num_classes=K): causality given the label, the label reaching
every logit, label validation, the exact marginal and the generative classifier, sampling
with labels (cached against naive, completion), saving, and `fit` on (images, labels)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import ARCHITECTURES, MultiScalePixelRNN, PixelRNN, sampling
from pixelrnn_tf import class_conditional as cc
from pixelrnn_tf.workdir import load_model

from draws import assert_argmax_up_to_ties, assert_same_draws

HEIGHT, WIDTH, CHANNELS = 5, 6, 3  # RGB exercises the colour masks; not square
LEVELS, K = 4, 3
FIRST_KERNEL = 3
N, S = 4, 2  # Multi-Scale: full side, small side


def make_model(architecture, num_classes=K, random=False, seed=3, **overrides):
    """A tiny RGB model; `random`: every weight (biases, initial states, the label embedding)
    drawn N(0, 0.3), except log p(y), which stays uniform.

    h = 12 and 48 output features leave each colour group 8 features and 16 output units, so
    that no sub-pixel's logits are cut off from the label (or a fresh model's from its
    inputs) by ReLUs that are all dead there, as they can be with 2 or 4 units per group."""
    tf.keras.utils.set_random_seed(seed)
    config = dict(levels=LEVELS, num_layers=2, hidden_dim=12, output_dim=48,
                  first_kernel=FIRST_KERNEL, num_classes=num_classes)
    config.update(overrides)
    model = PixelRNN(architecture, image_shape=(HEIGHT, WIDTH, CHANNELS), **config)
    return randomise(model, seed) if random else model


def make_multiscale(architecture="pixelcnn", num_classes=K, seed=3, random=True):
    """A tiny RGB Multi-Scale model (PixelCNN stages by default: the label path of the
    stages is the one tested above for every architecture, and PixelCNN is quick). h = 24
    gives a PixelCNN block's middle ReLU 8 units per colour group (see `make_model`)."""
    tf.keras.utils.set_random_seed(seed)
    model = MultiScalePixelRNN(architecture, (N, N, CHANNELS), S, levels=LEVELS, num_layers=1,
                               hidden_dim=24, output_dim=48, first_kernel=FIRST_KERNEL,
                               num_classes=num_classes)
    return randomise(model, seed) if random else model


def randomise(model, seed):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if "label_log_prior" not in weight.path:
            weight.assign(rng.normal(0.0, 0.3, weight.shape).astype(np.float32))
    return model


def random_images(model, n, seed=0):
    return np.random.default_rng(seed).integers(0, model.levels, (n, *model.image_shape))


@pytest.fixture(scope="module")
def models():
    """One random conditional model per architecture, shared so traced samplers are reused."""
    return {architecture: make_model(architecture, random=True)
            for architecture in ARCHITECTURES}


@pytest.fixture(scope="module")
def multiscale():
    return make_multiscale()


# --------------------------------------------------------------------------------------------
# Causality given the label (fresh models)


def allowed(i, j, c, shape=(HEIGHT, WIDTH, CHANNELS)):
    """[H, W, C] bool: the sub-pixels sub-pixel (i, j, c) may depend on."""
    mask = np.zeros(shape, bool)
    mask[:i] = True
    mask[i, :j] = True
    mask[i, j, :c] = True
    return mask


def must_see(architecture, i, j, c):
    """[H, W, C] bool: sub-pixels that must get a non-zero gradient (as test_causality)."""
    seen = np.zeros((HEIGHT, WIDTH, CHANNELS), bool)
    seen[i, j, :c] = True
    if architecture == "diagonal_bilstm":
        seen |= allowed(i, j, c)
        if i >= 1 and j < WIDTH - 1 - FIRST_KERNEL // 2:
            seen[i - 1, WIDTH - 1, CHANNELS - 1] = False  # see test_causality.must_see
    else:
        r = FIRST_KERNEL // 2
        window = np.zeros((HEIGHT, WIDTH), bool)
        window[max(0, i - r): i, max(0, j - r): j + r + 1] = True
        window[i, max(0, j - r): j] = True
        seen |= window[:, :, None]
    return seen


TARGETS = [(0, 0, 0), (0, 0, 2), (HEIGHT - 1, WIDTH - 1, 2), (0, WIDTH - 1, 1), (2, 0, 0),
           (3, 2, 1), (1, 4, 2), (HEIGHT - 1, 1, 0)]


def fresh_model(architecture):
    """A fresh (untrained) conditional model, sized as test_causality's."""
    return make_model(architecture, num_layers=1)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_causality_by_gradients_given_labels(architecture, rng):
    """Image t of the batch holds target t (one backward pass for all of them: images are
    independent); the last image is no target and must get no gradient."""
    model = fresh_model(architecture)
    batch = len(TARGETS) + 1
    scaled = model.scale_inputs(tf.constant(rng.integers(0, LEVELS, (batch, HEIGHT, WIDTH,
                                                                     CHANNELS))))
    labels = tf.constant(np.arange(batch) % K, tf.int32)
    index = tf.constant([[t, *target] for t, target in enumerate(TARGETS)])
    weights = tf.constant(rng.normal(size=LEVELS), tf.float32)

    # LSTMs: one XLA program, cheaper to build than the nested XLA loops their hand-written
    # backward passes compile while a tape records (lstm_cell.run_loops_compiled). A masked
    # tap still contributes an exact zero, so leaks and blind spots show as in test_causality.
    @tf.function(jit_compile=architecture != "pixelcnn")
    def grad():
        with tf.GradientTape() as tape:
            tape.watch(scaled)
            logits = model.head(model.features(scaled, model.block_conditioning(labels)))
            target = tf.reduce_sum(tf.gather_nd(logits, index) * weights)
        return tape.gradient(target, scaled)

    g = grad().numpy()
    assert np.all(g[-1] == 0), f"{architecture}: gradient leaks across batch elements"
    for t, (i, j, c) in enumerate(TARGETS):
        where = f"{architecture} target (i={i}, j={j}, c={c})"
        leak = (g[t] != 0) & ~allowed(i, j, c)
        assert not leak.any(), f"{where}: depends on later sub-pixels {np.argwhere(leak)}"
        blind = (g[t] == 0) & must_see(architecture, i, j, c)
        assert not blind.any(), f"{where}: does not see {np.argwhere(blind)}"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_causality_by_perturbation_given_labels(architecture, rng):
    """As test_causality: one traced function, one batch shape, so logits that cannot see a
    change are bit-identical. Also the label of one image never reaches another's logits."""
    model = fresh_model(architecture)
    call = tf.function(lambda x, y: model(x, y))
    images = rng.integers(0, LEVELS, (2, HEIGHT, WIDTH, CHANNELS))
    labels = np.array([2, 0])
    base = call(tf.constant(images), tf.constant(labels)).numpy()
    base0 = base[0].reshape(-1, LEVELS)
    num = HEIGHT * WIDTH * CHANNELS
    for k in [0, 1, CHANNELS - 1, WIDTH * CHANNELS, num // 2, num - 2, num - 1]:
        perturbed = images.copy()
        flat = perturbed[0].reshape(-1)
        flat[k] = (flat[k] + 1 + rng.integers(LEVELS - 1)) % LEVELS
        flat[k + 1:] = rng.integers(0, LEVELS, num - k - 1)
        perturbed[0] = flat.reshape(HEIGHT, WIDTH, CHANNELS)
        out = call(tf.constant(perturbed), tf.constant(labels)).numpy()
        out0 = out[0].reshape(-1, LEVELS)
        np.testing.assert_array_equal(
            out0[: k + 1], base0[: k + 1],
            err_msg=f"{architecture}: changing sub-pixel {k} changed earlier logits")
        if k < num - 1:
            assert np.any(out0[k + 1:] != base0[k + 1:]), "later logits ignore the change"
        np.testing.assert_array_equal(out[1], base[1], err_msg="image 0 reached image 1")
    # Another label for image 1: image 0's logits are untouched, image 1's change.
    out = call(tf.constant(images), tf.constant([2, 1])).numpy()
    np.testing.assert_array_equal(out[0], base[0], err_msg="image 1's label reached image 0")
    assert np.any(out[1] != base[1])


def test_multiscale_causality_given_labels(rng):
    """Stage 2 with the label and the small image: causal in the full image, no leak across
    the batch; stage 1 causal in the small image (gradients and perturbation)."""
    model = make_multiscale(seed=5, random=False)
    x = rng.integers(0, LEVELS, (2, N, N, CHANNELS))
    labels = tf.constant([2, 1], tf.int32)
    full_scaled = model.full.scale_inputs(tf.constant(x))
    small_scaled = model.small.scale_inputs(tf.constant(x[:, ::2, ::2]))

    @tf.function
    def grads(i, j, c):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([full_scaled, small_scaled])
            full = model.full.head(model.full.features(
                full_scaled, model.full.block_conditioning(
                    labels, model.conditioning(small_scaled))))
            small = model.small.head(model.small.features(
                small_scaled, model.small.block_conditioning(labels)))
            target_full = tf.reduce_sum(full[0, i, j, c] * tf.range(1.0, LEVELS + 1.0))
            target_small = tf.reduce_sum(small[0, i // 2, j // 2, c])
        return (tape.gradient(target_full, full_scaled), tape.gradient(target_full, small_scaled),
                tape.gradient(target_small, small_scaled))

    for i, j, c in [(0, 0, 0), (1, 2, 1), (N - 1, N - 1, 2), (2, 0, 2)]:
        g_full, g_small, g_stage1 = (g.numpy() for g in grads(*map(tf.constant, (i, j, c))))
        assert not ((g_full[0] != 0) & ~allowed(i, j, c, (N, N, CHANNELS))).any(), (i, j, c)
        assert np.all(g_full[0][i, j, :c] != 0), (i, j, c)
        assert np.all(g_full[1] == 0) and np.all(g_small[1] == 0) and np.all(g_stage1[1] == 0)
        assert np.all(g_small[0] != 0), f"({i}, {j}, {c}) ignores part of the small image"
        later = ~allowed(i // 2, j // 2, c, (S, S, CHANNELS))
        assert not (g_stage1[0] != 0)[later].any(), (i, j, c)

    logits = tf.function(model.full_logits)
    x1 = x[:1]
    small, one = x1[:, ::2, ::2], labels[:1]
    base = logits(x1, small, one).numpy().reshape(-1, LEVELS)
    for k in [0, 5, 25, N * N * CHANNELS - 1]:
        y = x1.reshape(-1).copy()
        y[k] = (y[k] + 1) % LEVELS
        y[k + 1:] = rng.integers(0, LEVELS, y.size - k - 1)
        out = logits(y.reshape(x1.shape), small, one).numpy().reshape(-1, LEVELS)
        np.testing.assert_array_equal(out[: k + 1], base[: k + 1])
        if k < y.size - 1:
            assert np.any(out[k + 1:] != base[k + 1:]), "stage 2 ignores the full image"


# --------------------------------------------------------------------------------------------
# The label reaches every logit


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_changing_the_label_changes_every_logit(models, architecture):
    """Every sub-pixel's logits, the first (0, 0, 0) included (it sees no pixel, only the
    label), differ between labels; an O(1e-5) difference would be rounding, not the label."""
    model = models[architecture]
    images = np.repeat(random_images(model, 1), K, axis=0)
    logits = model(images, np.arange(K)).numpy()  # image k with label k
    for a in range(K):
        for b in range(a + 1, K):
            change = np.abs(logits[a] - logits[b]).max(axis=-1)  # [H, W, C]
            assert change[0, 0, 0] > 1e-4, f"{architecture}: first sub-pixel ignores label"
            assert np.all(change > 1e-4), (
                f"{architecture}: labels {a}, {b}: sub-pixels {np.argwhere(change <= 1e-4)} "
                "ignore the label")


def test_changing_the_label_changes_every_logit_of_both_scales(multiscale):
    images = np.repeat(random_images(multiscale, 1), 2, axis=0)
    small, full = (t.numpy() for t in multiscale(images, np.array([0, 2])))
    for name, logits in [("small", small), ("full", full)]:
        change = np.abs(logits[0] - logits[1]).max(axis=-1)
        assert np.all(change > 1e-4), f"{name}: {np.argwhere(change <= 1e-4)} ignore the label"


def test_likelihood_given_labels(models, rng):
    """log_prob, pixel_log_prob and log_prob_terms given labels agree with the logits of
    `model(images, labels)` and the dict call (one architecture: the scoring is shared)."""
    model = models["row_lstm"]
    images = rng.integers(0, LEVELS, (3, HEIGHT, WIDTH, CHANNELS))
    labels = np.array([0, 2, 1])
    logits = model({"images": images, "labels": labels}).numpy().astype(np.float64)
    np.testing.assert_allclose(model(images, labels).numpy(), logits, rtol=0, atol=1e-5)
    log_softmax = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    want = np.take_along_axis(log_softmax, images[..., None], -1)[..., 0]
    np.testing.assert_allclose(model.pixel_log_prob(images, labels).numpy(), want, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(model.log_prob(images, labels).numpy(), want.sum((1, 2, 3)),
                               rtol=1e-5)
    np.testing.assert_allclose(model.log_prob_terms(images, labels)["total"].numpy(),
                               want.sum((1, 2, 3)), rtol=1e-5)


def test_conditional_likelihood_is_normalised_for_every_label():
    """Summed over every 2x2 ternary grey image, p(x | y) is 1 for each y."""
    model = randomise(PixelRNN("diagonal_bilstm", image_shape=(2, 2, 1), levels=3,
                               num_layers=1, hidden_dim=4, output_dim=8, first_kernel=3,
                               num_classes=2), 0)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 4, indexing="ij"), -1).reshape(-1, 2, 2, 1)
    for y in range(2):
        lp = model.log_prob(grid, np.full(len(grid), y)).numpy().astype(np.float64)
        assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-4), y


# --------------------------------------------------------------------------------------------
# Validation


LABEL_CASES = {
    # name: (conditional model?, labels, message)
    "missing": (True, None, "pass labels"),
    "too_high": (True, [0, K], r"\[0, 3\)"),
    "negative": (True, [-1, 0], r"\[0, 3\)"),
    "count": (True, [1], "1 labels for a batch of 2"),
    "float": (True, [0.0, 1.0], "integers"),
    "rank": (True, [[0, 1]], "rank 1"),
    "unconditional": (False, [0, 1], "unconditional"),
}

ENTRIES = {
    "call": lambda m, x, y: m(x) if y is None else m(x, y),
    "dict": lambda m, x, y: m({"images": x} if y is None else {"images": x, "labels": y}),
    "log_prob": lambda m, x, y: m.log_prob(x, y),
    "pixel_log_prob": lambda m, x, y: m.pixel_log_prob(x, y),
    "log_prob_terms": lambda m, x, y: m.log_prob_terms(x, y),
    "sample": lambda m, x, y: sampling.sample(m, len(x), seed=0, labels=y),
    "complete": lambda m, x, y: sampling.complete(m, x, 3, seed=0, labels=y),
    "complete_rows": lambda m, x, y: sampling.complete_rows(m, x, 1, seed=0, labels=y),
}


@pytest.fixture(scope="module")
def tiny_pair():
    """A conditional and an unconditional PixelRNN, and a conditional Multi-Scale one."""
    args = dict(image_shape=(2, 2, CHANNELS), levels=LEVELS, num_layers=1, hidden_dim=3,
                output_dim=6, first_kernel=3)
    return {True: PixelRNN("pixelcnn", num_classes=K, **args),
            False: PixelRNN("pixelcnn", **args),
            "multiscale": MultiScalePixelRNN("pixelcnn", (2, 2, CHANNELS), 1, levels=LEVELS,
                                             num_layers=1, hidden_dim=3, output_dim=6,
                                             first_kernel=3, num_classes=K)}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("case", LABEL_CASES)
def test_bad_labels_raise_clear_value_errors(tiny_pair, case, entry):
    conditional, labels, match = LABEL_CASES[case]
    labels = None if labels is None else np.array(labels)
    images = np.zeros((2, 2, 2, CHANNELS), np.int32)
    models = [tiny_pair[conditional]] + ([tiny_pair["multiscale"]] if conditional else [])
    for model in models:
        with pytest.raises(ValueError, match=match) as error:
            ENTRIES[entry](model, images, labels)
        if entry not in ("call", "dict"):  # Keras wraps errors raised inside `call`
            assert "\n" not in str(error.value), str(error.value)


def test_good_labels_are_accepted_in_every_integer_form(tiny_pair):
    model = tiny_pair[True]
    images = np.zeros((2, 2, 2, CHANNELS), np.int32)
    want = model.log_prob(images, np.array([0, 2], np.int32)).numpy()
    for labels in ([0, 2], np.array([0, 2], np.int64), np.array([0, 2], np.uint8),
                   tf.constant([0, 2], tf.int64)):
        np.testing.assert_allclose(model.log_prob(images, labels).numpy(), want, rtol=1e-6)
    empty = np.zeros((0, 2, 2, CHANNELS), np.int32)
    assert model.log_prob(empty, np.zeros(0, np.int32)).shape == (0,)


def test_in_graph_label_checks(tiny_pair):
    """Labels known only at run time fail an in-graph assert."""
    model = tiny_pair[True]
    call = tf.function(lambda x, y: model(x, y), input_signature=[
        tf.TensorSpec([None, 2, 2, CHANNELS], tf.int32), tf.TensorSpec([None], tf.int32)])
    images = tf.zeros((2, 2, 2, CHANNELS), tf.int32)
    assert call(images, tf.constant([0, 2])).shape == (2, 2, 2, CHANNELS, LEVELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must lie in"):
        call(images, tf.constant([0, K]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one label per image"):
        call(images, tf.constant([0, 1, 2]))


def test_bad_label_counts_and_an_unconditional_classifier_are_refused(tiny_pair):
    model = tiny_pair[True]
    for counts in ([1, 2], [1, 2, 3, 4], [1, -1, 2], [0, 0, 0]):
        with pytest.raises(ValueError):
            model.set_label_prior(counts)
            pytest.fail(f"counts {counts} accepted")
    np.testing.assert_allclose(model.label_log_prior.numpy(), np.full(K, -np.log(K)),
                               rtol=1e-6)  # untouched by the refused counts: still uniform
    with pytest.raises(ValueError, match="class-conditional"):
        cc.class_log_likelihoods(tiny_pair[False], np.zeros((1, 2, 2, CHANNELS), np.int32))


@pytest.mark.parametrize("fn", ["marginal_log_prob", "classify", "joint_log_probs"])
def test_marginal_and_classifier_refuse_an_unconditional_model(tiny_pair, fn):
    with pytest.raises(ValueError, match="class-conditional"):
        getattr(cc, fn)(tiny_pair[False], np.zeros((1, 2, 2, CHANNELS), np.int32))


# --------------------------------------------------------------------------------------------
# Marginal likelihood and the generative classifier


def by_hand(model, images):
    """[B, K] float64: log p(x | y) per class, one `log_prob` call per class."""
    return np.stack([model.log_prob(images, np.full(len(images), y)).numpy()
                     for y in range(model.num_classes)], axis=1).astype(np.float64)


def logsumexp(x, axis):
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis))


def softmax(x):
    top = x.max(-1, keepdims=True)
    e = np.exp(x - top)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("which", ["pixelcnn", "multiscale"])
def test_marginal_and_classifier_match_a_hand_computation(which):
    # Own models: the prior set here must not leak into the shared ones.
    model = make_multiscale() if which == "multiscale" else make_model(which, random=True)
    images = random_images(model, 6, seed=4)
    conditional = by_hand(model, images)
    # Default prior: uniform.
    np.testing.assert_allclose(model.label_log_prior.numpy(), np.full(K, -np.log(K)),
                               rtol=1e-6)
    np.testing.assert_allclose(cc.class_log_likelihoods(model, images).numpy(), conditional,
                               rtol=1e-5, atol=1e-4)
    # The class most images would pick under a uniform prior gets a zero count.
    favourite = int(np.bincount(conditional.argmax(1), minlength=K).argmax())
    counts = np.array([3.0, 5.0, 2.0])
    counts[favourite] = 0.0
    model.set_label_prior(counts)
    with np.errstate(divide="ignore"):
        prior = np.log(counts / counts.sum())
    np.testing.assert_allclose(model.label_log_prior.numpy(), prior, rtol=1e-6)
    assert model.label_log_prior.numpy()[favourite] == -np.inf
    if which == "multiscale":
        np.testing.assert_array_equal(model.full.label_log_prior.numpy(),
                                      model.small.label_log_prior.numpy())
    joint = conditional + prior[None]
    np.testing.assert_allclose(cc.joint_log_probs(model, images).numpy(), joint, rtol=1e-5,
                               atol=1e-4)
    marginal = cc.marginal_log_prob(model, images).numpy()
    np.testing.assert_allclose(marginal, logsumexp(joint, 1), rtol=1e-5, atol=1e-4)
    assert np.all(marginal >= joint.max(1) - 1e-4)  # at least the best term
    label, probabilities = (t.numpy() for t in cc.classify(model, images))
    assert label.dtype == np.int32 and label.shape == (6,)
    assert probabilities.shape == (6, K)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, softmax(joint), atol=1e-5)
    assert np.all(joint[np.arange(6), label] >= joint.max(1) - 1e-4)  # argmax up to ties
    assert not np.any(label == favourite) and np.all(probabilities[:, favourite] == 0)
    # Evaluation sums.
    truth = np.array([0, 1, 2, 0, 1, 2])
    sums = {k: v.numpy() for k, v in cc.classifier_sums(model, images, truth).items()}
    assert sums["marginal"] == pytest.approx(-marginal.sum(), rel=1e-5)
    assert sums["correct"] == np.sum(label == truth)


# --------------------------------------------------------------------------------------------
# Sampling with labels


class _LabelledStage:
    """A sampling stage seen through fixed labels, for `assert_same_draws`, which recomputes
    each stage's conditioning from `stage.conditioning(images)` alone."""

    def __init__(self, stage, labels):
        self.stage, self.model, self.labels = stage, stage.model, labels

    def select(self, images):
        return self.stage.select(images)

    def conditioning(self, images, labels=None):
        return self.stage.conditioning(images, self.labels)


class Labelled:
    """`model` whose sampling stages are all conditioned on `labels` (int [N])."""

    def __init__(self, model, labels):
        self.model, self.labels = model, tf.constant(labels, tf.int32)

    def sampling_stages(self):
        return tuple(_LabelledStage(s, self.labels) for s in self.model.sampling_stages())


def test_labelled_view_catches_wrong_labels(models):
    """The draw comparison through `Labelled` is not blind: draws of other labels fail it."""
    model = models["diagonal_bilstm"]
    got = sampling.sample(model, 3, seed=11, labels=[2, 0, 1]).numpy()
    want = sampling.sample(model, 3, seed=11, labels=[0, 1, 2]).numpy()
    assert not np.array_equal(got, want)
    with pytest.raises(AssertionError, match="not a rounding tie"):
        assert_same_draws(Labelled(model, [0, 1, 2]), got, want, 11)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sampling_with_labels(models, architecture):
    model = models[architecture]
    labels = [0, 1, 2]
    cached = sampling.sample(model, 3, seed=11, labels=labels).numpy()
    assert cached.dtype == np.uint8 and cached.shape == (3, HEIGHT, WIDTH, CHANNELS)
    assert cached.max() < LEVELS
    view = Labelled(model, labels)
    naive = sampling.sample(model, 3, seed=11, method="naive", labels=labels).numpy()
    assert_same_draws(view, naive, cached, 11, where=f"{architecture} naive")
    # The same call twice: bit for bit.
    np.testing.assert_array_equal(sampling.sample(model, 3, seed=11, labels=labels).numpy(),
                                  cached)
    # Another label with the same seed (the same noise): other images.
    other = sampling.sample(model, 3, seed=11, labels=[1, 2, 0]).numpy()
    assert any(not np.array_equal(other[n], cached[n]) for n in range(3))
    # Image 0 keeps its label: its draw is the same; the others' labels do not reach it.
    kept = sampling.sample(model, 3, seed=11, labels=[0, 0, 0]).numpy()
    assert_same_draws(Labelled(model, [0]), kept[:1], cached[:1], 11, where="image 0")
    # (`sampling.cached_logits` given labels against `model(images, labels)` would check the
    # cached path's logits directly, but tracing it costs ~5 s of CPU per model; the naive
    # comparison above and the low-temperature argmax below check that path's labels.)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_low_temperature_draws_are_the_argmax_given_the_label(models, architecture):
    """At temperature -> 0 the cached sampler picks the argmax of its own logits: they must
    be the model's given the label (up to rounding ties)."""
    model = models[architecture]
    labels = np.array([2, 1, 0])
    images = sampling.sample(model, 3, seed=1, temperature=1e-5, labels=labels).numpy()
    assert_argmax_up_to_ties(images, model(images, labels).numpy())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_completion_with_labels(models, architecture):
    model = models[architecture]
    images = random_images(model, 2, seed=2)
    labels = [2, 1]
    known = 8
    cached = sampling.complete(model, images, known, seed=4, labels=labels).numpy()
    flat = cached.reshape(2, -1, CHANNELS)
    np.testing.assert_array_equal(flat[:, :known], images.reshape(2, -1, CHANNELS)[:, :known])
    # The label reaches the completion: another label (the same noise) completes otherwise.
    other = sampling.complete(model, images, known, seed=4, labels=[0, 0]).numpy()
    assert not np.array_equal(other, cached)
    np.testing.assert_array_equal(  # complete_rows is complete with known_rows * W
        sampling.complete_rows(model, images, 1, seed=4, labels=labels).numpy(),
        sampling.complete(model, images, WIDTH, seed=4, labels=labels).numpy())
    np.testing.assert_array_equal(
        sampling.complete(model, images, HEIGHT * WIDTH, seed=4, labels=labels).numpy(),
        images)


def test_multiscale_sampling_with_labels(multiscale):
    model = multiscale
    labels = [0, 2, 1]
    cached = sampling.sample(model, 3, seed=5, labels=labels).numpy()
    assert cached.shape == (3, N, N, CHANNELS) and cached.max() < LEVELS
    view = Labelled(model, labels)
    assert_same_draws(view, sampling.sample(model, 3, seed=5, method="naive",
                                            labels=labels).numpy(), cached, 5)
    # Stage 1 is the small model's own draw given the label.
    assert_same_draws(Labelled(model.small, labels),
                      sampling.sample(model.small, 3, seed=5, labels=labels).numpy(),
                      cached[:, ::2, ::2], 5)
    other = sampling.sample(model, 3, seed=5, labels=[1, 0, 2]).numpy()
    assert any(not np.array_equal(other[n], cached[n]) for n in range(3))
    # Completion keeps the known prefix.
    known = 6
    done = sampling.complete(model, cached, known, seed=9, labels=labels).numpy()
    np.testing.assert_array_equal(done.reshape(3, -1, CHANNELS)[:, :known],
                                  cached.reshape(3, -1, CHANNELS)[:, :known])


# --------------------------------------------------------------------------------------------
# Saving


def assert_same_conditional(loaded, model, images, labels):
    assert loaded.num_classes == model.num_classes == K
    assert loaded.get_config() == model.get_config()
    assert loaded.get_config()["num_classes"] == K
    np.testing.assert_array_equal(loaded.label_log_prior.numpy(),
                                  model.label_log_prior.numpy())
    before = {w.path: w.numpy() for w in model.weights}
    after = {w.path: w.numpy() for w in loaded.weights}
    assert before.keys() == after.keys()
    embeddings = [p for p in before if "label_embedding" in p]
    assert embeddings
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    np.testing.assert_array_equal(cc.marginal_log_prob(loaded, images).numpy(),
                                  cc.marginal_log_prob(model, images).numpy())
    np.testing.assert_array_equal(loaded.log_prob(images, labels).numpy(),
                                  model.log_prob(images, labels).numpy())


@pytest.mark.parametrize("which", ["pixel_rnn", "multiscale"])
def test_keras_round_trip_keeps_labels(models, multiscale, which, tmp_path):
    model = models["pixelcnn"] if which == "pixel_rnn" else multiscale
    model.set_label_prior([4, 0, 1])  # a -inf entry must survive too
    images = random_images(model, 2, seed=6)
    labels = np.array([1, 2])
    path = tmp_path / "conditional.keras"
    model.save(path)
    for loaded in (keras.saving.load_model(path, safe_mode=True), load_model(path)):
        assert type(loaded) is type(model)
        assert_same_conditional(loaded, model, images, labels)
        if which == "multiscale":
            for stage in ("small", "full"):
                np.testing.assert_array_equal(
                    getattr(loaded, stage).label_log_prior.numpy(),
                    getattr(model, stage).label_log_prior.numpy())


def test_unconditional_models_are_unchanged(tmp_path):
    """num_classes=0: no num_classes in the config, no label weights, and a round trip
    gives an unconditional model again."""
    args = dict(levels=LEVELS, num_layers=1, hidden_dim=3, output_dim=6, first_kernel=3)
    for model in (PixelRNN("row_lstm", image_shape=(3, 3, CHANNELS), **args),
                  MultiScalePixelRNN("row_lstm", (2, 2, CHANNELS), 1, **args)):
        assert model.num_classes == 0
        assert "num_classes" not in model.get_config()
        assert "num_classes" not in model.describe()
        assert not [w.path for w in model.weights if "label" in w.path]
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = load_model(path)
        assert loaded.num_classes == 0 and "num_classes" not in loaded.get_config()
        assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    conditional = PixelRNN("row_lstm", image_shape=(3, 3, CHANNELS), num_classes=2, **args)
    assert conditional.describe()["num_classes"] == 2
    extra = {w.path for w in conditional.weights} - {w.path for w in model.weights}
    assert {p.rsplit("/", 1)[-1] for p in extra} >= {"label_log_prior", "embeddings"}


# --------------------------------------------------------------------------------------------
# fit / evaluate / predict on (images, labels)


def labelled_dataset(images, labels, batch=4):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


def test_fit_conditions_on_the_labels():
    """Training on labels 0 and 1 only moves their embedding rows; class 2's row, never
    seen, stays exactly where it was. evaluate and predict use the labels too."""
    model = make_model("pixelcnn", num_layers=1, seed=8)
    rng = np.random.default_rng(8)
    images = rng.integers(0, LEVELS, (8, HEIGHT, WIDTH, CHANNELS)).astype(np.int32)
    labels = np.array([0, 1] * 4, np.int32)
    table = next(w for w in model.weights if "label_embedding" in w.path)
    before = table.numpy().copy()
    model.compile(keras.optimizers.Adam(3e-2))
    history = model.fit(labelled_dataset(images, labels), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = table.numpy()
    assert np.all(np.any(after[:2] != before[:2], axis=1)), "seen classes did not train"
    np.testing.assert_array_equal(after[2], before[2], err_msg="an unseen class trained")

    result = model.evaluate(labelled_dataset(images, labels), verbose=0, return_dict=True)
    nll = -model.log_prob(images, labels).numpy().mean()
    assert result["loss"] == pytest.approx(nll, rel=1e-4)
    other = -model.log_prob(images, (labels + 2) % K).numpy().mean()
    assert abs(other - nll) > 1e-3, "the labels make no difference to the NLL"
    predicted = model.predict(labelled_dataset(images, labels), verbose=0)
    np.testing.assert_allclose(predicted, model(images, labels).numpy(), rtol=0, atol=1e-5)
    # Images without labels: the conditional model says so.
    with pytest.raises(ValueError, match="pass labels"):
        model.evaluate(tf.data.Dataset.from_tensor_slices(images).batch(4), verbose=0)


def test_multiscale_evaluate_and_predict_on_labels(multiscale):
    """A Multi-Scale model's own loss (both stages) is conditioned on the labels too."""
    model = multiscale
    rng = np.random.default_rng(9)
    images = rng.integers(0, LEVELS, (4, N, N, CHANNELS)).astype(np.int32)
    labels = np.array([2, 2, 0, 1], np.int32)
    model.compile()
    result = model.evaluate(labelled_dataset(images, labels, 2), verbose=0, return_dict=True)
    nll = -model.log_prob(images, labels).numpy().mean()
    assert result["loss"] == pytest.approx(nll, rel=1e-4)
    other = -model.log_prob(images, (labels + 1) % K).numpy().mean()
    assert abs(other - nll) > 1e-3, "the labels make no difference to the NLL"
    small, full = model.predict(labelled_dataset(images, labels, 2), verbose=0)
    want = model(images, labels)
    np.testing.assert_allclose(small, want[0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(full, want[1].numpy(), rtol=0, atol=1e-5)


def test_unconditional_fit_ignores_labels():
    model = make_model("pixelcnn", num_classes=0, num_layers=1, seed=10)
    rng = np.random.default_rng(10)
    images = rng.integers(0, LEVELS, (8, HEIGHT, WIDTH, CHANNELS)).astype(np.int32)
    labels = rng.integers(0, 5, 8).astype(np.int32)  # any ints: never looked at
    model.compile(keras.optimizers.Adam(1e-2))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(labelled_dataset(images, labels), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(np.any(w.numpy() != b) for w, b in zip(model.trainable_weights, before))
    result = model.evaluate(labelled_dataset(images, labels), verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(-model.log_prob(images).numpy().mean(), rel=1e-4)
