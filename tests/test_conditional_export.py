"""The SavedModel of a class-conditional PixelRNN (num_classes=K): its SignatureDefs (the
labels inputs and the classify signature) against an explicit table, an unconditional export's
SignatureDefs exactly as before, scores / classify / draws against the in-memory model, label
validation inside the graph, and every signature in a process without this project, through
the TF1 session loader TF Serving uses and (slow) through saved_model_cli.

Draws are compared with `draws.assert_same_draws`, which recomputes a differing sub-pixel's
scores from the model's forward pass; its `conditioning` argument takes the per-block maps the
draw was conditioned on, and for a `PixelRNN` the label's are exactly
`model.block_conditioning(labels)` (what `SamplingStage.conditioning` hands the samplers), so
the check is the same tie-robust one as for unconditional exports.
`test_draw_check_sees_the_label` shows it fails for draws made with other labels.
"""

import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import PixelRNN, class_conditional, records, sampling, serving

from draws import assert_same_draws
from export_fixtures import (
    ASSERT_NO_PROJECT_LOADED,
    NO_PROJECT,
    process_in_background,
    random_images,
    run_saved_model_cli_inputs,
    signature_defs,
    tf1_session_requests,
)

SHAPE = (6, 6, 1)
LEVELS = 4
K = 3
COUNTS = [6, 3, 1]  # training label counts: p(y) = 0.6, 0.3, 0.1
MAX_BATCH = 8
KNOWN = 15  # pixels kept by `complete`: rows 0-1 and 3 pixels of row 2
SEED, TEMPERATURE = 5, 0.8
LABELS = np.array([2, 0, 1], np.int32)  # the requests' labels, one per image

# --------------------------------------------------------------------------------------------
# The SignatureDefs TF Serving reads, written out: {signature: (method, inputs, outputs)},
# each tensor (dtype enum, dims with -1 for an unknown size, unknown rank).

PREDICT = "tensorflow/serving/predict"
U8, I32, I64 = tf.uint8.as_datatype_enum, tf.int32.as_datatype_enum, tf.int64.as_datatype_enum
F32, STRING = tf.float32.as_datatype_enum, tf.string.as_datatype_enum
IMAGES = (U8, [-1, 6, 6, 1], False)
SCORES = {"log_prob": (F32, [-1], False), "bits_per_dim": (F32, [-1], False),
          "pixel_log_prob": (F32, [-1, 6, 6, 1], False)}

# An unconditional model of SHAPE: the SignatureDefs from before class-conditional models.
UNCONDITIONAL = {
    "serving_default": (PREDICT, {"images": IMAGES}, SCORES),
    "sample": (PREDICT, {"num_samples": (I32, [], False), "seed": (I64, [], False),
                         "temperature": (F32, [], False)},
               {"images": IMAGES}),
    "complete": (PREDICT, {"images": IMAGES, "known_pixels": (I32, [], False),
                           "seed": (I64, [], False), "temperature": (F32, [], False)},
                 {"images": IMAGES}),
    "serve_examples": (PREDICT, {"examples": (STRING, [-1], False)}, SCORES),
}

# A conditional model of SHAPE with K = 3 classes.
CONDITIONAL = {
    "serving_default": (PREDICT, {"images": IMAGES, "labels": (I32, [-1], False)}, SCORES),
    "sample": (PREDICT, {"num_samples": (I32, [], False), "seed": (I64, [], False),
                         "temperature": (F32, [], False), "labels": (I32, [-1], False)},
               {"images": IMAGES}),
    "complete": (PREDICT, {"images": IMAGES, "known_pixels": (I32, [], False),
                           "seed": (I64, [], False), "temperature": (F32, [], False),
                           "labels": (I32, [-1], False)},
                 {"images": IMAGES}),
    "serve_examples": (PREDICT, {"examples": (STRING, [-1], False)}, SCORES),
    "classify": (PREDICT, {"images": IMAGES},
                 {"probabilities": (F32, [-1, 3], False), "label": (I32, [-1], False),
                  "log_prob": (F32, [-1], False)}),
}


