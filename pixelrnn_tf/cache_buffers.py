"""Buffers of the layers' sampling caches (`call_pixel`), laid out position-major
([W, N, ...] or [rows, W, N, ...]) so that one position is one row of a
`tensor_scatter_nd_update`."""

from __future__ import annotations

import tensorflow as tf


def put(buffer, index, value):
    """buffer[index] = value for a buffer [K, ...] and value [...] (index: int32 scalar)."""
    return tf.tensor_scatter_nd_update(buffer, tf.reshape(index, (1, 1)), value[None])


def put_at(buffer, row, col, value):
    """buffer[row, col] = value for a buffer [R, K, ...] and value [...]."""
    return tf.tensor_scatter_nd_update(buffer, tf.reshape(tf.stack([row, col]), (1, 2)),
                                       value[None])


def roll_rows(buffer):
    """[R, ...] -> the rows moved up by one, a zero row at the bottom (a new image row)."""
    return tf.concat([buffer[1:], tf.zeros_like(buffer[:1])], axis=0)
