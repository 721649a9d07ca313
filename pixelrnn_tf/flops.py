"""Useful floating-point work of a model, and the machine's measured float32 peak.

Speed differs several-fold between machines, so the benchmarks state a train step as a
fraction of the peak measured in the same run: achieved GFLOP/s = `train_step_flops` /
seconds per step, against `matmul_peak_gflops`.

Counted: the multiply-adds (2 FLOPs each) of every convolution and of the LSTMs'
state-to-state matmuls, over the cells of the image each layer runs on. A convolution counts
its whole kernel (the masked taps are computed too); the LSTMs' input-to-state convolutions
are counted as convolutions even where the scan folds them into its per-column matmul.
Not counted: gate non-linearities, softmax, bias adds, the optimizer: memory-bound work
that a faster implementation should shrink, not be credited for. A training step is counted
as 3 forward passes (the forward, and the backward's two matmuls per forward matmul).
"""

from __future__ import annotations

import statistics
import time

import keras
import tensorflow as tf

from pixelrnn_tf.diagonal_lstm import DiagonalLSTM
from pixelrnn_tf.row_lstm import RowLSTM

TRAIN_STEP_FORWARDS = 3


def _cells(layer):
    """Output cells (H * W) of one image for a layer built on [B, H, W, C]."""
    # Keras records the shape each layer was built with; a subclassed model has no other
    # public record of its layers' input shapes.
    shape = getattr(layer, "_build_shapes_dict", {}).get("input_shape")
    if shape is None or len(shape) != 4 or None in shape[1:3]:
        raise ValueError(f"layer {layer.name!r} is not built on an image shape: call the "
                         f"model once before counting its FLOPs")
    height, width = shape[1], shape[2]
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return height * width * layer.strides[0] * layer.strides[1]
    return height * width


def layer_flops(layer):
    """FLOPs of one image through `layer`'s own weights (not its sublayers')."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kh, kw, cout, cin = layer.kernel.shape
        stride_area = layer.strides[0] * layer.strides[1]
        return 2 * kh * kw * cin * cout * _cells(layer) // stride_area
    if isinstance(layer, keras.layers.Conv2D):  # MaskedConv2D included
        kh, kw, cin, cout = layer.kernel.shape
        return 2 * kh * kw * cin * cout * _cells(layer)
    if isinstance(layer, (DiagonalLSTM, RowLSTM)):  # state_kernel [D or 3, 2u or u, 4u]
        return 2 * int(tf.size(layer.state_kernel)) * _cells(layer)
    if isinstance(layer, keras.layers.Dense):
        raise ValueError(f"no FLOP rule for the Dense layer {layer.name!r}")
    return 0


def forward_flops(model, batch=1):
    """FLOPs of a forward pass of `batch` images through a built model (every layer once)."""
    if not model.built:
        raise ValueError("the model is not built: call it once before counting its FLOPs")
    return batch * sum(layer_flops(layer) for layer in model._flatten_layers())


def train_step_flops(model, batch):
    """FLOPs of one training step (forward and backward) of `batch` images."""
    return TRAIN_STEP_FORWARDS * forward_flops(model, batch)


def matmul_peak_gflops(size=2048, repeats=10):
    """The machine's float32 peak, measured: median GFLOP/s of a [size, size] matmul run by
    TensorFlow with its default threads (every core)."""
    a = tf.random.stateless_normal((size, size), (0, 0))
    b = tf.random.stateless_normal((size, size), (0, 1))
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    for _ in range(2):
        matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times) / 1e9
