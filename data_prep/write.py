"""Writing a planned convert: the shards of every split, into a directory installed atomically.

`staging_dir` is a hidden temporary directory beside the output, renamed into place only when
the block writing into it completes; an error or interrupt removes it (and any parent
directories it created), so a failed convert leaves nothing that looks like a dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time

import numpy as np

from data_prep.errors import DataPrepError
from data_prep.plan import Job, Plan

CHUNK = 1024  # images read, transformed and written at a time
PROGRESS_SECONDS = 15


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


@contextlib.contextmanager
def staging_dir(out: str):
    """Yields a temporary directory that becomes `out` (an absolute path) when the block
    completes; removed, with the parents it created, when the block raises."""
    parent = os.path.dirname(out)
    created = _make_parents(parent)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    ok = False
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
        _install(tmp, out)
        ok = True
    finally:
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
            for d in created:
                try:
                    os.rmdir(d)
                except OSError:
                    pass


# ----------------------------------------------------------------------------- shards


class SplitWriter:
    """Writes one split's examples into `num_shards` shards of near-equal counts."""

    def __init__(self, tmp_dir, split, num_examples, num_shards, compression):
        import tensorflow as tf

        self.tf = tf
        self.tmp_dir, self.split, self.n = tmp_dir, split, num_examples
        self.num_shards = num_shards
        self.bounds = [k * num_examples // num_shards for k in range(num_shards + 1)]
        self.compression = compression
        self.count, self.shard, self.writer = 0, -1, None
        self.files, self.max_label = [], -1

    def _next_shard(self):
        from pixelrnn_tf import records

        if self.writer is not None:
            self.writer.close()
        self.shard += 1
        name = records.shard_filename(self.split, self.shard, self.num_shards, self.compression)
        self.files.append(name)
        opts = self.tf.io.TFRecordOptions(compression_type=self.compression or "")
        self.writer = self.tf.io.TFRecordWriter(os.path.join(self.tmp_dir, name), opts)

    def write(self, images: np.ndarray, labels):
        """images uint8 [N, H, W, C]; labels int64 [N] or None."""
        from pixelrnn_tf import records

        if labels is not None and len(labels):
            self.max_label = max(self.max_label, int(labels.max()))
        for record in records.encode_examples(images, labels):
            while self.shard < 0 or self.count >= self.bounds[self.shard + 1]:
                self._next_shard()
            self.writer.write(record)
            self.count += 1

    def close(self) -> dict:
        """The split's manifest entry: its count and, per shard, file, count, bytes, sha256."""
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


class _Progress:
    """Logs "  <where>: done/total" at most every PROGRESS_SECONDS, across all jobs."""

    def __init__(self, log):
        self.log, self.last = log, time.time()

    def __call__(self, where, done, total):
        if time.time() - self.last > PROGRESS_SECONDS:
            self.log(f"  {where}: {done}/{total}")
            self.last = time.time()


def write_splits(plan: Plan, tmp: str, compression: str | None, limit: int | None,
                 log) -> tuple[dict, int]:
    """Writes every job's shards into `tmp`.

    Returns ({output split: manifest entry}, the largest label written, -1 for none).
    """
    entries, max_label = {}, -1
    progress = _Progress(log)
    for job in plan.jobs:
        writers = {o.name: SplitWriter(tmp, o.name, len(o.indices), o.num_shards, compression)
                   for o in job.outputs}
        if job.split.random_access:
            _write_by_index(job, writers, plan, progress)
        else:
            _write_stream(job, writers, plan, limit, progress)
        for name, w in writers.items():
            entries[name] = w.close()
            max_label = max(max_label, w.max_label)
    return entries, max_label


def _write_by_index(job: Job, writers, plan: Plan, progress):
    """A random-access split: each output's indices in order, CHUNK images at a time."""
    where, done = job.split.where, 0
    for o in job.outputs:
        for start in range(0, len(o.indices), CHUNK):
            images, labels = job.split.read(o.indices[start:start + CHUNK])
            writers[o.name].write(plan.transform(images, where),
                                  labels if plan.has_labels else None)
            done += min(CHUNK, len(o.indices) - start)
            progress(where, done, job.n)


def _write_stream(job: Job, writers, plan: Plan, limit, progress):
    """A stream-only split: one pass, every image routed to the output holding its index."""
    where = job.split.where
    dest = np.full(job.n, -1, np.int64)
    for k, o in enumerate(job.outputs):
        dest[o.indices] = k
    pos = 0
    for images, labels in job.split.stream(CHUNK):
        if pos >= job.n:
            if limit is None:
                raise DataPrepError(f"{where}: gave more than the {job.n} examples it "
                                    "announced")
            break
        take = min(len(images), job.n - pos)
        images = plan.transform(images[:take], where)
        labels = labels[:take] if (labels is not None and plan.has_labels) else None
        d = dest[pos:pos + take]
        for k, o in enumerate(job.outputs):
            m = d == k
            if m.any():
                writers[o.name].write(images[m], labels[m] if labels is not None else None)
        pos += take
        progress(where, pos, job.n)
    if pos < job.n:
        raise DataPrepError(f"{where}: gave {pos} examples, announced {job.n}")
