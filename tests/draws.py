"""Comparing two draws of the samplers that share a seed but not their arithmetic.

Two computations of the same logit (cached and naive, batch 3 and batch 1, eager and a
SavedModel, two CPUs' kernels) may differ in the last bits: a float32 sum rounds by the order
its kernel's blocking gives it. The Gumbel-max pick `argmax(logits / T + noise)` is then the
same except where two values' scores lie within that rounding of each other. So two draws with
the same seed must be equal, or differ first at a sub-pixel whose two values had scores within
`TIE` of each other there (recomputed here from the model's full forward pass on the common
prefix and the sampler's own noise). Everything after that sub-pixel is conditioned on
different images and may differ freely.

A real fault (noise from another position or sample, a wrong conditional, a leak) changes
scores by O(1) and fails: `test_sampling.py` plants one.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pixelrnn_tf import sampling

# The cached and full paths agree to atol 1e-5 in every logit (test_sampling); two scores of
# one sub-pixel within 1e-4 are a tie that rounding may break either way.
TIE = 1e-4


def _first_difference(got, want):
    """(n, k): the first sample that differs and its first differing sub-pixel (flat index in
    raster-then-channel order), or None."""
    got = np.asarray(got).reshape(len(got), -1)
    want = np.asarray(want).reshape(len(want), -1)
    rows = np.flatnonzero((got != want).any(axis=1))
    if rows.size == 0:
        return None
    n = int(rows[0])
    return n, int(np.flatnonzero(got[n] != want[n])[0])


def _scores(model, image, n, batch, k, key, temperature, conditioning=None):
    """[levels]: logits / T + noise at sub-pixel k of sample n of a batch of `batch`;
    image [H, W, C] holds the prefix common to both draws."""
    height, width, channels = model.image_shape
    pixel, c = divmod(k, channels)
    inputs = model.scale_inputs(tf.constant(image[None], tf.int32))
    logits = model.head(model.features(inputs, conditioning)).numpy().reshape(-1, model.levels)
    noise = sampling.pixel_noise(key, tf.constant(pixel, tf.int32),
                                 tf.constant([batch, channels, model.levels]))
    return logits[k] / temperature + noise.numpy()[n, c]


def _check(model, got, want, key, temperature, where, conditioning_for=None):
    difference = _first_difference(got, want)
    if difference is None:
        return
    n, k = difference
    conditioning = None if conditioning_for is None else conditioning_for(n)
    scores = _scores(model, np.asarray(want)[n], n, len(want), k, key, temperature,
                     conditioning)
    a, b = int(np.asarray(got)[n].reshape(-1)[k]), int(np.asarray(want)[n].reshape(-1)[k])
    gap = abs(scores[a] - scores[b])
    assert gap < TIE and max(scores[a], scores[b]) >= scores.max() - TIE, (
        f"{where}: sample {n} differs first at sub-pixel {k} ({a} against {b}), where the "
        f"scores differ by {gap:.3g}, not a rounding tie (< {TIE})")


def assert_same_draws(model, got, want, seed, temperature=1.0, where="draws",
                      conditioning=None):
    """Asserts that `got` and `want` (int [N, H, W, C], the same seed and temperature) are the
    same draw up to a rounding tie (module docstring), stage by stage of the model's
    `sampling_stages()` (stage k draws with noise stream k; a Multi-Scale PixelRNN's stage 2
    is compared only once its stage 1 agrees). `conditioning`: the per-block [N, H, W, D]
    maps a one-stage model was sampled with, if any."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    if np.array_equal(got, want):
        return
    seed = tf.constant(seed, tf.int64)
    for stream, stage in enumerate(model.sampling_stages()):
        got_stage, want_stage = (np.asarray(stage.select(x)) for x in (got, want))
        if np.array_equal(got_stage, want_stage):
            continue
        maps = conditioning
        if maps is None:
            maps = stage.conditioning(tf.constant(want, tf.int32))
        _check(stage.model, got_stage, want_stage, sampling.seed_pair(seed, stream),
               temperature, f"{where} (stage {stream + 1})",
               None if maps is None else lambda n, maps=maps: [m[n:n + 1] for m in maps])
        return


def assert_argmax_up_to_ties(images, logits):
    """images int [...], logits [..., levels] (a forward pass on `images` themselves): every
    value is the argmax of its logits, or within `TIE` of the maximum (at temperature -> 0 a
    draw is the argmax of the sampler's own logits, which may round differently)."""
    logits = np.asarray(logits, np.float64)
    chosen = np.take_along_axis(logits, np.asarray(images)[..., None].astype(np.int64), -1)
    short = logits.max(-1) - chosen[..., 0]
    assert np.all(short < TIE), (
        f"{np.sum(short >= TIE)} values are not the argmax of their logits (short by up to "
        f"{short.max():.3g})")
