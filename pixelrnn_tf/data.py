"""Reading the TFRecord datasets written by `data_prep`: the manifest and the tf.data reader.

A dataset directory holds `manifest.json` and the shards, one `tf.train.Example` per image
(the record codec and the shard file names: `pixelrnn_tf.records`). The manifest names the
dataset, its image shape, the number of levels (pixel values are in [0, levels)), and per
split the shard files with their example counts, sizes and sha256.

`make_dataset` yields uint8 images of shape [B, H, W, C] (int32 with `dtype=tf.int32`), the
integer images the model takes. Typical use:

    ds = make_dataset("out/data/mnist", "train", batch_size=16, training=True,
                      expected_shape=(28, 28, 1), expected_levels=256, seed=0)
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

import numpy as np
import tensorflow as tf

from pixelrnn_tf import records

FORMAT_NAME = "pixelrnn_tf.tfrecord"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
COMPRESSIONS = (None, "GZIP")
_CHUNK = 256  # records per count-check step while reading a shard


class DataError(ValueError):
    """A dataset directory, its manifest or a request against it is not usable."""


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    file: str  # file name inside the dataset directory
    num_examples: int
    num_bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    name: str
    num_examples: int
    shards: tuple[ShardInfo, ...]


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The parsed, checked `manifest.json` of a dataset directory."""

    data_dir: str
    dataset: str
    source: str
    image_shape: tuple[int, int, int]
    levels: int
    compression: str | None
    has_labels: bool
    num_classes: int | None
    label_names: tuple[str, ...] | None
    splits: dict[str, SplitInfo]
    raw: dict

    def split(self, name: str) -> SplitInfo:
        """One split, or several joined by '+' ("train+validation": all their shards, in that
        order, as one split)."""
        parts = name.split("+")
        for part in parts:
            if part not in self.splits:
                raise DataError(
                    f"{self.data_dir}: no split {part!r} (it has: {', '.join(self.splits)})"
                )
        if len(set(parts)) < len(parts):
            raise DataError(f"{self.data_dir}: split {name!r} names a split twice")
        if len(parts) == 1:
            return self.splits[name]
        infos = [self.splits[part] for part in parts]
        return SplitInfo(name, sum(i.num_examples for i in infos),
                         tuple(shard for i in infos for shard in i.shards))

    def shard_paths(self, split: str) -> list[str]:
        return [_join(self.data_dir, s.file) for s in self.split(split).shards]

    def num_examples(self, split: str) -> int:
        return self.split(split).num_examples


def _join(data_dir: str, name: str) -> str:
    return posixpath.join(data_dir, name) if "://" in data_dir else f"{data_dir.rstrip('/')}/{name}"


def _need(cond: bool, where: str, what: str):
    if not cond:
        raise DataError(f"{where}: invalid manifest: {what}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_manifest(raw: dict, data_dir: str = ".") -> Manifest:
    """Checks a manifest dict against the format and returns a `Manifest`."""
    where = _join(data_dir, MANIFEST_NAME)
    _need(isinstance(raw, dict), where, "not a JSON object")
    _need(raw.get("format") == FORMAT_NAME, where, f"'format' is not {FORMAT_NAME!r}")
    version = raw.get("format_version")
    _need(_is_int(version), where, "'format_version' missing")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{where}: format_version {version} is newer than this reader ({FORMAT_VERSION});"
            " upgrade pixelrnn_tf"
        )
    shape = raw.get("image_shape")
    _need(
        isinstance(shape, list) and len(shape) == 3 and all(_is_int(d) and d > 0 for d in shape),
        where, "'image_shape' must be [height, width, channels] of positive integers",
    )
    levels = raw.get("levels")
    _need(_is_int(levels) and 2 <= levels <= 256, where, "'levels' must be an integer in 2..256")
    compression = raw.get("compression")
    _need(compression in COMPRESSIONS, where, "'compression' must be null or \"GZIP\"")
    has_labels = raw.get("has_labels", False)
    _need(isinstance(has_labels, bool), where, "'has_labels' must be true or false")
    num_classes = raw.get("num_classes")
    _need(num_classes is None or (_is_int(num_classes) and num_classes > 0), where,
          "'num_classes' must be null or a positive integer")
    names = raw.get("label_names")
    _need(names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names)),
          where, "'label_names' must be null or a list of strings")
    splits_raw = raw.get("splits")
    _need(isinstance(splits_raw, dict) and splits_raw, where, "'splits' must be a non-empty object")
    splits = {}
    for name, s in splits_raw.items():
        _need(records.is_split_name(name), where, f"bad split name {name!r}")
        _need(isinstance(s, dict) and _is_int(s.get("num_examples")) and s["num_examples"] >= 0
              and isinstance(s.get("shards"), list) and s["shards"], where,
              f"split {name!r} needs 'num_examples' and a non-empty 'shards' list")
        shards = []
        for sh in s["shards"]:
            _need(isinstance(sh, dict) and isinstance(sh.get("file"), str) and sh["file"]
                  and "/" not in sh["file"] and "\\" not in sh["file"]
                  and _is_int(sh.get("num_examples")) and sh["num_examples"] >= 0
                  and _is_int(sh.get("bytes")) and sh["bytes"] >= 0
                  and isinstance(sh.get("sha256"), str) and len(sh["sha256"]) == 64,
                  where, f"split {name!r} has a shard entry without file/num_examples/bytes/sha256")
            shards.append(ShardInfo(sh["file"], sh["num_examples"], sh["bytes"], sh["sha256"]))
        splits[name] = SplitInfo(name, s["num_examples"], tuple(shards))
    return Manifest(
        data_dir=data_dir,
        dataset=str(raw.get("dataset", "")),
        source=str(raw.get("source", "")),
        image_shape=tuple(shape),
        levels=levels,
        compression=compression,
        has_labels=has_labels,
        num_classes=num_classes,
        label_names=tuple(names) if names is not None else None,
        splits=splits,
        raw=raw,
    )