def make_model(seed=0):
    """Every weight ~ N(0, 1): at the usual N(0, 0.3) of `randomize_weights` the label
    hardly moves a draw of this tiny model, at N(0, 1) it changes most images (and the
    generative classifier recovers the class of a sample), so the tests below see it."""
    tf.keras.utils.set_random_seed(seed)
    model = PixelRNN("diagonal_bilstm", image_shape=SHAPE, levels=LEVELS, num_layers=1,
                     hidden_dim=4, output_dim=8, first_kernel=3, num_classes=K)
    model.build()
    rng = np.random.default_rng(seed)
    for weight in model.weights:  # the prior too: set it after
        weight.assign(rng.normal(0.0, 1.0, weight.shape).astype(np.float32))
    model.set_label_prior(COUNTS)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, export dir) of a conditional Diagonal BiLSTM (export.py on a conditional
    .keras model, with its check before publishing, is tested in
    test_conditional_sample_cli.py)."""
    model = make_model()
    path = tmp_path_factory.mktemp("conditional_export") / "1"
    serving.write_saved_model(model, path, max_batch=MAX_BATCH)
    return model, str(path)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[1])


def images_for(n, seed=1):
    return random_images(n, SHAPE, LEVELS, seed)


def conditioning(model, labels):
    """The per-block maps a one-stage conditional model draws with (module docstring)."""
    return model.block_conditioning(tf.constant(labels, tf.int32))


def scalars(seed=SEED):
    return dict(seed=tf.constant(seed, tf.int64), temperature=tf.constant(TEMPERATURE))


def expected(model, images, labels=LABELS):
    """{signature: {output: value}} the in-memory model gives for the module's requests."""
    ints = images.astype(np.int32)
    log_prob = model.log_prob(ints, labels).numpy()
    scores = {"log_prob": log_prob, "pixel_log_prob": model.pixel_log_prob(ints, labels).numpy(),
              "bits_per_dim": -log_prob / (np.prod(SHAPE) * np.log(2))}
    label, probabilities = class_conditional.classify(model, ints)
    return {
        "serving_default": scores,
        "serve_examples": scores,
        "classify": {"probabilities": probabilities.numpy(), "label": label.numpy(),
                     "log_prob": class_conditional.marginal_log_prob(model, ints).numpy()},
        "sample": {"images": sampling.sample(model, len(labels), SEED, TEMPERATURE,
                                             labels=labels).numpy()},
        "complete": {"images": sampling.complete(model, ints, KNOWN, SEED, TEMPERATURE,
                                                 labels=labels).numpy()},
    }


def logsumexp(x):
    x = np.asarray(x, np.float64)
    top = x.max(axis=1, keepdims=True)
    return (np.log(np.exp(x - top).sum(axis=1, keepdims=True)) + top)[:, 0]


def softmax(x):
    return np.exp(np.asarray(x, np.float64) - logsumexp(x)[:, None])


def assert_matches(model, got, want, where, labels=LABELS):
    """Scores to float tolerance, classify's probabilities to 1e-5 and its label exactly
    unless the top two probabilities are within 1e-5 (a rounding tie), draws up to a
    rounding tie."""
    for key, value in want.items():
        if where.startswith("classify") and key == "label":
            top2 = np.sort(want["probabilities"], axis=1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 1e-5
            np.testing.assert_array_equal(got[key][clear], value[clear], err_msg=where)
        elif where.startswith("classify") and key == "probabilities":
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-5, err_msg=where)
        elif value.dtype == np.uint8:
            assert_same_draws(model, got[key], value, SEED, TEMPERATURE, f"{where}: {key}",
                              conditioning=conditioning(model, labels))
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-4,
                                       err_msg=f"{where}: {key}")


# --------------------------------------------------------------------------------------------
# SignatureDefs


def test_conditional_signature_defs_and_metadata(exported):
    _, path = exported
    assert signature_defs(path) == CONDITIONAL
    metadata = serving.read_metadata(path)
    assert metadata["num_classes"] == K and metadata["max_batch"] == MAX_BATCH
    assert metadata["signatures"] == ["serving_default", "sample", "complete",
                                      "serve_examples", "classify"]


def test_unconditional_signature_defs_are_unchanged(tmp_path):
    """An unconditional export has exactly the SignatureDefs it had before conditional
    models: no labels input anywhere, no classify (PixelCNN exports quickest; the
    architecture does not show in the signatures)."""
    model = PixelRNN("pixelcnn", image_shape=SHAPE, levels=LEVELS, num_layers=1, hidden_dim=3,
                     output_dim=8, first_kernel=3)
    metadata = serving.write_saved_model(model, tmp_path / "1", max_batch=MAX_BATCH)
    assert signature_defs(tmp_path / "1") == UNCONDITIONAL
    assert "num_classes" not in metadata
    assert metadata["signatures"] == ["serving_default", "sample", "complete", "serve_examples"]
    assert serving.signature_names(model) == list(UNCONDITIONAL)


