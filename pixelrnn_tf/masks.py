"""Autoregressive convolution masks (PixelRNN paper, section 3.4), in pure numpy.

Feature maps are split into ``colour_groups`` contiguous groups bound to the image channels
(R, G, B for 3 channels): channel ``k`` of ``n`` belongs to group ``k * colour_groups // n``.
At the kernel centre, input group ``g_in`` may feed output group ``g_out`` only if
``g_in < g_out`` (mask "A", first layer) or ``g_in <= g_out`` (mask "B", every later layer).
Every kernel position after the centre in raster order is zero, every position before it is one.

Layers whose output is several gate blocks (an LSTM's [o, f, i, g]) use ``out_blocks``: the
output channels are ``out_blocks`` equal blocks and the groups are assigned within each block,
so unit ``u`` of every gate belongs to the same colour group.
"""

from __future__ import annotations

import numpy as np

MASK_TYPES = ("A", "B")


def channel_groups(num_channels: int, colour_groups: int) -> np.ndarray:
    """Group index of each of ``num_channels`` feature maps: shape [num_channels], int."""
    if num_channels < 1 or colour_groups < 1:
        raise ValueError(
            f"need num_channels >= 1 and colour_groups >= 1, got {num_channels}, {colour_groups}")
    return np.arange(num_channels) * colour_groups // num_channels


def causal_mask(kernel_h: int, kernel_w: int, in_channels: int, out_channels: int,
                mask_type: str, colour_groups: int = 1, out_blocks: int = 1) -> np.ndarray:
    """Mask of shape [kernel_h, kernel_w, in_channels, out_channels], float32 in {0, 1}.

    Args:
      kernel_h, kernel_w: odd kernel size; the centre is (kernel_h // 2, kernel_w // 2).
      in_channels, out_channels: feature-map counts (each split into ``colour_groups``).
      mask_type: "A" (centre excludes the own group) or "B" (centre includes it).
      colour_groups: number of image channels C (1 for grey/binary, 3 for RGB).
      out_blocks: the output channels are this many equal blocks, grouped separately.
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    if kernel_h % 2 == 0 or kernel_w % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {kernel_h}x{kernel_w}")
    if out_channels % out_blocks:
        raise ValueError(
            f"out_channels={out_channels} is not a multiple of out_blocks={out_blocks}")
    mask = np.zeros((kernel_h, kernel_w, in_channels, out_channels), np.float32)
    ch, cw = kernel_h // 2, kernel_w // 2
    mask[:ch] = 1.0  # rows above the centre
    mask[ch, :cw] = 1.0  # left of the centre in the centre row
    g_in = channel_groups(in_channels, colour_groups)
    g_out = np.tile(channel_groups(out_channels // out_blocks, colour_groups), out_blocks)
    if mask_type == "A":
        centre = g_in[:, None] < g_out[None, :]
    else:
        centre = g_in[:, None] <= g_out[None, :]
    mask[ch, cw] = centre.astype(np.float32)
    return mask
