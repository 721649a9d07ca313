"""`data_prep convert`: sources -> sharded TFRecords + manifest.json, written atomically.

Everything is checked before anything is written; shards and manifest go to a hidden
temporary directory beside the output, which is renamed into place only when complete. An
error or interrupt removes it, so a failed convert leaves nothing that looks like a dataset.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Callable, Sequence

import numpy as np

from data_prep import imaging
from data_prep.errors import DataPrepError
from data_prep.sources import ImageFilesSplit, InputSplit, SourceOptions, open_source

SHARD_TARGET_BYTES = 128 << 20  # default shard size: ~100-200 MB
RECORD_OVERHEAD = 64  # bytes of Example framing per image, for shard sizing
CHUNK = 1024
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


# ----------------------------------------------------------------------------- flag parsing


def parse_mapping(text: str | None, flag: str) -> dict[str, str] | None:
    """'train=a,test=b' -> {'train': 'a', 'test': 'b'}."""
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        k, eq, v = part.partition("=")
        if not eq or not k or not v:
            raise DataPrepError(f"{flag} {text!r}: expected NAME=VALUE[,NAME=VALUE...]")
        if k in out:
            raise DataPrepError(f"{flag} {text!r}: {k!r} given twice")
        out[k.strip()] = v.strip()
    return out


@dataclasses.dataclass(frozen=True)
class Binarize:
    kind: str  # "threshold" or "stochastic"
    value: float  # threshold in [0, 1) of the maximum level, or the seed

    def describe(self) -> str:
        v = int(self.value) if self.kind == "stochastic" else self.value
        return f"{self.kind}:{v}"


def parse_binarize(text: str | None) -> Binarize | None:
    if text is None:
        return None
    kind, _, value = text.partition(":")
    try:
        if kind == "threshold":
            t = float(value)
            if not 0.0 <= t < 1.0:
                raise ValueError
            return Binarize(kind, t)
        if kind == "stochastic":
            return Binarize(kind, int(value))
    except ValueError:
        pass
    raise DataPrepError(f"--binarize {text!r}: expected threshold:T (0 <= T < 1, a fraction "
                        "of the top level) or stochastic:SEED")


def parse_shards(text) -> int | dict[str, int] | None:
    if text is None or isinstance(text, (int, dict)):
        shards = text
    else:
        try:
            shards = int(text)
        except ValueError:
            m = parse_mapping(text, "--shards")
            try:
                shards = {k: int(v) for k, v in m.items()}
            except ValueError:
                shards = {"": 0}
    values = [shards] if isinstance(shards, int) else list((shards or {}).values())
    if any(v < 1 for v in values):
        raise DataPrepError(f"--shards {text!r}: expected a positive integer or "
                            "SPLIT=N[,SPLIT=N...]")
    return shards


def parse_compression(text: str | None) -> str | None:
    if text is None or text.lower() in ("", "none"):
        return None
    if text.upper() == "GZIP":
        return "GZIP"
    raise DataPrepError(f"--compression {text!r}: expected GZIP or none")


# ----------------------------------------------------------------------------- planning


@dataclasses.dataclass
class _Job:
    split: InputSplit
    n: int  # examples used (after --limit)
    outputs: list  # [(out split name, source indices in write order)]


def _available(sources):
    """[(source index, input split name)] offered by the sources."""
    out = []
    for i, src in enumerate(sources):
        names = src.default_split_names if src.select else [s.name for s in src.splits]
        out += [(i, n) for n in names]
    return out


def _materialize(sources, i, name) -> InputSplit:
    src = sources[i]
    if src.select:
        return src.select(name)
    return next(s for s in src.splits if s.name == name)


def select_splits(sources, spec: str | None) -> list[tuple[str, InputSplit]]:
    """Applies --splits: which input split becomes which output split."""
    avail = _available(sources)
    names = [n for _, n in avail]
    if spec is None:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataPrepError(f"several sources give split {dupes[0]!r}; name the splits in "
                                "order with --splits, e.g. --splits train,test")
        return [(n, _materialize(sources, i, n)) for i, n in avail]
    entries = [e.strip() for e in spec.split(",")]
    if not all(entries):
        raise DataPrepError(f"--splits {spec!r}: empty name")
    chosen = []
    if any("=" in e for e in entries):
        for e in entries:
            out, eq, inn = e.partition("=")
            if not eq:  # NAME alone means NAME=NAME
                inn = out
            hits = [(i, n) for i, n in avail if n == inn]
            if len(hits) > 1:
                raise DataPrepError(f"--splits: input split {inn!r} is given by several "
                                    "sources; name the splits in order instead")
            if hits:
                chosen.append((out, _materialize(sources, *hits[0])))
            elif len(sources) == 1 and sources[0].select:
                chosen.append((out, sources[0].select(inn)))
            else:
                raise DataPrepError(f"--splits: no input split {inn!r} (available: "
                                    f"{', '.join(names)})")
    elif len(set(entries)) == len(entries) and all(names.count(e) == 1 for e in entries):
        chosen = [(e, _materialize(sources, *next(a for a in avail if a[1] == e)))
                  for e in entries]
    elif len(entries) == len(avail):
        chosen = [(e, _materialize(sources, i, n)) for e, (i, n) in zip(entries, avail)]
    elif len(sources) == 1 and sources[0].select:
        chosen = [(e, sources[0].select(e)) for e in entries]
    else:
        raise DataPrepError(f"--splits {spec!r}: the sources give {len(avail)} split(s) "
                            f"({', '.join(names)}); name all of them in order, pick some by "
                            "name, or use OUT=IN")
    outs = [o for o, _ in chosen]
    for o in outs:
        if not _SPLIT_NAME.match(o):
            raise DataPrepError(f"--splits: bad split name {o!r} (use letters, digits, _ or .)")
        if outs.count(o) > 1:
            raise DataPrepError(f"--splits: split {o!r} named twice")
    return chosen


def _plan(chosen, *, val_fraction, test_fraction, seed, shuffle, limit):
    rng = np.random.default_rng(seed)
    names = [o for o, _ in chosen]
    carve = [("validation", val_fraction), ("test", test_fraction)]
    for target, frac in carve:
        if frac and target in names:
            raise DataPrepError(f"--{'val' if target == 'validation' else 'test'}-fraction: "
                                f"there is already a {target} split")
    if (val_fraction or test_fraction) and "train" not in names:
        raise DataPrepError("--val-fraction/--test-fraction carve from the train split, and "
                            f"there is none (splits: {', '.join(names)}; see --splits)")
    jobs = []
    for out, split in chosen:
        n = split.num_examples if limit is None else min(split.num_examples, limit)
        if n == 0:
            raise DataPrepError(f"{split.where}: split {out!r} has no examples")
        do_shuffle = shuffle and out == "train" and split.random_access
        if out == "train" and (val_fraction or test_fraction):
            perm = rng.permutation(n)
            outputs, start = [], 0
            for target, frac in carve:
                k = int(round(frac * n))
                if frac and k == 0:
                    raise DataPrepError(f"{target} fraction {frac} of {n} examples is empty")
                if k:
                    outputs.append((target, np.sort(perm[start:start + k])))
                start += k
            if start >= n:
                raise DataPrepError("--val-fraction + --test-fraction leave no training "
                                    "examples")
            rest = perm[start:]
            outputs.insert(0, ("train", rest if do_shuffle else np.sort(rest)))
        else:
            outputs = [(out, rng.permutation(n) if do_shuffle else np.arange(n))]
        jobs.append(_Job(split, n, outputs))
    return jobs


# ----------------------------------------------------------------------------- writing


class _SplitWriter:
    """Writes one split's examples into `num_shards` shards of near-equal counts."""

    def __init__(self, tmp_dir, split, num_examples, num_shards, compression, fmt, tf):
        self.tmp_dir, self.split, self.n = tmp_dir, split, num_examples
        self.num_shards = num_shards
        self.bounds = [k * num_examples // num_shards for k in range(num_shards + 1)]
        self.compression, self.fmt, self.tf = compression, fmt, tf
        self.count, self.shard, self.writer = 0, -1, None
        self.files, self.max_label = [], -1

    def _next_shard(self):
        if self.writer is not None:
            self.writer.close()
        self.shard += 1
        name = self.fmt.shard_filename(self.split, self.shard, self.num_shards, self.compression)
        self.files.append(name)
        opts = self.tf.io.TFRecordOptions(compression_type=self.compression or "")
        self.writer = self.tf.io.TFRecordWriter(os.path.join(self.tmp_dir, name), opts)

    def write(self, images: np.ndarray, labels):
        tf = self.tf
        _, h, w, c = images.shape
        dims = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                for k, v in (("height", h), ("width", w), ("channels", c))}
        if labels is not None and len(labels):
            self.max_label = max(self.max_label, int(labels.max()))
        for i in range(images.shape[0]):
            while self.shard < 0 or self.count >= self.bounds[self.shard + 1]:
                self._next_shard()
            feats = dict(dims)
            feats["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[images[i].tobytes()]))
            if labels is not None:
                feats["label"] = tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(labels[i])]))
            ex = tf.train.Example(features=tf.train.Features(feature=feats))
            self.writer.write(ex.SerializeToString())
            self.count += 1

    def close(self) -> dict:
        if self.writer is not None:
            self.writer.close()
        if self.count != self.n:
            raise DataPrepError(f"split {self.split!r}: wrote {self.count} examples, "
                                f"expected {self.n}")
        shards = []
        for k, name in enumerate(self.files):
            path = os.path.join(self.tmp_dir, name)
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            shards.append({"file": name, "num_examples": self.bounds[k + 1] - self.bounds[k],
                           "bytes": os.path.getsize(path), "sha256": digest.hexdigest()})
        return {"num_examples": self.n, "shards": shards}


