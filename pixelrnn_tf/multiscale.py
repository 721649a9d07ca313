"""Multi-Scale PixelRNN (paper, section 3.6).

Stage 1 is an ordinary PixelRNN over the subsampled s x s image. Stage 2 is a PixelRNN over
the full n x n image conditioned on the small one: the small image goes through an unmasked
convolutional encoder whose receptive field covers the whole small image, is upsampled by a
transposed convolution to c x n x n, and a 1x1 unmasked convolution per layer maps it to the
4h input-to-state pre-activations (h for PixelCNN blocks) that are added inside every layer.

Subsampling is a strided pick: x_small = x[:, ::f, ::f, :] with f = n / s, i.e. the top-left
pixel of every f x f block. Because those pixels are then known, stage 2 does not score them,
and the likelihood is exact, not a bound:

    log p(x) = log p1(x_small) + sum over the other sub-pixels k of log p2(x_k | x_<k, x_small).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from pixelrnn_tf import losses
from pixelrnn_tf.model import PixelRNN, fit_inputs, fit_target
from pixelrnn_tf.sampling_stages import SamplingStage


def subsample_positions(image_shape, factor):
    """[H, W, C] bool: True where a sub-pixel is part of the subsampled image."""
    height, width, channels = image_shape
    mask = np.zeros(image_shape, bool)
    mask[::factor, ::factor, :] = True
    return mask


def small_known_pixels(image_shape, small_size, known_pixels):
    """How many pixels of the small image are known when the first `known_pixels` pixels of
    the full image (raster order) are: those of its pixels (f a, f b) whose full raster index
    f a W + f b is < known_pixels. That index grows with the small raster index a s + b
    (within a row by f, and from (a, s - 1) to (a + 1, 0) by f W - f (s - 1) = f W - W + f
    > 0), so the known small pixels are always a raster prefix of the small image.

    image_shape: (H, W, C) of the full image, H = W = f * small_size.
    known_pixels: int32 scalar (a tensor or an int) -> int32 scalar in [0, s * s].
    """
    width, s = image_shape[1], small_size
    f = width // s
    rows, cols = np.meshgrid(np.arange(s) * f, np.arange(s) * f, indexing="ij")
    full_index = tf.constant((rows * width + cols).reshape(-1), tf.int32)  # increasing
    return tf.reduce_sum(tf.cast(full_index < tf.cast(known_pixels, tf.int32), tf.int32))


class SmallImageStage(SamplingStage):
    """Stage 1 of sampling: the small model draws x[:, ::f, ::f] (given the label, for a
    conditional model). Its known pixels are those of the full image's known prefix on that
    grid (a raster prefix, `small_known_pixels`); its draw is written onto the grid of the
    full image."""

    def __init__(self, multiscale):
        super().__init__(multiscale.small)
        self.multiscale = multiscale

    def select(self, images):
        return self.multiscale.subsample(images)

    def known_pixels(self, known_pixels):
        return small_known_pixels(self.multiscale.image_shape, self.multiscale.small_size,
                                  known_pixels)

    def place(self, images, drawn):
        f = self.multiscale.factor
        on_grid = subsample_positions(self.multiscale.image_shape, f)  # [H, W, C]
        placed = tf.repeat(tf.repeat(drawn, f, axis=1), f, axis=2)
        return tf.where(tf.constant(on_grid)[None], placed, images)


class ConditionalStage(SamplingStage):
    """Stage 2 of sampling: the full model, conditioned on the small image on the grid, draws
    every other pixel; the grid's pixels are fixed (stage 2 is not trained on them)."""

    def __init__(self, multiscale):
        super().__init__(multiscale.full)
        self.multiscale = multiscale
        self.fixed = subsample_positions(multiscale.image_shape,
                                         multiscale.factor)[..., 0].reshape(-1)

    def conditioning(self, images, labels=None):
        ms = self.multiscale
        return ms.full.block_conditioning(
            labels, ms.conditioning(ms.small.scale_inputs(ms.subsample(images))))


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class MultiScalePixelRNN(keras.Model):
    """Unconditional s x s PixelRNN plus a conditional n x n PixelRNN.

    Args:
      architecture, levels, num_layers, hidden_dim, output_dim, residual, skip, first_kernel,
        row_kernel: as for `PixelRNN`, used by both stages.
      image_shape: (n, n, C) of the full image.
      small_size: s; n must be a multiple of s.
      conditioning_dim: c, feature maps of the upsampled small image.
      num_classes: K > 0: both stages are conditioned on a label in [0, K) (each with its own
        embedding, `class_conditional`); 0: unconditional.
      **kwargs: `keras.Model` arguments.

    Call: images [B, n, n, C] integer (and labels [B] for a conditional model, as for
      `PixelRNN`) -> (small_logits [B, s, s, C, L], full_logits [B, n, n, C, L]); the full
      logits at subsampled positions are unused.
    """

    def __init__(self, architecture="diagonal_bilstm", image_shape=(28, 28, 1), small_size=14,
                 levels=256, num_layers=7, hidden_dim=16, output_dim=None, residual=True,
                 skip=True, first_kernel=7, row_kernel=3, conditioning_dim=None, num_classes=0,
                 **kwargs):
        super().__init__(**kwargs)
        image_shape = tuple(int(d) for d in image_shape)
        height, width, channels = image_shape
        if height != width or small_size < 1 or height % small_size:
            raise ValueError(f"multi-scale needs a square image whose side is a multiple of "
                             f"small_size, got image_shape {image_shape}, small_size "
                             f"{small_size}")
        self.architecture = architecture
        self.image_shape = image_shape
        self.small_size = int(small_size)
        self.factor = height // small_size
        self.levels = int(levels)
        self.conditioning_dim = int(conditioning_dim or hidden_dim)
        stage_args = dict(architecture=architecture, levels=levels, num_layers=num_layers,
                          hidden_dim=hidden_dim, output_dim=output_dim, residual=residual,
                          skip=skip, first_kernel=first_kernel, row_kernel=row_kernel,
                          num_classes=num_classes)
        self.stage_args = stage_args
        self.small = PixelRNN(image_shape=(small_size, small_size, channels), name="small",
                              **stage_args)
        self.full = PixelRNN(image_shape=image_shape, name="full", **stage_args)
        # Dilations 1, 2, 4, ...: receptive field 2^(k+1) - 1 >= 2s - 1 covers the small image.
        # ELU rather than ReLU: no unit is ever cut off from the small image entirely.
        num_encoder = max(1, math.ceil(math.log2(small_size)))
        self.encoder = [keras.layers.Conv2D(self.conditioning_dim, 3, padding="same",
                                            dilation_rate=2 ** k, activation="elu",
                                            name=f"encoder_{k}")
                        for k in range(num_encoder)]
        self.upsample = keras.layers.Conv2DTranspose(
            self.conditioning_dim, self.factor, strides=self.factor, padding="valid",
            name="upsample")
        self.to_layers = [keras.layers.Conv2D(width, 1, name=f"condition_{i}")
                          for i, width in enumerate(self.full.conditioning_dims)]
        self.build()

    @property
    def num_dims(self):
        return int(np.prod(self.image_shape))

    @property
    def num_classes(self):
        return self.small.num_classes

    @property
    def label_log_prior(self):
        """log p(y) [K] (stage 1 holds it; `set_label_prior` sets both stages')."""
        return self.small.label_log_prior

    def set_label_prior(self, counts):
        """Stores p(y) from the training label counts [K] (`class_conditional`)."""
        self.small.set_label_prior(counts)
        self.full.set_label_prior(counts)

    def validate(self, images, labels=None):
        """Checked (int32 images, int32 labels or None), as `PixelRNN.validate`."""
        return self.full.validate(images, labels)

    def build(self, input_shape=None):
        if self.built:
            return
        s, n, c = self.small_size, self.image_shape[0], self.image_shape[2]
        self.small.build()
        self.full.build()
        shape = (None, s, s, c)
        for layer in self.encoder:
            layer.build(shape)
            shape = (None, s, s, self.conditioning_dim)
        self.upsample.build(shape)
        for layer in self.to_layers:
            layer.build((None, n, n, self.conditioning_dim))
        self.built = True

    def conditioning(self, scaled_small):
        """Scaled small images [B, s, s, C] (float, `scale_inputs`) -> one additive map per
        stage-2 layer, each [B, n, n, 4h] ([B, n, n, h] for PixelCNN)."""
        x = scaled_small
        for layer in self.encoder:
            x = layer(x)
        x = self.upsample(x)
        return [layer(x) for layer in self.to_layers]

    def full_logits(self, images, small_images, labels=None):
        """Stage-2 logits [B, n, n, C, L] of `images` given `small_images` (and labels)."""
        return self.full.head(self.full.features(
            self.full.scale_inputs(images), self.full.block_conditioning(
                labels, self.conditioning(self.small.scale_inputs(small_images)))))

    def subsample(self, images):
        """[B, n, n, C] -> [B, s, s, C]: the top-left pixel of every f x f block."""
        return images[:, :: self.factor, :: self.factor, :]

    def sampling_stages(self):
        """How the samplers draw an image: the small image, then the full image given it
        (`SmallImageStage`, `ConditionalStage`)."""
        return (SmallImageStage(self), ConditionalStage(self))

    def logits(self, images, labels=None):
        """Validated integer images (and labels) -> (small_logits, full_logits), as `call`."""
        small_images = self.subsample(images)
        small_logits = self.small.head(self.small.features(
            self.small.scale_inputs(small_images), self.small.block_conditioning(labels)))
        return small_logits, self.full_logits(images, small_images, labels)

    def call(self, images, labels=None):
        return self.logits(*self.validate(images, labels))

    def pixel_log_prob(self, images, labels=None):
        """[B, n, n, C] -> [B, n, n, C] nats: subsampled sub-pixels scored by stage 1 (given
        the earlier small-image sub-pixels), all others by stage 2 (given the small image and
        every earlier sub-pixel). Sums to the exact log p(x) (log p(x | y) for a conditional
        model, given labels [B])."""
        images, labels = self.validate(images, labels)
        return self.pixel_log_prob_from_logits(images, *self.logits(images, labels))

    def pixel_log_prob_from_logits(self, images, small_logits, full_logits):
        """The one likelihood formula: images [B, n, n, C] and the outputs of `call` ->
        [B, n, n, C] nats (see `pixel_log_prob`)."""
        images = tf.cast(images, tf.int32)
        small_lp = losses.pixel_log_prob(small_logits, self.subsample(images))
        full_lp = losses.pixel_log_prob(full_logits, images)
        # place the stage-1 terms on the grid of their pixels
        n, f = self.image_shape[0], self.factor
        placed = tf.reshape(tf.pad(small_lp[:, :, None, :, None, :],
                                   [[0, 0], [0, 0], [0, f - 1], [0, 0], [0, f - 1], [0, 0]]),
                            (-1, n, n, self.image_shape[2]))
        known = tf.constant(subsample_positions(self.image_shape, f))
        return tf.where(known[None], placed, full_lp)

    def log_prob_terms(self, images, labels=None):
        """{"total": log p(x), "small": log p1(x_small), "conditional": log p2(rest |
        x_small)}, each [B] nats; small + conditional = total (all given y for a conditional
        model)."""
        lp = self.pixel_log_prob(images, labels)
        known = tf.constant(subsample_positions(self.image_shape, self.factor))[None]
        small = tf.reduce_sum(tf.where(known, lp, 0.0), axis=[1, 2, 3])
        conditional = tf.reduce_sum(tf.where(known, 0.0, lp), axis=[1, 2, 3])
        return {"total": small + conditional, "small": small, "conditional": conditional}

    @property
    def term_dims(self):
        """{term of `log_prob_terms`: how many sub-pixels it scores}."""
        small = self.small_size ** 2 * self.image_shape[2]
        return {"total": self.num_dims, "small": small, "conditional": self.num_dims - small}

    def describe(self):
        """What the SavedModel's JSON description says of the model (`serving`); the stages
        share their sizes."""
        described = {"architecture": self.architecture, "num_layers": self.full.num_layers,
                "hidden_dim": self.full.hidden_dim, "model": "MultiScalePixelRNN",
                "small_size": self.small_size, "factor": self.factor,
                "pixel_order": "pixel_log_prob: the subsampled pixels [::factor, ::factor] "
                               "first (small-image raster order), then the others in raster "
                               "order given the small image"}
        if self.num_classes:
            described["num_classes"] = self.num_classes
        return described

    def log_prob(self, images, labels=None):
        """[B, n, n, C] -> [B] exact log p(x) (log p(x | y)) in nats."""
        return tf.reduce_sum(self.pixel_log_prob(images, labels), axis=[1, 2, 3])

    def bits_per_dim(self, images, labels=None):
        return losses.nats_to_bits_per_dim(-self.log_prob(images, labels), self.num_dims)

    def train_step(self, data):
        return super().train_step(fit_inputs(self, data))

    def test_step(self, data):
        return super().test_step(fit_inputs(self, data))

    def predict_step(self, data):
        return super().predict_step(fit_inputs(self, data))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`model.fit` on a dataset of images (labels, if any, are ignored): mean exact NLL
        per image (nats), divided by the replica count under `tf.distribute` like Keras'
        own losses."""
        nll = -tf.reduce_sum(self.pixel_log_prob_from_logits(fit_target(x), *y_pred),
                             axis=[1, 2, 3])
        loss = tf.reduce_mean(nll)
        loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
        return loss + sum(self.losses)

    @classmethod
    def from_preset(cls, name: str) -> MultiScalePixelRNN:
        """As `PixelRNN.from_preset`, for a pretrained MultiScalePixelRNN; a preset of
        another class (`pixelrnn_tf.list_presets()`) is refused with a one-line ValueError."""
        from pixelrnn_tf import presets

        return presets.load_preset(name, cls)

    def get_config(self):
        config = super().get_config()
        stage_args = dict(self.stage_args)
        if not stage_args["num_classes"]:
            del stage_args["num_classes"]  # an unconditional model's config as before
        config.update(image_shape=list(self.image_shape), small_size=self.small_size,
                      conditioning_dim=self.conditioning_dim, **stage_args)
        return config
