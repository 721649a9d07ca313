"""The checkpoints a training run keeps: the latest N, and the best by validation NLL."""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import tensorflow as tf

from pixelrnn_tf.workdir import Workdir, restore_checkpoint

_BEST_KEY = "best_validation_nats/.ATTRIBUTES/VARIABLE_VALUE"


class Checkpoints:
    """The latest-N and best managers over one tf.train.Checkpoint (`make_checkpoint`) in
    WORKDIR/checkpoints and WORKDIR/checkpoints/best.

    Saving is collective under MultiWorkerMirroredStrategy, so every worker saves; workers
    other than the chief save to a scratch directory and delete it.
    """

    def __init__(self, workdir: Workdir, checkpoint, keep: int, distribution):
        self.checkpoint = checkpoint
        self.directory = workdir.checkpoint_dir
        self.best_directory = workdir.best_dir
        self.scratch = None
        latest_dir, best_dir = self.directory, self.best_directory
        if not distribution.is_chief:
            self.scratch = tempfile.mkdtemp(prefix=f"pixelrnn-worker{distribution.worker_id}-")
            latest_dir = os.path.join(self.scratch, "checkpoints")
            best_dir = os.path.join(self.scratch, "best")
        self.latest = tf.train.CheckpointManager(checkpoint, latest_dir, max_to_keep=keep,
                                                 checkpoint_name="ckpt")
        self.best = tf.train.CheckpointManager(checkpoint, best_dir, max_to_keep=1,
                                               checkpoint_name="ckpt")

    def restore_latest(self):
        """Restores the chief's latest checkpoint; returns its path or None."""
        path = tf.train.latest_checkpoint(self.directory)
        if path is not None:
            restore_checkpoint(self.checkpoint, path)
        return path

    def best_nats(self):
        """The validation NLL stored with the best checkpoint (inf when there is none)."""
        path = tf.train.latest_checkpoint(self.best_directory)
        if path is None:
            return math.inf
        return float(tf.train.load_checkpoint(path).get_tensor(_BEST_KEY))

    def _save(self, manager, step):
        path = manager.save(checkpoint_number=step)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return path

    def save_latest(self, step):
        return self._save(self.latest, step)

    def save_best(self, step):
        return self._save(self.best, step)

    def latest_path(self):
        return tf.train.latest_checkpoint(self.directory)
