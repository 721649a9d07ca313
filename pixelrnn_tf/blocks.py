"""Residual blocks of the PixelRNN body (paper, section 3.3 and Figure 5)."""

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

    Call: inputs [B, H, W, 2h]; optional `conditioning` [B, H, W, 4h] (added to the LSTM's
      input-to-state map). Returns [B, H, W, 2h].
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

    def build(self, input_shape):
        self.rnn.build(input_shape)
        self.output_conv.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def call(self, inputs, conditioning=None):
        out = self.output_conv(self.rnn(inputs, conditioning=conditioning))
        return inputs + out if self.residual else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * self.hidden_dim,)

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

    Call: inputs [B, H, W, 2h]; optional `conditioning` [B, H, W, h] added to the middle
      convolution's pre-activation. Returns [B, H, W, 2h].
    """

    def __init__(self, hidden_dim, colour_groups=1, residual=True, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.colour_groups = colour_groups
        self.residual = residual
        self.kernel_size = kernel_size
        conv = lambda filters, size, name: MaskedConv2D(  # noqa: E731
            filters, size, mask_type="B", colour_groups=colour_groups, name=name)
        self.reduce = conv(hidden_dim, 1, "reduce")
        self.spatial = conv(hidden_dim, kernel_size, "spatial")
        self.expand = conv(2 * hidden_dim, 1, "expand")

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

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, colour_groups=self.colour_groups,
                      residual=self.residual, kernel_size=self.kernel_size)
        return config
