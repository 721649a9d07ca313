"""Diagonal LSTM and Diagonal BiLSTM (paper, section 3.2).

The input-to-state map is skewed (row r shifted right by r, width W + H - 1) so that each
diagonal of the image becomes a column; a `tf.while_loop` scans the columns left to right.
In skewed coordinates the cell (r, t) is pixel (r, t - r); its previous column holds pixel
(r, j - 1) (same row, left) and, one row up, pixel (r - 1, j) (above). The 2x1
state-to-state convolution therefore reads rows r - 1 and r of the previous column: the
padding goes on TOP (a "SAME"-padded 2x1 kernel pads the bottom and leaks the next row).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pixelrnn_tf.lstm_cell import lstm_update
from pixelrnn_tf.masked_conv import MaskedConv2D
from pixelrnn_tf.row_lstm import shift_right


def skew(x):
    """[N, H, W, C] -> [N, H, W + H - 1, C]: row r shifted right by r, zeros elsewhere."""
    _, height, width, channels = x.shape
    n = tf.shape(x)[0]
    x = tf.pad(x, [[0, 0], [0, 0], [0, height], [0, 0]])  # rows of length W + H
    x = tf.reshape(x, tf.stack([n, height * (width + height), channels]))
    x = x[:, : height * (width + height - 1)]
    return tf.reshape(x, tf.stack([n, height, width + height - 1, channels]))


def unskew(x, width):
    """Inverse of `skew`: [N, H, W + H - 1, C] -> [N, H, W, C]."""
    _, height, skewed_width, channels = x.shape
    n = tf.shape(x)[0]
    x = tf.reshape(x, tf.stack([n, height * skewed_width, channels]))
    x = tf.pad(x, [[0, 0], [0, height], [0, 0]])  # rows of length W + H
    x = tf.reshape(x, tf.stack([n, height, skewed_width + 1, channels]))
    return x[:, :, :width]


def diagonal_scan(gates_in, state_kernel, initial_h, initial_c):
    """Runs D independent diagonal LSTMs (one per direction) in one loop.

    Args:
      gates_in: [D, B, H, W, 4h] input-to-state pre-activations (unskewed).
      state_kernel: [D, 2h, 4h]; rows [:h] read the cell one row up in the previous
        column, rows [h:] the cell in the same row.
      initial_h, initial_c: [D, h] learned state left of and above the image.
    Returns:
      hidden states [D, B, H, W, h].
    """
    num_dirs, _, height, width, four_h = gates_in.shape
    units = four_h // 4
    batch = tf.shape(gates_in)[1]
    skewed = skew(tf.reshape(gates_in, tf.stack([-1, height, width, four_h])))
    skewed_width = width + height - 1
    skewed = tf.reshape(skewed, tf.stack([num_dirs, batch, height, skewed_width, four_h]))
    # A TensorArray, not `columns[t]`: the gradient of slicing a captured tensor inside the
    # loop materialises a full-size zero tensor per step (quadratic in the width).
    columns = tf.TensorArray(gates_in.dtype, size=skewed_width).unstack(
        tf.transpose(skewed, (3, 0, 1, 2, 4)))  # [W + H - 1] x [D, B, H, 4h]

    # Cells left of the image (skewed column t < row r) and the row above the image hold the
    # learned initial state, so pixel (r, 0) starts from (h0, c0) like every other row.
    state_shape = tf.stack([num_dirs, batch, height, units])
    h0 = tf.broadcast_to(initial_h[:, None, None, :], state_shape)
    c0 = tf.broadcast_to(initial_c[:, None, None, :], state_shape)
    h0_row = tf.broadcast_to(initial_h[:, None, None, :], tf.stack([num_dirs, batch, 1, units]))
    rows = tf.range(height)[None, None, :, None]
    out = tf.TensorArray(gates_in.dtype, size=skewed_width, element_shape=h0.shape)

    def step(t, h, c, out):
        up = tf.concat([h0_row, h[:, :, :-1]], axis=2)  # the 2x1 kernel's pad is on top
        neighbours = tf.reshape(tf.concat([up, h], -1), (num_dirs, -1, 2 * units))
        recurrent = tf.matmul(neighbours, state_kernel)  # [D, B * H, 4h]
        recurrent = tf.reshape(recurrent, (num_dirs, -1, height, 4 * units))
        h_new, c_new = lstm_update(columns.read(t) + recurrent, c)
        started = rows <= t  # [1, 1, H, 1]: cell (r, t) is pixel (r, t - r), inside if t >= r
        h = tf.where(started, h_new, h0)
        c = tf.where(started, c_new, c0)
        return t + 1, h, c, out.write(t, h)

    _, _, _, out = tf.while_loop(
        lambda t, *_: t < skewed_width, step, (tf.constant(0), h0, c0, out),
        maximum_iterations=skewed_width)
    hidden = tf.transpose(out.stack(), (1, 2, 3, 0, 4))  # [D, B, H, W + H - 1, h]
    hidden = unskew(tf.reshape(hidden, tf.stack([-1, height, skewed_width, units])), width)
    return tf.reshape(hidden, tf.stack([num_dirs, batch, height, width, units]))


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class DiagonalLSTM(keras.layers.Layer):
    """Diagonal LSTM in one direction (or `num_directions` = 2 stacked in one loop).

    Input-to-state: a 1x1 mask-B convolution computed for all positions at once.
    State-to-state: an unmasked 2x1 convolution of the previous skewed column, i.e. one
    matmul of [h(up), h(same row)] per column step. Initial state learned.

    Direction 0 scans left to right: at pixel (i, j) it has seen every pixel (i', j') with
    i' <= i and j' <= j. With `num_directions=2`, direction 1 scans the horizontally mirrored
    map (right to left); its raw output at (i, j) covers i' <= i, j' >= j, which includes
    FUTURE pixels of row i. `DiagonalBiLSTM` shifts that direction down one row.

    Args:
      units: h, units per gate (and per direction).
      colour_groups: image channels C the feature maps are grouped by.
      num_directions: 1 (left to right) or 2 (both, each with its own weights).
      **kwargs: `keras.layers.Layer` arguments.

    Call: inputs [B, H, W, Cin]; optional `conditioning` [B, H, W, 4h] added to every
      direction's input-to-state map. Returns [D, B, H, W, h] if num_directions == 2, else
      [B, H, W, h].
    """

    def __init__(self, units, colour_groups=1, num_directions=1, **kwargs):
        super().__init__(**kwargs)
        if num_directions not in (1, 2):
            raise ValueError(f"num_directions must be 1 or 2, got {num_directions}")
        self.units = units
        self.colour_groups = colour_groups
        self.num_directions = num_directions
        self.input_to_state = MaskedConv2D(
            4 * units * num_directions, 1, mask_type="B", colour_groups=colour_groups,
            out_blocks=4 * num_directions, name="input_to_state")

    def build(self, input_shape):
        self.input_to_state.build(input_shape)
        d, h = self.num_directions, self.units
        self.state_kernel = self.add_weight(
            name="state_kernel", shape=(d, 2 * h, 4 * h), initializer="glorot_uniform")
        self.initial_h = self.add_weight(name="initial_h", shape=(d, h), initializer="zeros")
        self.initial_c = self.add_weight(name="initial_c", shape=(d, h), initializer="zeros")

    def directional_gates(self, inputs, conditioning=None):
        """[B, H, W, Cin] -> [D, B, H, W, 4h]; direction 1 is mirrored along W."""
        gates = self.input_to_state(inputs)
        gates = tf.stack(tf.split(gates, self.num_directions, axis=-1))
        if conditioning is not None:
            gates = gates + conditioning[None]
        if self.num_directions == 2:
            gates = tf.stack([gates[0], tf.reverse(gates[1], axis=[2])])
        return gates

    def call(self, inputs, conditioning=None):
        gates = self.directional_gates(inputs, conditioning)
        hidden = diagonal_scan(gates, self.state_kernel, self.initial_h, self.initial_c)
        if self.num_directions == 1:
            return hidden[0]
        return tf.stack([hidden[0], tf.reverse(hidden[1], axis=[2])])

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, colour_groups=self.colour_groups,
                      num_directions=self.num_directions)
        return config


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class DiagonalBiLSTM(DiagonalLSTM):
    """Diagonal BiLSTM: left-to-right plus right-to-left shifted DOWN one row.

    Both directions run in one `tf.while_loop` (stacked on a direction axis). The
    right-to-left output at (i - 1, j) is added to the left-to-right output at (i, j), so the
    union covers every earlier row completely and row i up to column j.

    Args:
      units: h, units per gate; colour_groups: C; **kwargs: `keras.layers.Layer` arguments.
    Call: inputs [B, H, W, Cin]; optional `conditioning` [B, H, W, 4h]. Returns [B, H, W, h].
    """

    def __init__(self, units, colour_groups=1, **kwargs):
        kwargs.pop("num_directions", None)
        super().__init__(units, colour_groups, num_directions=2, **kwargs)

    def call(self, inputs, conditioning=None):
        both = super().call(inputs, conditioning)
        return both[0] + shift_right(both[1], 1)

    def get_config(self):
        config = super().get_config()
        config.pop("num_directions")
        return config
