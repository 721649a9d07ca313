"""Pictures of images: pixel levels to display values, grids with borders, PNG files.

The one grid used by TensorBoard summaries, the demo, the sample CLI, `data_prep show` and
`benchmarks/report.py`. Images are integer [N, H, W, C] in [0, levels); pictures are uint8.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

BORDER_GREY = 128


def to_display(images, levels: int, rounding: str = "floor") -> np.ndarray:
    """int [..., C] in [0, levels) -> uint8 of the same shape, 0 black and levels - 1 white
    (so 2-level and 256-level images both span 0..255).

    rounding: "floor" (x * 255 // (levels - 1), every picture of pixelrnn_tf) or "nearest"
    (what `data_prep show` has always drawn).
    """
    images = np.asarray(images)
    if rounding == "nearest":
        scaled = (images.astype(np.float32) * (255.0 / max(levels - 1, 1))).round()
    else:
        scaled = images.astype(np.int64) * 255 // max(levels - 1, 1)
    return scaled.astype(np.uint8)


def to_rgb(pictures) -> np.ndarray:
    """uint8 [..., C] -> uint8 [..., 3]: C = 1 is grey, C = 2 gets a zero blue channel,
    channels beyond 3 are dropped."""
    pictures = np.asarray(pictures)
    if pictures.shape[-1] == 1:
        return np.repeat(pictures, 3, axis=-1)
    if pictures.shape[-1] == 2:
        return np.concatenate([pictures, np.zeros_like(pictures[..., :1])], axis=-1)
    return pictures[..., :3]


def zoomed(picture, zoom: int) -> np.ndarray:
    """[H, W, ...] -> [zoom H, zoom W, ...], every pixel a zoom x zoom block (crisp pixels)."""
    return np.repeat(np.repeat(np.asarray(picture), zoom, axis=0), zoom, axis=1)


def grid(pictures, columns: int = 8, border: int = 1, zoom: int = 1) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 picture [rows (zH + b) + b, cols (zW + b) + b, C'],
    `columns` images per row, each zoomed z times, with b-pixel grey borders
    (C' = C for 1, 3 or 4 channels, else 1: the first channel)."""
    pictures = np.asarray(pictures)
    n, h, w, c = pictures.shape
    if c not in (1, 3, 4):
        pictures, c = pictures[..., :1], 1
    h, w = h * zoom, w * zoom
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    out = np.full((rows * (h + border) + border, columns * (w + border) + border, c),
                  BORDER_GREY, np.uint8)
    for k in range(n):
        r, q = divmod(k, columns)
        y, x = border + r * (h + border), border + q * (w + border)
        out[y:y + h, x:x + w] = zoomed(pictures[k], zoom)
    return out


def image_grid(images, levels: int, columns: int = 8) -> np.ndarray:
    """int [N, H, W, C] in [0, levels) -> `grid` of their display values with 1-pixel
    borders (what TensorBoard shows)."""
    return grid(to_display(images, levels), columns)


def write_png(path: str, picture) -> None:
    """uint8 [H, W, 1 | 3 | 4] -> a PNG at `path`, written to a temporary name in the same
    directory and renamed (mode 644), so `path` is never half-written. Raises OSError."""
    from PIL import Image

    picture = np.asarray(picture)
    if picture.ndim == 3 and picture.shape[-1] == 1:
        picture = picture[..., 0]
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".png",
                               dir=directory)
    os.close(fd)
    try:
        Image.fromarray(picture).save(tmp, format="PNG")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