# --------------------------------------------------------------------------------------------
# Outputs against the in-memory model (tf.saved_model.load in this process)


def test_scores_and_classify_match_the_model(exported, loaded):
    model, _ = exported
    s = loaded.signatures
    images = images_for(3)
    want = expected(model, images)
    batch = dict(images=tf.constant(images), labels=tf.constant(LABELS))
    got = {k: v.numpy() for k, v in s["serving_default"](**batch).items()}
    assert_matches(model, got, want["serving_default"], "serving_default")
    examples = list(records.encode_examples(images, LABELS.astype(np.int64)))
    got = {k: v.numpy() for k, v in s["serve_examples"](examples=tf.constant(examples)).items()}
    assert_matches(model, got, want["serve_examples"], "serve_examples")
    classified = {k: v.numpy() for k, v in s["classify"](images=tf.constant(images)).items()}
    assert classified["label"].dtype == np.int32
    assert_matches(model, classified, want["classify"], "classify")

    # The export's own arithmetic: log p(x | y) of every class from serving_default, plus
    # the stored log p(y), gives classify's posterior and marginal.
    per_class = np.stack([s["serving_default"](images=tf.constant(images), labels=tf.constant(
        [y] * len(images), tf.int32))["log_prob"].numpy() for y in range(K)], axis=1)
    assert np.abs(per_class[:, 0] - per_class[:, 1]).max() > 1e-3, "the label is ignored"
    joint = per_class.astype(np.float64) + np.log(np.array(COUNTS) / sum(COUNTS))
    np.testing.assert_allclose(classified["probabilities"], softmax(joint), atol=1e-5)
    np.testing.assert_allclose(classified["log_prob"], logsumexp(joint), rtol=1e-5, atol=1e-4)
    # The export carries the model's uneven p(y), not a uniform one.
    assert np.abs(classified["log_prob"] - logsumexp(per_class - np.log(K))).min() > 0.05


def test_sample_and_complete_with_labels(exported, loaded):
    model, _ = exported
    s = loaded.signatures
    labels = np.array([0, 1, 2, 2], np.int32)
    draw = s["sample"](num_samples=tf.constant(4), labels=tf.constant(labels),
                       **scalars())["images"].numpy()
    assert draw.dtype == np.uint8 and draw.shape == (4, *SHAPE) and draw.max() < LEVELS
    assert_same_draws(model, draw, sampling.sample(model, 4, SEED, TEMPERATURE,
                                                   labels=labels).numpy(),
                      SEED, TEMPERATURE, "sample", conditioning=conditioning(model, labels))
    np.testing.assert_array_equal(s["sample"](num_samples=tf.constant(4),
                                              labels=tf.constant(labels), **scalars())["images"],
                                  draw)
    other = s["sample"](num_samples=tf.constant(4), labels=tf.constant((labels + 1) % K),
                        **scalars())["images"].numpy()
    assert not np.array_equal(other, draw), "the same seed with other labels, the same images"

    images = images_for(3, seed=5)
    part = s["complete"](images=tf.constant(images), known_pixels=tf.constant(KNOWN),
                         labels=tf.constant(LABELS), **scalars())["images"].numpy()
    assert_matches(model, {"images": part}, expected(model, images)["complete"], "complete")
    flat = images.reshape(3, -1, SHAPE[2])
    np.testing.assert_array_equal(part.reshape(3, -1, SHAPE[2])[:, :KNOWN], flat[:, :KNOWN])
    changed = flat.copy()
    changed[:, KNOWN:] = (changed[:, KNOWN:] + 1) % LEVELS  # the unknown pixels are ignored
    np.testing.assert_array_equal(
        s["complete"](images=tf.constant(changed.reshape(images.shape)),
                      known_pixels=tf.constant(KNOWN), labels=tf.constant(LABELS),
                      **scalars())["images"], part)


