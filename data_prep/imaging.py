"""Pixel transforms: checks, grey conversion, area resize, levels (`Transform`, per chunk)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from data_prep.errors import DataPrepError

GREY_MODES = {"1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N"}


def to_uint8_pixels(arr: np.ndarray, where: str) -> np.ndarray:
    """Checks integer pixel values in [0, 255] and returns them as uint8 (bool -> 0/1)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise DataPrepError(f"{where}: pixels have dtype {arr.dtype}; expected integers 0..255")
    if arr.size == 0:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataPrepError(
                f"{where}: pixels are non-integer floats; data_prep stores integer levels "
                "(scale them to 0..255 integers first)"
            )
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 255:
        raise DataPrepError(f"{where}: pixel values span {lo:g}..{hi:g}; expected 0..255")
    return arr.astype(np.uint8)


def to_labels(arr: np.ndarray, n: int, where: str) -> np.ndarray:
    """Checks a label vector of n non-negative integers and returns it as int64."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataPrepError(f"{where}: labels have shape {arr.shape}; expected ({n},)")
    if arr.dtype.kind not in "iuf" and arr.dtype != bool:
        raise DataPrepError(f"{where}: labels have dtype {arr.dtype}; expected integers")
    if arr.size and (np.any(arr < 0) or np.any(arr != np.round(arr))):
        raise DataPrepError(f"{where}: labels must be non-negative integers")
    return arr.astype(np.int64)


def rgb_to_grey(images: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 RGB -> [..., 1] uint8, exactly PIL's convert("L") (ITU-R 601-2 luma)."""
    rgb = images.astype(np.uint32)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[..., None]


def crop_resize(im: Image.Image, size: int) -> Image.Image:
    """Centre-crops the largest square and area-averages (box filter) it to size x size.

    This is the downsampled-ImageNet recipe: every output pixel is the mean of the input
    pixels it covers.
    """
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.resize((size, size), Image.Resampling.BOX, box=(left, top, left + s, top + s))


def resize_array(image: np.ndarray, size: int) -> np.ndarray:
    """[H, W, C] uint8 -> [size, size, C] uint8 by `crop_resize`."""
    if image.shape[-1] == 1:
        out = np.asarray(crop_resize(Image.fromarray(image[..., 0], "L"), size))[..., None]
    else:
        out = np.asarray(crop_resize(Image.fromarray(image, "RGB"), size))
    return out


def pil_to_array(im: Image.Image, channels: int, where: str) -> np.ndarray:
    """A decoded PIL image -> [H, W, channels] uint8 (16-bit grey keeps its top 8 bits)."""
    if im.mode.startswith("I;16"):
        arr = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
        im = Image.fromarray(arr, "L")
    elif im.mode in ("I", "F"):
        raise DataPrepError(f"{where}: {im.mode}-mode images (32-bit) are not supported")
    im = im.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def parse_image_shape(text: str) -> tuple[int, ...]:
    """'28,28' or '32x32x3' -> (28, 28) / (32, 32, 3)."""
    parts = text.replace("x", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise DataPrepError(f"--image-shape {text!r}: expected H,W or H,W,C") from None
    if len(dims) not in (2, 3) or any(d <= 0 for d in dims) or (len(dims) == 3 and
                                                                dims[2] not in (1, 3)):
        raise DataPrepError(f"--image-shape {text!r}: expected H,W or H,W,C with C 1 or 3")
    return dims if len(dims) == 3 else dims + (1,)


def as_nhwc(arr: np.ndarray, where: str, image_shape=None, notes=None) -> np.ndarray:
    """(N,H,W) / (N,H,W,C) / flat (N,D) arrays -> a (N,H,W,C) view, C in {1, 3}."""
    if arr.ndim == 2:
        n, d = arr.shape
        if image_shape is None:
            s = int(round(d ** 0.5))
            if s * s != d:
                raise DataPrepError(
                    f"{where}: flat images of {d} values; pass --image-shape H,W[,C]")
            image_shape = (s, s, 1)
            if notes is not None:
                notes.append(f"read flat rows of {d} values as {s}x{s}x1 images "
                             "(--image-shape overrides)")
        if int(np.prod(image_shape)) != d:
            raise DataPrepError(
                f"{where}: --image-shape {'x'.join(map(str, image_shape))} does not hold "
                f"{d} values per image")
        return arr.reshape((n,) + tuple(image_shape))
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim == 4:
        if arr.shape[-1] not in (1, 3):
            hint = (" (channels-first? transpose to (N,H,W,C))"
                    if arr.shape[1] in (1, 3) else "")
            raise DataPrepError(
                f"{where}: images have shape {arr.shape}; the last axis must be 1 or 3 "
                f"channels{hint}")
    else:
        raise DataPrepError(
            f"{where}: array has shape {arr.shape}; expected (N,H,W), (N,H,W,C) or flat (N,H*W)")
    if image_shape is not None and tuple(arr.shape[1:]) != tuple(image_shape):
        raise DataPrepError(
            f"{where}: images are {'x'.join(map(str, arr.shape[1:]))}, not --image-shape "
            f"{'x'.join(map(str, image_shape))}")
    return arr


class Transform:
    """grey -> resize -> binarize / requantize, chunk by chunk, with a range check.

    Called with uint8 [N, H, W, C] images of `src_levels` levels; returns contiguous uint8
    [N, H', W', C'] of `out_levels` levels.
    """

    def __init__(self, src_levels, out_levels, grayscale, resize, binarize, requantize):
        self.src_levels, self.out_levels = src_levels, out_levels
        self.grayscale, self.resize = grayscale, resize
        self.binarize, self.requantize = binarize, requantize
        self.rng = np.random.default_rng(int(binarize.value)) if (
            binarize and binarize.kind == "stochastic") else None

    def __call__(self, images: np.ndarray, where: str) -> np.ndarray:
        if images.size and int(images.max()) >= self.src_levels:
            raise DataPrepError(f"{where}: pixel value {int(images.max())} is not below "
                                f"{self.src_levels} levels (see --source-levels)")
        if self.grayscale and images.shape[-1] == 3:
            images = rgb_to_grey(images)
        if self.resize and images.shape[1:3] != (self.resize, self.resize):
            images = np.stack([resize_array(im, self.resize) for im in images])
        top = float(self.src_levels - 1)
        if self.binarize and self.binarize.kind == "threshold":
            images = (images > self.binarize.value * top).astype(np.uint8)
        elif self.binarize:
            images = (self.rng.random(images.shape) < images / top).astype(np.uint8)
        elif self.requantize:
            images = (images.astype(np.uint32) * self.out_levels // self.src_levels
                      ).astype(np.uint8)
        return np.ascontiguousarray(images)
