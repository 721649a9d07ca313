"""Exact log-likelihood of discrete images under per-sub-pixel categorical logits."""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def pixel_log_prob(logits, images):
    """log p(x_k | x_<k) of every sub-pixel.

    Args:
      logits: [B, H, W, C, L] float.
      images: [B, H, W, C] integer in [0, L).
    Returns:
      [B, H, W, C] float (nats).
    """
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    return tf.gather(log_probs, tf.cast(images, tf.int32), axis=-1, batch_dims=4)


def log_prob(logits, images):
    """log p(x) in nats: [B, H, W, C, L], [B, H, W, C] -> [B]."""
    return tf.reduce_sum(pixel_log_prob(logits, images), axis=[1, 2, 3])


def nats_to_bits_per_dim(nats, num_dims):
    """Negative log-likelihood in nats per image -> bits per sub-pixel: nats / (D ln 2)."""
    return nats / (num_dims * math.log(2.0))


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class NegativeLogLikelihood(keras.losses.Loss):
    """Mean negative log-likelihood per image in nats.

    y_true: images [B, H, W, C] (integer values; Keras may hand them over as floats);
    y_pred: logits [B, H, W, C, L]. Keras averages the per-image values over the batch and
    divides by the replica count under `tf.distribute`.
    """

    def __init__(self, name="nll", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return -log_prob(y_pred, tf.cast(tf.round(y_true), tf.int32))


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class BitsPerDim(keras.metrics.Mean):
    """Running mean of bits per dimension (y_true images, y_pred logits)."""

    def __init__(self, name="bits_per_dim", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        nats = -log_prob(y_pred, tf.cast(tf.round(y_true), tf.int32))
        num_dims = tf.cast(tf.reduce_prod(tf.shape(y_pred)[1:4]), nats.dtype)
        return super().update_state(nats_to_bits_per_dim(nats, num_dims), sample_weight)