def test_classify_recovers_the_class_of_samples(exported, loaded):
    """The export's sample and classify together: p(y | x) of an image drawn given y puts
    most of its images back in class y (this model's labels matter that much)."""
    s = loaded.signatures
    labels = np.repeat(np.arange(K, dtype=np.int32), 4)
    draws = np.concatenate([s["sample"](num_samples=tf.constant(4), labels=tf.constant(
        labels[i:i + 4]), **scalars(i))["images"].numpy() for i in range(0, len(labels), 4)])
    predicted = np.concatenate([s["classify"](images=tf.constant(draws[i:i + 4]))[
        "label"].numpy() for i in range(0, len(labels), 4)])
    assert np.mean(predicted == labels) >= 0.75, (predicted, labels)


def test_draw_check_sees_the_label(exported):
    """assert_same_draws given a draw's label conditioning rejects a draw made with other
    labels (and the same seed), so the comparisons above do check the labels."""
    model, _ = exported
    labels = np.array([0, 1, 2, 2], np.int32)
    want = sampling.sample(model, 4, SEED, TEMPERATURE, labels=labels).numpy()
    other = sampling.sample(model, 4, SEED, TEMPERATURE, labels=(labels + 1) % K).numpy()
    with pytest.raises(AssertionError, match="not a rounding tie"):
        assert_same_draws(model, other, want, SEED, TEMPERATURE,
                          conditioning=conditioning(model, labels))


def test_bad_labels_are_invalid_argument(loaded):
    s = loaded.signatures
    images = tf.constant(images_for(2))
    two = dict(images=images)

    def examples(labels):
        return dict(examples=tf.constant(list(records.encode_examples(
            images.numpy(), None if labels is None else np.array(labels, np.int64))), tf.string))

    in_graph = [
        ("serving_default", dict(two, labels=tf.constant([0, K])), "labels must be < 3"),
        ("serving_default", dict(two, labels=tf.constant([-1, 0])), "labels must be >= 0"),
        ("serving_default", dict(two, labels=tf.constant([0])), "one label per image"),
        ("serving_default", dict(two, labels=tf.constant([0, 1, 2])), "one label per image"),
        ("complete", dict(two, labels=tf.constant([5, 0]), known_pixels=tf.constant(3),
                          **scalars()), "labels must be < 3"),
        ("complete", dict(two, labels=tf.constant([1]), known_pixels=tf.constant(3),
                          **scalars()), "one label per image"),
        ("sample", dict(num_samples=tf.constant(2), labels=tf.constant([0]), **scalars()),
         "one label per image \\(or sample\\)"),
        ("sample", dict(num_samples=tf.constant(2), labels=tf.constant([0, -2]), **scalars()),
         "labels must be >= 0"),
        ("serve_examples", examples([0, K]), "labels must be < 3"),
        ("serve_examples", examples(None), "Feature: label .* is required"),
    ]
    for signature, request, message in in_graph:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            s[signature](**request)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        s["serving_default"](images=images)  # no labels at all
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        s["serving_default"](images=images, labels=tf.constant([0.0, 1.0]))
    # still serving
    assert s["serving_default"](images=images, labels=tf.constant([0, 2]))[
        "log_prob"].shape == (2,)