class _Transform:
    """grey -> resize -> binarize / requantize, chunk by chunk, with a range check."""

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
            images = imaging.rgb_to_grey(images)
        if self.resize and images.shape[1:3] != (self.resize, self.resize):
            images = np.stack([imaging.resize_array(im, self.resize) for im in images])
        top = float(self.src_levels - 1)
        if self.binarize and self.binarize.kind == "threshold":
            images = (images > self.binarize.value * top).astype(np.uint8)
        elif self.binarize:
            images = (self.rng.random(images.shape) < images / top).astype(np.uint8)
        elif self.requantize:
            images = (images.astype(np.uint32) * self.out_levels // self.src_levels
                      ).astype(np.uint8)
        return np.ascontiguousarray(images)


def _default_shards(n, image_bytes, is_train, workers):
    by_size = math.ceil(n * (image_bytes + RECORD_OVERHEAD) / SHARD_TARGET_BYTES)
    return max(1, min(n, max(by_size, workers if is_train else 1)))


# ----------------------------------------------------------------------------- output dir


def check_out_dir(out: str, overwrite: bool):
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataPrepError(f"{out}: exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise DataPrepError(f"{out}: already exists and is not empty; pass --overwrite to "
                                "replace it")
        if not os.path.exists(os.path.join(out, "manifest.json")):
            raise DataPrepError(f"{out}: refusing to --overwrite a directory that is not a "
                                "data_prep dataset (no manifest.json)")


