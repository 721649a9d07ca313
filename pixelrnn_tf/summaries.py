"""TensorBoard summaries of a run: scalars, hyperparameters, and sample and completion grids.

WORKDIR/train/ and WORKDIR/validation/ hold the event files (`tensorboard --logdir WORKDIR`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from pixelrnn_tf import data
from pixelrnn_tf.config import TrainConfig, to_dict
from pixelrnn_tf.images import image_grid
from pixelrnn_tf.workdir import DataSpec, TrainingError


class Summaries:
    """TensorBoard writers WORKDIR/train and WORKDIR/validation (no-ops off the chief, and
    for validation when the run has no validation split)."""

    def __init__(self, workdir: str, is_chief: bool, validation: bool):
        def writer(name, wanted=True):
            if is_chief and wanted:
                return tf.summary.create_file_writer(os.path.join(workdir, name))
            return tf.summary.create_noop_writer()

        self.train = writer("train")
        self.validation = writer("validation", validation)

    def scalars(self, writer, step, values):
        with writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def images(self, step, grids, levels):
        """grids: {"samples", "completions"} as `sample_grids` returns them."""
        with self.train.as_default(step=step):
            for name, images in grids.items():
                columns = len(images) // 3 if name == "completions" else 8
                tf.summary.image(name, image_grid(images, levels, columns)[None])

    def hparams(self, config: TrainConfig, spec: DataSpec):
        from tensorboard.plugins.hparams import api as hp

        values = dict(to_dict(config), dataset=spec.dataset, levels=spec.levels,
                      image_shape="x".join(map(str, spec.image_shape)))
        with self.train.as_default():
            hp.hparams(values)

    def flush(self):
        self.train.flush()
        self.validation.flush()

    def close(self):
        self.train.close()
        self.validation.close()


SAMPLES_PER_CLASS = 8  # a conditional model's sample grid: one row of 8 per class
MAX_CLASS_ROWS = 10


def grid_labels(model, num_samples: int):
    """The labels of a sample grid: None for an unconditional model, else one row of
    `SAMPLES_PER_CLASS` per class for the first (up to `MAX_CLASS_ROWS`) classes."""
    if not model.num_classes:
        return None
    return np.repeat(np.arange(min(model.num_classes, MAX_CLASS_ROWS), dtype=np.int32),
                     SAMPLES_PER_CLASS)


def sample_grids(model, originals, num_samples: int, seed: int, temperature: float,
                 labels=None):
    """A sample grid and a completion grid (top half given, bottom half sampled).

    originals: uint8/int [K, H, W, C]; labels: their labels [K] for a conditional model,
    whose completions are conditioned on them and whose samples are `grid_labels` (one row
    per class) instead of `num_samples`. Returns {"samples": [S, H, W, C] uint8,
    "completions": [3K, H, W, C] uint8 (rows: originals, the given top halves, completions)}.
    """
    from pixelrnn_tf import sampling  # imported here: only training with images needs it

    height, width, _ = model.image_shape
    known_pixels = (height // 2) * width
    sample_labels = grid_labels(model, num_samples)
    if sample_labels is not None:
        num_samples = len(sample_labels)
    samples = sampling.sample(model, num_samples, seed=seed, temperature=temperature,
                              labels=sample_labels)
    originals = np.asarray(originals).astype(np.int32)
    completed = sampling.complete(model, originals, known_pixels, seed=seed + 1,
                                  temperature=temperature, labels=labels)
    given = originals.copy()
    given[:, height // 2:] = 0
    rows = np.concatenate([originals, given, np.asarray(completed)]).astype(np.uint8)
    return {"samples": np.asarray(samples), "completions": rows}


def first_images(spec: DataSpec, config: TrainConfig, split: str, count: int):
    """The first `count` images of a split (file order) as uint8 [count, H, W, C], and their
    int32 labels [count] for a conditional model (else None)."""
    with_labels = config.model.num_classes > 0
    ds = data.make_dataset(spec.data_dir, split, count, training=False,
                           expected_shape=spec.image_shape, expected_levels=spec.levels,
                           binarize=config.model.binarize, seed=config.optimization.seed,
                           return_labels=with_labels)
    for batch in ds.take(1):
        if with_labels:
            return batch[0].numpy(), batch[1].numpy().astype(np.int32)
        return batch.numpy(), None
    raise TrainingError(f"{spec.data_dir}: split {split!r} is empty")
