"""The LSTM update shared by the Row LSTM and the Diagonal LSTM (paper, equation 3)."""

from __future__ import annotations

import tensorflow as tf


def lstm_update(gates, c_prev):
    """One LSTM step from pre-activations.

    Args:
      gates: [..., 4h] pre-activations in the order [o, f, i, g] (input-to-state plus
        state-to-state).
      c_prev: [..., h] previous cell state.
    Returns:
      (h, c): each [..., h]; o, f, i are sigmoids, the content gate g is a tanh,
      c = f * c_prev + i * g, h = o * tanh(c).
    """
    units = c_prev.shape[-1]
    ofi = tf.sigmoid(gates[..., : 3 * units])
    g = tf.tanh(gates[..., 3 * units:])
    o, f, i = ofi[..., :units], ofi[..., units: 2 * units], ofi[..., 2 * units:]
    c = f * c_prev + i * g
    return o * tf.tanh(c), c
