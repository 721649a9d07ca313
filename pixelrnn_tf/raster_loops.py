"""The raster-order loops that draw the pixels of one `PixelRNN`, and their noise.

Randomness is stateless: pixel ``p`` (raster index ``i * W + j``) of a batch draws Gumbel noise
[N, C, levels] from ``stateless_fold_in(seed, p)``, and a sub-pixel's value is
``argmax(logits / temperature + noise)`` (the Gumbel-max trick, an exact categorical sample).
`sampling` describes what this guarantees.

Two loops, the same draws up to float rounding:

- `naive_loop`: one full forward pass of the model per sub-pixel (the reference);
- `cached_loop`: the model's cached steps (`PixelRNN.call_pixel` and the rest), so that a
  pixel costs O(layers) work: each layer keeps what the next pixels need.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Second word of the stateless seed pair; the first is the user's int64 seed.
_SEED_SALT = 0x5EED


def seed_pair(seed, stream=0):
    """An int64 scalar seed -> the [2] int64 key of the stateless RNG ops.

    stream: which independent stream of that seed (one per sampling stage: a Multi-Scale
    PixelRNN's stage 1 uses stream 0, its stage 2 stream 1, so that pixel p of one stage
    never reuses the noise of pixel p of the other).
    """
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed, tf.constant(_SEED_SALT + stream, tf.int64)])


def pixel_noise(seed, pixel, shape):
    """Gumbel noise of one pixel.

    Args:
      seed: [2] int64 key (`seed_pair`).
      pixel: int32 scalar, the raster index i * W + j.
      shape: [N, C, levels].
    Returns:
      float32 noise of `shape`, a function of (seed, pixel) only.
    """
    key = tf.random.experimental.stateless_fold_in(seed, pixel)
    uniform = tf.random.stateless_uniform(
        shape, key, minval=np.finfo(np.float32).tiny, maxval=1.0, dtype=tf.float32)
    return -tf.math.log(-tf.math.log(uniform))


def choose(logits, noise, temperature):
    """logits [N, levels], noise [N, levels] -> int32 [N], a sample at `temperature`."""
    scaled = tf.cast(logits, tf.float32) / temperature
    return tf.argmax(scaled + noise, axis=-1, output_type=tf.int32)


def naive_loop(model, images, known_pixels, seed, temperature, conditioning=None,
               fixed=None):
    """One full forward pass per sub-pixel.

    images int32 [N, H, W, C]: pixels >= known_pixels (raster order) are drawn, except those
    marked in `fixed` (numpy bool [H * W], or None). seed: `seed_pair`. conditioning: as for
    `PixelRNN.features`. Returns int32 images [N, H, W, C].
    """
    height, width, channels = model.image_shape
    levels = model.levels
    batch = tf.shape(images)[0]
    num_subpixels = height * width * channels

    def subpixel_mask(index):
        return tf.reshape(tf.one_hot(index, num_subpixels, on_value=True, off_value=False),
                          (1, height, width, channels))

    def draw(p, images):
        i, j = p // width, p % width
        noise = pixel_noise(seed, p, tf.stack([batch, channels, levels]))
        for c in range(channels):
            logits = model.head(model.features(model.scale_inputs(images), conditioning))
            value = choose(logits[:, i, j, c], noise[:, c], temperature)
            images = tf.where(subpixel_mask(p * channels + c), value[:, None, None, None],
                              images)
        return images

    def step(p, images):
        if fixed is None:
            return p + 1, draw(p, images)
        return p + 1, tf.cond(tf.constant(fixed)[p], lambda: images, lambda: draw(p, images))

    _, images = tf.while_loop(lambda p, _: p < height * width, step, (known_pixels, images),
                              maximum_iterations=height * width)
    return images


def _draw_pixel(model, weights, cache, rows, i, j, pixel, given, keep, noise, temperature):
    """Pixel (i, j) through the cached steps, channel by channel.

    pixel: zeros [N, C] of the compute dtype; given: int32 [N, C], the values kept where
    `keep` (bool scalar); noise [N, C, levels].
    Returns (values int32 [N, C], the logits used, C of [N, levels], the cache with the
    pixel committed).
    """
    channels = model.image_shape[2]
    values, used = [], []
    for c in range(channels):
        logits, updates = model.call_pixel(weights, cache, rows, i, j, pixel)
        value = tf.where(keep, given[:, c], choose(logits[:, c], noise[:, c], temperature))
        values.append(value)
        used.append(logits[:, c])
        one_hot = tf.constant(np.eye(channels)[c], pixel.dtype)
        pixel = pixel + model.scale_inputs(value)[:, None] * one_hot
    cache = model.commit_pixel(weights, cache, j, pixel, updates)
    return tf.stack(values, axis=-1), used, cache


def cached_loop(model, images, known_pixels, seed, temperature, record_logits=False,
                conditioning=None, fixed=None):
    """Raster-order loop over the pixels with the model's cached steps.

    images int32 [N, H, W, C]: pixels < known_pixels and those marked in `fixed` (numpy bool
    [H * W] in raster order, or None) are kept, the others drawn. seed: `seed_pair`.
    conditioning: as for `PixelRNN.features`.
    Returns int32 images [N, H, W, C], and with `record_logits` also the logits the sampler
    used, [N, H, W, C, levels].
    """
    height, width, channels = model.image_shape
    levels = model.levels
    weights = model.step_weights(conditioning)
    # A dynamic batch size throughout, so no loop variable changes its static shape.
    images = tf.raw_ops.PlaceholderWithDefault(input=images,
                                               shape=[None, height, width, channels])
    batch = tf.shape(images)[0]
    by_position = tf.transpose(images, (1, 2, 0, 3))  # [H, W, N, C]
    fixed = None if fixed is None else tf.constant(fixed)
    pixels_out = tf.TensorArray(tf.int32, size=height * width)
    logits_out = tf.TensorArray(tf.float32, size=height * width if record_logits else 0,
                                dynamic_size=not record_logits)

    def row_step(i, cache, pixels_out, logits_out):
        cache, rows = model.start_row(weights, cache, i)

        def column_step(j, cache, pixels_out, logits_out):
            p = i * width + j
            noise = pixel_noise(seed, p, tf.stack([batch, channels, levels]))
            keep = p < known_pixels if fixed is None else (p < known_pixels) | fixed[p]
            pixel = tf.zeros(tf.stack([batch, channels]), model.compute_dtype)
            values, used, cache = _draw_pixel(model, weights, cache, rows, i, j, pixel,
                                              by_position[i, j], keep, noise, temperature)
            pixels_out = pixels_out.write(p, values)
            if record_logits:
                logits_out = logits_out.write(p, tf.cast(tf.stack(used, axis=1), tf.float32))
            return j + 1, cache, pixels_out, logits_out

        _, cache, pixels_out, logits_out = tf.while_loop(
            lambda j, *_: j < width, column_step,
            (tf.constant(0), cache, pixels_out, logits_out), maximum_iterations=width)
        return i + 1, model.end_row(weights, cache, i), pixels_out, logits_out

    _, _, pixels_out, logits_out = tf.while_loop(
        lambda i, *_: i < height, row_step,
        (tf.constant(0), model.initial_cache(batch), pixels_out, logits_out),
        maximum_iterations=height)
    result = tf.reshape(pixels_out.stack(), tf.stack([height, width, batch, channels]))
    result = tf.transpose(result, (2, 0, 1, 3))
    if not record_logits:
        return result
    logits = tf.reshape(logits_out.stack(), tf.stack([height, width, batch, channels, levels]))
    return result, tf.transpose(logits, (2, 0, 1, 3, 4))
