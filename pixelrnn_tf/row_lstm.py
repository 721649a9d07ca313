"""Row LSTM (paper, section 3.1): one whole row per step, top to bottom.

The row loop (`row_lstm_scan`) keeps a row's states laid out [units, width * batch], so each
element-wise op runs over one long contiguous vector and the 3-wide state-to-state
convolution is one matmul of [h(j - 1), h(j), h(j + 1)]. A hand-written backward loop
(`tf.custom_gradient`) replays the gate values stored by the forward loop and accumulates the
state-kernel gradient inside the loop; see `lstm_cell.run_loops_compiled` for where the loops
run.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pixelrnn_tf.cache_buffers import put
from pixelrnn_tf.lstm_cell import (
    gate_scales,
    inside_xla,
    lstm_step,
    lstm_step_backward,
    lstm_update,
    run_loops_compiled,
)
from pixelrnn_tf.masked_conv import MaskedConv2D


def _neighbours(h, batch):
    """[u, W * B] (position j * B + b) -> [3u, W * B]: [h(j - 1); h(j); h(j + 1)], zero
    beyond the row ends."""
    right = tf.pad(h[:, :-batch], [[0, 0], [batch, 0]])
    left = tf.pad(h[:, batch:], [[0, 0], [0, batch]])
    return tf.concat([right, h, left], 0)


def _rows(x, batch):
    """[B, H, W, C] -> [H, C, W * B]."""
    height, channels = x.shape[1], x.shape[3]
    return tf.reshape(tf.transpose(x, (1, 3, 2, 0)), tf.stack([height, channels, -1]))


def _image(rows, batch, width):
    """Inverse of `_rows`: [H, C, W * B] -> [B, H, W, C]."""
    height, channels = rows.shape[0], rows.shape[1]
    rows = tf.reshape(rows, tf.stack([height, channels, width, batch]))
    return tf.transpose(rows, (3, 0, 2, 1))


def _row_forward(gates_in, kernel, initial_h, initial_c):
    """gates_in [B, H, W, 4u]; kernel [3u, 4u] -> hidden [B, H, W, u] and, per row, what
    `_row_backward` needs: h and `lstm_step`'s saved tensors."""
    _, height, width, four_u = gates_in.shape
    units = four_u // 4
    dtype = gates_in.dtype
    batch = tf.shape(gates_in)[0]
    half, _ = gate_scales(units, dtype)
    x = _rows(gates_in, batch)
    kernel_t = tf.transpose(kernel)
    state_shape = tf.stack([units, width * batch])
    h = tf.broadcast_to(initial_h[:, None], state_shape)
    c = tf.broadcast_to(initial_c[:, None], state_shape)

    def step(t, h, c, hs, qs, ws, fs):
        h, c, (q, w, f) = lstm_step(x[t] + tf.matmul(kernel_t, _neighbours(h, batch)), c, half)
        return t + 1, h, c, hs.write(t, h), qs.write(t, q), ws.write(t, w), fs.write(t, f)

    arrays = tuple(tf.TensorArray(dtype, size=height) for _ in range(4))
    out = tf.while_loop(lambda t, *_: t < height, step, (0, h, c) + arrays,
                        maximum_iterations=height)
    hs, qs, ws, fs = (a.stack() for a in out[3:])
    return _image(hs, batch, width), (hs, qs, ws, fs)