def test_serve_examples_rejects_labels_beyond_int32(loaded):
    images = images_for(2)
    examples = list(records.encode_examples(images, np.array([0, 2**32 + 1], np.int64)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="label"):
        loaded.signatures["serve_examples"](examples=tf.constant(examples))


# --------------------------------------------------------------------------------------------
# Without the project: tf.saved_model.load, the TF1 session loader, saved_model_cli


def test_signatures_without_the_project_and_in_a_tf1_session(exported, tmp_path):
    """Every signature with labels through tf.saved_model.load, then good and bad requests
    through a TF1 session callable, which (like TF Serving's C++ Session::Run) does not check
    feeds against the signature: the in-graph checks answer InvalidArgument naming the
    labels, and the process survives."""
    model, path = exported
    images = images_for(3)
    examples = list(records.encode_examples(images, LABELS.astype(np.int64)))
    np.savez(tmp_path / "inputs.npz", images=images, labels=LABELS,
             examples=np.frombuffer(b"".join(examples), np.uint8),
             lengths=np.array([len(e) for e in examples]))
    script = NO_PROJECT + textwrap.dedent(f"""
        loaded = tf.saved_model.load({path!r})
        inputs = np.load("inputs.npz", allow_pickle=False)
        images, labels = inputs["images"], inputs["labels"]
        blob, ends = inputs["examples"].tobytes(), np.cumsum(inputs["lengths"])
        examples = [blob[a:b] for a, b in zip(np.r_[0, ends[:-1]], ends)]
        s = loaded.signatures
        scalars = dict(seed=tf.constant({SEED}, tf.int64),
                       temperature=tf.constant({TEMPERATURE}))
        results = {{
            "serving_default": s["serving_default"](images=tf.constant(images),
                                                    labels=tf.constant(labels)),
            "serve_examples": s["serve_examples"](examples=tf.constant(examples)),
            "classify": s["classify"](images=tf.constant(images)),
            "sample": s["sample"](num_samples=tf.constant(len(labels)),
                                  labels=tf.constant(labels), **scalars),
            "complete": s["complete"](images=tf.constant(images),
                                      known_pixels=tf.constant({KNOWN}),
                                      labels=tf.constant(labels), **scalars),
        }}
        np.savez("outputs.npz", **{{f"{{name}}/{{key}}": value.numpy()
                                   for name, out in results.items()
                                   for key, value in out.items()}})

        good = dict(images=images, labels=labels, num_samples=np.int32(len(labels)),
                    known_pixels=np.int32({KNOWN}), seed=np.int64({SEED}),
                    temperature=np.float32({TEMPERATURE}), examples=np.array(examples, object))
        bad_example = tf.train.Example(features=tf.train.Features(feature={{
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[images[0].tobytes()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[{K}]))}}))
        cases = [
            ("serving_default", "labels", np.array([0, 1, {K}], np.int32)),  # out of range
            ("serving_default", "labels", np.array([0, -1, 1], np.int32)),   # negative
            ("serving_default", "labels", np.array([0, 1], np.int32)),       # 2 for 3 images
            ("complete", "labels", np.array([[0, 1, 2]], np.int32)),         # rank 2
            ("complete", "labels", np.array([0, 1, 2, 0], np.int32)),
            ("sample", "labels", np.array([0, 1], np.int32)),                # != num_samples
            ("sample", "labels", np.array([{K}, 0, 0], np.int32)),
            ("serve_examples", "examples", np.array([bad_example.SerializeToString()], object)),
            ("classify", "images", images[0]),                                # no batch dim
        ]
    """) + tf1_session_requests(path) + ASSERT_NO_PROJECT_LOADED
    with process_in_background([sys.executable, "-c", script], tmp_path) as finish:
        want = expected(model, images)
        result = finish()
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]
    rejected = [line for line in result.stdout.splitlines() if line.startswith("rejected")]
    assert "ACCEPTED" not in result.stdout and len(rejected) == 9, result.stdout
    for line in rejected[:-1]:  # every label case names the labels in its first line
        assert "label" in line.split(" ", 3)[3], line
    assert "images" in rejected[-1], rejected[-1]

    outputs = np.load(tmp_path / "outputs.npz")
    for name, values in want.items():
        assert_matches(model, {key: outputs[f"{name}/{key}"] for key in values}, values, name)
    tf1 = {name: np.load(tmp_path / f"tf1_{name}.npy") for name in want}
    for name, key in (("serving_default", "log_prob"), ("serve_examples", "log_prob"),
                      ("classify", "log_prob"), ("sample", "images"), ("complete", "images")):
        assert_matches(model, {key: tf1[name]}, {key: want[name][key]}, f"TF1 {name}")


@pytest.mark.slow  # the TF1-session test above runs the same loader on every signature;
# so does saved_model_cli on a single-scale export in the default run (test_export.py)
@pytest.mark.parametrize("signature", ["classify", "sample", "complete", "serving_default"])
def test_saved_model_cli_runs_the_conditional_signatures(exported, tmp_path, signature):
    """saved_model_cli runs the export through the TF1 loader TF Serving uses (`make
    test-all`; the TF1-session test above runs the same loader in the default run)."""
    model, path = exported
    images = images_for(3)
    draws = dict(seed=np.array(SEED, np.int64), temperature=np.array(TEMPERATURE, np.float32),
                 labels=LABELS)
    inputs = {
        "classify": dict(images=images),
        "serving_default": dict(images=images, labels=LABELS),
        "sample": dict(num_samples=np.array(len(LABELS), np.int32), **draws),
        "complete": dict(images=images, known_pixels=np.array(KNOWN, np.int32), **draws),
    }[signature]
    got = run_saved_model_cli_inputs(path, signature, inputs, tmp_path)
    want = expected(model, images)[signature]
    assert sorted(got) == sorted(want)
    assert_matches(model, got, want, f"{signature} (saved_model_cli)")
