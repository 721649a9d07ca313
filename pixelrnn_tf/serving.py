"""The SavedModel for TF Serving: scoring, sampling and completion signatures.

Built with `keras.export.ExportArchive` (the model tracked, one endpoint per signature), which
writes a SavedModel the TF1 C++ loader of TF Serving can run; nothing in it needs this
project or Python. Signatures (DESIGN.md section 2):

- ``serving_default``: ``images`` uint8 [None, H, W, C] -> ``log_prob`` float32 [None] (nats),
  ``bits_per_dim`` float32 [None], ``pixel_log_prob`` float32 [None, H, W, C];
- ``sample``: ``num_samples`` int32 [], ``seed`` int64 [], ``temperature`` float32 [] ->
  ``images`` uint8 [None, H, W, C];
- ``complete``: ``images`` uint8 [None, H, W, C], ``known_pixels`` int32 [], ``seed`` int64 [],
  ``temperature`` float32 [] -> ``images`` uint8 [None, H, W, C];
- ``serve_examples`` (optional): ``examples`` string [None], serialized `tf.train.Example`s
  in the `data_prep` format (``image``: raw uint8 bytes) -> the outputs of ``serving_default``.

Every input is checked inside the graph (shape, rank, value range, batch size): the C++
loader does not check a feed against the signature's shape, and an image without its batch
dimension reaching a convolution fails by the CPU's kernels: it aborts the whole server
process on AVX-512 machines (a oneDNN check), raises on AVX2-only ones. A bad request gets an
INVALID_ARGUMENT error naming the problem instead.

A class-conditional model (``num_classes`` K > 0) adds an int32 ``labels`` [None] input, one
label in [0, K) per image, to ``serving_default`` (whose ``log_prob`` is then log p(x | y)),
``sample`` (one label per sample: ``num_samples`` must equal their count) and ``complete``;
``serve_examples`` reads each example's ``label``. It has one more signature:

- ``classify``: ``images`` uint8 [None, H, W, C] -> ``probabilities`` float32 [None, K] (the
  posterior p(y | x) under the stored label frequencies p(y)), ``label`` int32 [None] (its
  argmax), and ``log_prob`` float32 [None], the marginal log p(x) in nats. It costs K
  passes per image.

An unconditional model's signatures are exactly those above.

A JSON description of the model (shape, levels, architecture, sampler, signatures, the
warm-up requests) is written to ``assets.extra/pixelrnn_tf.json``, a directory TF Serving
otherwise ignores.

Warm-up (on by default): ``assets.extra/tf_serving_warmup_requests`` holds TF Serving's
warm-up records, a TFRecord file of ``tensorflow.serving.PredictionLog`` protos, each a
``predict_log.request`` (a ``PredictRequest`` whose ``model_spec.signature_name`` names the
signature). TF Serving replays them after loading the model and before it reports the model
available, so the first real request does not pay for the one-time graph and kernel set-up
(`warmup_requests` lists them: ``serving_default`` at batch 1 and at the largest batch, a
``sample`` of one image, a ``complete`` of one image with all but its last row known, one
``serve_examples`` example and, for a conditional model, one ``classify`` image).

A `MultiScalePixelRNN` exports with exactly the same signatures (names, dtypes, shapes), so a
client cannot tell the two apart. Its ``sample`` and ``complete`` run stage 1 then stage 2
(`sampling`), and its ``pixel_log_prob`` follows the model's own order: the subsampled pixels
x[::f, ::f] first (stage 1, small-image raster order), then the others in raster order given
the whole small image; it still sums to the exact ``log_prob``. The metadata says so
(``model``, ``small_size``, ``pixel_order``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from pixelrnn_tf import class_conditional, losses, records, sampling

SIGNATURES = ("serving_default", "sample", "complete")
EXAMPLES_SIGNATURE = "serve_examples"
CLASSIFY_SIGNATURE = "classify"
METADATA_PATH = os.path.join("assets.extra", "pixelrnn_tf.json")
METADATA_FORMAT = "pixelrnn_tf.saved_model"
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
DEFAULT_MAX_BATCH = 64


def _scalar(value, name):
    return tf.ensure_shape(value, [], name=f"check_{name}_is_scalar")


def _with_checks(value, checks):
    with tf.control_dependencies(checks):
        return tf.identity(value)


class _Endpoints:
    """The signature functions of one model; every input is validated in the graph."""

    def __init__(self, model, method, max_batch):
        self.model = model
        self.method = method
        self.max_batch = int(max_batch)
        self.shape = tuple(model.image_shape)

    def images(self, images):
        """uint8 [None, H, W, C] checked -> int32."""
        model = self.model
        images = tf.ensure_shape(images, (None,) + self.shape, name="check_images_shape")
        checks = [tf.debugging.assert_less_equal(
            tf.shape(images)[0], self.max_batch,
            message=f"at most {self.max_batch} images per request")]
        if model.levels < 256:
            checks.append(tf.debugging.assert_less(
                images, tf.constant(model.levels, tf.uint8),
                message=f"image values must lie in [0, {model.levels})"))
        return tf.cast(_with_checks(images, checks), tf.int32)

    def labels(self, labels, count):
        """int32 [None], one per image of a batch of `count`, checked: in [0, K)."""
        labels = tf.ensure_shape(labels, [None], name="check_labels_shape")
        checks = [
            tf.debugging.assert_equal(tf.size(labels), count,
                                      message="labels: give one label per image (or sample)"),
            tf.debugging.assert_non_negative(labels, message="labels must be >= 0"),
            tf.debugging.assert_less(labels, self.model.num_classes,
                                     message=f"labels must be < {self.model.num_classes}")]
        return _with_checks(labels, checks)

    def seed_and_temperature(self, seed, temperature):
        seed = _scalar(seed, "seed")
        temperature = _scalar(temperature, "temperature")
        check = tf.debugging.Assert(
            tf.math.is_finite(temperature) & (temperature > 0.0),
            ["temperature must be a finite number > 0, got", temperature])
        return seed, _with_checks(temperature, [check])

    def score(self, images, labels=None):
        images = self.images(images)
        if labels is not None:
            labels = self.labels(labels, tf.shape(images)[0])
        pixel_log_prob = self.model.pixel_log_prob(images, labels)
        log_prob = tf.reduce_sum(pixel_log_prob, axis=[1, 2, 3])
        return {"log_prob": log_prob,
                "bits_per_dim": losses.nats_to_bits_per_dim(-log_prob, self.model.num_dims),
                "pixel_log_prob": pixel_log_prob}

    def sample(self, num_samples, seed, temperature, labels=None):
        num_samples = _scalar(num_samples, "num_samples")
        check = tf.debugging.Assert(
            (num_samples >= 1) & (num_samples <= self.max_batch),
            [f"num_samples must lie in [1, {self.max_batch}], got", num_samples])
        num_samples = _with_checks(num_samples, [check])
        if labels is not None:
            labels = self.labels(labels, num_samples)
        seed, temperature = self.seed_and_temperature(seed, temperature)
        return {"images": sampling.sample_graph(self.model, num_samples, seed, temperature,
                                                self.method, labels=labels)}

    def complete(self, images, known_pixels, seed, temperature, labels=None):
        images = self.images(images)
        if labels is not None:
            labels = self.labels(labels, tf.shape(images)[0])
        known_pixels = _scalar(known_pixels, "known_pixels")
        seed, temperature = self.seed_and_temperature(seed, temperature)
        return {"images": sampling.complete_graph(self.model, images, known_pixels, seed,
                                                  temperature, self.method, labels=labels)}

    def classify(self, images):
        images = self.images(images)
        joint = class_conditional.joint_log_probs(self.model, images)
        return {"probabilities": tf.nn.softmax(joint, axis=1),
                "label": tf.argmax(joint, axis=1, output_type=tf.int32),
                "log_prob": tf.reduce_logsumexp(joint, axis=1)}

    def score_examples(self, examples):
        """Serialized tf.train.Examples (data_prep format; with their ``label`` for a
        conditional model) -> the outputs of `score`."""
        examples = tf.ensure_shape(examples, [None], name="check_examples_shape")
        shape = "x".join(map(str, self.shape))
        conditional = bool(self.model.num_classes)
        images, labels = records.decode_images(
            examples, self.shape, labels=conditional,
            size_message=f"each example's 'image' must hold {shape} uint8 bytes")
        if conditional:  # checked as int64, before a cast could wrap 2**32 + 1 to 1
            labels = _with_checks(labels, [
                tf.debugging.assert_non_negative(labels, message="labels must be >= 0"),
                tf.debugging.assert_less(labels, tf.constant(self.model.num_classes, tf.int64),
                                         message=f"labels must be < {self.model.num_classes}")])
            labels = tf.cast(labels, tf.int32)
        return self.score(images, labels)


def build_export_archive(model, method="cached", max_batch=DEFAULT_MAX_BATCH,
                         examples=True):
    """A `keras.export.ExportArchive` of `model` with the signatures of this module.

    Args:
      model: a built `PixelRNN` or `MultiScalePixelRNN` (levels <= 256).
      method: the sampler inside ``sample`` and ``complete``: "cached" or "naive".
      max_batch: largest batch a request may ask for or send.
      examples: also add the ``serve_examples`` signature.
    """
    if method not in sampling.METHODS:
        raise ValueError(f"method must be one of {sampling.METHODS}, got {method!r}")
    if model.levels > 256:
        raise ValueError(f"the SavedModel carries uint8 images: levels must be <= 256, got "
                         f"{model.levels}")
    if int(max_batch) < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if not model.built:
        model.build()
    endpoints = _Endpoints(model, method, max_batch)
    image_spec = tf.TensorSpec((None,) + endpoints.shape, tf.uint8, name="images")
    seed_spec = tf.TensorSpec([], tf.int64, name="seed")
    temperature_spec = tf.TensorSpec([], tf.float32, name="temperature")
    # A conditional model's serving_default, sample and complete take labels last.
    label_specs = ([tf.TensorSpec([None], tf.int32, name="labels")] if model.num_classes
                   else [])

    def score(images, *labels):
        return endpoints.score(images, *labels)

    def sample(num_samples, seed, temperature, *labels):
        return endpoints.sample(num_samples, seed, temperature, *labels)

    def complete(images, known_pixels, seed, temperature, *labels):
        return endpoints.complete(images, known_pixels, seed, temperature, *labels)

    def score_examples(examples):
        return endpoints.score_examples(examples)

    def classify(images):
        return endpoints.classify(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", score, input_signature=[image_spec, *label_specs])
    archive.add_endpoint("sample", sample, input_signature=[
        tf.TensorSpec([], tf.int32, name="num_samples"), seed_spec, temperature_spec,
        *label_specs])
    archive.add_endpoint("complete", complete, input_signature=[
        image_spec, tf.TensorSpec([], tf.int32, name="known_pixels"), seed_spec,
        temperature_spec, *label_specs])
    if examples:
        archive.add_endpoint(EXAMPLES_SIGNATURE, score_examples, input_signature=[
            tf.TensorSpec([None], tf.string, name="examples")])
    if model.num_classes:
        archive.add_endpoint(CLASSIFY_SIGNATURE, classify, input_signature=[image_spec])
    return archive


def signature_names(model, examples=True):
    """The signatures an export of `model` has, in order."""
    return (list(SIGNATURES) + ([EXAMPLES_SIGNATURE] if examples else [])
            + ([CLASSIFY_SIGNATURE] if model.num_classes else []))


def export_metadata(model, method, max_batch, examples, warmup=None):
    """The JSON description written beside the SavedModel (assets.extra); `warmup`: the
    `warmup_requests` written with it, listed by `describe_request` (None: no warm-up)."""
    metadata = {
        "format": METADATA_FORMAT,
        "format_version": 1,
        "image_shape": list(model.image_shape),
        "levels": model.levels,
        **model.describe(),
        "sampler": method,
        "max_batch": int(max_batch),
        "signatures": signature_names(model, examples),
    }
    if warmup is not None:
        metadata["warmup_requests"] = [describe_request(*request) for request in warmup]
    return metadata


def warmup_requests(model, max_batch=DEFAULT_MAX_BATCH, examples=True):
    """The warm-up requests of an export: [(signature name, {input name: numpy value})].

    One per signature, in `signature_names` order, and ``serving_default`` once more at
    `max_batch` images, each with the inputs the signature declares (uint8 images of a fixed
    pseudo-random draw, int32 labels 0, 1, ... mod K for a conditional model). ``sample`` and
    ``complete`` stay cheap (one image; ``complete`` keeps all pixels but the last row) while
    running the same graph as any request of theirs.
    """
    height, width, _ = model.image_shape
    images = np.random.default_rng(0).integers(
        0, model.levels, (int(max_batch), *model.image_shape)).astype(np.uint8)
    draw = {"seed": np.int64(0), "temperature": np.float32(1.0)}

    def labelled(inputs, count):
        if model.num_classes:
            inputs["labels"] = (np.arange(count) % model.num_classes).astype(np.int32)
        return inputs

    requests = [
        ("serving_default", labelled({"images": images[:1]}, 1)),
        ("serving_default", labelled({"images": images}, len(images))),
        ("sample", labelled({"num_samples": np.int32(1), **draw}, 1)),
        ("complete", labelled({"images": images[:1],
                               "known_pixels": np.int32((height - 1) * width), **draw}, 1)),
    ]
    if examples:
        labels = labelled({}, 1).get("labels")
        serialized = next(records.encode_examples(images[:1], labels))
        requests.append((EXAMPLES_SIGNATURE, {"examples": np.array([serialized], object)}))
    if model.num_classes:
        requests.append((CLASSIFY_SIGNATURE, {"images": images[:1]}))
    return requests


def describe_request(signature, inputs):
    """{"signature", "inputs": {name: "dtype[shape]"}} (a scalar: "dtype = value")."""
    def describe(value):
        value = np.asarray(value)
        dtype = "string" if value.dtype == object else value.dtype.name
        if value.ndim == 0:
            return f"{dtype} = {value.item()}"
        return f"{dtype}[{', '.join(map(str, value.shape))}]"

    return {"signature": signature,
            "inputs": {name: describe(value) for name, value in sorted(inputs.items())}}


def _proto_field(number, payload):
    """A length-delimited protobuf field (wire type 2): tag, length, bytes."""
    def varint(n):
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def prediction_log(signature, inputs):
    """The serialized ``tensorflow.serving.PredictionLog`` of a predict request: {predict_log
    (6): {request (1): {model_spec (1): {signature_name (3)}, inputs (2): map<string,
    TensorProto>}}}.

    Encoded here rather than with ``tensorflow_serving.apis``, whose wheel requires the full
    ``tensorflow`` package (this project installs ``tensorflow-cpu``); the tests parse the
    result with those protos.
    """
    request = _proto_field(1, _proto_field(3, signature.encode()))
    for name, value in sorted(inputs.items()):
        tensor = tf.make_tensor_proto(value).SerializeToString()
        request += _proto_field(2, _proto_field(1, name.encode()) + _proto_field(2, tensor))
    return _proto_field(6, _proto_field(1, request))


def write_warmup(path, requests):
    """Writes `requests` ([(signature, inputs)], see `warmup_requests`) as TF Serving's
    warm-up file: a TFRecord of `prediction_log` records."""
    with tf.io.TFRecordWriter(os.fspath(path)) as writer:
        for signature, inputs in requests:
            writer.write(prediction_log(signature, inputs))


def write_saved_model(model, export_dir, method="cached", max_batch=DEFAULT_MAX_BATCH,
                      examples=True, verify=None, warmup=True):
    """Writes the SavedModel of `model` to `export_dir`, atomically.

    With `warmup`, TF Serving's warm-up records (`warmup_requests`) go to ``WARMUP_PATH``
    and are listed in the metadata. The model, its metadata and warm-up records are written
    to a temporary directory beside `export_dir` and renamed into place only when complete
    (and, if given, when `verify(temporary_dir)` returned without raising), so a reader
    never sees a partial export. Refuses an existing `export_dir`.

    Returns the metadata dict written to ``assets.extra/pixelrnn_tf.json``.
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.lexists(export_dir):
        raise FileExistsError(f"{export_dir} already exists; refusing to overwrite it")
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    archive = build_export_archive(model, method, max_batch, examples)
    requests = warmup_requests(model, max_batch, examples) if warmup else None
    metadata = export_metadata(model, method, max_batch, examples, requests)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        if requests is not None:
            write_warmup(os.path.join(tmp, WARMUP_PATH), requests)
        with open(os.path.join(tmp, METADATA_PATH), "w") as f:
            json.dump(metadata, f, indent=2)
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a server may run as another user
        if os.path.lexists(export_dir):
            raise FileExistsError(f"{export_dir} appeared while exporting; not replacing it")
        os.rename(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metadata


def read_metadata(export_dir):
    """The ``assets.extra/pixelrnn_tf.json`` of an export, or None if it has none."""
    path = os.path.join(os.fspath(export_dir), METADATA_PATH)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        metadata = json.load(f)
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT:
        raise ValueError(f"{path} is not a {METADATA_FORMAT} description")
    return metadata


def verify_export(export_dir, model, images):
    """Loads an export with `tf.saved_model.load` and checks its ``serving_default`` outputs
    against `model` on `images` (uint8 [N, H, W, C]); raises AssertionError on a mismatch."""
    loaded = tf.saved_model.load(os.fspath(export_dir))
    missing = [s for s in SIGNATURES if s not in loaded.signatures]
    if missing:
        raise AssertionError(f"{export_dir}: signatures {missing} missing")
    images = tf.convert_to_tensor(images, tf.uint8)
    labels = {}
    if model.num_classes:  # any labels do: the check is of the weights and the graph
        labels = {"labels": tf.range(tf.shape(images)[0]) % model.num_classes}
    got = loaded.signatures["serving_default"](images=images, **labels)["log_prob"].numpy()
    want = model.log_prob(tf.cast(images, tf.int32), labels.get("labels")).numpy()
    tolerance = 1e-4 * max(1.0, float(abs(want).max()))
    if not abs(got - want).max() <= tolerance:
        raise AssertionError(f"{export_dir}: exported log_prob {got} differs from the "
                             f"model's {want}")