def read_manifest(data_dir: str) -> Manifest:
    """Reads and checks `<data_dir>/manifest.json` (local path or any tf.io.gfile URL)."""
    data_dir = str(data_dir)
    path = _join(data_dir, MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        hint = "" if tf.io.gfile.isdir(data_dir) else " (no such directory)"
        raise DataError(
            f"{path}: not found{hint}; create the dataset with `python -m data_prep convert ...`"
        )
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            raw = json.loads(f.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    return parse_manifest(raw, data_dir)


def num_examples(data_dir: str, split: str) -> int:
    """Number of images in one split, from the manifest."""
    return read_manifest(data_dir).num_examples(split)


def auto_shard_policy(num_shards: int, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE when every worker can get at least one whole shard, else DATA."""
    policy = tf.data.experimental.AutoShardPolicy
    return policy.FILE if num_shards >= num_workers else policy.DATA


def check_files(manifest: Manifest, split: str) -> None:
    """Cheap check (one stat per shard): every shard exists and has the manifest's size."""
    for shard in manifest.split(split).shards:
        path = _join(manifest.data_dir, shard.file)
        if not tf.io.gfile.exists(path):
            raise DataError(f"{path}: shard listed in the manifest is missing")
        size = tf.io.gfile.stat(path).length
        if size != shard.num_bytes:
            raise DataError(
                f"{path}: shard is {size} bytes but the manifest says {shard.num_bytes}"
                " (truncated or replaced; run `python -m data_prep verify`)"
            )


def _read_shard(path, expected, compression, buffer_size):
    """Chunks of records of one shard; fails naming the shard unless it holds `expected`.

    Chunks (not single records) cross the parallel interleave: handing over records one by
    one costs about 4x the throughput.

    TF's DataLossError for a corrupt or truncated record does not name the file, and a shard
    cut exactly at a record boundary (or a truncated GZIP stream) reads without any error.
    So a read error just ends this shard's stream, and a count check at the end of the shard
    raises an InvalidArgumentError whose message holds the shard path.
    """
    records = tf.data.TFRecordDataset(path, compression_type=compression or "",
                                      buffer_size=buffer_size)
    chunks = records.ignore_errors().batch(_CHUNK)
    chunks = chunks.concatenate(tf.data.Dataset.from_tensors(tf.constant([], tf.string)))

    def count(seen, chunk):
        at_end = tf.equal(tf.size(chunk), 0)
        ok = tf.logical_or(tf.logical_not(at_end), tf.equal(seen, expected))
        check = tf.debugging.Assert(
            ok, ["corrupt, truncated or missing shard", path, "read", seen,
                 "records, manifest says", expected, "(run `python -m data_prep verify`)"])
        with tf.control_dependencies([check]):
            chunk = tf.identity(chunk)
        return seen + tf.cast(tf.size(chunk), tf.int64), chunk

    return chunks.scan(tf.constant(0, tf.int64), count)


def make_dataset(
    data_dir: str,
    split: str,
    batch_size: int,
    training: bool,
    *,
    expected_shape=None,
    expected_levels: int | None = None,
    seed: int | None = None,
    deterministic: bool = False,
    shuffle_buffer: int = 10_000,
    num_workers: int = 1,
    input_context: tf.distribute.InputContext | None = None,
    binarize: bool = False,
    return_labels: bool = False,
    dtype: tf.DType = tf.uint8,
    num_epochs: int | None = None,
    check_values: bool = True,
    verify_files: bool = True,
    buffer_size: int = 1 << 20,
) -> tf.data.Dataset:
    """A tf.data pipeline over one split of a `data_prep` dataset.

    Args:
      data_dir: dataset directory (holding manifest.json); any tf.io.gfile path.
      split: split name, e.g. "train", "validation", "test", or several joined by '+'
        ("train+validation": one split holding all their images).
      batch_size: images per batch (per input pipeline).
      training: True: shuffle, repeat (`num_epochs`, default forever), drop the last partial
        batch so every batch is full (static batch dimension); unless `deterministic`,
        neighbouring batches may swap across an epoch boundary. False: one exact pass over
        the split in a fixed order, the last batch may be smaller, nothing dropped or
        repeated.
      expected_shape: (H, W, C) the model was built for; a different image shape in the
        manifest raises DataError.
      expected_levels: levels the model was built for; must equal the dataset's levels
        (2 when `binarize`), else DataError.
      seed: seeds the file order, the shuffle and the binarization noise.
      deterministic: produce exactly the same batches every run (seed defaults to 0), at some
        cost in throughput. Evaluation (training=False) is always in a fixed order.
      shuffle_buffer: records held by the shuffle buffer in training.
      num_workers: number of input workers tf.distribute will split the data over; sets the
        AutoShardPolicy to FILE when there are at least that many shards, else DATA (every
        worker then reads in the same seeded order, so the shares are disjoint).
      input_context: from `strategy.distribute_datasets_from_function`; the pipeline then
        takes its own share (whole shards when there are enough, else every n-th record)
        and auto-sharding is turned off.
      binarize: dynamic binarization: every read draws each pixel ~ Bernoulli(x / (levels-1)),
        fresh in every epoch (reproducible with a seed; evaluation without a seed uses seed
        0, so every evaluation pass scores the same images). The output has 2 levels.
      return_labels: elements become (images, labels) with int64 labels [B]; needs a
        labelled dataset.
      dtype: tf.uint8 (default: a quarter of the memory and host-to-device traffic) or
        tf.int32 for the images; the model takes either.
      num_epochs: in training, stop after this many epochs (None: repeat forever).
      check_values: assert every batch's pixels are < levels (cheap; skipped for 256 levels,
        where uint8 cannot exceed the range).
      verify_files: before building, check that every shard exists and has the manifest's
        size (one stat per shard; catches missing and truncated shards with a clear error).
      buffer_size: read buffer per shard file in bytes.

    Returns:
      A `tf.data.Dataset` of images [B, H, W, C] (dtype `dtype`, values in [0, levels)), or
      of (images, labels [B]) when `return_labels`.

    Raises:
      DataError: missing/invalid manifest, unknown split, shape or levels mismatch, missing or
        wrongly sized shard, bad arguments. A shard found corrupt while reading raises
        tf.errors.InvalidArgumentError naming the shard file.
    """
    manifest = read_manifest(data_dir)
    info = manifest.split(split)
    _check_request(manifest, info, batch_size, expected_shape, expected_levels, binarize,
                   return_labels, dtype)
    if verify_files:
        check_files(manifest, split)
    if deterministic and seed is None:
        seed = 0

    files, num_files, policy, shard_files = _pipeline_files(manifest, split, num_workers,
                                                            input_context)
    # Sharding by record (DATA) keeps every n-th element of a stream that must then be the
    # same on every worker: fixed order and seeded shuffles. Sharding by FILE needs the
    # same file order, so the file shuffle always has a seed.
    data_sharded = shard_files is False or (
        policy == tf.data.experimental.AutoShardPolicy.DATA and num_workers > 1)
    if data_sharded and seed is None:
        seed = 0x5EED
    file_seed = 0x5EED if seed is None else seed
    ordered = bool(deterministic or not training or data_sharded)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    options.deterministic = ordered

    if training:
        files = files.shuffle(num_files, seed=file_seed, reshuffle_each_iteration=True)
    compression = manifest.compression
    serialized = files.interleave(
        lambda p, n: _read_shard(p, n, compression, buffer_size),
        cycle_length=max(1, min(num_files, 16)),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=ordered,
    ).unbatch()
    if shard_files is False:  # manual data sharding (input_context with too few shards)
        serialized = serialized.shard(input_context.num_input_pipelines,
                                      input_context.input_pipeline_id)
    if training:
        serialized = serialized.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        serialized = serialized.repeat(num_epochs)
    batches = serialized.batch(batch_size, drop_remainder=training)

    decode = _batch_decoder(manifest, batch_size if training else None, return_labels, dtype,
                            check_values)
    if binarize:
        # Evaluation must score the same binarization on every pass: default seed 0.
        noise_seed = seed if (seed is not None or training) else 0
        noise_seeds = tf.data.Dataset.random(seed=noise_seed).batch(2, drop_remainder=True)
        batches = tf.data.Dataset.zip((batches, noise_seeds))
    ds = batches.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options)


def label_counts(data_dir: str, split: str, num_classes: int) -> np.ndarray:
    """How many examples of the split carry each label: int64 [num_classes] (one pass over
    the labels; DataError for a dataset without labels or a label >= num_classes)."""
    manifest = read_manifest(data_dir)
    if not manifest.has_labels:
        raise DataError(f"{data_dir}: the dataset has no labels")
    counts = np.zeros(num_classes, np.int64)
    dataset = make_dataset(data_dir, split, 4096, False, return_labels=True,
                           check_values=False).map(lambda images, labels: labels)
    for labels in dataset.as_numpy_iterator():
        if labels.size and labels.max() >= num_classes:
            raise DataError(f"{data_dir}: split {split!r} has label {labels.max()}, outside "
                            f"[0, {num_classes})")
        counts += np.bincount(labels, minlength=num_classes)
    return counts


def _check_request(manifest, info, batch_size, expected_shape, expected_levels, binarize,
                   return_labels, dtype):
    """Raises DataError when `make_dataset`'s arguments do not fit the dataset."""
    data_dir = manifest.data_dir
    levels = 2 if binarize else manifest.levels
    shape_str = "x".join(map(str, manifest.image_shape))
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if expected_shape is not None and tuple(expected_shape) != manifest.image_shape:
        want = "x".join(map(str, expected_shape))
        raise DataError(f"{data_dir}: images are {shape_str} but the model expects {want}")
    if expected_levels is not None and expected_levels != levels:
        hint = ""
        if expected_levels == 2 and manifest.levels > 2:
            hint = " (use binarize=True for dynamic binarization, or convert with --binarize)"
        raise DataError(f"{data_dir}: pixels have {levels} levels but the model expects "
                        f"{expected_levels}{hint}")
    if return_labels and not manifest.has_labels:
        raise DataError(f"{data_dir}: return_labels=True but the dataset has no labels")
    if dtype not in (tf.uint8, tf.int32):
        raise DataError(f"dtype must be tf.uint8 or tf.int32, got {dtype!r}")
    if info.num_examples == 0:
        raise DataError(f"{data_dir}: split {info.name!r} is empty")


def _pipeline_files(manifest, split, num_workers, input_context):
    """The shards this input pipeline reads, and how tf.distribute shares the data.

    Returns (dataset of (path, record count), number of files, AutoShardPolicy, shard_files):
    shard_files is True when `input_context` gave this pipeline whole shards, False when it
    must take every n-th record itself (too few shards), None without an input context.
    """
    paths = manifest.shard_paths(split)
    counts = [s.num_examples for s in manifest.split(split).shards]
    files = tf.data.Dataset.from_tensor_slices((paths, tf.constant(counts, tf.int64)))
    num_files = len(paths)
    if input_context is None or input_context.num_input_pipelines <= 1:
        return files, num_files, auto_shard_policy(num_files, num_workers), None
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    shard_files = num_files >= n
    if shard_files:
        files = files.shard(n, i)
        num_files = len(range(i, len(paths), n))
    return files, num_files, tf.data.experimental.AutoShardPolicy.OFF, shard_files


def _batch_decoder(manifest, static_batch, return_labels, dtype, check_values):
    """The map function of `make_dataset`: one batch of serialized Examples (and, when
    binarizing, a noise seed) -> the output element, in a single map stage."""
    h, w, c = manifest.image_shape
    shape_str = "x".join(map(str, manifest.image_shape))
    size_message = f"{manifest.data_dir}: a record's image is not {shape_str} uint8 bytes"
    value_limit = manifest.levels if (check_values and manifest.levels < 256) else None
    denom = float(manifest.levels - 1)

    def decode(serialized, noise_seed=None):
        images, labels = records.decode_images(serialized, manifest.image_shape,
                                               labels=return_labels, size_message=size_message)
        if value_limit is not None:
            range_ok = tf.debugging.assert_less(
                tf.reduce_max(images), tf.constant(value_limit, tf.uint8),
                message=f"{manifest.data_dir}: pixel value >= levels ({value_limit})")
            with tf.control_dependencies([range_ok]):
                images = tf.identity(images)
        if noise_seed is not None:  # dynamic binarization: 1 with probability x / top level
            u = tf.random.stateless_uniform(tf.shape(images), seed=noise_seed)
            images = tf.cast(u < tf.cast(images, tf.float32) / denom, tf.uint8)
        images.set_shape([static_batch, h, w, c])
        images = tf.cast(images, dtype)
        return (images, labels) if return_labels else images

    return decode
