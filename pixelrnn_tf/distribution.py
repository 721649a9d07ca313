"""Where training runs: the `tf.distribute` strategy, its replicas, the XLA policy, and the
data as per-replica batches.

One custom loop serves every strategy: `MirroredStrategy` over the GPUs, the CPU, or
`cpu_replicas` logical CPU devices, and `MultiWorkerMirroredStrategy` when `TF_CONFIG` is set
(Keras 3 `model.fit` fails under the latter, keras-team/keras#20585).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from pixelrnn_tf import data
from pixelrnn_tf.config import ConfigError, TrainConfig
from pixelrnn_tf.workdir import TrainingError


@dataclasses.dataclass
class Distribution:
    strategy: tf.distribute.Strategy
    is_chief: bool
    worker_id: int
    num_workers: int

    @property
    def num_replicas(self):
        return self.strategy.num_replicas_in_sync


def _split_cpu(num_devices: int):
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError:  # TensorFlow is already initialised
        pass
    have = len(tf.config.list_logical_devices("CPU"))
    if have < num_devices:
        raise TrainingError(
            f"cpu_replicas={num_devices}: TensorFlow was already initialised with {have} "
            "logical CPU device(s); set cpu_replicas at the start of a fresh process "
            "(e.g. train.py)")


def _multi_worker(cpu_replicas: int) -> Distribution:
    if cpu_replicas > 1:
        raise ConfigError("cpu_replicas cannot be combined with TF_CONFIG: a multi-worker "
                          "run has one replica per worker CPU (or per GPU)")
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        cluster = tf_config["cluster"]
        task_type, task_id = tf_config["task"]["type"], int(tf_config["task"]["index"])
        workers = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"TF_CONFIG is not a valid cluster spec ({e!r})") from None
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    is_chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in cluster)
    worker_id = task_id + (1 if "chief" in cluster and task_type == "worker" else 0)
    return Distribution(strategy, is_chief, worker_id, workers)


def make_distribution(cpu_replicas: int = 0) -> Distribution:
    """MultiWorkerMirroredStrategy when TF_CONFIG is set, else MirroredStrategy over the GPUs,
    `cpu_replicas` logical CPU devices, or the CPU. Call it before any other TensorFlow work."""
    if os.environ.get("TF_CONFIG"):
        return _multi_worker(cpu_replicas)
    if cpu_replicas:
        _split_cpu(cpu_replicas)
        devices = [f"/cpu:{i}" for i in range(cpu_replicas)]
    else:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or ["/cpu:0"]
    return Distribution(tf.distribute.MirroredStrategy(devices), True, 0, 1)


def use_jit(config: TrainConfig, distribution: Distribution) -> bool:
    """XLA for the whole forward and backward pass of each replica.

    "auto": on for the recurrent architectures when one worker runs several replicas, off
    otherwise. The recurrent layers compile their own loops while training and run one loop
    per direction, so a single replica keeps both CPU cores busy without XLA (XLA over the
    whole step runs the directions in one loop: 1.4x slower); with one replica per core, XLA
    over each replica's step is 1.35x faster (benchmarks/train_throughput.py, README).
    XLA makes PixelCNN's convolutions about 5x slower than oneDNN's on CPU.
    """
    jit_compile = config.runtime.jit_compile
    if jit_compile == "auto":
        return (config.model.architecture != "pixelcnn" and distribution.num_replicas > 1
                and distribution.num_workers == 1)
    return jit_compile == "on"


def eval_batch_size(config: TrainConfig, num_replicas: int) -> int:
    """The global evaluation batch: `eval_batch_size` (default 4 x batch_size) rounded down
    to a multiple of the replicas (at least one image per replica)."""
    batch = config.runtime.eval_batch_size or 4 * config.optimization.batch_size
    return max(num_replicas, batch - batch % num_replicas)


def epoch_seed(seed: int, epoch: int) -> int:
    """The data seed of one epoch: a function of (seed, epoch) only, so resuming is exact."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)[0])


def distributed_dataset(distribution, spec, config, split, training, global_batch, seed,
                        skip_steps=0, max_steps=0):
    """The split as a distributed dataset of per-replica int32 image batches
    [global_batch / replicas, H, W, C], with int32 labels [global_batch / replicas] for a
    class-conditional model (num_classes > 0); `skip_steps` / `max_steps` count global
    batches."""
    labels = config.model.num_classes > 0
    strategy = distribution.strategy

    def dataset_fn(context):
        local_replicas = strategy.num_replicas_in_sync // context.num_input_pipelines
        ds = data.make_dataset(
            spec.data_dir, split, context.get_per_replica_batch_size(global_batch), training,
            expected_shape=spec.image_shape, expected_levels=spec.levels, seed=seed,
            deterministic=True, shuffle_buffer=config.runtime.shuffle_buffer,
            input_context=context, binarize=config.model.binarize, dtype=tf.int32,
            return_labels=labels)
        if labels:
            ds = ds.map(lambda images, labels: (images, tf.cast(labels, tf.int32)))
        if skip_steps:
            ds = ds.skip(skip_steps * local_replicas)
        if max_steps:
            ds = ds.take(max_steps * local_replicas)
        return ds

    return strategy.distribute_datasets_from_function(dataset_fn)
