"""What training and evaluation of a work directory share (`RunContext`): the strategy
(`pixelrnn_tf.distribution`), the data and the work directory, checked against each other
before anything is written; the model built under the strategy and the eval step
(`pixelrnn_tf.steps`). `trainer.Trainer` and `evaluation.evaluate` set up through it.
"""

from __future__ import annotations

import dataclasses

from pixelrnn_tf.config import TrainConfig
from pixelrnn_tf.distribution import Distribution, eval_batch_size, make_distribution, use_jit
from pixelrnn_tf.steps import evaluate_nll, make_eval_step
from pixelrnn_tf.workdir import (
    DataSpec,
    Workdir,
    WorkdirConfig,
    build_model,
    resolve_data,
    resolve_num_classes,
)


@dataclasses.dataclass
class RunContext:
    """What training and evaluation share: the strategy, the data and the work directory,
    checked against each other before anything is written."""

    config: TrainConfig
    workdir: Workdir
    saved: WorkdirConfig | None  # the work directory's config.json
    distribution: Distribution
    spec: DataSpec
    eval_batch: int  # global evaluation batch, a multiple of the replicas
    jit: bool

    @classmethod
    def open(cls, config, workdir: Workdir, saved, data_dir, splits=None) -> RunContext:
        """The strategy comes first: MultiWorkerMirroredStrategy must precede other TF work.
        splits: those to check besides the validation split (default: the train split)."""
        distribution = make_distribution(config.runtime.cpu_replicas)
        spec = resolve_data(config, data_dir, splits)
        config = resolve_num_classes(config, data_dir)
        workdir.check_resumable(config, spec, saved)
        return cls(config, workdir, saved, distribution, spec,
                   eval_batch_size(config, distribution.num_replicas),
                   use_jit(config, distribution))

    def log(self, message):
        if self.distribution.is_chief:
            print(message, flush=True)

    def build(self, make_state=dict):
        """The model and `make_state()` (a dict of variables or objects for the checkpoint)
        created under the strategy's scope."""
        with self.distribution.strategy.scope():
            model = build_model(self.config, self.spec)
            return model, make_state(model)

    def make_eval_step(self, model, classifier=False):
        return make_eval_step(model, self.distribution.strategy, self.jit, classifier)

    def evaluate_nll(self, eval_step, split, max_batches=0):
        """({"total", [terms]} mean nats per image, number of images), see `evaluate_nll`."""
        return evaluate_nll(eval_step, self.distribution, self.spec, self.config, split,
                            self.eval_batch, max_batches)
