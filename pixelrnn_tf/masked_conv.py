"""Masked 2-D convolution: the mask is a constant multiplied into the kernel on every call."""

from __future__ import annotations

import keras
from keras import ops

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
        return super().convolution_op(
            inputs, kernel * ops.convert_to_tensor(self.kernel_mask, kernel.dtype))

    def get_config(self):
        config = super().get_config()
        for key in ("padding", "strides"):
            config.pop(key, None)
        config.update(mask_type=self.mask_type, colour_groups=self.colour_groups,
                      out_blocks=self.out_blocks)
        return config


