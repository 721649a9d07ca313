"""The LSTM update shared by the Row LSTM and the Diagonal LSTM (paper, equation 3), what
their hand-written backward loops need (the update's derivative, and where to run the loops),
and the right-to-left row sweep of cached sampling."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

try:  # only decides where the loops run (`run_loops_compiled`), never what they compute
    from tensorflow.python.eager.record import could_possibly_record as _tape_is_recording
except ImportError:  # pragma: no cover - a TensorFlow without it runs the plain loops
    def _tape_is_recording():
        return False


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
    # tf.split: one op where slices take one each (the cached sampler runs this per pixel)
    ofi, g = tf.split(gates, [3 * units, units], axis=-1)
    o, f, i = tf.split(tf.sigmoid(ofi), 3, axis=-1)
    g = tf.tanh(g)
    c = f * c_prev + i * g
    return o * tf.tanh(c), c


class RowSweep(NamedTuple):
    """An LSTM run right to left along one finished row (cached sampling: the Diagonal
    BiLSTM's right-to-left direction). At column j, from j = W - 1 down to 0:
    gates = inputs[j] + h(j + 1) @ kernel, starting from (h, c) right of the row.

    inputs: [W, N, 4h] everything but the state-to-the-right term; h, c: [N, h];
    kernel: [h, 4h].
    """

    inputs: tf.Tensor
    h: tf.Tensor
    c: tf.Tensor
    kernel: tf.Tensor


def sweep_right_to_left(sweeps):
    """Runs alike `RowSweep`s (one per layer) in one loop, stacked so that each column is one
    batched matmul. Returns the hidden states of each, a list of [W, N, h]."""
    gates, h, c, kernel = (tf.stack(parts) for parts in zip(*sweeps))  # [K, ...]
    width = gates.shape[1]
    out = tf.TensorArray(gates.dtype, size=width, element_shape=h.shape)

    def step(j, h, c, out):
        h, c = lstm_update(gates[:, j] + tf.matmul(h, kernel), c)
        return j - 1, h, c, out.write(j, h)

    _, _, _, out = tf.while_loop(lambda j, *_: j >= 0, step,
                                 (tf.constant(width - 1), h, c, out),
                                 maximum_iterations=width)
    return tf.unstack(tf.transpose(out.stack(), (1, 0, 2, 3)))


def gate_scales(units, dtype):
    """Constants of `lstm_step` and `lstm_step_backward` (gates on axis -2): `half` [4h, 1]
    (1/2 on the sigmoid gates o, f, i; 1 on g) and `is_o` [4, 1, 1] (1 on o)."""
    gate = tf.range(4 * units) // units
    half = tf.cast(tf.where(gate == 3, 1.0, 0.5), dtype)[:, None]
    is_o = tf.constant([1.0, 0.0, 0.0, 0.0], dtype)[:, None, None]
    return half, is_o


def lstm_step(gates, c_prev, half, keep=None):
    """`lstm_update` in the [..., 4h, positions] layout, plus what its backward needs.

    sigmoid(z) = (1 + tanh(z / 2)) / 2, so a single tanh of gates * `half` (from
    `gate_scales`) gives all four activations.

    Args:
      gates: [..., 4h, P] pre-activations [o, f, i, g]; c_prev: [..., h, P].
      half: from `gate_scales`.
      keep: optional (mask [P], h_keep, c_keep): where mask is 0 the step returns
        (h_keep, c_keep) instead (cells that have not started yet).
    Returns:
      h, c [..., h, P] and the saved tensors (q [..., 4h, P], w [..., h, P], f [..., h, P]):
      q is d(activation)/d(pre-activation) times what the gate multiplies (tanh(c) for o,
      c_prev for f, g for i, i for g), w = o * (1 - tanh(c)^2).
    """
    units = c_prev.shape[-2]
    s = tf.tanh(gates * half)
    so, sf, si, g = (s[..., a * units:(a + 1) * units, :] for a in range(4))
    o, f, i = 0.5 + 0.5 * so, 0.5 + 0.5 * sf, 0.5 + 0.5 * si
    c = f * c_prev + i * g
    if keep is not None:
        mask, h_keep, c_keep = keep
        c = mask * c + (1.0 - mask) * c_keep
    tanh_c = tf.tanh(c)
    h = o * tanh_c
    if keep is not None:
        h = mask * h + (1.0 - mask) * h_keep
    q = tf.concat([tanh_c * (0.25 * (1.0 - so * so)), c_prev * (0.25 * (1.0 - sf * sf)),
                   g * (0.25 * (1.0 - si * si)), i * (1.0 - g * g)], -2)
    return h, c, (q, o * (1.0 - tanh_c * tanh_c), f)


def lstm_step_backward(dh, dc, saved, is_o):
    """Backward of `lstm_step`: dh, dc [..., h, P] (gradients of its h and c outputs) and its
    saved tensors -> (d gates [..., 4h, P], d c_prev [..., h, P])."""
    q, w, f = saved
    dc = dc + dh * w
    # [..., 4, h, P]: the o block scales by dh, the others by dc
    by_gate = is_o * dh[..., None, :, :] + (1.0 - is_o) * dc[..., None, :, :]
    q = tf.reshape(q, tf.concat([tf.shape(q)[:-2], [4, -1, tf.shape(q)[-1]]], 0))
    d_gates = tf.reshape(by_gate * q, tf.shape(saved[0]))
    return d_gates, dc * f


def inside_xla():
    """True while tracing a jit-compiled function (everything there becomes one XLA program)."""
    return tf.__internal__.get_enclosing_xla_context() is not None


def run_loops_compiled():
    """Whether a recurrent layer outside a jit-compiled function should run its loops as
    nested XLA programs: only while a gradient tape records (training). XLA fuses each
    step's element-wise ops, which the graph executor runs one kernel at a time; inference
    graphs (and SavedModels exported for TF Serving, which runs XLA only behind an
    experimental flag) keep plain loops."""
    return not inside_xla() and _tape_is_recording()
