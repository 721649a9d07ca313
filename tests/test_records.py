"""pixelrnn_tf.records: shard file names, split names, and the Example codec round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import records


def test_shard_filenames():
    assert records.shard_filename("train", 3, 16, None) == "train-00003-of-00016.tfrecord"
    assert records.shard_filename("test", 0, 1, "GZIP") == "test-00000-of-00001.tfrecord.gz"
    assert records.parse_shard_filename("validation-00002-of-00004.tfrecord.gz") == (
        "validation", 2, 4, True)
    assert records.parse_shard_filename("train.tfrecord") is None


def test_split_names():
    for good in ("train", "validation", "train_1", "v1.2"):
        assert records.is_split_name(good)
    for bad in ("", "a b", "train/x", "train+validation", "tr-ain", None, 3):
        assert not records.is_split_name(bad)


def test_encode_then_decode_is_the_identity():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 3, 4, 2), dtype=np.uint8)
    labels = np.arange(5) * 3
    serialized = list(records.encode_examples(images, labels))
    assert serialized[2] == records.encode_example(images[2], 6)
    decoded, got_labels = records.decode_images(tf.constant(serialized), (3, 4, 2), labels=True,
                                                size_message="wrong size")
    np.testing.assert_array_equal(decoded.numpy(), images)
    np.testing.assert_array_equal(got_labels.numpy(), labels)
    example = tf.train.Example.FromString(serialized[0]).features.feature
    assert [example[k].int64_list.value[0] for k in records.SHAPE_FEATURES] == [3, 4, 2]
    assert set(example) == set(records.FEATURES_DOC)


def test_decode_without_shape_features_and_wrong_size():
    image = np.full((2, 2, 1), 7, np.uint8)
    bare = records.encode_example(image, shape_features=False)
    assert set(tf.train.Example.FromString(bare).features.feature) == {"image"}
    decoded, labels = records.decode_images(tf.constant([bare]), (2, 2, 1),
                                            size_message="wrong size")
    assert labels is None
    np.testing.assert_array_equal(decoded.numpy(), image[None])
    with pytest.raises(tf.errors.InvalidArgumentError, match="wrong size"):
        records.decode_images(tf.constant([bare]), (2, 3, 1), size_message="wrong size")


def test_lenient_spec_parses_incomplete_records():
    spec = records.feature_spec(labels=True, shape=True, defaults=True)
    parsed = tf.io.parse_example(tf.constant([tf.train.Example().SerializeToString()]), spec)
    assert parsed["image"].numpy().tolist() == [b""]
    assert [int(parsed[k][0]) for k in ("height", "width", "channels", "label")] == [-1] * 4
