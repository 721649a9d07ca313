"""Masked 2-D convolution: the mask is a constant multiplied into the kernel on every call."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pixelrnn_tf.cache_buffers import put_at, roll_rows
from pixelrnn_tf.masks import causal_mask


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class MaskedConv2D(keras.layers.Conv2D):
    """A `keras.layers.Conv2D` ("same" padding, stride 1) whose kernel is masked causally.

    The mask multiplies the kernel inside the forward pass, so a freshly built (or freshly
    loaded, or arbitrarily trained) layer is causal; the stored weights are left untouched.

    Args:
      filters: output feature maps.
      kernel_size: odd int or (kh, kw).
      mask_type: "A" (first layer: the centre pixel's own and later channels are hidden) or
        "B" (later layers: the centre's own channel group is visible).
      colour_groups: image channels C the feature maps are grouped by (see `masks`).
      out_blocks: the filters form this many equal blocks grouped separately (LSTM gates).
      **kwargs: any other `Conv2D` argument (activation, use_bias, initializers, name, ...).

    Call: inputs [B, H, W, in_channels] float -> [B, H, W, filters].

    Cached sampling, one pixel at a time in raster order (`step_weights`, `initial_cache`,
    `start_row`, `call_pixel`, `commit_pixel`): the output at (i, j) from a buffer of the
    finished input pixels and the input at (i, j) itself.
    """

    def __init__(self, filters, kernel_size, mask_type="B", colour_groups=1, out_blocks=1,
                 **kwargs):
        padding = kwargs.pop("padding", "same")
        strides = kwargs.pop("strides", 1)
        if (str(padding).lower() != "same" or strides not in (1, (1, 1), [1, 1])
                or kwargs.get("groups", 1) != 1 or kwargs.get("dilation_rate", 1) not in
                (1, (1, 1), [1, 1])):
            raise ValueError("MaskedConv2D supports only padding='same', strides=1, groups=1 "
                             "and dilation_rate=1 (the mask is defined for that geometry)")
        super().__init__(filters, kernel_size, padding="same", strides=1, **kwargs)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        self.mask_type = mask_type
        self.colour_groups = colour_groups
        self.out_blocks = out_blocks

    def build(self, input_shape):
        super().build(input_shape)
        kh, kw = self.kernel_size
        # numpy, not a tensor: the layer may be built inside one tf.function and called in another.
        self.kernel_mask = causal_mask(kh, kw, int(input_shape[-1]), self.filters,
                                       self.mask_type, self.colour_groups, self.out_blocks)

    def masked_kernel(self):
        """The kernel actually applied: kernel * mask, [kh, kw, in, filters]."""
        return self.kernel * ops.convert_to_tensor(self.kernel_mask, self.kernel.dtype)

    def convolution_op(self, inputs, kernel):
        kernel = kernel * ops.convert_to_tensor(self.kernel_mask, kernel.dtype)
        if tuple(self.kernel_size) == (1, 1):
            # A 1x1 convolution as one matmul over the pixels: the same sums, and its
            # gradients are two matmuls, where TensorFlow's CPU Conv2DBackpropFilter took
            # several times as long (docs/benchmarks.md, the train-step profile).
            return tf.tensordot(inputs, kernel[0, 0], 1)
        return super().convolution_op(inputs, kernel)

    # Cached sampling. The buffer holds only finished pixels: the centre tap is applied to
    # the current input separately, because a pixel's input changes while its channels are
    # drawn. A 1x1 kernel has no earlier taps and no buffer.

    def _has_earlier_taps(self):
        return tuple(self.kernel_size) != (1, 1)

    def step_weights(self, dtype):
        """The masked kernel as `call_pixel` reads it (computed once, before the loops):
        {"centre": [in, filters] the centre tap, "bias": [filters] or None, and unless the
        kernel is 1x1 "earlier": [kh // 2 + 1, kw, in, filters] the rows up to the centre
        with the centre tap zeroed}."""
        kernel = tf.cast(self.masked_kernel(), dtype)
        kh, kw = self.kernel_size
        rh, rw = kh // 2, kw // 2
        weights = {"centre": kernel[rh, rw],
                   "bias": tf.cast(self.bias, dtype) if self.use_bias else None}
        if self._has_earlier_taps():
            keep = np.ones((rh + 1, kw, 1, 1), np.float32)
            keep[rh, rw] = 0.0
            weights["earlier"] = kernel[: rh + 1] * tf.constant(keep, dtype)
        return weights

    def initial_cache(self, batch, width, dtype):
        """{"window": zeros [kh // 2 + 1, width + 2 (kw // 2), N, in]}, the last kh // 2 + 1
        rows of the input, zero padded left and right; {} for a 1x1 kernel."""
        if not self._has_earlier_taps():
            return {}
        kh, kw = self.kernel_size
        shape = tf.stack([kh // 2 + 1, width + 2 * (kw // 2), batch, self.kernel.shape[2]])
        return {"window": tf.zeros(shape, dtype)}

    def start_row(self, cache):
        """A new image row: the window's rows move up by one."""
        return {"window": roll_rows(cache["window"])} if cache else cache

    def call_pixel(self, weights, cache, j, x):
        """The output at column j of the current row, [N, filters], given the input there,
        x [N, in] (its channels not drawn yet are ignored by the mask)."""
        y = tf.matmul(x, weights["centre"])
        if weights["bias"] is not None:
            # BiasAdd, not +: grappler fuses MatMul + BiasAdd into one kernel
            y = tf.nn.bias_add(y, weights["bias"])
        if cache:
            window = cache["window"][:, j: j + self.kernel_size[1]]  # [kh // 2 + 1, kw, N, in]
            y = tf.einsum("abni,abio->no", window, weights["earlier"]) + y
        return self.activation(y)

    def commit_pixel(self, cache, j, x):
        """Stores the finished input x [N, in] at column j of the current row."""
        if not cache:
            return cache
        kh, kw = self.kernel_size
        return {"window": put_at(cache["window"], tf.constant(kh // 2), j + kw // 2, x)}

    def get_config(self):
        config = super().get_config()
        for key in ("padding", "strides"):
            config.pop(key, None)
        config.update(mask_type=self.mask_type, colour_groups=self.colour_groups,
                      out_blocks=self.out_blocks)
        return config