def _row_backward(gates_in, kernel, initial_h, initial_c, saved, d_hidden):
    """Gradients of `_row_forward` given d_hidden [B, H, W, u]: (d gates_in, d kernel,
    d initial_h, d initial_c)."""
    _, height, width, four_u = gates_in.shape
    units = four_u // 4
    dtype = gates_in.dtype
    batch = tf.shape(gates_in)[0]
    _, is_o = gate_scales(units, dtype)
    hs, qs, ws, fs = saved
    dy = _rows(d_hidden, batch)
    h_init = tf.broadcast_to(initial_h[:, None], tf.stack([units, width * batch]))
    h_prev_all = tf.concat([h_init[None], hs[:-1]], 0)
    zeros = tf.zeros_like(h_init)

    def back_step(k, dh, dc, d_kernel, d_gates):
        t = height - 1 - k
        dz, dc = lstm_step_backward(dh + dy[t], dc, (qs[t], ws[t], fs[t]), is_o)
        d_kernel = d_kernel + tf.matmul(_neighbours(h_prev_all[t], batch), dz, transpose_b=True)
        dn = tf.matmul(kernel, dz)  # d [h(j - 1); h(j); h(j + 1)] of the previous row
        dh = (tf.pad(dn[:units, batch:], [[0, 0], [0, batch]]) + dn[units:2 * units]
              + tf.pad(dn[2 * units:, :-batch], [[0, 0], [batch, 0]]))
        return k + 1, dh, dc, d_kernel, d_gates.write(t, dz)

    out = tf.while_loop(lambda k, *_: k < height, back_step,
                        (0, zeros, zeros, tf.zeros_like(kernel),
                         tf.TensorArray(dtype, size=height)),
                        maximum_iterations=height)
    _, dh, dc, d_kernel, d_gates = out
    return (_image(d_gates.stack(), batch, width), d_kernel, tf.reduce_sum(dh, 1),
            tf.reduce_sum(dc, 1))


_row_forward_xla = tf.function(_row_forward, jit_compile=True)
_row_backward_xla = tf.function(_row_backward, jit_compile=True)


