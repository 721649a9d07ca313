"""Median train-step time (forward + backward + RMSProp update) per architecture.

    python benchmarks/step_time.py [--configs mnist,colour|cifar|all] [--steps 20] [--batch 16]
                                   [--architectures row_lstm,diagonal_bilstm,pixelcnn]
                                   [--jit off,on] [--layers 1,7] [--threads N]

Prints a markdown table: configuration, architecture, jit_compile, median ms/step, images/s,
the step's useful GFLOP (`pixelrnn_tf.flops`), achieved GFLOP/s and % of the machine's float32
matmul peak measured at the start of the same run, median CPU ms/step (all threads of this
process; close to ms/step when one core does the work, higher when both do) and the first
step's time (tracing and compilation). The machine line above it gives the load average before
and after: other processes on a shared machine slow every number down, so compare rows measured
in the same run."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from pixelrnn_tf import ARCHITECTURES, PixelRNN, flops

CONFIGS = {
    "mnist": dict(image_shape=(28, 28, 1), levels=2, num_layers=7, hidden_dim=16),
    "colour": dict(image_shape=(32, 32, 3), levels=256, num_layers=4, hidden_dim=32),
    # The CIFAR-size model of issue 20 (the paper's CIFAR-10 width): 11.6 s a step on 2 cores
    # in the measurement (not re-measured since),
    # so only on request (--configs cifar or all).
    "cifar": dict(image_shape=(32, 32, 3), levels=256, num_layers=12, hidden_dim=128),
}
DEFAULT_CONFIGS = "mnist,colour"
JIT_MODES = {"off": False, "on": True}


def describe(key, config):
    """The table's configuration column, e.g. "mnist 28x28x1 L=2 7 layers h=16"."""
    shape = "x".join(str(d) for d in config["image_shape"])
    return (f"{key} {shape} L={config['levels']} {config['num_layers']} layers "
            f"h={config['hidden_dim']}")


def make_train_step(model, jit_compile):
    optimizer = tf.keras.optimizers.RMSprop(1e-3)

    @tf.function(jit_compile=jit_compile)
    def train_step(images):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.log_prob(images))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


def time_step(config, architecture, jit_compile, batch, steps):
    """(median seconds, median CPU seconds, first-call seconds) of one train step."""
    model = PixelRNN(architecture, **config)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, config["levels"], (batch, *config["image_shape"])),
                         tf.int32)
    step = make_train_step(model, jit_compile)
    start = time.perf_counter()
    step(images).numpy()  # trace and compile
    first = time.perf_counter() - start
    for _ in range(2):
        step(images).numpy()  # warm up
    wall, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(images).numpy()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return (statistics.median(wall), statistics.median(cpu), first,
            flops.train_step_flops(model, batch))


def parse_list(text, allowed, what):
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if not items or unknown:
        raise ValueError(f"--{what} must be a comma-separated subset of {', '.join(allowed)}, "
                         f"got {text!r}")
    return items


def load_average():
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help=f"comma-separated subset of {', '.join(CONFIGS)}, or 'all'")
    parser.add_argument("--jit", default="off,on", help="'off', 'on' or 'off,on'")
    parser.add_argument("--layers", default="",
                        help="comma-separated layer counts to time instead of each "
                             "configuration's own (e.g. 1,7: the cost of one layer)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads (0: TensorFlow's default)")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1 or args.batch < 1 or args.threads < 0:
            raise ValueError(f"--steps and --batch must be >= 1 and --threads >= 0, got "
                             f"{args.steps}, {args.batch}, {args.threads}")
        architectures = parse_list(args.architectures, ARCHITECTURES, "architectures")
        configs = parse_list(args.configs.replace("all", ",".join(CONFIGS)), list(CONFIGS),
                             "configs")
        jit_modes = parse_list(args.jit, list(JIT_MODES), "jit")
        layers = [v.strip() for v in args.layers.split(",") if v.strip()]
        if not all(v.isdigit() and int(v) >= 1 for v in layers):
            raise ValueError(f"--layers must be comma-separated positive integers, got "
                             f"{args.layers!r}")
    except ValueError as err:
        print(f"step_time.py: error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    peak = flops.matmul_peak_gflops()
    print(f"float32 peak: 2048x2048 tf.matmul at {peak:.1f} GFLOP/s (median of 10)")
    print(f"batch {args.batch}, median of {args.steps} steps, {os.cpu_count()} CPU cores, "
          f"threads {args.threads or 'default'}, TensorFlow {tf.__version__}, "
          f"load average (1/5/15 min) before: {load_average()}\n")
    print("| configuration | architecture | jit_compile | ms/step | images/s | GFLOP/step "
          "| GFLOP/s | % of peak | CPU ms/step | first step s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = [(key, dict(CONFIGS[key], num_layers=int(n)) if n else CONFIGS[key])
            for key in configs for n in (layers or [None])]
    for key, config in rows:
        name = describe(key, config)
        for architecture in architectures:
            for jit in jit_modes:
                try:
                    seconds, cpu, first, work = time_step(config, architecture, JIT_MODES[jit],
                                                    args.batch, args.steps)
                except (tf.errors.OpError, ValueError, MemoryError) as err:
                    print(f"| {name} | {architecture} | {jit} | failed: "
                          f"{type(err).__name__} | | | | | | |", flush=True)
                    continue
                rate = work / seconds / 1e9
                print(f"| {name} | {architecture} | {jit} | {seconds * 1e3:.0f} | "
                      f"{args.batch / seconds:.0f} | {work / 1e9:.2f} | {rate:.1f} | "
                      f"{100 * rate / peak:.0f}% | {cpu * 1e3:.0f} | {first:.0f} |", flush=True)
    print(f"\nload average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
