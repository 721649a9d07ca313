"""Training of a `PixelRNN` or `MultiScalePixelRNN` over a work directory.

`train_and_evaluate(config, workdir)` trains (or resumes) a run, validating on the way; it
sets up through `RunContext` (`pixelrnn_tf.run_context`): the strategy, the data, the model
under the strategy and the eval step. A Multi-Scale PixelRNN (config `small_size` > 0) trains
both stages jointly on the one loss -log p(x); its two terms are logged and reported beside
the total. `pixelrnn_tf.evaluation.evaluate` scores a checkpoint of a run on a whole split.

Resuming is exact: the data order of epoch e depends only on (seed, e), a resumed run skips
the batches of the interrupted epoch it already trained on, and the optimizer state is in the
checkpoint, so an interrupted and resumed run reaches the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from pixelrnn_tf import data
from pixelrnn_tf.checkpoints import Checkpoints
from pixelrnn_tf.config import ConfigError, TrainConfig, changed_settings
from pixelrnn_tf.distribution import distributed_dataset, epoch_seed
from pixelrnn_tf.losses import nats_to_bits_per_dim
from pixelrnn_tf.run_context import RunContext
from pixelrnn_tf.steps import (
    describe_nll,
    make_optimizer,
    make_train_step,
    nll_dims,
    nll_scalars,
)
from pixelrnn_tf.summaries import Summaries, first_images, sample_grids
from pixelrnn_tf.workdir import (
    CONFIG_NAME,
    TrainingError,
    Workdir,
    make_checkpoint,
    save_keras_model,
)


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint of the last finished step was saved."""


