"""Training throughput (images/s) of every preset through the real loop, 1 and 2 CPU replicas.

    python benchmarks/train_throughput.py [--presets demo,mnist_row_lstm] [--replicas 1,2]
                                          [--steps 6] [--log-every 2]

Each (preset, replicas) pair runs `train_and_evaluate` in a fresh process (`cpu_replicas` needs
one) for a few steps on random images of the preset's dataset shape (digits 8x8x1 17 levels,
MNIST 28x28x1 2 levels, CIFAR-10 / ImageNet32 32x32x3 and ImageNet64 64x64x3 with 256 levels),
written as TFRecords by `data_prep`, so the input pipeline is part of the measurement.
images/s is the median over the log intervals after the first (which holds tracing and XLA
compilation), as logged to TensorBoard; each interval's ms/step follows the row (on a shared
machine a slow phase of a minute shows there), then the user and system CPU time and minor page
faults per timed step (thousands of faults and much system time per step mean memory handed
back to the kernel and faulted in again) and the process's peak resident set. Prints a
markdown table, with the step's useful GFLOP (`pixelrnn_tf.flops`), the achieved GFLOP/s and
its share of the float32 matmul peak measured at the start of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Dataset shape and levels per preset family (the shape of the data the preset is meant for).
DATA = {
    "demo": ((8, 8, 1), 17), "test": ((8, 8, 1), 17), "mnist": ((28, 28, 1), 2),
    "cifar10": ((32, 32, 3), 256), "imagenet32": ((32, 32, 3), 256),
    "imagenet64": ((64, 64, 3), 256),
}


def data_for(preset):
    return DATA[preset.split("_")[0]]


def make_dataset(root, shape, levels, num_images=256):
    """Random images as a data_prep dataset under `root`; returns its directory."""
    import numpy as np

    from data_prep.convert import convert

    name = f"random_{'x'.join(map(str, shape))}_{levels}"
    out = os.path.join(root, name)
    if not os.path.exists(out):
        rng = np.random.default_rng(0)
        npz = os.path.join(root, f"{name}.npz")
        images = rng.integers(0, levels, (num_images, *shape), dtype=np.uint8)
        np.savez(npz, train=images)
        convert([f"npz:{npz}"], out, source_levels=levels)
    return out


def run_one(preset, replicas, jit, steps, log_every, data_dir, workdir):
    """In the child process: train a few steps; print one JSON line."""
    from pixelrnn_tf import config as config_lib
    from pixelrnn_tf import flops
    from pixelrnn_tf.distribution import use_jit
    from pixelrnn_tf.trainer import Trainer

    config = config_lib.apply_overrides(config_lib.get_preset(preset), [
        f"train_steps={steps}", f"steps_per_epoch={steps}", f"log_every_steps={log_every}",
        f"checkpoint_every_steps={steps}", "validation_split=", "image_every_epochs=0",
        "progress_bar=false", f"cpu_replicas={replicas if replicas > 1 else 0}",
        "binarize=false", "warmup_steps=0", f"jit_compile={jit}"])
    trainer = Trainer(config, workdir, data_dir)
    usage = []  # getrusage at the end of each log interval
    write_train_scalars = trainer.write_train_scalars

    def write_and_measure(interval):
        write_train_scalars(interval)
        usage.append(resource.getrusage(resource.RUSAGE_SELF))

    trainer.write_train_scalars = write_and_measure
    results = trainer.run()
    # From the end of the first interval (tracing, compilation) to the end of the last.
    timed_steps = (len(usage) - 1) * log_every
    first, last = usage[0], usage[-1]
    print("RESULT " + json.dumps({
        "images_per_second": results["train_images_per_second"],
        "intervals": trainer.throughput,
        "jit": use_jit(config, trainer.distribution),
        "parameters": trainer.model.count_params(),
        "batch": config.optimization.batch_size,
        "flops": flops.train_step_flops(trainer.model, config.optimization.batch_size),
        # per timed step: user and system CPU seconds of all threads, minor page faults
        "user": (last.ru_utime - first.ru_utime) / timed_steps,
        "system": (last.ru_stime - first.ru_stime) / timed_steps,
        "faults": (last.ru_minflt - first.ru_minflt) / timed_steps,
        "peak_rss_gb": last.ru_maxrss / 2**20}),  # ru_maxrss is in KiB on Linux
        flush=True)


def run_and_print(args, root, preset, shape, levels, data_dir, replicas, jit, peak):
    workdir = os.path.join(root, f"run-{preset}-{replicas}-{jit}")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--log-every", str(args.log_every), "--one", preset,
         str(replicas), jit, str(args.steps), data_dir, workdir],
        capture_output=True, text=True, timeout=args.timeout)
    data = f"{'x'.join(map(str, shape))}, {levels} levels"
    if proc.returncode != 0 or "RESULT " not in proc.stdout:
        lines = [line for line in proc.stderr.splitlines()
                 if line.strip() and not line.startswith(("I0000", "E0000", "W0000", "WARNING"))]
        reason = "killed (out of memory?)" if proc.returncode < 0 else (lines or ["?"])[-1][:80]
        print(f"| {preset} | {data} | | {replicas} | {jit} | failed (exit {proc.returncode}): "
              f"{reason} | | | | |", flush=True)
        return
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    rate = result["images_per_second"]
    gflops = result["flops"] / result["batch"] * rate / 1e9
    print(f"| {preset} | {data} | {result['parameters']:,} | {replicas} | "
          f"{'on' if result['jit'] else 'off'} | {rate:.1f} | "
          f"{1000 * result['batch'] / rate:.0f} | {result['flops'] / 1e9:.2f} | "
          f"{gflops:.1f} | {100 * gflops / peak:.0f}% |", flush=True)
    intervals = " ".join(f"{1000 * result['batch'] / r:.0f}" for r in result["intervals"][1:])
    print(f"  ({preset}, {replicas} replicas, jit {jit}: {time.perf_counter() - start:.0f} s "
          f"wall; ms/step per interval: {intervals}; per timed step: "
          f"user {1000 * result['user']:.0f} ms, system {1000 * result['system']:.0f} ms, "
          f"{result['faults']:.0f} page faults; peak resident set "
          f"{result['peak_rss_gb']:.2f} GiB)", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="all", help="comma-separated preset names")
    parser.add_argument("--replicas", default="1,2", help="CPU replica counts, e.g. 1,2")
    parser.add_argument("--jit", default="auto",
                        help="jit_compile values to try, e.g. auto or auto,on,off (auto)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per run (6)")
    parser.add_argument("--log-every", type=int, default=2,
                        help="steps per timing interval; the first is not counted (2)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS,
                        metavar=("PRESET", "REPLICAS", "JIT", "STEPS", "DATA", "WORKDIR"))
    args = parser.parse_args()
    if args.one:
        preset, replicas, jit, steps, data_dir, workdir = args.one
        run_one(preset, int(replicas), jit, int(steps), args.log_every, data_dir, workdir)
        return 0
    if args.steps < 2 * args.log_every:
        parser.error("--steps must be at least 2 x --log-every (the first interval is "
                     "not counted)")

    import tensorflow as tf

    from pixelrnn_tf.config import PRESETS
    from pixelrnn_tf.flops import matmul_peak_gflops

    presets = list(PRESETS) if args.presets == "all" else args.presets.split(",")
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s): {', '.join(unknown)}")
    replica_counts = [int(r) for r in args.replicas.split(",")]
    print(f"{args.steps} steps per run, timed over steps {args.log_every + 1}-{args.steps}, "
          f"{os.cpu_count()} CPU cores, TF {tf.__version__}")
    peak = matmul_peak_gflops()
    print(f"float32 peak: 2048x2048 tf.matmul at {peak:.1f} GFLOP/s (median of 10); "
          f"TF_CPU_ALLOCATOR_USE_BFC={os.environ.get('TF_CPU_ALLOCATOR_USE_BFC')}\n")
    print("| preset | data | parameters | replicas | jit_compile | images/s | ms/step "
          "| GFLOP/step | GFLOP/s | % of peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="train_throughput-") as root:
        for preset in presets:
            shape, levels = data_for(preset)
            data_dir = make_dataset(root, shape, levels)
            for replicas in replica_counts:
                for jit in args.jit.split(","):
                    run_and_print(args, root, preset, shape, levels, data_dir, replicas, jit,
                                  peak)
    return 0


if __name__ == "__main__":
    sys.exit(main())
