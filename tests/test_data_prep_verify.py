"""data_prep verify: catches corrupt, truncated, missing, extra and renamed shards and a
manifest that lies; errors are one line, also through a real `python -m data_prep`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from data_prep.convert import convert

import data_fixtures as fx
from data_fixtures import manifest, verify_ok

# ----------------------------------------------------------------------------- verify


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """digits in 3 train shards (+ validation), plain and GZIP."""
    root = tmp_path_factory.mktemp("verify")
    for comp in ("none", "GZIP"):
        convert(["digits"], str(root / comp), shards="train=3", val_fraction=0.1,
                compression=comp, log=lambda m: None)
    return root


@pytest.fixture()
def dataset_copy(small_dataset, tmp_path):
    made = []

    def make(comp="none"):
        made.append(comp)
        d = tmp_path / f"ds{len(made)}_{comp}"
        shutil.copytree(small_dataset / comp, d)
        return d
    return make


def verify_problems(capsys, d):
    rc, out, err = fx.run_cli(capsys, "verify", d)
    lines = err.strip().splitlines()
    assert rc == 1, (out, err)
    assert lines[-1].startswith("verify:")
    return lines[:-1]


def test_verify_clean(dataset_copy, capsys):
    for comp in ("none", "GZIP"):
        verify_ok(capsys, dataset_copy(comp))


def _shard(d, i, comp="none"):
    suffix = ".tfrecord.gz" if comp == "GZIP" else ".tfrecord"
    return d / f"train-0000{i}-of-00003{suffix}"


@pytest.mark.parametrize("comp", ["none", "GZIP"])
def test_verify_flipped_byte(dataset_copy, capsys, comp):
    d = dataset_copy(comp)
    shard = _shard(d, 1, comp)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = verify_problems(capsys, d)
    assert problems and all(p.startswith(str(shard)) for p in problems)
    assert any("sha256" in p for p in problems)


@pytest.mark.parametrize("comp", ["none", "GZIP"])
def test_verify_truncated_mid_record(dataset_copy, capsys, comp):
    d = dataset_copy(comp)
    shard = _shard(d, 2, comp)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 3])
    problems = verify_problems(capsys, d)
    assert problems and all(p.startswith(str(shard)) for p in problems)
    assert any("records, the manifest says" in p or "truncated" in p for p in problems)


def test_verify_truncated_at_record_boundary(dataset_copy, capsys):
    import tensorflow as tf

    d = dataset_copy()
    shard = _shard(d, 0)
    ends = fx.record_offsets(shard)
    shard.write_bytes(shard.read_bytes()[: ends[-6]])  # drop the last 5 whole records
    assert sum(1 for _ in tf.data.TFRecordDataset(str(shard))) == len(ends) - 5  # TF: no error
    problems = verify_problems(capsys, d)
    assert any(f"{len(ends) - 5} records, the manifest says {len(ends)}" in p for p in problems)
    assert all(p.startswith(str(shard)) for p in problems)


def test_verify_missing_extra_and_renamed_shards(dataset_copy, capsys):
    d = dataset_copy()
    _shard(d, 0).unlink()
    problems = verify_problems(capsys, d)
    assert problems == [f"{_shard(d, 0)}: missing (listed in the manifest)"]

    d2 = dataset_copy()
    shutil.copy(_shard(d2, 0), d2 / "train-00003-of-00004.tfrecord")
    problems = verify_problems(capsys, d2)
    assert len(problems) == 1 and "train-00003-of-00004.tfrecord: not listed" in problems[0]

    d3 = dataset_copy()
    _shard(d3, 2).rename(d3 / "train-00002-of-00003.tfrecord.bak")
    problems = verify_problems(capsys, d3)
    assert any(p.startswith(f"{_shard(d3, 2)}: missing") for p in problems)
    assert any("train-00002-of-00003.tfrecord.bak: not listed" in p for p in problems)


def test_verify_manifest_lies(dataset_copy, capsys):
    d = dataset_copy()
    m = manifest(d)
    m["image_shape"] = [4, 16, 1]  # same number of bytes, wrong shape
    (d / "manifest.json").write_text(json.dumps(m))
    problems = verify_problems(capsys, d)
    assert len(problems) == 4  # 3 train shards + 1 validation shard
    assert all("height/width/channels 8x8x1, the manifest says 4x16x1" in p for p in problems)

    d = dataset_copy("GZIP")
    m = manifest(d)
    m["levels"] = 2
    (d / "manifest.json").write_text(json.dumps(m))
    problems = verify_problems(capsys, d)
    assert problems and all("pixel value 16 is not below the manifest's 2 levels" in p
                            for p in problems)

    d = dataset_copy()
    m = manifest(d)
    m["splits"]["train"]["num_examples"] += 1
    (d / "manifest.json").write_text(json.dumps(m))
    problems = verify_problems(capsys, d)
    assert len(problems) == 1 and "shards add up to" in problems[0]

    (d / "manifest.json").write_text("{not json")
    problems = verify_problems(capsys, d)
    assert len(problems) == 1 and "not valid JSON" in problems[0]


def run_data_prep(*args):
    """Runs a real `python -m data_prep ARGS` with TensorFlow's logging at its default."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    return subprocess.run([sys.executable, "-m", "data_prep", *map(str, args)], cwd=fx.ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_cli_subprocess_error_is_one_line(tmp_path):
    """Through a real `python -m data_prep`: one line, no traceback, no TF log noise."""
    out = tmp_path / "o"
    r = run_data_prep("convert", f"npz:{tmp_path / 'missing.npz'}", "--out", out)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"data_prep: error: {tmp_path / 'missing.npz'}: no such file or directory"]
    assert not out.exists()


@pytest.mark.slow  # another TF process; the in-process verify tests check the same lines
def test_cli_subprocess_verify_problems(dataset_copy):
    """Through a real `python -m data_prep verify`: one line per problem and the summary."""
    d = dataset_copy()
    _shard(d, 1).write_bytes(_shard(d, 1).read_bytes()[:100])
    r = run_data_prep("verify", d)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert all(ln.startswith(str(_shard(d, 1))) for ln in lines[:-1]), r.stderr
    assert lines[-1].startswith("verify:")