def row_lstm_scan(gates_in, state_kernel, initial_h, initial_c):
    """The Row LSTM recurrence over all rows, top to bottom.

    Row i: gates = gates_in[:, i] + conv3(h of row i - 1) with state_kernel[k] applied to
    h(j - 1 + k) (zero beyond the row ends); row -1 is (initial_h, initial_c) everywhere.

    Args:
      gates_in: [B, H, W, 4u] input-to-state pre-activations [o, f, i, g].
      state_kernel: [3, u, 4u]; initial_h, initial_c: [u]. All of gates_in's dtype.
    Returns:
      hidden states [B, H, W, u].
    """
    compiled = run_loops_compiled()
    forward = _row_forward_xla if compiled else _row_forward
    backward = _row_backward if inside_xla() else _row_backward_xla  # gradients: training only

    @tf.custom_gradient
    def scan(gates_in, state_kernel, initial_h, initial_c):
        # differentiated by `grad`, never by the tape (see diagonal_lstm_scan)
        gates_in, state_kernel, initial_h, initial_c = (
            tf.stop_gradient(v) for v in (gates_in, state_kernel, initial_h, initial_c))
        kernel = tf.reshape(state_kernel, (-1, state_kernel.shape[-1]))  # [3u, 4u]
        batch = gates_in.shape[0]
        if compiled and batch is not None and batch >= 2:
            # two batch halves: two compiled loops TensorFlow runs in parallel
            parts = [gates_in[: batch // 2], gates_in[batch // 2:]]
        else:
            parts = [gates_in]
        results = [forward(x, kernel, initial_h, initial_c) for x in parts]

        def grad(d_hidden):
            d_parts = (tf.split(d_hidden, [x.shape[0] for x in parts]) if len(parts) > 1
                       else [d_hidden])
            outs = [backward(x, kernel, initial_h, initial_c, r[1], d)
                    for x, r, d in zip(parts, results, d_parts)]
            d_kernel = tf.add_n([o[1] for o in outs])
            return (tf.concat([o[0] for o in outs], 0), tf.reshape(d_kernel, state_kernel.shape),
                    tf.add_n([o[2] for o in outs]), tf.add_n([o[3] for o in outs]))

        return tf.concat([r[0] for r in results], 0), grad

    return scan(gates_in, state_kernel, initial_h, initial_c)


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class RowLSTM(keras.layers.Layer):
    """Row LSTM layer.

    Input-to-state: a 1 x k mask-B convolution along the row, computed for the whole map at
    once. State-to-state: an unmasked 3-wide convolution over the previous row's hidden state
    (one matmul of the [h(j-1), h(j), h(j+1)] neighbourhood per step). Rows are processed top
    to bottom in a `tf.while_loop` (`row_lstm_scan`); the initial (row -1) state is learned.

    Args:
      units: h, the units per gate.
      colour_groups: image channels C the feature maps are grouped by.
      kernel_size: k of the input-to-state 1 x k convolution (odd, paper: 3).
      **kwargs: `keras.layers.Layer` arguments.

    Call:
      inputs [B, H, W, Cin] float; optional `conditioning` [B, H, W, 4h] added to the
      input-to-state pre-activations (Multi-Scale PixelRNN). Returns [B, H, W, h].

    Cached sampling, one pixel at a time (`step_weights`, `initial_cache`, `start_row`,
    `call_pixel`, `commit_pixel`, `row_sweep`, `finish_row`, as `DiagonalBiLSTM`): the
    input-to-state convolution keeps its own buffer of the row, the cache the states of the
    previous row.
    """

    def __init__(self, units, colour_groups=1, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.colour_groups = colour_groups
        self.kernel_size = kernel_size
        self.input_to_state = MaskedConv2D(
            4 * units, (1, kernel_size), mask_type="B", colour_groups=colour_groups,
            out_blocks=4, name="input_to_state")

    def build(self, input_shape):
        self.input_to_state.build(input_shape)
        h = self.units
        # state_kernel[k] maps h(j - 1 + k) of the previous row to the 4h gates at column j.
        self.state_kernel = self.add_weight(
            name="state_kernel", shape=(3, h, 4 * h), initializer="glorot_uniform")
        self.initial_h = self.add_weight(name="initial_h", shape=(h,), initializer="zeros")
        self.initial_c = self.add_weight(name="initial_c", shape=(h,), initializer="zeros")

    def call(self, inputs, conditioning=None):
        gates_in = self.input_to_state(inputs)  # [B, H, W, 4h]
        if conditioning is not None:
            gates_in = gates_in + conditioning
        cast = lambda v: tf.cast(v, gates_in.dtype)
        hidden = row_lstm_scan(gates_in, cast(self.state_kernel), cast(self.initial_h),
                               cast(self.initial_c))
        return tf.ensure_shape(hidden, (None,) + tuple(inputs.shape[1:3]) + (self.units,))

    # Cached sampling: what `call` computes, one pixel at a time.

    def step_weights(self, dtype):
        """{"input": the input-to-state convolution's step weights, "state": [3, h, 4h]}."""
        return {"input": self.input_to_state.step_weights(dtype),
                "state": tf.cast(self.state_kernel, dtype)}

    def initial_cache(self, batch, width, dtype):
        """{"input": the input-to-state convolution's cache, "h", "c": [W, N, h] the states
        of the previous row (row -1: the learned initial state), overwritten column by
        column}."""
        shape = tf.stack([width, batch, self.units])
        return {"input": self.input_to_state.initial_cache(batch, width, dtype),
                "h": tf.broadcast_to(tf.cast(self.initial_h, dtype), shape),
                "c": tf.broadcast_to(tf.cast(self.initial_c, dtype), shape)}

    def start_row(self, weights, cache, i):
        """Row i begins: returns (cache, the state-to-state pre-activations of the whole row
        [W, N, 4h]: column j reads h(j - 1), h(j), h(j + 1) of row i - 1, zero beyond its
        ends)."""
        h_prev = cache["h"]
        width = h_prev.shape[0]
        padded = tf.pad(h_prev, [[1, 1], [0, 0], [0, 0]])
        recurrent = tf.add_n([tf.einsum("wnh,hg->wng", padded[k: k + width],
                                        weights["state"][k]) for k in range(3)])
        return dict(cache, input=self.input_to_state.start_row(cache["input"])), recurrent

    def call_pixel(self, weights, cache, row, j, x, conditioning=None):
        """Hidden state at column j of the current row, [N, h], given the input there
        x [N, Cin], `row` from `start_row` and the conditioning there [N, 4h] (or None).
        Returns (h, what `commit_pixel` stores)."""
        gates = self.input_to_state.call_pixel(weights["input"], cache["input"], j, x)
        if conditioning is not None:
            gates = gates + conditioning
        h, c = lstm_update(gates + row[j], cache["c"][j])
        return h, (x, h, c)

    def commit_pixel(self, weights, cache, j, update):
        x, h, c = update
        return {"input": self.input_to_state.commit_pixel(cache["input"], j, x),
                "h": put(cache["h"], j, h), "c": put(cache["c"], j, c)}

    def row_sweep(self, weights, cache, conditioning_row=None):
        """No pass over the finished row (see `DiagonalBiLSTM.row_sweep`)."""
        return None

    def finish_row(self, weights, cache, swept):
        return cache

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, colour_groups=self.colour_groups,
                      kernel_size=self.kernel_size)
        return config
