"""Where the MNIST train step's time goes: the TF profiler's trace, summed by kind of op.

    python benchmarks/profile_step.py [--steps 5] [--jit off|on] [--layers 7] [--top 25]

Traces `--steps` train steps of the paper's binarized-MNIST configuration (Diagonal BiLSTM,
7 layers, h=16, batch 16; `step_time.py`'s step) with `tf.profiler.experimental`, reads the
trace's XPlane and prints the self time (an event's duration minus its children's) per step,
summed over every thread, by category: the XLA programs' matmuls (the scan loops), their gate
maths, gathers, dynamic slices and other fused ops, the loop and executor overheads, and each
TensorFlow op type outside the loops. Waiting (BlockUntilReady) is left out, so the total is
CPU time, about twice the wall time when both cores work.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from step_time import CONFIGS, make_train_step
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from pixelrnn_tf import PixelRNN

OVERHEAD = ("while", "Thunk", "ParallelFor", "CpuExecutable", "ExecutorState", "conditional")


def category(name):
    if name.startswith("MatMul"):
        return "XLA loops: matmul"
    if "tanh" in name or "logistic" in name:
        return "XLA loops: gate maths"
    if "gather" in name:
        return "XLA loops: gather"
    if "dynamic-update-slice" in name or "dynamic-slice" in name:
        return "XLA loops: dynamic slices (TensorArrays)"
    if name.startswith(OVERHEAD):
        return "overhead: " + name.split(":")[0].split(".")[0]
    if ":" in name:
        return "TF op: " + name.rsplit(":", 1)[1]
    return "XLA: " + name.split(".")[0].split("_")[0]


def self_times(xplane_file):
    """{(thread, event name): self time in ps} over the host CPU plane."""
    space = xplane_pb2.XSpace()
    with open(xplane_file, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            stack = []
            for ev in sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps)):
                while stack and stack[-1][1] <= ev.offset_ps:
                    stack.pop()
                key = (line.name.split("/")[0], plane.event_metadata[ev.metadata_id].name)
                if stack:
                    totals[stack[-1][0]] -= ev.duration_ps
                totals[key] += ev.duration_ps
                stack.append((key, ev.offset_ps + ev.duration_ps))
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit", choices=("off", "on"), default="off")
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.layers < 1 or args.top < 1:
        print("profile_step.py: error: --steps, --layers and --top must be >= 1", file=sys.stderr)
        return 2
    model = PixelRNN("diagonal_bilstm", **dict(CONFIGS["mnist"], num_layers=args.layers))
    images = tf.constant(np.random.default_rng(0).integers(0, 2, (16, 28, 28, 1)), tf.int32)
    step = make_train_step(model, args.jit == "on")
    for _ in range(3):
        step(images).numpy()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            step(images).numpy()
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        totals = self_times(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0])
    by_category = collections.Counter()
    for (thread, name), ps in totals.items():
        if thread != "python" and name != "BlockUntilReady":
            by_category[category(name)] += ps
    cpu = sum(by_category.values()) / 1e9 / args.steps
    print(f"jit {args.jit}, {args.layers} layers, {args.steps} traced steps: wall "
          f"{wall * 1e3:.0f} ms/step (with the profiler on), CPU {cpu:.0f} ms/step, load "
          f"average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print("| category | CPU ms/step | share |")
    print("| --- | --- | --- |")
    for name, ps in by_category.most_common(args.top):
        ms = ps / 1e9 / args.steps
        print(f"| {name} | {ms:.1f} | {100 * ms / cpu:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