@contextlib.contextmanager
def _sigterm_flag():
    """A dict whose "stop" becomes True when SIGTERM arrives (main thread only)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["stop"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Interval:
    """Running sums of the training scalars between two summary writes."""

    def __init__(self):
        self.nats = {}  # running sums of the mean NLLs of each step, like `nll_sums`
        self.norm = 0.0
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, nats: dict, norm: float):
        for name, value in nats.items():
            self.nats[name] = self.nats.get(name, 0.0) + value
        self.norm += norm
        self.steps += 1


def _open_for_training(config, workdir: Workdir, data_dir) -> RunContext:
    """RunContext of a run to train: refuses a file, an average, or no data."""
    if os.path.exists(workdir.path) and not os.path.isdir(workdir.path):
        raise TrainingError(f"--workdir {workdir.path} is a file, not a directory")
    saved = workdir.read()
    averaged = workdir.averaged_source()
    if averaged is not None:
        source = os.path.normpath(os.path.join(workdir.path, averaged["from"]))
        raise TrainingError(f"{workdir.path} holds an average of checkpoints of {source} and "
                            "cannot be trained; train that run instead")
    if data_dir is None:
        if saved is None:
            raise TrainingError(f"no data directory given and no {CONFIG_NAME} in "
                                f"{workdir.path}")
        data_dir = saved.data.data_dir
    context = RunContext.open(config, workdir, saved, data_dir)
    replicas = context.distribution.num_replicas
    batch_size = config.optimization.batch_size
    if batch_size % replicas:
        raise ConfigError(f"batch_size={batch_size} must be a multiple of the "
                          f"number of replicas ({replicas})")
    return context


class Trainer:
    """One training run over a work directory: set-up, resume, the loop, the final outputs.

    `train_and_evaluate` is the entry point; the class only keeps the run's state together.
    """

    def __init__(self, config: TrainConfig, workdir: str, data_dir: str | None = None,
                 stop_at_step: int | None = None):
        self.workdir = Workdir(workdir)
        # This run ends here; the learning-rate schedule still runs over train_steps.
        opt = config.optimization
        self.end_step = (opt.train_steps if stop_at_step is None
                         else min(opt.train_steps, stop_at_step))
        self.context = context = _open_for_training(config, self.workdir, data_dir)
        config = context.config  # num_classes=auto resolved
        self.config, self.spec, self.distribution = config, context.spec, context.distribution
        self.eval_batch = context.eval_batch
        num_train = data.read_manifest(self.spec.data_dir).num_examples(opt.train_split)
        self.steps_per_epoch = opt.steps_per_epoch or max(1, num_train // opt.batch_size)
        self.num_epochs = -(-opt.train_steps // self.steps_per_epoch)

        keras.utils.set_random_seed(opt.seed)
        self.model, state = context.build(self._make_state)
        if self.model.num_classes:  # p(y); a resumed run restores the same from its checkpoint
            self.model.set_label_prior(data.label_counts(
                self.spec.data_dir, opt.train_split, self.model.num_classes))
        self.dims = nll_dims(self.model)
        self.optimizer, self.step_var, self.best_var = (
            state["optimizer"], state["step"], state["best_validation_nats"])
        self.checkpoints = Checkpoints(self.workdir, make_checkpoint(self.model, **state),
                                       config.runtime.keep_checkpoints, self.distribution)
        restored = self._resume()
        self.train_step = make_train_step(self.model, self.optimizer,
                                          self.distribution.strategy, opt.batch_size,
                                          opt.clip_norm, context.jit)
        self.eval_step = context.make_eval_step(self.model)
        self.summaries = Summaries(self.workdir.path, self.distribution.is_chief,
                                   bool(config.runtime.validation_split))
        if self.step == 0:
            self.summaries.hparams(config, self.spec)
        self.originals = None  # images for the completion grid, read once
        self.results = {"step": self.step, "validation": None, "validation_bits_per_dim": None,
                        "validation_terms": None, "validation_images": None,
                        "train_images_per_second": None, "checkpoint": restored}
        self.last_saved = self.step if restored else -1
        self.last_validated = self.last_images = -1
        self.throughput = []

    def _make_state(self, model) -> dict:
        optimizer = make_optimizer(self.config)
        optimizer.build(model.trainable_variables)
        return {"optimizer": optimizer,
                "step": tf.Variable(0, dtype=tf.int64, trainable=False, name="step"),
                "best_validation_nats": tf.Variable(math.inf, dtype=tf.float32,
                                                    trainable=False,
                                                    name="best_validation_nats")}

    def _resume(self):
        """Restores the latest checkpoint (if any), records changed settings in config.json
        and logs how the run starts; returns the restored path or None."""
        config, saved = self.config, self.context.saved
        model_config, opt = config.model, config.optimization
        restored = self.checkpoints.restore_latest()
        if opt.lr_schedule == "constant":
            # A constant rate is an optimizer variable, restored with the checkpoint: the
            # rate of this run's config wins.
            self.optimizer.learning_rate = opt.learning_rate
        self.step = int(self.step_var.numpy())
        changed = changed_settings(saved.config, config) if restored and saved else {}
        if changed:
            self.log(f"settings changed at step {self.step}: " + ", ".join(
                f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items()))
        if self.distribution.is_chief:  # the config is sound: the work directory may be written
            self.workdir.write(config, self.spec,
                               {"step": self.step, "changed": changed} if changed else None)
        self.best_nats = self.checkpoints.best_nats()
        start = f"resuming from {restored} (step {self.step})" if restored else \
            "training from scratch"
        shape = self.spec.image_shape
        size = model_config.small_size
        scales = f"multi-scale {size}x{size} -> {shape[0]}x{shape[1]}, " if size else ""
        replicas = self.distribution.num_replicas
        self.log(f"{start}: {scales}{model_config.architecture}, {model_config.num_layers} "
                 f"layers, h={model_config.hidden_dim}, {self.model.count_params()} parameters on "
                 f"{self.spec.describe()}; {replicas} replica(s) x "
                 f"{opt.batch_size // replicas} images, "
                 f"jit_compile={'on' if self.context.jit else 'off'}")
        return restored

    def log(self, message):
        self.context.log(message)

    def run(self) -> dict:
        train_steps, runtime = self.config.optimization.train_steps, self.config.runtime
        start_step = self.step
        try:
            with _sigterm_flag() as flag:
                while self.step < self.end_step:
                    self.run_epoch(flag)
                if self.step > start_step:
                    if runtime.validation_split and self.last_validated != self.step:
                        self.validate()
                    if self.last_saved != self.step:
                        self.save()
                    if runtime.image_every_epochs and self.last_images != self.step:
                        self.write_images()
                elif start_step >= train_steps:
                    self.log(f"already trained to step {self.step} (train_steps="
                             f"{train_steps}); raise train_steps to train longer")
                else:
                    self.log(f"already at step {self.step} (stop at step {self.end_step})")
        finally:
            self.summaries.close()

        steady = self.throughput[1:] or self.throughput  # the first includes tracing
        self.results.update(step=self.step, train_images_per_second=(
            float(np.median(steady)) if steady else None))
        if self.distribution.is_chief:
            self.write_outputs(start_step)
        if self.step < train_steps:
            self.log(f"stopped at step {self.step} of {train_steps}: rerun to continue")
        self.log(f"done at step {self.step}: checkpoints in {self.checkpoints.directory}, "
                 f"final model {self.workdir.final_model}; TensorBoard: tensorboard --logdir "
                 f"{self.workdir.path}")
        return self.results

    def write_outputs(self, start_step):
        """The final model.keras and eval_<validation_split>.json (chief only)."""
        final_model = self.workdir.final_model
        if self.step > start_step or not os.path.exists(final_model):
            save_keras_model(self.model, final_model)
        if self.results["validation"] is not None:
            terms = self.results["validation_terms"]
            runtime = self.config.runtime
            self.workdir.write_eval(runtime.validation_split, {
                "split": runtime.validation_split,
                "num_images": self.results["validation_images"],
                "nats": self.results["validation"],
                "bits_per_dim": self.results["validation_bits_per_dim"],
                **({"terms": terms} if terms else {}),
                "checkpoint": self.results["checkpoint"], "step": self.step,
                "max_batches": runtime.eval_batches or None})

    def run_epoch(self, flag):
        """Trains to the end of the current epoch (or to end_step); raises Preempted when a
        worker got SIGTERM, TrainingError on a non-finite loss."""
        config, chief = self.config, self.distribution.is_chief
        opt = config.optimization
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        count = min(self.steps_per_epoch - offset, self.end_step - self.step)
        dataset = distributed_dataset(self.distribution, self.spec, config, opt.train_split,
                                      True, opt.batch_size,
                                      seed=epoch_seed(opt.seed, epoch), skip_steps=offset)
        iterator = iter(dataset)
        show = config.runtime.progress_bar and chief
        if show:
            print(f"epoch {epoch + 1}/{self.num_epochs}", flush=True)
        # A live bar on a terminal; one line per epoch in a log file.
        progress = keras.utils.Progbar(offset + count, verbose=(
            (1 if sys.stdout.isatty() else 2) if show else 0))
        interval = _Interval()
        for _ in range(count):
            stop = tf.constant(1.0 if flag["stop"] else 0.0)
            step_nats, norm, stopping = self.train_step(next(iterator), stop)
            step_nats = {name: float(value) for name, value in step_nats.items()}
            nats, norm, stopping = step_nats["total"], float(norm), float(stopping) > 0
            if not (math.isfinite(nats) and math.isfinite(norm)):
                raise TrainingError(
                    f"non-finite loss ({nats}) or gradient norm ({norm}) at step "
                    f"{self.step + 1}: training stopped; the last good checkpoint is "
                    f"{self.checkpoints.latest_path() or 'none'} (lower learning_rate or "
                    "clip_norm, then rerun to resume from it)")
            self.step += 1
            progress.update(self.step - epoch * self.steps_per_epoch, [
                ("nll", nats), ("bits/dim", nats_to_bits_per_dim(nats, self.dims["total"])),
                *((f"{name}_nll", value) for name, value in step_nats.items()
                  if name != "total")])
            interval.add(step_nats, norm)
            if self.step % config.runtime.log_every_steps == 0:
                self.write_train_scalars(interval)
                interval = _Interval()
            self.after_step(stopping)
        self.summaries.flush()

    def after_step(self, stopping):
        """Validation, checkpoints and images due at this step; Preempted when stopping."""
        runtime = self.config.runtime
        epochs_done = self.step // self.steps_per_epoch
        epoch_end = self.step % self.steps_per_epoch == 0
        if epoch_end and runtime.validation_split and (
                epochs_done % runtime.eval_every_epochs == 0
                or self.step >= self.config.optimization.train_steps):
            self.validate()  # before saving, so the checkpoint holds the best value
        if self.step % runtime.checkpoint_every_steps == 0 or stopping:
            self.save()
        if stopping:
            raise Preempted(f"SIGTERM: saved the checkpoint of step {self.step} in "
                            f"{self.checkpoints.directory}; rerun the same command to resume")
        if epoch_end and runtime.image_every_epochs and \
                epochs_done % runtime.image_every_epochs == 0:
            self.write_images()

    def write_train_scalars(self, interval):
        seconds = time.perf_counter() - interval.start
        images_per_second = interval.steps * self.config.optimization.batch_size / seconds
        means = {name: value / interval.steps for name, value in interval.nats.items()}
        self.summaries.scalars(self.summaries.train, self.step, {
            **nll_scalars(means, self.dims),
            "learning_rate": float(tf.convert_to_tensor(self.optimizer.learning_rate)),
            "gradient_norm": interval.norm / interval.steps,
            "images_per_second": images_per_second})
        self.throughput.append(images_per_second)

    def validate(self):
        runtime = self.config.runtime
        means, count = self.context.evaluate_nll(self.eval_step, runtime.validation_split,
                                                 runtime.eval_batches)
        described = describe_nll(means, self.dims)
        nats, bits = described["nats"], described["bits_per_dim"]
        self.summaries.scalars(self.summaries.validation, self.step,
                               nll_scalars(means, self.dims))
        self.results.update(validation=nats, validation_bits_per_dim=bits,
                            validation_terms=described.get("terms"), validation_images=count)
        self.last_validated = self.step
        improved = nats < self.best_nats
        if improved:  # every worker sees the same all-reduced value: the save stays collective
            self.best_nats = nats
            self.best_var.assign(nats)
            self.step_var.assign(self.step)
            self.checkpoints.save_best(self.step)
        terms = "".join(f", {name} {term['nats']:.3f}"
                        for name, term in described.get("terms", {}).items())
        self.log(f"step {self.step}: validation {nats:.3f} nats ({bits:.4f} bits/dim{terms}) "
                 f"on {count} images{', new best' if improved else ''}")

    def write_images(self):
        self.last_images = self.step
        if not self.distribution.is_chief:
            return
        config, runtime = self.config, self.config.runtime
        if self.originals is None:
            split = runtime.validation_split or config.optimization.train_split
            self.originals = first_images(self.spec, config, split, 8)
        originals, labels = self.originals
        grids = sample_grids(self.model, originals, runtime.num_image_samples,
                             config.optimization.seed, runtime.sample_temperature, labels)
        self.summaries.images(self.step, grids, self.spec.levels)

    def save(self):
        self.step_var.assign(self.step)
        path = self.checkpoints.save_latest(self.step)
        self.last_saved = self.step
        self.results["checkpoint"] = (path if self.distribution.is_chief
                                      else self.checkpoints.latest_path())


def train_and_evaluate(config: TrainConfig, workdir: str, data_dir: str | None = None,
                       stop_at_step: int | None = None) -> dict:
    """Trains (or resumes) a PixelRNN on the data in `data_dir`, writing `workdir`.

    `stop_at_step` ends this run early, at that step, with a checkpoint (as at the end); the
    schedule is still the one over train_steps, so a rerun continues it.

    Validates every `eval_every_epochs` epochs and at the end, keeps the best checkpoint,
    writes TensorBoard summaries, the final WORKDIR/model.keras and
    WORKDIR/eval_<validation_split>.json. data_dir defaults to the one recorded in
    WORKDIR/config.json.

    Returns {"step", "validation" (mean nats, or None), "validation_bits_per_dim",
    "validation_terms" (a Multi-Scale model's terms as in `describe_nll`, else None),
    "validation_images", "train_images_per_second" (median over log intervals after the
    first), "checkpoint" (latest path)}.

    Raises ConfigError / data.DataError / TrainingError with one-line messages, and
    Preempted on SIGTERM after saving a checkpoint.
    """
    return Trainer(config, workdir, data_dir, stop_at_step).run()
