"""pixelrnn_tf.data: exact evaluation pass, training shuffle/repeat, options, sharding, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data_prep.convert import convert
from pixelrnn_tf import data

import data_fixtures as fx

N = 103  # not a multiple of any batch size used below


@pytest.fixture(scope="module")
def ids_dir(tmp_path_factory):
    """103 images 4x4x1 whose first pixels spell their id, label id % 7, in 4 shards."""
    root = tmp_path_factory.mktemp("reader")
    np.save(root / "x.npy", fx.ids_images(N))
    np.save(root / "y.npy", np.arange(N) % 7)
    for comp in ("none", "GZIP"):
        convert([f"npy:{root / 'x.npy'},{root / 'y.npy'}"], str(root / comp), shards=4,
                compression=comp, shuffle=False, source_levels=256, log=lambda m: None)
    return root


@pytest.fixture(scope="module")
def grey_dir(tmp_path_factory):
    """40 images 8x8x1 of random levels 0..255, 2 shards."""
    root = tmp_path_factory.mktemp("grey")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    np.save(root / "g.npy", images)
    convert([f"npy:{root / 'g.npy'}"], str(root / "ds"), shards=2, shuffle=False,
            log=lambda m: None)
    return root / "ds", images[..., None]


def ids_of(ds, batches=None):
    """Image ids per batch: all batches, or the first `batches` of an endless dataset."""
    out = []
    for el in ds.take(-1 if batches is None else batches):
        out.append(fx.image_ids(el.numpy()))
    return out


def test_manifest_and_num_examples(ids_dir):
    m = data.read_manifest(str(ids_dir / "none"))
    assert m.image_shape == (4, 4, 1) and m.levels == 256 and m.has_labels
    assert m.num_classes == 7 and m.compression is None
    assert [s.num_examples for s in m.split("train").shards] == [25, 26, 26, 26]
    assert data.num_examples(str(ids_dir / "none"), "train") == N
    with pytest.raises(data.DataError, match="no split 'test'"):
        m.split("test")


@pytest.mark.parametrize("comp", ["none", "GZIP"])
def test_evaluation_is_one_exact_pass(ids_dir, comp):
    ds = data.make_dataset(str(ids_dir / comp), "train", batch_size=10, training=False)
    batches = ids_of(ds)
    assert [len(b) for b in batches] == [10] * 10 + [3]  # the remainder is kept
    assert sorted(np.concatenate(batches)) == list(range(N))
    assert [list(b) for b in ids_of(ds)] == [list(b) for b in batches]  # fixed order
    first = next(iter(ds))
    assert first.dtype == tf.uint8 and first.shape == (10, 4, 4, 1)


def test_training_shuffles_repeats_full_batches(ids_dir):
    d = str(ids_dir / "none")
    ds = data.make_dataset(d, "train", batch_size=10, training=True, seed=1,
                           deterministic=True)
    assert ds.element_spec.shape == (10, 4, 4, 1)  # static batch for training
    ids = np.concatenate(ids_of(ds, 31))  # 3 epochs
    assert sorted(ids[:N]) == list(range(N))  # one full epoch first: every image once
    assert sorted(ids[N:2 * N]) == list(range(N))
    assert list(ids[:N]) != list(range(N))  # shuffled
    assert list(ids[:N]) != list(ids[N:2 * N])  # reshuffled every epoch
    # The default (faster) order may swap neighbouring batches across an epoch boundary.
    ds = data.make_dataset(d, "train", batch_size=10, training=True)
    counts = np.bincount(np.concatenate(ids_of(ds, 31)), minlength=N)
    assert counts.min() >= 2 and counts.max() <= 4


def test_splits_joined_with_plus_read_as_one(tmp_path):
    """"train+validation" is one split holding the images of both (a final model's data)."""
    np.save(tmp_path / "x.npy", fx.ids_images(N))
    d = str(tmp_path / "ds")
    convert([f"npy:{tmp_path / 'x.npy'}"], d, val_fraction=0.3, shards=2, seed=0,
            log=lambda m: None)
    m = data.read_manifest(d)
    joined = m.split("train+validation")
    assert joined.num_examples == N == m.num_examples("train") + m.num_examples("validation")
    assert joined.shards == m.split("train").shards + m.split("validation").shards
    ds = data.make_dataset(d, "train+validation", batch_size=10, training=False)
    assert sorted(np.concatenate(ids_of(ds))) == list(range(N))  # every image once
    ds = data.make_dataset(d, "train+validation", batch_size=10, training=True, num_epochs=1,
                           seed=0, shuffle_buffer=N)
    assert len(set(np.concatenate(ids_of(ds)))) == 100  # one epoch of both, last batch dropped
    with pytest.raises(data.DataError, match="no split 'nope'"):
        data.make_dataset(d, "train+nope", batch_size=10, training=False)
    with pytest.raises(data.DataError, match="'train\\+train' names a split twice"):
        m.split("train+train")


def test_num_epochs_bounds_training(ids_dir):
    ds = data.make_dataset(str(ids_dir / "none"), "train", batch_size=10, training=True,
                           num_epochs=2, seed=0)
    ids = np.concatenate(ids_of(ds))
    assert len(ids) == 200  # 206 examples, last partial batch dropped
    assert np.bincount(ids, minlength=N).max() == 2


def test_deterministic_with_seed(ids_dir):
    def first(seed):
        ds = data.make_dataset(str(ids_dir / "none"), "train", batch_size=8, training=True,
                               deterministic=True, seed=seed)
        return np.concatenate(ids_of(ds, 20))

    a, b, c = first(3), first(3), first(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_labels_dtype_and_int32(ids_dir):
    ds = data.make_dataset(str(ids_dir / "none"), "train", batch_size=16, training=False,
                           return_labels=True, dtype=tf.int32)
    for images, labels in ds:
        assert images.dtype == tf.int32 and labels.dtype == tf.int64
        np.testing.assert_array_equal(labels.numpy(), fx.image_ids(images.numpy()) % 7)


def test_expected_shape_and_levels_are_checked(ids_dir):
    d = str(ids_dir / "none")
    with pytest.raises(data.DataError, match="images are 4x4x1 but the model expects 28x28x1"):
        data.make_dataset(d, "train", 4, True, expected_shape=(28, 28, 1))
    with pytest.raises(data.DataError, match="256 levels but the model expects 2.*binarize"):
        data.make_dataset(d, "train", 4, True, expected_levels=2)
    data.make_dataset(d, "train", 4, True, expected_shape=(4, 4, 1), expected_levels=256)
    data.make_dataset(d, "train", 4, True, expected_levels=2, binarize=True)
    with pytest.raises(data.DataError, match="batch_size"):
        data.make_dataset(d, "train", 0, True)
    with pytest.raises(data.DataError, match="no split 'valid'"):
        data.make_dataset(d, "valid", 4, True)


def test_dynamic_binarization(grey_dir):
    d, images = grey_dir
    ev = data.make_dataset(str(d), "train", batch_size=40, training=False, binarize=True,
                           seed=5)
    b = next(iter(ev)).numpy()
    assert set(np.unique(b)) == {0, 1}
    np.testing.assert_array_equal(next(iter(ev)).numpy(), b)  # evaluation: same every pass
    # Bernoulli(x / 255): the mean matches, and bright pixels are 1 far more often.
    p = images / 255.0
    assert abs(b.mean() - p.mean()) < 0.03  # 2560 draws: sd ~0.01
    assert b[p > 0.9].mean() > 0.85 and b[p < 0.1].mean() < 0.15

    def epochs(seed):
        ds = data.make_dataset(str(d), "train", batch_size=40, training=True, binarize=True,
                               seed=seed, deterministic=True)
        return [x.numpy() for x in ds.take(2)]

    e1, e2 = epochs(5)
    assert abs(e1.mean() - e2.mean()) < 0.05
    assert not np.array_equal(e1, e2)  # fresh noise every epoch
    np.testing.assert_array_equal(epochs(5)[0], e1)  # reproducible with the seed
    assert not np.array_equal(epochs(6)[0], e1)


def test_auto_shard_policy_file_and_data(ids_dir):
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    policy = tf.data.experimental.AutoShardPolicy
    assert data.auto_shard_policy(4, 2) == policy.FILE
    assert data.auto_shard_policy(4, 4) == policy.FILE
    assert data.auto_shard_policy(4, 8) == policy.DATA
    d = str(ids_dir / "none")
    for workers, expected in ((2, policy.FILE), (8, policy.DATA)):
        for training in (False, True):
            parts = []
            for i in range(workers):
                ds = data.make_dataset(d, "train", batch_size=1, training=training,
                                       num_workers=workers, num_epochs=1, seed=0)
                assert ds.options().experimental_distribute.auto_shard_policy == expected
                # What tf.distribute does to the dataset on worker i:
                parts.append(np.concatenate(ids_of(_AutoShardDataset(ds, workers, i))))
            # Disjoint shares that together are one exact epoch.
            assert sorted(np.concatenate(parts)) == list(range(N)), (workers, training)
            if expected == policy.FILE:  # whole shards: 2 of the 4 per worker
                assert sorted(len(p) for p in parts) == [51, 52]


def test_input_context_sharding(ids_dir):
    d = str(ids_dir / "none")
    for pipelines in (2, 8):  # whole files, then every n-th record
        parts = []
        for i in range(pipelines):
            ctx = tf.distribute.InputContext(num_input_pipelines=pipelines,
                                             input_pipeline_id=i, num_replicas_in_sync=1)
            ds = data.make_dataset(d, "train", batch_size=5, training=False,
                                   input_context=ctx)
            assert (ds.options().experimental_distribute.auto_shard_policy
                    == tf.data.experimental.AutoShardPolicy.OFF)
            parts.append(np.concatenate(ids_of(ds)))
        assert sorted(np.concatenate(parts)) == list(range(N))


def _copy(src, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(src, d)
    return d


@pytest.mark.parametrize("comp", ["none", "GZIP"])
def test_corrupt_shard_in_training_names_the_shard(ids_dir, tmp_path, comp):
    d = _copy(ids_dir / comp, tmp_path)
    shard = sorted(d.glob("train-00002-*"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # same size: passes the construction-time check
    shard.write_bytes(bytes(raw))
    ds = data.make_dataset(str(d), "train", batch_size=8, training=True, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=str(shard)):
        for _ in ds.take(100):
            pass


def test_truncated_or_missing_shard(ids_dir, tmp_path):
    d = _copy(ids_dir / "none", tmp_path)
    shard = d / "train-00001-of-00004.tfrecord"
    ends = fx.record_offsets(shard)
    shard.write_bytes(shard.read_bytes()[: ends[-2]])  # cut exactly at a record boundary
    with pytest.raises(data.DataError, match=f"{shard}: shard is .* bytes but the manifest"):
        data.make_dataset(str(d), "train", 8, True)
    # Even without the size check, reading notices the missing record and names the shard.
    ds = data.make_dataset(str(d), "train", 8, False, verify_files=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"{shard}.*read.*{len(ends) - 1}.*records, manifest says.*"
                             f"{len(ends)}"):
        list(ds)
    shard.unlink()
    with pytest.raises(data.DataError, match=f"{shard}: shard listed in the manifest is "
                                             "missing"):
        data.make_dataset(str(d), "train", 8, True)


def test_values_above_levels_fail(tmp_path):
    convert(["digits"], str(tmp_path / "d"), log=lambda m: None)
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    m["levels"] = 8  # digits use 17
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(m))
    ds = data.make_dataset(str(tmp_path / "d"), "train", 64, False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixel value >= levels"):
        list(ds)


def test_manifest_errors(tmp_path):
    with pytest.raises(data.DataError, match="manifest.json: not found .no such directory"):
        data.read_manifest(str(tmp_path / "nope"))
    (tmp_path / "manifest.json").write_text("[1, 2")
    with pytest.raises(data.DataError, match="not valid JSON"):
        data.read_manifest(str(tmp_path))
    convert(["digits"], str(tmp_path / "d"), log=lambda m: None)
    good = json.loads((tmp_path / "d" / "manifest.json").read_text())
    for change, msg in (({"format_version": 99}, "newer than this reader"),
                        ({"levels": 1000}, "'levels'"),
                        ({"image_shape": [8, 8]}, "'image_shape'"),
                        ({"compression": "ZLIB"}, "'compression'"),
                        ({"splits": {}}, "'splits'")):
        (tmp_path / "manifest.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(data.DataError, match=msg):
            data.read_manifest(str(tmp_path))
