"""Row LSTM (paper, section 3.1): one whole row per step, top to bottom."""

from __future__ import annotations

import keras
import tensorflow as tf

from pixelrnn_tf.lstm_cell import lstm_update
from pixelrnn_tf.masked_conv import MaskedConv2D


def shift_right(x, axis):
    """x shifted by one along `axis` (zero in front, last element dropped)."""
    pad = [[0, 0]] * x.shape.rank
    pad[axis] = [1, 0]
    return tf.pad(x, pad)[tuple(slice(None, -1) if a == axis % x.shape.rank else slice(None)
                                for a in range(x.shape.rank))]


def shift_left(x, axis):
    """x shifted by one along `axis` towards the front (zero at the end)."""
    pad = [[0, 0]] * x.shape.rank
    pad[axis] = [0, 1]
    return tf.pad(x, pad)[tuple(slice(1, None) if a == axis % x.shape.rank else slice(None)
                                for a in range(x.shape.rank))]


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class RowLSTM(keras.layers.Layer):
    """Row LSTM layer.

    Input-to-state: a 1 x k mask-B convolution along the row, computed for the whole map at
    once. State-to-state: an unmasked 3-wide convolution over the previous row's hidden state
    (one matmul of the [h(j-1), h(j), h(j+1)] neighbourhood per step). Rows are processed top
    to bottom in a `tf.while_loop`; the initial (row -1) state is learned.

    Args:
      units: h, the units per gate.
      colour_groups: image channels C the feature maps are grouped by.
      kernel_size: k of the input-to-state 1 x k convolution (odd, paper: 3).
      **kwargs: `keras.layers.Layer` arguments.

    Call:
      inputs [B, H, W, Cin] float; optional `conditioning` [B, H, W, 4h] added to the
      input-to-state pre-activations (Multi-Scale PixelRNN). Returns [B, H, W, h].
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

    def state_to_state(self, h_prev):
        """h_prev [B, W, h] (a whole row) -> gate pre-activations [B, W, 4h]."""
        neighbours = tf.concat([shift_right(h_prev, 1), h_prev, shift_left(h_prev, 1)], -1)
        kernel = tf.reshape(self.state_kernel, (3 * self.units, 4 * self.units))
        return tf.einsum("bwk,kg->bwg", neighbours, kernel)

    def initial_state(self, batch, width, dtype):
        """(h, c) of row -1, each [B, W, h]."""
        shape = tf.stack([batch, width, self.units])
        return (tf.broadcast_to(tf.cast(self.initial_h, dtype), shape),
                tf.broadcast_to(tf.cast(self.initial_c, dtype), shape))

    def call(self, inputs, conditioning=None):
        gates_in = self.input_to_state(inputs)  # [B, H, W, 4h]
        if conditioning is not None:
            gates_in = gates_in + conditioning
        batch, height, width = tf.shape(inputs)[0], inputs.shape[1], inputs.shape[2]
        # A TensorArray, not `rows[t]`, whose gradient would be quadratic in the height.
        rows = tf.TensorArray(gates_in.dtype, size=height).unstack(
            tf.transpose(gates_in, (1, 0, 2, 3)))  # H x [B, W, 4h]
        h0, c0 = self.initial_state(batch, tf.shape(inputs)[2], gates_in.dtype)
        out = tf.TensorArray(gates_in.dtype, size=height, element_shape=h0.shape)

        def step(t, h, c, out):
            h, c = lstm_update(rows.read(t) + self.state_to_state(h), c)
            return t + 1, h, c, out.write(t, h)

        _, _, _, out = tf.while_loop(
            lambda t, *_: t < height, step, (tf.constant(0), h0, c0, out),
            maximum_iterations=height)
        hidden = tf.transpose(out.stack(), (1, 0, 2, 3))  # [B, H, W, h]
        return tf.ensure_shape(hidden, (None, height, width, self.units))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, colour_groups=self.colour_groups,
                      kernel_size=self.kernel_size)
        return config
