"""Evaluation on a whole split of a prepared dataset, the exact mean NLL: of a checkpoint of
a work directory (`evaluate`, which writes WORKDIR/eval_<split>.json, set up through
`run_context.RunContext`) or of a model that no work directory holds, a pretrained preset
(`evaluate_model`), with the same machinery: the strategy (`distribution`), the data reader
and the eval step (`steps`).

    config = presets.evaluation_config(presets.entry("binarized_mnist"))
    result = evaluate_model(lambda: presets.load_preset("binarized_mnist"),
                            "out/data/binarized_mnist", "test", config)
    result["nats"]    # 79.1865
"""

from __future__ import annotations

import tensorflow as tf

from pixelrnn_tf.config import TrainConfig, replace_keys
from pixelrnn_tf.distribution import eval_batch_size, make_distribution, use_jit
from pixelrnn_tf.losses import nats_to_bits_per_dim
from pixelrnn_tf.run_context import RunContext
from pixelrnn_tf.steps import describe_nll, evaluate_nll, make_eval_step, nll_dims
from pixelrnn_tf.workdir import (
    TrainingError,
    Workdir,
    make_checkpoint,
    resolve_data,
    resolve_num_classes,
    restore_checkpoint,
)


def describe_evaluation(model, split: str, means: dict, count: int) -> dict:
    """The means of `steps.evaluate_nll` (nats per image) -> {"split", "num_images", "nats",
    "bits_per_dim"}, plus a Multi-Scale model's "terms" (`describe_nll`) and a
    class-conditional model's "conditioned_on_labels", "marginal": {"nats",
    "bits_per_dim"} and "classifier_accuracy"."""
    means = dict(means)
    extra = {}
    if model.num_classes:
        marginal, correct = means.pop("marginal"), means.pop("correct")
        extra = {"conditioned_on_labels": True,
                 "marginal": {"nats": marginal,
                              "bits_per_dim": nats_to_bits_per_dim(marginal, model.num_dims)},
                 "classifier_accuracy": correct}
    return {"split": split, "num_images": count, **describe_nll(means, nll_dims(model)),
            **extra}


def evaluate(workdir: str, data_dir: str | None, split: str, checkpoint: str = "latest",
             config: TrainConfig | None = None) -> dict:
    """Mean NLL of a checkpoint on a whole split; writes WORKDIR/eval_<split>.json.

    config: runtime settings (cpu_replicas, eval_batch_size, jit_compile); defaults to the
    config saved in the workdir, whose model keys it must match.
    Returns {"split", "num_images", "nats", "bits_per_dim", "checkpoint", "step"}, and for
    a Multi-Scale model "terms": {"small", "conditional"} each {"nats", "bits_per_dim",
    "dims"} (see `describe_nll`; total nats = small + conditional). For a class-conditional
    model "nats" is the conditional NLL -log p(x | y), and "marginal": {"nats",
    "bits_per_dim"} (the exact -log p(x), comparable with unconditional models) and
    "classifier_accuracy" (argmax_y p(y | x) against the labels) are added; they cost K
    passes per image.
    """
    workdir = Workdir(workdir)
    saved = workdir.require()
    config = replace_keys(config or saved.config, validation_split="")
    context = RunContext.open(config, workdir, saved, data_dir or saved.data.data_dir, (split,))
    path = workdir.checkpoint_path(checkpoint)
    model, state = context.build(lambda model: {
        "step": tf.Variable(0, dtype=tf.int64, trainable=False, name="step")})
    restore_checkpoint(make_checkpoint(model, **state), path, partial=True)
    means, count = context.evaluate_nll(
        context.make_eval_step(model, classifier=model.num_classes > 0), split)
    result = {**describe_evaluation(model, split, means, count), "checkpoint": path,
              "step": int(state["step"].numpy())}
    if context.distribution.is_chief:
        workdir.write_eval(split, result)
    return result


def evaluate_model(load, data_dir: str, split: str, config: TrainConfig) -> dict:
    """Mean NLL of a model on a whole split of a prepared dataset (no work directory).

    load: a function of no arguments that returns the model (e.g. `presets.load_preset`);
      it is called under the strategy's scope, once the strategy exists (making it must
      precede other TensorFlow work, see `distribution.make_distribution`).
    config: how the data is read (binarize; labels when num_classes > 0) and the runtime
      keys (cpu_replicas, eval_batch_size, jit_compile); its validation split is ignored.
    Returns `describe_evaluation`. Raises DataError or ConfigError for data that cannot be
    read, TrainingError for data of another image shape or levels than the model's.
    """
    config = replace_keys(config, validation_split="")
    distribution = make_distribution(config.runtime.cpu_replicas)
    spec = resolve_data(config, data_dir, (split,))
    config = resolve_num_classes(config, data_dir)
    with distribution.strategy.scope():
        model = load()
    takes = (tuple(model.image_shape), model.levels)
    if (spec.image_shape, spec.levels) != takes:
        shape = "x".join(map(str, takes[0]))
        raise TrainingError(f"{data_dir} has {spec.describe()} but the model takes {shape} "
                            f"images with {takes[1]} levels")
    step = make_eval_step(model, distribution.strategy, use_jit(config, distribution),
                          classifier=model.num_classes > 0)
    means, count = evaluate_nll(step, distribution, spec, config, split,
                                eval_batch_size(config, distribution.num_replicas))
    return describe_evaluation(model, split, means, count)
