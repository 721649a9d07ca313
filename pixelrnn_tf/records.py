"""The record codec: one `tf.train.Example` per image, and the names of the shard files.

A dataset directory holds `<split>-00000-of-000NN.tfrecord` shards (`.tfrecord.gz` when
GZIP-compressed); a split name is letters, digits, `_` and `.`. Each record is one Example:

- `image`: bytes, the raw uint8 pixels of one image, row-major H x W x C;
- `height`, `width`, `channels`: int64;
- `label`: int64, only in a labelled dataset.

Encoding (`encode_examples`, numpy + protobuf) is what `data_prep convert` writes. Decoding
(`decode_images`, in the graph) is shared by the reader (`pixelrnn_tf.data`) and the
SavedModel's `serve_examples` signature; `feature_spec` is also what `data_prep verify` checks
records with. As in TF Model Garden's Decoder / Parser split, this module only turns records
into tensors; the reader turns those into model inputs (binarization, dtype, range check).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

FEATURES_DOC = {
    "image": "bytes: raw uint8 pixels, row-major H x W x C",
    "height": "int64",
    "width": "int64",
    "channels": "int64",
    "label": "int64 class index (present only when has_labels is true)",
}
SHAPE_FEATURES = ("height", "width", "channels")
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.]+$")
_SHARD_NAME = re.compile(
    r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord(?P<gz>\.gz)?$")


# ----------------------------------------------------------------------------- file names


def is_split_name(name) -> bool:
    """Whether `name` may name a split (and so start a shard file name)."""
    return isinstance(name, str) and bool(SPLIT_NAME.match(name))


def shard_filename(split: str, index: int, num_shards: int, compression: str | None) -> str:
    """`train-00003-of-00016.tfrecord` (`.tfrecord.gz` for GZIP)."""
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    return f"{split}-{index:05d}-of-{num_shards:05d}{suffix}"


def parse_shard_filename(name: str):
    """Returns (split, index, total, gzipped) for a shard file name, or None."""
    m = _SHARD_NAME.match(name)
    if not m:
        return None
    return m["split"], int(m["index"]), int(m["total"]), bool(m["gz"])


# ----------------------------------------------------------------------------- encoding


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def encode_examples(images: np.ndarray, labels=None, *,
                    shape_features: bool = True) -> Iterator[bytes]:
    """Serialized Examples, one per image, in order.

    Args:
      images: uint8 [N, H, W, C].
      labels: int [N], or None for an unlabelled dataset.
      shape_features: write `height`, `width` and `channels` (always, in a dataset; a
        client of `serve_examples` may leave them out).
    """
    _, height, width, channels = images.shape
    dims = {}
    if shape_features:
        dims = {key: _int64(size) for key, size in zip(SHAPE_FEATURES, (height, width, channels))}
    for i in range(images.shape[0]):
        feature = dict(dims)
        feature["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[images[i].tobytes()]))
        if labels is not None:
            feature["label"] = _int64(int(labels[i]))
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        yield example.SerializeToString()


def encode_example(image: np.ndarray, label=None, *, shape_features: bool = True) -> bytes:
    """One serialized Example of a uint8 [H, W, C] image (see `encode_examples`)."""
    labels = None if label is None else [label]
    return next(encode_examples(image[None], labels, shape_features=shape_features))


# ----------------------------------------------------------------------------- decoding


def feature_spec(*, labels: bool = False, shape: bool = False,
                 defaults: bool = False) -> dict[str, tf.io.FixedLenFeature]:
    """The `tf.io.parse_example` spec: `image`, plus `label` when `labels`, plus `height`,
    `width` and `channels` when `shape`.

    defaults: a record missing a feature still parses (b"" for the image, -1 for the rest),
      so a checker can count bad records instead of failing at the first.
    """
    def feature(dtype, default):
        if defaults:
            return tf.io.FixedLenFeature([], dtype, default_value=default)
        return tf.io.FixedLenFeature([], dtype)

    spec = {"image": feature(tf.string, b"")}
    if shape:
        spec.update({key: feature(tf.int64, -1) for key in SHAPE_FEATURES})
    if labels:
        spec["label"] = feature(tf.int64, -1)
    return spec


def decode_images(serialized: tf.Tensor, image_shape, *, labels: bool = False,
                  size_message: str):
    """Serialized Examples [B] -> (images uint8 [B, H, W, C], labels int64 [B] or None).

    Every record's image must hold H * W * C bytes, else the graph raises
    InvalidArgumentError with `size_message`: reshaping the whole batch alone would not
    notice records of another shape whose sizes happen to add up.
    """
    height, width, channels = image_shape
    features = tf.io.parse_example(serialized, feature_spec(labels=labels))
    raw = features["image"]
    size_ok = tf.debugging.assert_equal(tf.strings.length(raw), height * width * channels,
                                        message=size_message)
    with tf.control_dependencies([size_ok]):
        images = tf.reshape(tf.io.decode_raw(raw, tf.uint8), [-1, height, width, channels])
    return images, features.get("label")
