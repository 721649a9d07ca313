"""Helpers for the data_prep and reader tests: shared data location, small input files."""

from __future__ import annotations

import gzip
import json
import pathlib
import struct

import numpy as np
import pytest

from cli_fixtures import run_main

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(rel: str) -> pathlib.Path:
    """A file of the offline datasets beside the project, or skip the test."""
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"{path} not found: the offline datasets live in <project>/../shared/data "
                    "(see its README); on a fresh machine use tfds instead")
    return path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Runs `python -m data_prep ARGS` in-process; returns (exit code, stdout, stderr)."""
    from data_prep.__main__ import main

    return run_main(main, args, capsys)


def manifest(data_dir) -> dict:
    """The manifest.json of a dataset directory, as written."""
    return json.loads((pathlib.Path(data_dir) / "manifest.json").read_text())


def verify_ok(capsys, data_dir):
    """`python -m data_prep verify` passes on `data_dir`."""
    rc, out, err = run_cli(capsys, "verify", data_dir)
    assert rc == 0, err
    assert out.startswith("OK "), out


def leftovers(out_dir: pathlib.Path) -> list[str]:
    """Anything convert may have left for `out_dir`: the dir itself or hidden temp dirs."""
    parent = out_dir.parent
    if not parent.exists():
        return []
    return sorted(p.name for p in parent.iterdir()
                  if p.name == out_dir.name or p.name.startswith(f".{out_dir.name}."))


def write_amat(path: pathlib.Path, rows: np.ndarray):
    path.write_text("".join(" ".join(str(int(v)) for v in r) + "\n" for r in rows))


def write_idx(path: pathlib.Path, arr: np.ndarray, magic: int, compress: bool = False):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_cifar_bin(root: pathlib.Path, per_file: int = 3, test: int = 2, seed: int = 0):
    """A tiny CIFAR-10 binary folder; returns {split: (images NHWC, labels)}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    out = {}
    for split, files in (("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
                         ("test", ["test_batch.bin"])):
        imgs, labs = [], []
        for f in files:
            n = per_file if split == "train" else test
            labels = rng.integers(0, 10, n, dtype=np.uint8)
            planes = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # R, G, B planes
            rec = np.concatenate([labels[:, None], planes.reshape(n, -1)], axis=1)
            (root / f).write_bytes(rec.astype(np.uint8).tobytes())
            imgs.append(planes.transpose(0, 2, 3, 1))
            labs.append(labels)
        out[split] = (np.concatenate(imgs), np.concatenate(labs).astype(np.int64))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    (root / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    return out


def write_image_folder(root: pathlib.Path, seed: int = 0):
    """cat/: 2 RGB PNGs 40x30; dog/: 1 RGB PNG 32x32 and 1 JPEG 36x36. Returns file arrays."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = {}
    for cls, items in (("cat", [("a.png", 40, 30), ("b.png", 40, 30)]),
                       ("dog", [("c.png", 32, 32), ("d.jpg", 36, 36)])):
        (root / cls).mkdir(parents=True)
        for name, w, h in items:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / name)
            files[f"{cls}/{name}"] = arr
    return files


def ids_images(n: int, shape=(4, 4, 1)) -> np.ndarray:
    """Images whose first two pixels spell their index (id = p0 + 256 * p1)."""
    images = np.zeros((n,) + tuple(shape), np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0] = np.arange(n) % 256
    flat[:, 1] = np.arange(n) // 256
    return images


def image_ids(images) -> np.ndarray:
    flat = np.asarray(images).reshape(len(images), -1).astype(np.int64)
    return flat[:, 0] + 256 * flat[:, 1]


def as_rows(images, labels=None) -> np.ndarray:
    """Sorted rows of bytes (one per image, label appended) to compare datasets as multisets."""
    n = len(images)
    rows = np.ascontiguousarray(np.asarray(images, np.uint8).reshape(n, -1))
    if labels is not None:
        tail = np.asarray(labels).astype(">i8").view(np.uint8).reshape(n, 8)
        rows = np.ascontiguousarray(np.concatenate([rows, tail], axis=1))
    return np.sort(rows.view(np.dtype((np.void, rows.shape[1])))[:, 0])


def record_offsets(path: pathlib.Path) -> list[int]:
    """Byte offsets where each TFRecord record ends (uncompressed shards)."""
    data = path.read_bytes()
    ends, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        pos += 8 + 4 + length + 4
        ends.append(pos)
    return ends


def read_split(data_dir, split, **kw):
    """All images (and labels when present) of a split, through the reader, in file order."""
    from pixelrnn_tf import data

    m = data.read_manifest(str(data_dir))
    ds = data.make_dataset(str(data_dir), split, batch_size=4096, training=False,
                           return_labels=m.has_labels, **kw)
    images, labels = [], []
    for el in ds:
        if m.has_labels:
            images.append(el[0].numpy())
            labels.append(el[1].numpy())
        else:
            images.append(el.numpy())
    return np.concatenate(images), (np.concatenate(labels) if labels else None)
