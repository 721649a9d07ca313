"""The train and eval steps under a `tf.distribute` strategy, their optimizer, and the NLL
bookkeeping.

Each replica computes the summed NLL of its share of the global batch divided by the global
batch, so the gradients summed over replicas are those of the mean over the global batch.

NLLs are dicts keyed by the terms of the model's `log_prob_terms`: always "total"; a
Multi-Scale PixelRNN adds "small" (-log p1(x_small)) and "conditional" (-log p2(rest |
x_small)), which add up to the total (exact: stage 2 does not score the pixels of the
strided-picked small image). The terms are logged beside the total, as `small_*` and
`conditional_*` scalars, and reported by evaluation.

A class-conditional model trains on -log p(x | y): its batches are (images, labels), and its
"total" is the conditional NLL. Its evaluation adds the exact marginal NLL -log p(x) and the
generative classifier's hits (`class_conditional.classifier_sums`), at K passes per image.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pixelrnn_tf.class_conditional import classifier_sums
from pixelrnn_tf.config import TrainConfig
from pixelrnn_tf.distribution import distributed_dataset
from pixelrnn_tf.losses import nats_to_bits_per_dim
from pixelrnn_tf.workdir import TrainingError


def make_learning_rate(config: TrainConfig):
    """A float or a keras LearningRateSchedule over `train_steps`."""
    opt = config.optimization
    rate, steps, fraction = opt.learning_rate, opt.train_steps, opt.final_lr_fraction
    schedules = keras.optimizers.schedules
    if opt.lr_schedule == "constant":
        return rate
    if opt.lr_schedule == "exponential":
        return schedules.ExponentialDecay(rate, decay_steps=steps, decay_rate=fraction)
    if opt.warmup_steps:
        return schedules.CosineDecay(0.0, decay_steps=steps - opt.warmup_steps,
                                     alpha=fraction, warmup_target=rate,
                                     warmup_steps=opt.warmup_steps)
    return schedules.CosineDecay(rate, decay_steps=steps, alpha=fraction)


def make_optimizer(config: TrainConfig):
    """Adam or RMSprop without clipping: the train step clips the all-reduced gradient."""
    rate = make_learning_rate(config)
    if config.model.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    return keras.optimizers.RMSprop(rate)


def unpack_batch(batch):
    """A batch of the data: images [B, H, W, C], or (images, labels [B]) for a conditional
    model -> (images, labels or None)."""
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch, None)


def nll_sums(model, batch) -> dict:
    """Summed NLL (nats) of a batch (`unpack_batch`), per term of the model's
    `log_prob_terms`: {"total": float32 []}, plus for a MultiScalePixelRNN {"small": -sum log
    p1(x_small), "conditional": -sum log p2(rest | x_small)}, whose sum is the total; all
    given the labels for a conditional model."""
    images, labels = unpack_batch(batch)
    return {name: -tf.reduce_sum(lp)
            for name, lp in model.log_prob_terms(images, labels).items()}


CLASSIFIER_KEYS = ("marginal", "correct")


def eval_sums(model, batch) -> dict:
    """`nll_sums`, plus for a conditional model `classifier_sums` ("marginal", "correct")."""
    sums = nll_sums(model, batch)
    if model.num_classes:
        sums.update(classifier_sums(model, *unpack_batch(batch)))
    return sums


def nll_dims(model) -> dict:
    """Sub-pixels each key of `nll_sums` scores: {"total": H*W*C}, plus for a
    MultiScalePixelRNN {"small": s*s*C, "conditional": (H*W - s*s)*C}."""
    return dict(model.term_dims)


def describe_nll(means: dict, dims: dict) -> dict:
    """Mean NLL per image {"total", ["small", "conditional"]} (nats) -> {"nats",
    "bits_per_dim"} of the total, plus for a Multi-Scale model "terms": {term: {"nats",
    "bits_per_dim", "dims"}}. A term's bits/dim is per the sub-pixels it scores (`nll_dims`);
    the nats of the terms add up to the total."""
    terms = {name: {"nats": means[name],
                    "bits_per_dim": nats_to_bits_per_dim(means[name], dims[name]),
                    "dims": dims[name]}
             for name in means if name != "total"}
    # The total of the terms' (float64) means, so that the report adds up exactly.
    total = sum(term["nats"] for term in terms.values()) if terms else means["total"]
    result = {"nats": total, "bits_per_dim": nats_to_bits_per_dim(total, dims["total"])}
    if terms:
        result["terms"] = terms
    return result


def nll_scalars(means: dict, dims: dict) -> dict:
    """TensorBoard scalars of mean NLLs: "nll_nats", "bits_per_dim" and, for a Multi-Scale
    model, "small_nll_nats", "small_bits_per_dim", "conditional_nll_nats", ..."""
    described = describe_nll(means, dims)
    scalars = {"nll_nats": described["nats"], "bits_per_dim": described["bits_per_dim"]}
    for name, term in described.get("terms", {}).items():
        scalars[f"{name}_nll_nats"] = term["nats"]
        scalars[f"{name}_bits_per_dim"] = term["bits_per_dim"]
    return scalars


def make_train_step(model, optimizer, strategy, global_batch, clip_norm, jit_compile):
    """A tf.function (batch, stop) -> (mean NLL nats, global gradient norm, stop).

    batch: per-replica int32 images [global_batch / replicas, H, W, C] (with labels [B] for
    a conditional model, `unpack_batch`); stop: float32 scalar,
    > 0 on a worker that wants to stop (summed over all replicas so every worker agrees).
    The mean NLL is a dict of scalars like `nll_sums` (the total, and a Multi-Scale model's
    terms), per image of the global batch; the loss is the total.
    """
    variables = model.trainable_variables

    def nll_and_gradients(batch):
        with tf.GradientTape() as tape:
            sums = nll_sums(model, batch)
            loss = sums["total"] / global_batch
        # The label embedding's gradient comes as IndexedSlices; it is small (K x X): dense.
        return sums, [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]

    if jit_compile:
        nll_and_gradients = tf.function(nll_and_gradients, jit_compile=True)

    def replica_step(batch, stop):
        context = tf.distribute.get_replica_context()
        sum_ = tf.distribute.ReduceOp.SUM
        sums, gradients = nll_and_gradients(batch)
        gradients = context.all_reduce(sum_, gradients)
        norm = tf.linalg.global_norm(gradients)
        if clip_norm:
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm, use_norm=norm)
        # Keras sums the gradients over replicas again inside apply(): hand it 1/n of the
        # (identical) clipped global gradient on every replica. Clipping is done here, on the
        # gradient summed over replicas: Keras 3 would clip each replica's before aggregating.
        replicas = context.num_replicas_in_sync
        optimizer.apply([g / replicas for g in gradients], variables)
        # tf.identity places the host-side flag on this replica's device for the all-reduce.
        names = sorted(sums)
        *reduced, stop = context.all_reduce(sum_, [sums[k] for k in names] + [tf.identity(stop)])
        return {k: v / global_batch for k, v in zip(names, reduced)}, norm, stop

    @tf.function
    def train_step(batch, stop):
        results = strategy.run(replica_step, args=(batch, stop))
        return tf.nest.map_structure(lambda r: strategy.experimental_local_results(r)[0],
                                     results)

    return train_step


def make_eval_step(model, strategy, jit_compile, classifier=False):
    """A tf.function batch -> (summed NLL nats as a dict like `nll_sums`, number of images)
    over all replicas; `classifier` (a conditional model only): as `eval_sums`."""

    def batch_sums(batch):
        return eval_sums(model, batch) if classifier else nll_sums(model, batch)

    if jit_compile:
        batch_sums = tf.function(batch_sums, jit_compile=True)

    def replica_step(batch):
        images, _ = unpack_batch(batch)
        return batch_sums(batch), tf.cast(tf.shape(images)[0], tf.float32)

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        sums, count = strategy.run(replica_step, args=(batch,))

        def total(value):
            return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

        return tf.nest.map_structure(total, sums), total(count)

    return eval_step


def evaluate_nll(eval_step, distribution, spec, config, split, global_batch, max_batches=0):
    """Mean NLL (nats per image) over the split (or its first `max_batches` global batches).

    Returns ({"total": mean nats, and a Multi-Scale model's "small", "conditional"; with a
    classifier eval step, "marginal" mean nats and "correct" the accuracy}, number of images).
    """
    dataset = distributed_dataset(distribution, spec, config, split, False, global_batch,
                                  seed=config.optimization.seed, max_steps=max_batches)
    totals, count = {}, 0.0
    for batch in dataset:
        batch_sums, batch_count = eval_step(batch)
        for name, value in batch_sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        count += float(batch_count)
    if count == 0:
        raise TrainingError(f"{spec.data_dir}: split {split!r} gave no images")
    return {name: value / count for name, value in totals.items()}, int(count)
