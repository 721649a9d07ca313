"""`data_prep verify`: re-check every shard of a dataset against its manifest.

Per shard: present, named as the format says, size and sha256 as recorded, every record
readable, the record count as recorded (TF's reader does not notice a shard cut exactly at
a record boundary; the count and the hash do), every record a data_prep Example whose
height/width/channels and byte length match the manifest's image shape, pixels below the
manifest's levels, labels present and in range when the manifest says so. Files in the
directory that the manifest does not list are reported too.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

BATCH = 2048


def _first_line(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    lines = [ln for ln in msg.strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    if "}} " in text:  # drop TF's "{{function_node ...}}" prefix
        text = text.split("}} ", 1)[1]
    return text.replace(" [Op:IteratorGetNext]", "").strip()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_records(tf, path, m, shape, levels):
    """Reads every record; returns (count, [problem, ...])."""
    h, w, c = shape
    from pixelrnn_tf import records

    spec = records.feature_spec(labels=m.has_labels, shape=True, defaults=True)
    ds = tf.data.TFRecordDataset(path, compression_type=m.compression or "").batch(BATCH)
    it = iter(ds)
    count, problems = 0, []
    bad_dims = bad_len = bad_label = 0
    dims_seen = None
    max_value = 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            break
        except tf.errors.OpError as e:
            problems.append(f"unreadable after {count} good records: corrupt or truncated "
                            f"({_first_line(e)})")
            break
        try:
            feats = tf.io.parse_example(batch, spec)
        except tf.errors.OpError as e:
            problems.append(f"records {count}..{count + len(batch) - 1} are not data_prep "
                            f"examples ({_first_line(e)})")
            count += int(batch.shape[0])
            continue
        count += int(batch.shape[0])
        dims = np.stack([feats["height"].numpy(), feats["width"].numpy(),
                         feats["channels"].numpy()], axis=1)
        wrong = np.any(dims != np.array([h, w, c]), axis=1)
        if wrong.any():
            bad_dims += int(wrong.sum())
            dims_seen = dims_seen or "x".join(map(str, dims[np.argmax(wrong)]))
        raw = feats["image"].numpy()
        lengths = np.fromiter((len(r) for r in raw), np.int64, len(raw))
        good = lengths == h * w * c
        bad_len += int((~good).sum())
        if good.any():
            pixels = np.frombuffer(b"".join(r for r, g in zip(raw, good) if g), np.uint8)
            max_value = max(max_value, int(pixels.max()))
        if m.has_labels:
            labels = feats["label"].numpy()
            limit = m.num_classes if m.num_classes else np.iinfo(np.int64).max
            bad_label += int(np.sum((labels < 0) | (labels >= limit)))
    shape_s = "x".join(map(str, shape))
    if bad_dims:
        problems.append(f"{bad_dims} records say height/width/channels {dims_seen}, the "
                        f"manifest says {shape_s}")
    if bad_len:
        problems.append(f"{bad_len} records do not hold {h * w * c} image bytes "
                        f"({shape_s} uint8)")
    if max_value >= levels:
        problems.append(f"pixel value {max_value} is not below the manifest's {levels} levels")
    if bad_label:
        problems.append(f"{bad_label} records have a missing or out-of-range label "
                        f"(num_classes {m.num_classes})")
    return count, problems


def verify(data_dir: str) -> tuple[list[str], dict]:
    """Returns (problems, stats); each problem is one line naming the file."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from pixelrnn_tf import data as fmt
    from pixelrnn_tf import records

    data_dir = os.path.normpath(data_dir)
    if not os.path.isdir(data_dir):
        return [f"{data_dir}: no such directory"], {}
    try:
        m = fmt.read_manifest(data_dir)
    except fmt.DataError as e:
        return [str(e)], {}
    problems: list[str] = []
    listed = {fmt.MANIFEST_NAME}
    stats = {"splits": 0, "shards": 0, "examples": 0}
    for split in m.splits.values():
        stats["splits"] += 1
        total = sum(s.num_examples for s in split.shards)
        if total != split.num_examples:
            problems.append(f"{os.path.join(data_dir, fmt.MANIFEST_NAME)}: split {split.name!r} "
                            f"says {split.num_examples} examples but its shards add up to "
                            f"{total}")
        for k, shard in enumerate(split.shards):
            listed.add(shard.file)
            path = os.path.join(data_dir, shard.file)
            want = records.shard_filename(split.name, k, len(split.shards), m.compression)
            if shard.file != want:
                problems.append(f"{path}: listed as shard {k} of split {split.name!r}, which "
                                f"must be named {want}")
            if not os.path.isfile(path):
                problems.append(f"{path}: missing (listed in the manifest)")
                continue
            stats["shards"] += 1
            size = os.path.getsize(path)
            if size != shard.num_bytes:
                problems.append(f"{path}: {size} bytes, the manifest says {shard.num_bytes}")
            digest = _sha256(path)
            if digest != shard.sha256:
                problems.append(f"{path}: sha256 {digest[:12]}... does not match the "
                                f"manifest's {shard.sha256[:12]}...")
            count, record_problems = _check_records(tf, path, m, m.image_shape, m.levels)
            problems += [f"{path}: {p}" for p in record_problems]
            if count != shard.num_examples:
                problems.append(f"{path}: {count} records, the manifest says "
                                f"{shard.num_examples}")
            stats["examples"] += count
    for entry in sorted(os.listdir(data_dir)):
        if entry not in listed and not entry.startswith("."):
            problems.append(f"{os.path.join(data_dir, entry)}: not listed in the manifest "
                            "(extra or renamed shard?)")
    return problems, stats
