"""data_prep convert: every SOURCE form round-trips; options; bad input fails cleanly
(verify: test_data_prep_verify.py)."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from data_prep import sources
from data_prep import write as write_mod
from data_prep.convert import convert

import data_fixtures as fx
from data_fixtures import manifest, verify_ok


def counts(d):
    return {k: v["num_examples"] for k, v in manifest(d)["splits"].items()}


def assert_clean_failure(rc, err, out_dir, needle, code=1):
    """One line on stderr naming the problem, non-zero exit, nothing left behind."""
    lines = err.strip().splitlines()
    assert rc == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("data_prep: error:"), err
    assert needle in lines[0], err
    assert "Traceback" not in err
    assert fx.leftovers(out_dir) == []


# ----------------------------------------------------------------------------- real data


def test_binarized_mnist_npz(tmp_path, capsys):
    npz = fx.shared_file("binarized_mnist/binarized_mnist.npz")
    out = tmp_path / "bmnist"
    rc, stdout, err = fx.run_cli(capsys, "convert", f"npz:{npz}", "--out", out)
    assert rc == 0, err
    m = manifest(out)
    assert m["image_shape"] == [28, 28, 1] and m["levels"] == 2
    assert counts(out) == {"train": 50000, "validation": 10000, "test": 10000}
    verify_ok(capsys, out)
    z = np.load(npz, allow_pickle=False)
    test, _ = fx.read_split(out, "test", expected_shape=(28, 28, 1), expected_levels=2)
    np.testing.assert_array_equal(test.reshape(10000, 784), z["test"])  # order kept
    valid, _ = fx.read_split(out, "validation")
    np.testing.assert_array_equal(valid.reshape(10000, 784), z["valid"])
    train, _ = fx.read_split(out, "train")
    assert not np.array_equal(train.reshape(50000, 784), z["train"])  # shuffled on write
    np.testing.assert_array_equal(fx.as_rows(train), fx.as_rows(z["train"]))


def test_mnist_two_npz_files_with_validation(tmp_path, capsys):
    tr = fx.shared_file("mnist/mnist_train.npz")
    te = fx.shared_file("mnist/mnist_test.npz")
    out = tmp_path / "mnist"
    rc, _, err = fx.run_cli(capsys, "convert", f"npz:{tr}", f"npz:{te}", "--splits",
                            "train,test", "--val-fraction", "0.1", "--name", "mnist",
                            "--out", out)
    assert rc == 0, err
    assert counts(out) == {"train": 54000, "validation": 6000, "test": 10000}
    m = manifest(out)
    assert m["dataset"] == "mnist" and m["levels"] == 256 and m["num_classes"] == 10
    ztr, zte = np.load(tr), np.load(te)
    train = fx.read_split(out, "train")
    valid = fx.read_split(out, "validation")
    test = fx.read_split(out, "test")
    np.testing.assert_array_equal(test[0][..., 0], zte["images"])
    np.testing.assert_array_equal(test[1], zte["labels"])
    both = fx.as_rows(np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]]))
    np.testing.assert_array_equal(both, fx.as_rows(ztr["images"], ztr["labels"]))


def test_mnist_idx_matches_npz_gzipped_or_not(tmp_path, capsys):
    images = fx.shared_file("mnist/t10k-images-idx3-ubyte.gz")
    labels = fx.shared_file("mnist/t10k-labels-idx1-ubyte.gz")
    ref = np.load(fx.shared_file("mnist/mnist_test.npz"))
    plain = tmp_path / "t10k-images-idx3-ubyte"  # the same file, not gzipped
    import gzip

    plain.write_bytes(gzip.decompress(images.read_bytes()))
    for name, img in (("gz", images), ("raw", plain)):
        out = tmp_path / name
        rc, _, err = fx.run_cli(capsys, "convert", f"idx:{img},{labels}", "--splits", "test",
                                "--out", out)
        assert rc == 0, err
        got, lab = fx.read_split(out, "test")
        np.testing.assert_array_equal(got[..., 0], ref["images"])
        np.testing.assert_array_equal(lab, ref["labels"])


def test_cifar10_jpeg_npz_gzip_and_show(tmp_path, capsys):
    npz = fx.shared_file("cifar10_jpeg/cifar10_test_jpeg.npz")
    out = tmp_path / "cifar"
    names = "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"
    rc, _, err = fx.run_cli(capsys, "convert", f"npz:{npz}", "--val-fraction", "0.1",
                            "--test-fraction", "0.1", "--compression", "GZIP",
                            "--label-names", names, "--out", out)
    assert rc == 0, err
    assert counts(out) == {"train": 8000, "validation": 1000, "test": 1000}
    m = manifest(out)
    assert m["compression"] == "GZIP" and m["image_shape"] == [32, 32, 3]
    assert m["label_names"] == names.split(",")
    assert all(s["file"].endswith(".tfrecord.gz") for v in m["splits"].values()
               for s in v["shards"])
    verify_ok(capsys, out)
    z = np.load(npz)
    parts = [fx.read_split(out, s) for s in ("train", "validation", "test")]
    np.testing.assert_array_equal(
        fx.as_rows(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
        fx.as_rows(z["images"], z["labels"]))
    png = tmp_path / "grid.png"
    rc, stdout, err = fx.run_cli(capsys, "show", out, "--png", png, "--num", "10")
    assert rc == 0, err
    assert "32x32x3, 256 levels" in stdout and "airplane" in stdout
    from PIL import Image

    with Image.open(png) as im:  # 8 columns x 2 rows of 64x64 cells, 2 px gaps
        assert im.size == (8 * 66 + 2, 2 * 66 + 2)


# ----------------------------------------------------------------------------- built-in forms


def test_digits_and_deterministic_seed(tmp_path, capsys):
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / name
        rc, _, err = fx.run_cli(capsys, "convert", "digits", "--val-fraction", "0.1",
                                "--test-fraction", "0.1", "--seed", seed, "--out", out)
        assert rc == 0, err
        outs.append(out)
    m = manifest(outs[0])
    assert m["levels"] == 17 and m["image_shape"] == [8, 8, 1]
    assert m["label_names"] == [str(i) for i in range(10)]
    assert counts(outs[0]) == {"train": 1437, "validation": 180, "test": 180}
    sha = [[s["sha256"] for v in manifest(o)["splits"].values() for s in v["shards"]]
           for o in outs]
    assert sha[0] == sha[1] and sha[0] != sha[2]
    images, labels = fx.read_split(outs[0], "train")
    assert images.max() == 16 and labels.max() == 9
    from sklearn.datasets import load_digits

    d = load_digits()
    allrows = [fx.read_split(outs[0], s) for s in ("train", "validation", "test")]
    np.testing.assert_array_equal(
        fx.as_rows(np.concatenate([a[0] for a in allrows]),
                   np.concatenate([a[1] for a in allrows])),
        fx.as_rows(d.images.astype(np.uint8), d.target))


def test_npy_flat_with_image_shape_and_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 4 * 6 * 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 30)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    out = tmp_path / "out"
    rc, _, err = fx.run_cli(capsys, "convert", f"npy:{tmp_path / 'x.npy'},{tmp_path / 'y.npy'}",
                            "--image-shape", "4,6,3", "--no-shuffle", "--out", out)
    assert rc == 0, err
    got, lab = fx.read_split(out, "train")
    assert got.shape == (30, 4, 6, 3)
    np.testing.assert_array_equal(got, images.reshape(30, 4, 6, 3))
    np.testing.assert_array_equal(lab, labels)


def test_npz_keras_layout_and_explicit_keys(tmp_path, capsys):
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (20, 5, 5), dtype=np.uint8),
              "y_train": rng.integers(0, 3, 20), "x_test": rng.integers(0, 256, (7, 5, 5),
                                                                       dtype=np.uint8),
              "y_test": rng.integers(0, 3, 7)}
    np.savez(tmp_path / "k.npz", **arrays)
    out = tmp_path / "auto"
    rc, _, err = fx.run_cli(capsys, "convert", f"npz:{tmp_path / 'k.npz'}", "--out", out)
    assert rc == 0, err
    assert counts(out) == {"train": 20, "test": 7}
    test = fx.read_split(out, "test")
    np.testing.assert_array_equal(test[0][..., 0], arrays["x_test"])
    np.testing.assert_array_equal(test[1], arrays["y_test"])
    out2 = tmp_path / "explicit"
    rc, _, err = fx.run_cli(capsys, "convert", f"npz:{tmp_path / 'k.npz'}", "--split-keys",
                            "train=x_test", "--split-label-keys", "train=y_test", "--no-shuffle",
                            "--out", out2)
    assert rc == 0, err
    got = fx.read_split(out2, "train")
    np.testing.assert_array_equal(got[0][..., 0], arrays["x_test"])
    np.testing.assert_array_equal(got[1], arrays["y_test"])


def test_amat_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(2)
    rows = {s: rng.integers(0, 2, (n, 784)) for s, n in (("train", 5), ("valid", 3),
                                                          ("test", 4))}
    paths = []
    for s, r in rows.items():
        p = tmp_path / f"binarized_mnist_{s}.amat"
        fx.write_amat(p, r)
        paths.append(str(p))
    out = tmp_path / "out"
    rc, _, err = fx.run_cli(capsys, "convert", "amat:" + ",".join(paths), "--no-shuffle",
                            "--out", out)
    assert rc == 0, err
    m = manifest(out)
    assert m["levels"] == 2 and m["image_shape"] == [28, 28, 1]
    assert counts(out) == {"train": 5, "validation": 3, "test": 4}
    for split, key in (("train", "train"), ("validation", "valid"), ("test", "test")):
        got, _ = fx.read_split(out, split)
        np.testing.assert_array_equal(got.reshape(-1, 784), rows[key])


def test_amat_matches_binarized_mnist_npz(tmp_path, capsys):
    """The amat text and the npz of the same data convert to identical images."""
    z = np.load(fx.shared_file("binarized_mnist/binarized_mnist.npz"))
    p = tmp_path / "part.amat"
    fx.write_amat(p, z["test"][:50])
    out = tmp_path / "out"
    rc, _, err = fx.run_cli(capsys, "convert", f"amat:{p}", "--splits", "test", "--out", out)
    assert rc == 0, err
    got, _ = fx.read_split(out, "test")
    np.testing.assert_array_equal(got.reshape(50, 784), z["test"][:50])


def test_cifar10_binary(tmp_path, capsys):
    ref = fx.write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    out = tmp_path / "out"
    rc, _, err = fx.run_cli(capsys, "convert", f"cifar10-bin:{tmp_path}", "--no-shuffle",
                            "--out", out)
    assert rc == 0, err
    m = manifest(out)
    assert m["image_shape"] == [32, 32, 3] and m["label_names"][0] == "airplane"
    assert counts(out) == {"train": 15, "test": 2}
    for split in ("train", "test"):
        got, lab = fx.read_split(out, split)
        np.testing.assert_array_equal(got, ref[split][0])  # R, G, B planes -> HWC
        np.testing.assert_array_equal(lab, ref[split][1])


def test_cifar10_python_version_refused(tmp_path, capsys):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for f in ("data_batch_1", "test_batch", "batches.meta"):
        (root / f).write_bytes(b"\x80\x02}q\x00.")  # a pickle; must never be loaded
    out = tmp_path / "out"
    rc, _, err = fx.run_cli(capsys, "convert", f"cifar10-bin:{root}", "--out", out)
    assert_clean_failure(rc, err, out, "never unpickles")


def test_image_folder_labels_resize_grayscale(tmp_path, capsys):
    files = fx.write_image_folder(tmp_path / "imgs")
    out = tmp_path / "no_resize"
    rc, _, err = fx.run_cli(capsys, "convert", f"images:{tmp_path / 'imgs'}", "--out", out)
    assert_clean_failure(rc, err, out, "different sizes")

    out = tmp_path / "r15"
    rc, _, err = fx.run_cli(capsys, "convert", f"images:{tmp_path / 'imgs'}", "--resize", "15",
                            "--no-shuffle", "--out", out)
    assert rc == 0, err
    m = manifest(out)
    assert m["image_shape"] == [15, 15, 3] and m["label_names"] == ["cat", "dog"]
    got, lab = fx.read_split(out, "train")
    assert list(lab) == [0, 0, 1, 1]
    # a.png is 40 wide x 30 high: centre 30x30 crop, then each pixel the mean of a 2x2 block.
    a = files["cat/a.png"][:, 5:35].astype(np.float64)
    expect = a.reshape(15, 2, 15, 2, 3).mean(axis=(1, 3))
    assert np.abs(got[0] - expect).max() <= 1.0

    out = tmp_path / "grey"
    rc, _, err = fx.run_cli(capsys, "convert", f"images:{tmp_path / 'imgs'}", "--resize", "8",
                            "--grayscale", "--out", out)
    assert rc == 0, err
    assert manifest(out)["image_shape"] == [8, 8, 1]
    verify_ok(capsys, out)


def test_image_folder_same_size_no_labels(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(3)
    arrs = [rng.integers(0, 256, (6, 7), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrs):
        Image.fromarray(a, "L").save(tmp_path / f"{i}.png")
    out = tmp_path.parent / (tmp_path.name + "_out")
    rc, _, err = fx.run_cli(capsys, "convert", f"images:{tmp_path}", "--no-shuffle",
                            "--out", out)
    assert rc == 0, err
    m = manifest(out)
    assert m["image_shape"] == [6, 7, 1] and not m["has_labels"]
    got, _ = fx.read_split(out, "train")
    np.testing.assert_array_equal(got[..., 0], np.stack(arrs))
    shutil.rmtree(out)


def test_image_folders_as_splits_share_class_indices(tmp_path, capsys):
    from PIL import Image

    for split, classes in (("train", ["cat", "dog", "emu"]), ("test", ["cat", "emu"])):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((4, 4), len(cls), np.uint8), "L").save(
                tmp_path / split / cls / "x.png")
    out = tmp_path / "out"
    rc, stdout, err = fx.run_cli(capsys, "convert", f"images:{tmp_path / 'train'}",
                                 f"images:{tmp_path / 'test'}", "--splits", "train,test",
                                 "--no-shuffle", "--out", out)
    assert rc == 0, err
    assert manifest(out)["label_names"] == ["cat", "dog", "emu"]
    assert list(fx.read_split(out, "test")[1]) == [0, 2]  # emu is 2 in both splits
    rc, stdout, err = fx.run_cli(capsys, "show", out)
    assert rc == 0 and "labels: 3 classes (cat, dog, emu)" in stdout
    assert "train" in stdout and "test" in stdout


# ----------------------------------------------------------------------------- tfds (mocked)


def test_tfds_through_mock_data(tmp_path, monkeypatch, capsys):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(sources, "can_reach", lambda url, timeout=3.0: True)
    out = tmp_path / "mnist"
    with tfds.testing.mock_data(num_examples=12):
        rc, _, err = fx.run_cli(capsys, "convert", "tfds:mnist", "--out", out)
    assert rc == 0, err
    m = manifest(out)
    assert m["image_shape"] == [28, 28, 1] and m["levels"] == 256
    assert m["label_names"] == [str(i) for i in range(10)]
    assert counts(out) == {"train": 12, "test": 12}
    verify_ok(capsys, out)
    out = tmp_path / "bin"
    with tfds.testing.mock_data(num_examples=5, max_value=1):
        rc, _, err = fx.run_cli(capsys, "convert", "tfds:binarized_mnist", "--splits",
                                "train=train[:50%],test", "--out", out)
    assert rc == 0, err
    assert manifest(out)["levels"] == 2 and set(counts(out)) == {"train", "test"}


def test_tfds_stream_carves_validation(tmp_path, monkeypatch, capsys):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(sources, "can_reach", lambda url, timeout=3.0: True)
    out = tmp_path / "carved"
    with tfds.testing.mock_data(num_examples=20):
        rc, _, err = fx.run_cli(capsys, "convert", "tfds:mnist", "--splits", "train",
                                "--val-fraction", "0.25", "--shards", "train=2", "--out", out)
        # the mocked builder's records, read without tfds' download-and-prepare step
        ref = list(tfds.as_numpy(tfds.builder("mnist").as_dataset(split="train")))
    assert rc == 0, err
    assert counts(out) == {"train": 15, "validation": 5}
    assert len(manifest(out)["splits"]["train"]["shards"]) == 2
    parts = [fx.read_split(out, s) for s in ("train", "validation")]
    np.testing.assert_array_equal(
        fx.as_rows(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
        fx.as_rows(np.stack([r["image"] for r in ref]), np.array([r["label"] for r in ref])))


def test_tfds_unprepared_offline_fails_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources, "can_reach", lambda url, timeout=3.0: False)
    out = tmp_path / "out"
    t = time.time()
    rc, _, err = fx.run_cli(capsys, "convert", "tfds:mnist", "--tfds-data-dir",
                            tmp_path / "tfds", "--out", out)
    assert time.time() - t < 30
    assert_clean_failure(rc, err, out, "not prepared")
    assert "idx:" in err  # says what to use instead
    assert not (tmp_path / "tfds").exists()


# ----------------------------------------------------------------------------- options


@pytest.fixture()
def grey_npy(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "g.npy", images)
    return tmp_path / "g.npy", images


def test_binarize_threshold_and_levels(tmp_path, capsys, grey_npy):
    path, images = grey_npy
    out = tmp_path / "thr"
    rc, _, err = fx.run_cli(capsys, "convert", f"npy:{path}", "--binarize", "threshold:0.5",
                            "--no-shuffle", "--out", out)
    assert rc == 0, err
    got, _ = fx.read_split(out, "train")
    assert manifest(out)["levels"] == 2
    np.testing.assert_array_equal(got[..., 0], (images >= 128).astype(np.uint8))
    out = tmp_path / "l4"
    rc, _, err = fx.run_cli(capsys, "convert", f"npy:{path}", "--levels", "4", "--no-shuffle",
                            "--out", out)
    assert rc == 0, err
    got, _ = fx.read_split(out, "train")
    assert manifest(out)["levels"] == 4
    np.testing.assert_array_equal(got[..., 0], images // 64)


def test_binarize_stochastic_is_seeded(tmp_path, capsys, grey_npy):
    path, images = grey_npy
    digests, means = [], []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / name
        rc, _, err = fx.run_cli(capsys, "convert", f"npy:{path}", "--binarize",
                                f"stochastic:{seed}", "--no-shuffle", "--out", out)
        assert rc == 0, err
        digests.append(manifest(out)["splits"]["train"]["shards"][0]["sha256"])
        got, _ = fx.read_split(out, "train")
        assert set(np.unique(got)) <= {0, 1}
        means.append(got.mean())
    assert digests[0] == digests[1] != digests[2]
    assert abs(means[0] - (images / 255.0).mean()) < 0.05  # 1440 draws: sd ~0.013


def test_shards_workers_limit_and_overwrite(tmp_path, capsys, grey_npy):
    path, images = grey_npy
    out = tmp_path / "s"
    rc, _, err = fx.run_cli(capsys, "convert", f"npy:{path}", "--shards", "3", "--out", out)
    assert rc == 0, err
    shards = manifest(out)["splits"]["train"]["shards"]
    assert [s["file"] for s in shards] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert [s["num_examples"] for s in shards] == [13, 13, 14]
    verify_ok(capsys, out)
    # Existing dataset: refused without --overwrite (and left intact), replaced with it.
    before = (out / "manifest.json").read_text()
    rc, _, err = fx.run_cli(capsys, "convert", f"npy:{path}", "--out", out)
    assert rc == 1 and "--overwrite" in err and (out / "manifest.json").read_text() == before
    rc, _, err = fx.run_cli(capsys, "convert", f"npy:{path}", "--workers", "4", "--limit", "10",
                            "--overwrite", "--out", out)
    assert rc == 0, err
    assert counts(out) == {"train": 10}
    assert len(manifest(out)["splits"]["train"]["shards"]) == 4
    assert sorted(os.listdir(out)) == ["manifest.json"] + [
        f"train-0000{i}-of-00004.tfrecord" for i in range(4)]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_overwrite_refuses_a_directory_that_is_not_a_dataset(tmp_path, capsys, grey_npy):
    path, _ = grey_npy
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc, _, err = fx.run_cli(capsys, "convert", f"npy:{path}", "--overwrite", "--out", out)
    assert rc == 1 and "not a data_prep dataset" in err
    assert (out / "notes.txt").read_text() == "keep me"


def test_interrupted_convert_leaves_nothing(tmp_path, capsys, monkeypatch, grey_npy):
    path, _ = grey_npy
    calls = []
    real_write = write_mod.SplitWriter.write

    def write_then_interrupt(self, images, labels):
        real_write(self, images, labels)
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(write_mod.SplitWriter, "write", write_then_interrupt)
    out = tmp_path / "new" / "deeper" / "out"
    rc, _, err = fx.run_cli(capsys, "convert", f"npy:{path}", "--out", out)
    assert calls and rc == 130 and "interrupted" in err
    assert not (tmp_path / "new").exists()  # also the parents it had created


def test_library_convert_raises_one_line_errors(tmp_path):
    from data_prep.errors import DataPrepError

    with pytest.raises(DataPrepError, match="no such file"):
        convert(["npz:" + str(tmp_path / "missing.npz")], str(tmp_path / "o"))


# ----------------------------------------------------------------------------- bad input


def _bad_inputs(tmp_path):
    np.savez(tmp_path / "ok.npz", images=np.zeros((3, 4, 4), np.uint8))
    # An object-dtype .npy (its payload would be a pickle), written by hand: nothing here
    # pickles; the loader must refuse it from the header alone.
    with open(tmp_path / "obj.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|O", "fortran_order": False, "shape": (2,)})
        f.write(b"\x80\x04not a pickle the loader may read")
    np.save(tmp_path / "float.npy", np.full((3, 4, 4), 0.5, np.float32))
    np.save(tmp_path / "big.npy", np.full((3, 4, 4), 300, np.int32))
    np.save(tmp_path / "chw.npy", np.zeros((3, 3, 8, 8), np.uint8))
    fx.write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(3), 2049)
    bad_amat = tmp_path / "bad.amat"
    bad_amat.write_text("0 1 0 1\n0 1 0\n")
    return {
        "unknown source": (["foo:bar"], "unknown source"),
        "missing file": ([f"npz:{tmp_path / 'nope.npz'}"], "no such file"),
        "wrong npz key": ([f"npz:{tmp_path / 'ok.npz'}", "--key", "x"], "no array 'x'"),
        "wrong idx magic": ([f"idx:{tmp_path / 'labels-idx1-ubyte'}"], "magic number 2049"),
        "pickled npy": ([f"npy:{tmp_path / 'obj.npy'}"], "never unpickles"),
        "float pixels": ([f"npy:{tmp_path / 'float.npy'}"], "non-integer"),
        "out of range": ([f"npy:{tmp_path / 'big.npy'}"], "0..255"),
        "channels first": ([f"npy:{tmp_path / 'chw.npy'}"], "channels-first"),
        "ragged amat": ([f"amat:{bad_amat}"], "line 2 has 3 values"),
        "val fraction": (["digits", "--val-fraction", "1.5"], "--val-fraction"),
        "binarize spec": (["digits", "--binarize", "sometimes"], "--binarize"),
        "levels": (["digits", "--levels", "1"], "--levels 1"),
        "levels above source": (["digits", "--levels", "64"], "more than the source"),
        "binarize and levels": (["digits", "--binarize", "threshold:0.5", "--levels", "4"],
                                "exclusive"),
        "compression": (["digits", "--compression", "ZIP"], "--compression"),
        "shards": (["digits", "--shards", "0"], "--shards"),
        "resize": (["digits", "--resize", "0"], "--resize"),
        "splits": (["digits", "--splits", "train,test"], "--splits"),
        "digits arg": (["digits:x"], "no argument"),
        "label names without labels": ([f"npz:{tmp_path / 'ok.npz'}", "--label-names", "a,b"],
                                       "no labels"),
    }


def test_bad_inputs_fail_with_one_line(tmp_path, capsys):
    for label, (args, needle) in _bad_inputs(tmp_path).items():
        out = tmp_path / "out"
        rc, _, err = fx.run_cli(capsys, "convert", *args, "--out", out)
        try:
            assert_clean_failure(rc, err, out, needle)
        except AssertionError as e:
            raise AssertionError(f"{label}: {e}") from None


def test_bad_flag_is_one_line_usage_error(tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = fx.run_cli(capsys, "convert", "digits", "--out", out, "--frobnicate")
    assert_clean_failure(rc, err, out, "--frobnicate", code=2)
