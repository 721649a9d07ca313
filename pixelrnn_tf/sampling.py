"""In-graph sampling and image completion for `PixelRNN` and `MultiScalePixelRNN` models.

Everything runs inside the graph (`tf.while_loop`), so the same code serves eager use, a
`tf.function` and a SavedModel for TF Serving. Sub-pixels are generated in raster order and,
inside a pixel, in channel order R, G, B.

Randomness is stateless: pixel ``p`` (raster index ``i * W + j``) of a batch draws Gumbel noise
[N, C, levels] from ``stateless_fold_in(seed, p)``, and a sub-pixel's value is
``argmax(logits / temperature + noise)`` (the Gumbel-max trick, an exact categorical sample).
The noise depends only on the seed and the position (sample ``n`` of a batch draws the same
noise whatever the batch size), so the same seed gives the same images for every method, for
sampling and for completion, and at every batch size, up to float rounding: the logits are
float32 sums that round differently with the batch shape, the method and the CPU's kernels,
so a pick whose two best values score within ~1e-6 of each other may flip, and the pixels
after it then differ. The same call (model, method, batch size, machine) repeats bit for bit.

Two methods:

- ``"naive"``: one full forward pass of the model per sub-pixel (the reference);
- ``"cached"``: each layer keeps the state the next pixels need (row buffers of its inputs, the
  LSTM states of the previous row), so a pixel costs O(layers) work with the model's own
  weights: every layer computes its output one pixel at a time (`call_pixel`, next to its
  `call`), and `raster_loops.cached_loop` drives them. For the Diagonal BiLSTM the
  left-to-right direction at (i, j) needs only (i, j - 1) and (i - 1, j); the right-to-left
  direction, shifted down one row, needs only rows < i, so it is swept once per finished
  row. The head only ever reads the pixel's own features.

A model draws its image in stages (`model.sampling_stages()`), each with the chosen method
and its own noise stream of the seed (`seed_pair(seed, k)` for stage k): a `PixelRNN` is one
stage. A `MultiScalePixelRNN` has two: stage 1 draws the s x s image; its pixels are written
onto their positions (f a, f b) of the full image, where they are known and copied, never
resampled; stage 2, conditioned on the small image, draws the other pixels. Stage 1 alone
equals `sample(model.small, ...)` with that seed. Completion keeps the first `known_pixels`
pixels of the full image; the small image's known pixels, those among them, are a raster
prefix of the small image (`small_known_pixels`).

A class-conditional model (`num_classes` > 0) draws every stage given one label per image
(`labels=`, int [N]); the noise does not depend on the label, so images drawn for two labels
with one seed differ only through the model.

Typical use::

    images = sample(model, num_samples=16, seed=0)                  # uint8 [16, H, W, C]
    filled = complete_rows(model, originals, known_rows=14, seed=1)  # top 14 rows kept
    sevens = sample(conditional, 8, seed=0, labels=[7] * 8)          # p(x | y = 7)

`sample` and `complete` run eagerly through one traced `tf.function` per model and method, or
build graph ops when called inside a `tf.function`. `sample_graph` and `complete_graph` are
the graph builders (used by the SavedModel signatures); for a one-stage model (`PixelRNN`)
they also take per-block additive `conditioning` maps (what stage 2 of a Multi-Scale PixelRNN
receives; a `MultiScalePixelRNN` passed whole makes its own). `cached_logits` exposes the
cached path's logits for testing it against the full forward pass.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from pixelrnn_tf.class_conditional import validate_labels
from pixelrnn_tf.model import validate_images
from pixelrnn_tf.multiscale import small_known_pixels
from pixelrnn_tf.raster_loops import cached_loop, naive_loop, pixel_noise, seed_pair

__all__ = ["METHODS", "cached_logits", "complete", "complete_graph", "complete_rows",
           "output_dtype", "pixel_noise", "sample", "sample_graph", "seed_pair",
           "small_known_pixels"]

METHODS = ("cached", "naive")


# --------------------------------------------------------------------------------------------
# Graph-level entry points (usable inside any tf.function, e.g. the SavedModel signatures)


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def output_dtype(model):
    """Samples are uint8, or int32 for a model with more than 256 levels."""
    return tf.uint8 if model.levels <= 256 else tf.int32


def _check_model(model):
    if not model.built:
        model.build()


def _checked_temperature(temperature):
    temperature = tf.cast(temperature, tf.float32)
    check = tf.debugging.Assert(
        tf.math.is_finite(temperature) & (temperature > 0.0),
        ["temperature must be a finite number > 0, got", temperature])
    with tf.control_dependencies([check]):
        return tf.identity(temperature)


def _stages(model, conditioning):
    """The model's sampling stages; given `conditioning` (per-block maps) replaces the
    conditioning of a one-stage model (a model of several stages conditions them itself)."""
    stages = model.sampling_stages()
    if conditioning is not None and len(stages) != 1:
        raise ValueError(f"a {type(model).__name__} conditions its sampling stages itself; "
                         "pass no conditioning")
    return stages


def _stage_conditioning(stage, images, conditioning, labels):
    if conditioning is None:
        return stage.conditioning(images, labels)
    return stage.model.block_conditioning(labels, conditioning)


def _complete_stages(model, images, known_pixels, seed, temperature, method,
                     conditioning=None, labels=None):
    """Every stage of `model` draws its pixels in turn: int32 images [N, H, W, C] -> int32.

    Stage k completes its own image (`stage.select`) from its known prefix
    (`stage.known_pixels`) with noise stream k of the seed, leaves the pixels earlier stages
    drew (`stage.fixed`) as they are, and writes its draw into the images (`stage.place`),
    which the later stages see (`stage.conditioning`, with the checked labels of a
    conditional model).
    """
    loop = naive_loop if method == "naive" else cached_loop
    for stream, stage in enumerate(_stages(model, conditioning)):
        drawn = loop(stage.model, stage.select(images), stage.known_pixels(known_pixels),
                     seed_pair(seed, stream), temperature,
                     conditioning=_stage_conditioning(stage, images, conditioning, labels),
                     fixed=stage.fixed)
        images = stage.place(images, drawn)
    return images


def complete_graph(model, images, known_pixels, seed, temperature=1.0, method="cached",
                   conditioning=None, labels=None):
    """Graph-building `complete`: images int [N, H, W, C] -> uint8 [N, H, W, C] (int32 for
    more than 256 levels).

    model: a `PixelRNN` or a `MultiScalePixelRNN` (anything with `sampling_stages`).
    conditioning: optional list of one additive map per block, as for `PixelRNN.features`,
      with the batch size N (a one-stage model only; a `MultiScalePixelRNN` makes its own).
    labels: int [N], one per image, for a class-conditional model (else None).
    """
    _check_method(method)
    _check_model(model)
    _stages(model, conditioning)
    images = validate_images(images, model.image_shape, model.levels)
    labels = validate_labels(labels, model.num_classes, images)
    height, width, _ = model.image_shape
    known_pixels = tf.cast(known_pixels, tf.int32)
    check = tf.debugging.Assert(
        (known_pixels >= 0) & (known_pixels <= height * width),
        [f"known_pixels must lie in [0, {height * width}] (pixels in raster order), got",
         known_pixels])
    with tf.control_dependencies([check]):
        known_pixels = tf.identity(known_pixels)
    temperature = _checked_temperature(temperature)
    # The cached steps' buffer updates cannot scatter into an empty batch: none to draw.
    out = tf.cond(tf.shape(images)[0] > 0,
                  lambda: _complete_stages(model, images, known_pixels, seed, temperature,
                                           method, conditioning, labels),
                  lambda: images)
    return tf.cast(out, output_dtype(model))


def sample_graph(model, num_samples, seed, temperature=1.0, method="cached",
                 conditioning=None, labels=None):
    """Graph-building `sample`: -> uint8 [num_samples, H, W, C] (conditioning, labels: as
    for `complete_graph`; num_samples must equal the number of labels)."""
    num_samples = tf.cast(num_samples, tf.int32)
    check = tf.debugging.Assert(num_samples >= 0, ["num_samples must be >= 0, got",
                                                   num_samples])
    with tf.control_dependencies([check]):
        shape = tf.concat([[num_samples], tf.constant(model.image_shape, tf.int32)], 0)
    return complete_graph(model, tf.zeros(shape, tf.int32), 0, seed, temperature, method,
                          conditioning, labels)


def cached_logits(model, images, conditioning=None, labels=None):
    """Teacher-forced logits through the cached sampler's per-pixel path.

    Every pixel of `images` is fed as known; the result is what the sampler computed for
    each sub-pixel before choosing it, i.e. it must equal `model(images)` (a test of the
    cache). images int [N, H, W, C] -> float32 [N, H, W, C, levels]; for a model of several
    stages, like its `call`, one such tensor per stage (a `MultiScalePixelRNN`: small
    [N, s, s, C, levels], full [N, H, W, C, levels]). labels: as for `complete_graph`.
    """
    _check_model(model)
    stages = _stages(model, conditioning)
    images = validate_images(images, model.image_shape, model.levels)
    labels = validate_labels(labels, model.num_classes, images)
    logits = []
    for stage in stages:
        height, width, _ = stage.model.image_shape
        _, stage_logits = cached_loop(
            stage.model, stage.select(images), height * width, seed_pair(0), 1.0,
            record_logits=True,
            conditioning=_stage_conditioning(stage, images, conditioning, labels))
        logits.append(stage_logits)
    return logits[0] if len(logits) == 1 else tuple(logits)


# --------------------------------------------------------------------------------------------
# Public API: eager calls go through one traced tf.function per model and method


_FUNCTIONS = weakref.WeakKeyDictionary()


def _traced(model, kind, method):
    functions = _FUNCTIONS.setdefault(model, {})
    key = (kind, method)
    if key not in functions:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive
        height, width, channels = model.image_shape
        # a conditional model's functions take labels int32 [N] last
        scalars = [tf.TensorSpec([], tf.int64, name="seed"),
                   tf.TensorSpec([], tf.float32, name="temperature"),
                   *([tf.TensorSpec([None], tf.int32, name="labels")] if model.num_classes
                     else [])]
        if kind == "sample":
            functions[key] = tf.function(
                lambda num_samples, seed, temperature, *labels: sample_graph(
                    model_ref(), num_samples, seed, temperature, method,
                    labels=labels[0] if labels else None),
                input_signature=[tf.TensorSpec([], tf.int32, name="num_samples"), *scalars],
                autograph=False)
        else:
            functions[key] = tf.function(
                lambda images, known_pixels, seed, temperature, *labels: complete_graph(
                    model_ref(), images, known_pixels, seed, temperature, method,
                    labels=labels[0] if labels else None),
                input_signature=[
                    tf.TensorSpec([None, height, width, channels], tf.int32, name="images"),
                    tf.TensorSpec([], tf.int32, name="known_pixels"), *scalars],
                autograph=False)
    return functions[key]


def _check_scalars(seed, temperature):
    if tf.is_tensor(seed) or tf.is_tensor(temperature):
        return
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not -2**63 <= int(seed) < 2**63:
        raise ValueError(f"seed must fit in int64, got {seed}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _label_args(model, labels, count):
    """The traced functions' trailing labels argument: [] for an unconditional model, else
    the checked int32 labels [count] (ValueError for a wrong count or any `validate_labels`
    problem)."""
    labels = validate_labels(labels, model.num_classes, tf.zeros([count, 0, 0, 0]))
    return [] if labels is None else [labels]


def sample(model, num_samples, seed, temperature=1.0, method="cached", labels=None):
    """Draws `num_samples` images from `model`.

    Args:
      model: a `PixelRNN` or a `MultiScalePixelRNN` (stage 1, then stage 2).
      num_samples: int >= 0.
      seed: int (int64); the same seed gives the same images, whatever the method, up to
        float rounding (module docstring).
      temperature: > 0; logits are divided by it (1 = the model's distribution).
      method: "cached" (O(layers) per pixel) or "naive" (a forward pass per sub-pixel).
      labels: a class-conditional model's label per sample, int [num_samples] in
        [0, num_classes) (e.g. `[7] * 16`); None for an unconditional model.
    Returns:
      uint8 tensor [num_samples, H, W, C] (int32 if the model has more than 256 levels).
    """
    _check_method(method)
    _check_model(model)
    if not tf.executing_eagerly():
        return sample_graph(model, num_samples, seed, temperature, method, labels=labels)
    _check_scalars(seed, temperature)
    if tf.is_tensor(num_samples):
        num_samples = num_samples.numpy()
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or \
            num_samples < 0:
        raise ValueError(f"num_samples must be an integer >= 0, got {num_samples!r}")
    return _traced(model, "sample", method)(
        tf.constant(num_samples, tf.int32), tf.constant(seed, tf.int64),
        tf.constant(temperature, tf.float32), *_label_args(model, labels, int(num_samples)))


def complete(model, images, known_pixels, seed, temperature=1.0, method="cached",
             labels=None):
    """Keeps the first `known_pixels` pixels (raster order) of each image and samples the rest.

    Args:
      model: a `PixelRNN` or a `MultiScalePixelRNN`.
      images: integer [N, H, W, C] in [0, levels); pixels from `known_pixels` on are ignored.
      known_pixels: int in [0, H * W].
      seed, temperature, method: as for `sample`.
      labels: a class-conditional model's label per image, int [N]; None otherwise.
    Returns:
      uint8 tensor [N, H, W, C] (int32 if the model has more than 256 levels).
    """
    _check_method(method)
    _check_model(model)
    if not tf.executing_eagerly():
        return complete_graph(model, images, known_pixels, seed, temperature, method,
                              labels=labels)
    _check_scalars(seed, temperature)
    images = validate_images(images, model.image_shape, model.levels)
    height, width, _ = model.image_shape
    if tf.is_tensor(known_pixels):
        known_pixels = known_pixels.numpy()
    if isinstance(known_pixels, bool) or not isinstance(known_pixels, (int, np.integer)):
        raise ValueError(f"known_pixels must be an integer, got {known_pixels!r}")
    known_pixels = int(known_pixels)
    if not 0 <= known_pixels <= height * width:
        raise ValueError(f"known_pixels must lie in [0, {height * width}], got {known_pixels}")
    return _traced(model, "complete", method)(
        images, tf.constant(known_pixels, tf.int32), tf.constant(seed, tf.int64),
        tf.constant(temperature, tf.float32), *_label_args(model, labels, int(images.shape[0])))


def complete_rows(model, images, known_rows, seed, temperature=1.0, method="cached",
                  labels=None):
    """`complete` with the top `known_rows` rows known (0 <= known_rows <= H)."""
    height, width, _ = model.image_shape
    if not tf.is_tensor(known_rows) and not 0 <= int(known_rows) <= height:
        raise ValueError(f"known_rows must lie in [0, {height}], got {known_rows}")
    return complete(model, images, known_rows * width, seed, temperature, method, labels)
