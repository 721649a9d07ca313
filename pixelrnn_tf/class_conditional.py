"""Class-conditional PixelRNN: p(x | y) for a label y in [0, K), as in Conditional PixelCNN.

A model built with `num_classes=K > 0` learns an embedding of the label that is added to every
layer's pre-activations: the LSTM gates' input-to-state term (4h per block) or the middle
convolution of a PixelCNN block (h). It is position-independent, so it goes through the same
additive per-block conditioning path as the small image of a Multi-Scale PixelRNN (a map
[B, 1, 1, X] that broadcasts over the positions), and no mask is touched: the label is known
before the first sub-pixel.

Both model classes answer the same interface; a conditional model needs labels wherever it
takes images (`model(images, labels)`, `log_prob(images, labels)`, the samplers' `labels=`),
and stores p(y), the training label frequencies (`label_log_prior`), so that

    log p(x) = logsumexp_y [log p(x | y) + log p(y)]       (`marginal_log_prob`)
    p(y | x) = softmax_y [log p(x | y) + log p(y)]           (`classify`)

are exact: a conditional model still reports an NLL comparable with unconditional models, and
is a generative classifier. Each costs K forward passes per image.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["class_log_likelihoods", "classifier_sums", "classify", "joint_log_probs",
           "label_counts_to_log_prior", "marginal_log_prob", "validate_labels"]


def validate_labels(labels, num_classes, images):
    """Checks labels against a model with `num_classes` classes (0: unconditional) and the
    image batch; returns int32 labels [B], or None for an unconditional model.

    Missing labels for a conditional model, labels given to an unconditional one, a wrong
    rank, dtype or batch size raise `ValueError` at trace time (a batch size known only at run
    time, and values outside [0, num_classes), raise `ValueError` when concrete and an
    `InvalidArgumentError` from an in-graph assert otherwise).
    """
    if not num_classes:
        if labels is not None:
            raise ValueError("labels given to an unconditional model (num_classes=0); "
                             "build the model with num_classes=K to condition on labels")
        return None
    if labels is None:
        raise ValueError(f"this model is class-conditional (num_classes={num_classes}): "
                         "pass labels, one int in [0, num_classes) per image")
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer:
        raise ValueError(f"labels must be integers in [0, {num_classes}), got dtype "
                         f"{labels.dtype.name}")
    if labels.shape.rank != 1:
        raise ValueError(f"labels must have rank 1 [batch], got shape {labels.shape}")
    labels = tf.cast(labels, tf.int32)
    batch, got = images.shape[0], labels.shape[0]
    if batch is not None and got is not None and batch != got:
        raise ValueError(f"{got} labels for a batch of {batch} images: give one label per "
                         "image")
    if tf.executing_eagerly():
        if labels.shape.num_elements():
            low, high = int(tf.reduce_min(labels)), int(tf.reduce_max(labels))
            if low < 0 or high >= num_classes:
                raise ValueError(f"labels must lie in [0, {num_classes}), got min {low} "
                                 f"max {high}")
        return labels
    checks = [
        tf.debugging.Assert(tf.reduce_all((labels >= 0) & (labels < num_classes)),
                            [f"labels must lie in [0, {num_classes})", tf.reduce_min(labels),
                             tf.reduce_max(labels)]),
        tf.debugging.Assert(tf.equal(tf.shape(labels)[0], tf.shape(images)[0]),
                            ["give one label per image: labels", tf.shape(labels)[0],
                             "images", tf.shape(images)[0]])]
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def label_counts_to_log_prior(counts):
    """Label counts [K] -> log p(y) [K] float32, the training label frequencies. A class seen
    zero times gets probability 0 (log -inf): `classify` never picks it."""
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or counts.size < 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"label counts must be K >= 1 non-negative numbers with a positive "
                         f"sum, got {counts.tolist()}")
    with np.errstate(divide="ignore"):
        return np.log(counts / counts.sum()).astype(np.float32)


def _require_conditional(model):
    if not model.num_classes:
        raise ValueError("the marginal likelihood and the classifier need a class-conditional "
                         "model (num_classes > 0)")


def class_log_likelihoods(model, images):
    """log p(x | y) for every class: images int [B, H, W, C] -> [B, K] nats.

    One forward pass of the K copies of the batch (so memory grows K-fold)."""
    _require_conditional(model)
    num_classes = model.num_classes
    images = tf.convert_to_tensor(images)
    batch = tf.shape(images)[0]
    tiled = tf.tile(images, tf.concat([[num_classes], tf.ones([3], tf.int32)], 0))
    labels = tf.repeat(tf.range(num_classes, dtype=tf.int32), batch)  # class-major, like tiled
    log_probs = model.log_prob(tiled, labels)  # [K * B]
    return tf.transpose(tf.reshape(log_probs, tf.stack([num_classes, batch])))


def joint_log_probs(model, images):
    """log p(x, y) = log p(x | y) + log p(y): images [B, H, W, C] -> [B, K] nats."""
    _require_conditional(model)
    prior = tf.cast(model.label_log_prior, tf.float32)
    return class_log_likelihoods(model, images) + prior[None, :]


def marginal_log_prob(model, images):
    """Exact log p(x) = logsumexp_y [log p(x | y) + log p(y)]: images [B, H, W, C] -> [B]
    nats, comparable with an unconditional model's `log_prob`."""
    return tf.reduce_logsumexp(joint_log_probs(model, images), axis=1)


def classify(model, images):
    """The generative classifier: images int [B, H, W, C] -> (label int32 [B], the posterior
    p(y | x) float32 [B, K]); label = argmax_y p(y | x)."""
    joint = joint_log_probs(model, images)
    return tf.argmax(joint, axis=1, output_type=tf.int32), tf.nn.softmax(joint, axis=1)


def classifier_sums(model, images, labels):
    """For evaluation: {"marginal": -sum_b log p(x_b) (nats), "correct": how many argmax_y
    p(y | x_b) equal labels_b}, float32 scalars."""
    joint = joint_log_probs(model, images)
    predicted = tf.argmax(joint, axis=1, output_type=tf.int32)
    return {"marginal": -tf.reduce_sum(tf.reduce_logsumexp(joint, axis=1)),
            "correct": tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))}
