"""Residual blocks of the PixelRNN body (paper, section 3.3 and Figure 5).

Both blocks also run one pixel at a time in raster order for cached sampling, with the same
methods, so that `PixelRNN` drives its body without asking which block it holds:

- step_weights(dtype) -> what the steps read, computed once before the loops;
- initial_cache(batch N, width W, dtype) -> the cache (a nest of tensors);
- start_row(weights, cache, i) -> (cache, what every pixel of row i reads);
- call_pixel(weights, cache, row, j, x [N, 2h], conditioning or None) -> (the block's output
  at (i, j) [N, 2h], what commit_pixel stores), for the block's input at (i, j) so far (its
  channels not drawn yet are ignored by the masks);
- commit_pixel(weights, cache, j, update) -> the cache with pixel (i, j) finished;
- row_sweep(weights, cache, conditioning_row [W, N, ...] or None) -> a `lstm_cell.RowSweep`
  over the finished row, or None; finish_row(weights, cache, its h [W, N, h]) -> cache.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pixelrnn_tf.diagonal_lstm import DiagonalBiLSTM
from pixelrnn_tf.masked_conv import MaskedConv2D
from pixelrnn_tf.row_lstm import RowLSTM

RECURRENT_ARCHITECTURES = ("row_lstm", "diagonal_bilstm")


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class RecurrentBlock(keras.layers.Layer):
    """2h features -> LSTM with h units -> 1x1 mask-B convolution to 2h (+ input).

    Args:
      architecture: "row_lstm" or "diagonal_bilstm".
      hidden_dim: h.
      colour_groups: image channels C.
      residual: add the block input to its output.
      row_kernel: width k of the Row LSTM's 1 x k input-to-state convolution.
      **kwargs: `keras.layers.Layer` arguments.

    Call: inputs [B, H, W, 2h]; optional `conditioning` [B, H, W, 4h], or [B, 1, 1, 4h] for
      every position (added to the LSTM's input-to-state map). Returns [B, H, W, 2h].

    Cached sampling: the LSTM's own steps, then the output convolution and the residual.
    """

    def __init__(self, architecture, hidden_dim, colour_groups=1, residual=True, row_kernel=3,
                 **kwargs):
        super().__init__(**kwargs)
        if architecture not in RECURRENT_ARCHITECTURES:
            raise ValueError(f"unknown recurrent architecture {architecture!r}")
        self.architecture = architecture
        self.hidden_dim = hidden_dim
        self.colour_groups = colour_groups
        self.residual = residual
        self.row_kernel = row_kernel
        if architecture == "row_lstm":
            self.rnn = RowLSTM(hidden_dim, colour_groups, kernel_size=row_kernel, name="rnn")
        else:
            self.rnn = DiagonalBiLSTM(hidden_dim, colour_groups, name="rnn")
        self.output_conv = MaskedConv2D(2 * hidden_dim, 1, mask_type="B",
                                        colour_groups=colour_groups, name="output_conv")

    @property
    def conditioning_dim(self):
        """Width of the additive conditioning map: the LSTM's 4h gate pre-activations."""
        return 4 * self.hidden_dim

    def build(self, input_shape):
        self.rnn.build(input_shape)
        self.output_conv.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def call(self, inputs, conditioning=None):
        out = self.output_conv(self.rnn(inputs, conditioning=conditioning))
        return inputs + out if self.residual else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * self.hidden_dim,)

    # Cached sampling (module docstring): the cache and the row are the LSTM's.

    def step_weights(self, dtype):
        return {"rnn": self.rnn.step_weights(dtype),
                "output": self.output_conv.step_weights(dtype)}

    def initial_cache(self, batch, width, dtype):
        return self.rnn.initial_cache(batch, width, dtype)

    def start_row(self, weights, cache, i):
        return self.rnn.start_row(weights["rnn"], cache, i)

    def call_pixel(self, weights, cache, row, j, x, conditioning=None):
        h, update = self.rnn.call_pixel(weights["rnn"], cache, row, j, x, conditioning)
        out = self.output_conv.call_pixel(weights["output"], {}, j, h)
        return (x + out if self.residual else out), update

    def commit_pixel(self, weights, cache, j, update):
        return self.rnn.commit_pixel(weights["rnn"], cache, j, update)

    def row_sweep(self, weights, cache, conditioning_row=None):
        return self.rnn.row_sweep(weights["rnn"], cache, conditioning_row)

    def finish_row(self, weights, cache, swept):
        return self.rnn.finish_row(weights["rnn"], cache, swept)

    def get_config(self):
        config = super().get_config()
        config.update(architecture=self.architecture, hidden_dim=self.hidden_dim,
                      colour_groups=self.colour_groups, residual=self.residual,
                      row_kernel=self.row_kernel)
        return config


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class PixelCNNBlock(keras.layers.Layer):
    """PixelCNN residual block: ReLU, 1x1 (2h -> h), ReLU, 3x3 (h -> h), ReLU, 1x1 (h -> 2h),
    all mask B, plus the input.

    Args:
      hidden_dim: h; colour_groups: C; residual: add the input; kernel_size: the middle
      convolution (odd, paper: 3); **kwargs: `keras.layers.Layer` arguments.

    Call: inputs [B, H, W, 2h]; optional `conditioning` [B, H, W, h] (or [B, 1, 1, h]) added
      to the middle convolution's pre-activation. Returns [B, H, W, 2h].

    Cached sampling (module docstring): the middle convolution keeps a buffer of its input's
    earlier rows; nothing is swept.
    """

    def __init__(self, hidden_dim, colour_groups=1, residual=True, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.colour_groups = colour_groups
        self.residual = residual
        self.kernel_size = kernel_size
        conv = lambda filters, size, name: MaskedConv2D(
            filters, size, mask_type="B", colour_groups=colour_groups, name=name)
        self.reduce = conv(hidden_dim, 1, "reduce")
        self.spatial = conv(hidden_dim, kernel_size, "spatial")
        self.expand = conv(2 * hidden_dim, 1, "expand")

    @property
    def conditioning_dim(self):
        """Width of the additive conditioning map: the middle convolution's h outputs."""
        return self.hidden_dim

    def build(self, input_shape):
        hidden_shape = tuple(input_shape[:-1]) + (self.hidden_dim,)
        self.reduce.build(input_shape)
        self.spatial.build(hidden_shape)
        self.expand.build(hidden_shape)

    def call(self, inputs, conditioning=None):
        x = self.spatial(tf.nn.relu(self.reduce(tf.nn.relu(inputs))))
        if conditioning is not None:
            x = x + conditioning
        out = self.expand(tf.nn.relu(x))
        return inputs + out if self.residual else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * self.hidden_dim,)

    # Cached sampling (module docstring).

    def step_weights(self, dtype):
        return {"reduce": self.reduce.step_weights(dtype),
                "spatial": self.spatial.step_weights(dtype),
                "expand": self.expand.step_weights(dtype)}

    def initial_cache(self, batch, width, dtype):
        """The middle convolution's buffer of its input."""
        return self.spatial.initial_cache(batch, width, dtype)

    def start_row(self, weights, cache, i):
        return self.spatial.start_row(cache), ()

    def call_pixel(self, weights, cache, row, j, x, conditioning=None):
        reduced = tf.nn.relu(self.reduce.call_pixel(weights["reduce"], {}, j, tf.nn.relu(x)))
        s = self.spatial.call_pixel(weights["spatial"], cache, j, reduced)
        if conditioning is not None:
            s = s + conditioning
        out = self.expand.call_pixel(weights["expand"], {}, j, tf.nn.relu(s))
        return (x + out if self.residual else out), reduced

    def commit_pixel(self, weights, cache, j, update):
        return self.spatial.commit_pixel(cache, j, update)

    def row_sweep(self, weights, cache, conditioning_row=None):
        return None

    def finish_row(self, weights, cache, swept):
        return cache

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, colour_groups=self.colour_groups,
                      residual=self.residual, kernel_size=self.kernel_size)
        return config