def _make_parents(path: str) -> list[str]:
    created, p = [], os.path.abspath(path)
    while not os.path.exists(p):
        created.append(p)
        p = os.path.dirname(p)
    made = []
    try:
        for d in reversed(created):
            os.mkdir(d)
            made.append(d)
    except OSError:
        for d in reversed(made):
            os.rmdir(d)
        raise
    return created


# ----------------------------------------------------------------------------- convert


def convert(
    sources: Sequence[str],
    out: str,
    *,
    name: str | None = None,
    splits: str | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    seed: int = 0,
    shards=None,
    workers: int = 1,
    compression: str | None = None,
    binarize: str | None = None,
    levels: int | None = None,
    source_levels: int | None = None,
    resize: int | None = None,
    grayscale: bool = False,
    shuffle: bool = True,
    limit: int | None = None,
    overwrite: bool = False,
    label_names: Sequence[str] | None = None,
    key: str | None = None,
    label_key: str | None = None,
    split_keys=None,
    split_label_keys=None,
    image_shape=None,
    tfds_data_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Converts SOURCE strings into a dataset directory `out`; returns the manifest dict.

    Raises DataPrepError (one-line message) for any problem with the inputs or options.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not sources:
        raise DataPrepError("no SOURCE given")
    for flag, frac in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise DataPrepError(f"{flag} {frac}: expected a fraction in [0, 1)")
    if levels is not None and not 2 <= levels <= 256:
        raise DataPrepError(f"--levels {levels}: expected 2..256")
    if source_levels is not None and not 2 <= source_levels <= 256:
        raise DataPrepError(f"--source-levels {source_levels}: expected 2..256")
    if resize is not None and resize < 1:
        raise DataPrepError(f"--resize {resize}: expected a positive size")
    if limit is not None and limit < 1:
        raise DataPrepError(f"--limit {limit}: expected a positive count")
    if workers < 1:
        raise DataPrepError(f"--workers {workers}: expected a positive count")
    bin_spec = parse_binarize(binarize) if isinstance(binarize, str) or binarize is None \
        else binarize
    if bin_spec and levels is not None:
        raise DataPrepError("--binarize and --levels are exclusive (binarizing gives 2 levels)")
    compression = parse_compression(compression)
    shard_spec = parse_shards(shards)
    if isinstance(split_keys, str):
        split_keys = parse_mapping(split_keys, "--split-keys")
    if isinstance(split_label_keys, str):
        split_label_keys = parse_mapping(split_label_keys, "--split-label-keys")
    if isinstance(image_shape, str):
        image_shape = imaging.parse_image_shape(image_shape)
    elif image_shape is not None:
        image_shape = tuple(image_shape) if len(image_shape) == 3 else tuple(image_shape) + (1,)
    out = os.path.normpath(out)
    check_out_dir(out, overwrite)

    opts = SourceOptions(key=key, label_key=label_key, split_keys=split_keys,
                         split_label_keys=split_label_keys, image_shape=image_shape,
                         resize=resize, grayscale=grayscale, tfds_data_dir=tfds_data_dir)
    srcs = [open_source(s, opts) for s in sources]
    out_abs = os.path.abspath(out)
    for src in srcs:
        for p in src.paths:
            pa = os.path.abspath(p)
            common = os.path.commonpath([out_abs, pa])
            if common == out_abs or (common == pa and os.path.isdir(pa)):
                raise DataPrepError(f"--out {out} overlaps the source {p}")
        for note in dict.fromkeys(src.notes):
            log(f"note: {src.spec}: {note}")

    chosen = select_splits(srcs, splits)
    jobs = _plan(chosen, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                 shuffle=shuffle, limit=limit)

    # Image shape and levels after the transforms must agree across splits.
    def final_shape(s: InputSplit):
        h, w, c = s.image_shape
        if grayscale:
            c = 1
        if resize:
            h = w = resize
        return (h, w, c)

    shapes = {final_shape(j.split) for j in jobs}
    if len(shapes) > 1:
        desc = ", ".join(f"{j.outputs[0][0]} {'x'.join(map(str, final_shape(j.split)))}"
                         for j in jobs)
        raise DataPrepError(f"splits have different image shapes ({desc}); see --resize, "
                            "--grayscale")
    image_shape_out = shapes.pop()
    src_levels = source_levels or max(j.split.levels for j in jobs)
    if levels is not None and levels > src_levels:
        raise DataPrepError(f"--levels {levels} is more than the source's {src_levels} levels")
    out_levels = 2 if bin_spec else (levels or src_levels)
    transform = _Transform(src_levels, out_levels, grayscale, resize, bin_spec,
                           levels is not None and levels != src_levels)

    # Labels: kept only when every split has them; class folders unified across sources.
    has_labels = all(j.split.has_labels for j in jobs)
    if not has_labels and any(j.split.has_labels for j in jobs):
        log("note: some splits have no labels; writing none")
    names = list(label_names) if label_names else None
    if names and not has_labels:
        raise DataPrepError("--label-names given, but the splits have no labels")
    folder_splits = [j.split for j in jobs if isinstance(j.split, ImageFilesSplit)
                     and j.split.has_labels]
    if has_labels and folder_splits and len(srcs) > 1:
        class_lists = [src.label_names for src in srcs if src.label_names]
        union = sorted(set().union(*class_lists))
        for src in srcs:
            for s in src.splits:
                if isinstance(s, ImageFilesSplit) and s.has_labels:
                    s.relabel(np.array([union.index(c) for c in src.label_names]))
        names = names or union
    elif has_labels and names is None:
        lists = [src.label_names for src in srcs if src.label_names]
        if lists and all(lst == lists[0] for lst in lists):
            names = lists[0]
    if not has_labels:
        names = None

    # Shards per output split.
    image_bytes = int(np.prod(image_shape_out))
    plan = []  # (job, [(name, indices, num_shards)])
    for job in jobs:
        outs = []
        for o, idx in job.outputs:
            if isinstance(shard_spec, dict):
                wanted = shard_spec.get(o)
                ns = min(len(idx), wanted) if wanted else _default_shards(
                    len(idx), image_bytes, o == "train", workers)
            elif shard_spec:
                ns = min(len(idx), shard_spec)
            else:
                ns = _default_shards(len(idx), image_bytes, o == "train", workers)
            outs.append((o, idx, ns))
        plan.append((job, outs))
    if isinstance(shard_spec, dict):
        unknown = set(shard_spec) - {o for _, outs in plan for o, _, _ in outs}
        if unknown:
            raise DataPrepError(f"--shards names unknown split(s): {', '.join(sorted(unknown))}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from pixelrnn_tf import data as fmt

    parent = os.path.dirname(out_abs)
    created = _make_parents(parent)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_abs)}.tmp-", dir=parent)
    ok = False
    try:
        split_entries = {}
        t_last = time.time()
        for job, outs in plan:
            writers = {o: _SplitWriter(tmp, o, len(idx), ns, compression, fmt, tf)
                       for o, idx, ns in outs}
            where = job.split.where
            total = job.n
            done = 0
            if job.split.random_access:
                for o, idx, _ in outs:
                    for start in range(0, len(idx), CHUNK):
                        images, labels = job.split.read(idx[start:start + CHUNK])
                        writers[o].write(transform(images, where),
                                         labels if has_labels else None)
                        done += min(CHUNK, len(idx) - start)
                        if time.time() - t_last > 15:
                            log(f"  {where}: {done}/{total}")
                            t_last = time.time()
            else:
                dest = np.full(job.n, -1, np.int64)
                for k, (o, idx, _) in enumerate(outs):
                    dest[idx] = k
                pos = 0
                for images, labels in job.split.stream(CHUNK):
                    if pos >= job.n:
                        if limit is None:
                            raise DataPrepError(f"{where}: gave more than the {job.n} examples "
                                                "it announced")
                        break
                    take = min(len(images), job.n - pos)
                    images = transform(images[:take], where)
                    labels = labels[:take] if (labels is not None and has_labels) else None
                    d = dest[pos:pos + take]
                    for k, (o, _, _) in enumerate(outs):
                        m = d == k
                        if m.any():
                            writers[o].write(images[m], labels[m] if labels is not None
                                             else None)
                    pos += take
                    if time.time() - t_last > 15:
                        log(f"  {where}: {pos}/{total}")
                        t_last = time.time()
                if pos < job.n:
                    raise DataPrepError(f"{where}: gave {pos} examples, announced {job.n}")
            for o, w in writers.items():
                split_entries[o] = w.close()
                split_entries[o]["_max_label"] = w.max_label
        max_label = max(e.pop("_max_label") for e in split_entries.values())
        if names is not None and max_label >= len(names):
            raise DataPrepError(f"label {max_label} has no name ({len(names)} label names)")
        num_classes = (len(names) if names else max_label + 1) if has_labels else None
        order = ["train", "validation", "test"]
        split_entries = dict(sorted(split_entries.items(),
                                    key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                    else len(order), kv[0])))
        manifest = {
            "format": fmt.FORMAT_NAME,
            "format_version": fmt.FORMAT_VERSION,
            "dataset": name or srcs[0].dataset_name,
            "source": " + ".join(s.description for s in srcs),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "created_by": "data_prep (pixelrnn_tf)",
            "image_shape": list(image_shape_out),
            "levels": out_levels,
            "compression": compression,
            "has_labels": has_labels,
            "num_classes": num_classes,
            "label_names": names,
            "features": {k: v for k, v in fmt.FEATURES_DOC.items()
                         if has_labels or k != "label"},
            "preprocessing": {
                "source_levels": src_levels,
                "grayscale": bool(grayscale),
                "resize": resize,
                "binarize": bin_spec.describe() if bin_spec else None,
                "requantized_to": out_levels if transform.requantize else None,
                "shuffled_splits": [o for job, outs in plan for o, _, _ in outs
                                    if o == "train" and shuffle and job.split.random_access],
                "seed": seed,
                "limit": limit,
            },
            "splits": split_entries,
        }
        fmt.parse_manifest(manifest, out)  # the writer obeys its own contract
        with open(os.path.join(tmp, fmt.MANIFEST_NAME), "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
        _install(tmp, out_abs)
        ok = True
        return manifest
    finally:
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
            for d in created:
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def _install(tmp: str, out: str):
    """Renames the finished temporary directory to `out` (replacing an old dataset)."""
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)
    if os.path.isdir(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-",
                               dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
