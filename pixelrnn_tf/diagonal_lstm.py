"""Diagonal LSTM and Diagonal BiLSTM layers (paper, section 3.2).

Direction 0 scans the image along its diagonals from the top-left corner: the state at
pixel (i, j) reads the states at (i - 1, j) (above) and (i, j - 1) (left). The loops are
`diagonal_scan.scan_directions`; this module holds the layers' maths around them (the 1x1
input-to-state convolution, the directions, the Diagonal BiLSTM's shift down) and the same
maths one pixel at a time for cached sampling (`DiagonalBiLSTM.call_pixel`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pixelrnn_tf.cache_buffers import put
from pixelrnn_tf.diagonal_scan import scan_directions
from pixelrnn_tf.lstm_cell import RowSweep, lstm_update
from pixelrnn_tf.masked_conv import MaskedConv2D


def shift_down(x):
    """[B, H, W, C] -> the rows shifted down by one (zero row on top, last row dropped)."""
    # tf.slice, not x[:, :-1]: the gradient of a Slice is a Pad, while TensorFlow's CPU
    # StridedSliceGrad took 4 ms per layer of the MNIST train step.
    height = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
    return tf.slice(tf.pad(x, [[0, 0], [1, 0], [0, 0], [0, 0]]), [0, 0, 0, 0],
                    tf.stack([-1, height, -1, -1]))


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class DiagonalLSTM(keras.layers.Layer):
    """Diagonal LSTM in one direction (or `num_directions` = 2 stacked in one loop).

    Input-to-state: a 1x1 mask-B convolution. State-to-state: an unmasked 2x1 convolution of
    the previous skewed column, i.e. one matmul of [h(up), h(same row)] per column step.
    Initial state learned. Both run inside one `scan_directions` loop.

    Direction 0 scans left to right: at pixel (i, j) it has seen every pixel (i', j') with
    i' <= i and j' <= j. With `num_directions=2`, direction 1 scans the horizontally mirrored
    map (right to left); its raw output at (i, j) covers i' <= i, j' >= j, which includes
    FUTURE pixels of row i. `DiagonalBiLSTM` shifts that direction down one row.

    Args:
      units: h, units per gate (and per direction).
      colour_groups: image channels C the feature maps are grouped by.
      num_directions: 1 (left to right) or 2 (both, each with its own weights).
      **kwargs: `keras.layers.Layer` arguments.

    Call: inputs [B, H, W, Cin]; optional `conditioning` [B, H, W, 4h] (or [B, 1, 1, 4h])
      added to every direction's input-to-state map. Returns [D, B, H, W, h] if
      num_directions == 2, else [B, H, W, h].
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

    def scan_inputs(self, inputs, conditioning=None):
        """The 1x1 input-to-state convolution as `scan_directions` arguments.

        Returns (x [1, B, H, W, Cin + 1 (+ 4h)], kernel [D, Cin + 1 (+ 4h), 4h]): the input
        with a constant-one channel (bias) and the conditioning, if any, which passes through
        an identity block of the kernel."""
        d, four_h = self.num_directions, 4 * self.units
        dtype = inputs.dtype
        conv = self.input_to_state
        kernel = tf.cast(tf.reshape(conv.masked_kernel(), (-1, d, four_h)), dtype)
        parts, kernels = [inputs], [tf.transpose(kernel, (1, 0, 2))]
        if conv.use_bias:
            parts.append(tf.ones_like(inputs[..., :1]))
            kernels.append(tf.reshape(tf.cast(conv.bias, dtype), (d, 1, four_h)))
        if conditioning is not None:
            shape = tf.concat([tf.shape(inputs)[:-1], [four_h]], 0)  # [B, 1, 1, 4h] spreads
            parts.append(tf.broadcast_to(tf.cast(conditioning, dtype), shape))
            kernels.append(tf.eye(four_h, batch_shape=[d], dtype=dtype))
        return tf.expand_dims(tf.concat(parts, -1), 0), tf.concat(kernels, 1)

    def scan(self, inputs, conditioning=None):
        """[B, H, W, Cin] -> list of D hidden maps [B, H, W, h] (direction 1 unmirrored)."""
        x, input_kernel = self.scan_inputs(inputs, conditioning)
        cast = lambda v: tf.cast(v, x.dtype)
        return scan_directions(x, input_kernel, cast(self.state_kernel), cast(self.initial_h),
                               cast(self.initial_c), (False, True)[: self.num_directions])

    def call(self, inputs, conditioning=None):
        hidden = self.scan(inputs, conditioning)
        return hidden[0] if self.num_directions == 1 else tf.stack(hidden)

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

    Cached sampling, one pixel at a time in raster order (`step_weights`, `initial_cache`,
    `start_row`, `call_pixel`, `commit_pixel`, then per finished row `row_sweep` and
    `finish_row`): direction 0 at (i, j) reads (i - 1, j) and (i, j - 1), both finished;
    direction 1, shifted down, adds to row i its states of row i - 1, which read that whole
    row, so it is swept right to left once a row is finished.
    """

    def __init__(self, units, colour_groups=1, **kwargs):
        kwargs.pop("num_directions", None)
        super().__init__(units, colour_groups, num_directions=2, **kwargs)

    def call(self, inputs, conditioning=None):
        left_to_right, right_to_left = self.scan(inputs, conditioning)
        return left_to_right + shift_down(right_to_left)

    # Cached sampling: what `call` computes, one pixel at a time.

    def step_weights(self, dtype):
        """{"input": the input-to-state convolution's step weights (its [N, 8h] output is
        direction 0's gates, then direction 1's), "above0", "beside0", "above1", "beside1":
        [h, 4h] each direction's state-to-state kernel of the state above and of the state
        beside (left for direction 0, right for direction 1)}."""
        state = tf.cast(self.state_kernel, dtype)  # [2, 2h, 4h]: rows [:h] above, [h:] beside
        h = self.units
        return {"input": self.input_to_state.step_weights(dtype),
                "above0": state[0, :h], "beside0": state[0, h:],
                "above1": state[1, :h], "beside1": state[1, h:]}

    def _initial_state(self, direction, like):
        """The learned (h, c) of `direction` outside the image, each shaped like `like`."""
        zeros = tf.zeros_like(like)  # keeps the static batch size, if any
        return (zeros + tf.cast(self.initial_h[direction], like.dtype),
                zeros + tf.cast(self.initial_c[direction], like.dtype))

    def initial_cache(self, batch, width, dtype):
        """{"h_above": [W, N, h] direction 0's h of the previous row, overwritten column by
        column; "h_left", "c_left": [N, h] its state at (i, j - 1); "h_reverse": [W, N, h]
        direction 1's h of the previous row; "gates_reverse": [W, N, 4h] direction 1's
        input-to-state gates of the current row}. Outside the image: the learned state."""
        h0, c0 = self._initial_state(0, tf.zeros(tf.stack([batch, self.units]), dtype))
        h1, _ = self._initial_state(1, h0)
        row_shape = tf.stack([width, batch, self.units])
        return {"h_above": tf.broadcast_to(h0, row_shape), "h_left": h0, "c_left": c0,
                "h_reverse": tf.broadcast_to(h1, row_shape),
                "gates_reverse": tf.zeros(tf.stack([width, batch, 4 * self.units]), dtype)}

    def start_row(self, weights, cache, i):
        """Row i begins: returns (cache, (direction 0's above-term of the row [W, N, 4h],
        direction 1's h of row i - 1 shifted down onto row i [W, N, h], zero in row 0))."""
        h_left, c_left = self._initial_state(0, cache["h_left"])
        cache = dict(cache, h_left=h_left, c_left=c_left)
        above = tf.einsum("wnh,hg->wng", cache["h_above"], weights["above0"])
        shifted = cache["h_reverse"] * tf.cast(i > 0, h_left.dtype)
        return cache, (above, shifted)

    def call_pixel(self, weights, cache, row, j, x, conditioning=None):
        """The layer's output at column j of the current row, [N, h], given the input there
        x [N, Cin], `row` from `start_row` and the conditioning there [N, 4h] (or None).
        Returns (output, what `commit_pixel` stores)."""
        above, shifted = row
        gates = self.input_to_state.call_pixel(weights["input"], {}, j, x)  # [N, 8h]
        gates_0, gates_1 = tf.split(gates, 2, axis=-1)
        if conditioning is not None:
            gates_0 = gates_0 + conditioning
        gates_0 = gates_0 + above[j] + tf.matmul(cache["h_left"], weights["beside0"])
        h, c = lstm_update(gates_0, cache["c_left"])
        return h + shifted[j], (gates_1, h, c)

    def commit_pixel(self, weights, cache, j, update):
        gates_reverse, h, c = update
        return dict(cache, h_above=put(cache["h_above"], j, h), h_left=h, c_left=c,
                    gates_reverse=put(cache["gates_reverse"], j, gates_reverse))

    def row_sweep(self, weights, cache, conditioning_row=None):
        """Direction 1 over the finished row, a `RowSweep` (conditioning_row: [W, N, 4h] or
        None); its result goes to `finish_row`."""
        gates = cache["gates_reverse"] + tf.einsum("wnh,hg->wng", cache["h_reverse"],
                                                   weights["above1"])
        if conditioning_row is not None:
            gates = gates + conditioning_row
        h, c = self._initial_state(1, cache["h_left"])
        return RowSweep(gates, h, c, weights["beside1"])

    def finish_row(self, weights, cache, swept):
        """swept: direction 1's h of the finished row, [W, N, h]."""
        return dict(cache, h_reverse=swept)

    def get_config(self):
        config = super().get_config()
        config.pop("num_directions")
        return config
