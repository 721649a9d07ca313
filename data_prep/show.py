"""`data_prep show`: a dataset's summary and, optionally, a PNG grid of its first images."""

from __future__ import annotations

import os

import numpy as np

from data_prep.errors import DataPrepError


def summary(m) -> list[str]:
    h, w, c = m.image_shape
    lines = [
        f"dataset: {m.dataset}",
        f"source: {m.source}",
        f"images: {h}x{w}x{c}, {m.levels} levels, compression: {m.compression or 'none'}",
    ]
    if m.has_labels:
        names = f" ({', '.join(m.label_names)})" if m.label_names else ""
        lines.append(f"labels: {m.num_classes} classes{names}")
    else:
        lines.append("labels: none")
    pre = m.raw.get("preprocessing") or {}
    done = [f"{k}={v}" for k, v in pre.items() if v not in (None, False, [], "")]
    if done:
        lines.append("preprocessing: " + ", ".join(done))
    lines.append(f"{'split':<12}{'examples':>10}{'shards':>8}{'MB':>10}")
    for s in m.splits.values():
        mb = sum(sh.num_bytes for sh in s.shards) / 1e6
        lines.append(f"{s.name:<12}{s.num_examples:>10}{len(s.shards):>8}{mb:>10.1f}")
    return lines


def grid(images: np.ndarray, levels: int, columns: int = 8, min_cell: int = 64) -> np.ndarray:
    """[N, H, W, C] levels-valued images -> one uint8 [rows, cols, 3] picture: each image
    zoomed to at least `min_cell` pixels, 2-pixel grey borders."""
    from pixelrnn_tf.images import grid as picture_grid
    from pixelrnn_tf.images import to_display, to_rgb

    _, h, w, _ = images.shape
    zoom = max(1, -(-min_cell // max(h, w)))
    return picture_grid(to_rgb(to_display(images, levels, rounding="nearest")), columns,
                        border=2, zoom=zoom)


def show(data_dir: str, split: str | None = None, png: str | None = None, num: int = 64):
    """Returns summary lines; writes a grid of the split's first `num` images to `png`."""
    from pixelrnn_tf import data as fmt

    try:
        m = fmt.read_manifest(os.path.normpath(data_dir))
    except fmt.DataError as e:
        raise DataPrepError(str(e)) from None
    lines = summary(m)
    if png is None:
        return lines
    if num < 1:
        raise DataPrepError(f"--num {num}: expected a positive count")
    split = split or ("test" if "test" in m.splits else next(iter(m.splits)))
    if split not in m.splits:
        raise DataPrepError(f"{data_dir}: no split {split!r} (it has: {', '.join(m.splits)})")
    import tensorflow as tf

    try:
        ds = fmt.make_dataset(m.data_dir, split, batch_size=num, training=False)
        images = next(iter(ds)).numpy()
    except fmt.DataError as e:
        raise DataPrepError(str(e)) from None
    except tf.errors.OpError as e:
        raise DataPrepError(f"{data_dir}: cannot read split {split!r} "
                            f"({e.message.strip().splitlines()[0]})") from None
    from pixelrnn_tf.images import write_png

    try:
        write_png(png, grid(images, m.levels))
    except OSError as e:
        raise DataPrepError(f"{png}: cannot write ({e.strerror or e})") from None
    lines.append(f"wrote a grid of the first {len(images)} {split} images to {png}")
    return lines
