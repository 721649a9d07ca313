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
    """[N, H, W, C] levels-valued images -> one uint8 [rows, cols, 3] picture."""
    n, h, w, c = images.shape
    scale = max(1, -(-min_cell // max(h, w)))
    img = (images.astype(np.float32) * (255.0 / (levels - 1))).round().astype(np.uint8)
    if c == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img.repeat(scale, axis=1).repeat(scale, axis=2)
    cols = min(columns, n)
    rows = -(-n // cols)
    ch, cw, pad = h * scale, w * scale, 2
    out = np.full((rows * (ch + pad) + pad, cols * (cw + pad) + pad, 3), 128, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (ch + pad), pad + q * (cw + pad)
        out[y:y + ch, x:x + cw] = img[i]
    return out


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
    from PIL import Image

    tmp = png + ".tmp"
    try:
        Image.fromarray(grid(images, m.levels)).save(tmp, format="PNG")
        os.replace(tmp, png)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise DataPrepError(f"{png}: cannot write ({e.strerror or e})") from None
    lines.append(f"wrote a grid of the first {len(images)} {split} images to {png}")
    return lines
