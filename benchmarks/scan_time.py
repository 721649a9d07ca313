"""Where a Diagonal BiLSTM layer's time goes: its scan alone, forward and backward.

    python benchmarks/scan_time.py [--batch 16] [--size 28] [--units 16] [--steps 20]
                                   [--against OTHER_TREE/pixelrnn_tf/diagonal_scan.py]

One layer's `scan_directions` call with the shapes it has inside the paper's binarized-MNIST
model (both directions, input 2h maps plus the bias channel, h units), timed as a
`tf.function`: forward with plain loops (inference and SavedModels), forward while a
gradient tape records (each direction's loops as an XLA program, the two in parallel), and
forward plus the hand-written backward. Compare with `step_time.py --layers 1,7`: the
difference between the per-layer step time and the scan is everything else in a layer
(1x1 convolutions, residual, the down-shift, their gradients). Prints a markdown table of
medians.

`--against` times another version of the scan module (e.g. from a `git worktree` of the
base commit) in the same process, alternating calls of the two, and adds its column and the
ratio. On a shared machine whose speed drifts by 2x between minutes and between processes,
this is the comparison to trust: both versions see the same load. It also prints the largest
difference between the two versions' gradients.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib.util

import numpy as np
import tensorflow as tf

from pixelrnn_tf import diagonal_scan
from pixelrnn_tf.cli import ArgumentParser, positive_int
from pixelrnn_tf.diagonal_scan import phase_windows


def median_ms(functions, steps):
    """Median ms per call of each function, called in turns (order alternating per round)."""
    for function in functions:
        function()  # trace and compile
        function()
    times = [[] for _ in functions]
    order = list(range(len(functions)))
    for _ in range(steps):
        for k in order:
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), functions[k]())
            times[k].append(time.perf_counter() - start)
        order.reverse()
    return [statistics.median(t) * 1e3 for t in times]


def load_module(path):
    """A diagonal_scan.py of another tree, as a module of its own."""
    spec = importlib.util.spec_from_file_location("other_diagonal_scan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = ArgumentParser(prog="scan_time.py", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument("--size", type=positive_int, default=28, help="image height and width")
    parser.add_argument("--units", type=positive_int, default=16, help="h")
    parser.add_argument("--steps", type=positive_int, default=20, help="timed calls per row")
    parser.add_argument("--against", metavar="DIAGONAL_SCAN_PY",
                        help="another tree's pixelrnn_tf/diagonal_scan.py to time alongside")
    args = parser.parse_args(argv)
    if args.against and not os.path.isfile(args.against):
        parser.error(f"--against {args.against}: no such file")
    b, n, u = args.batch, args.size, args.units
    channels = 2 * u + 1  # the block's 2h input maps and the constant-one bias channel
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(1, b, n, n, channels)), tf.float32)
    weights = [tf.Variable(rng.normal(size=shape) * 0.1, dtype=tf.float32)
               for shape in ((2, channels, 4 * u), (2, 2 * u, 4 * u), (2, u), (2, u))]
    modules = [diagonal_scan] + ([load_module(args.against)] if args.against else [])
    rows = {"forward, plain loops (inference)": [], "forward under a tape (XLA loops)": [],
            "forward + hand-written backward": []}
    for module in modules:
        for name, function in zip(rows, scan_functions(module, inputs, weights)):
            rows[name].append(function)

    columns = 2 * n - 1
    print(f"batch {b}, {n}x{n}, h={u}, {channels} input channels, both directions; "
          f"{columns} skewed columns in {len(phase_windows(n, n))} phases per direction; "
          f"median of {args.steps} calls, TensorFlow {tf.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    if args.against:
        gradients = [function() for function in rows["forward + hand-written backward"]]
        difference = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(*gradients))
        print(f"this tree: {diagonal_scan.__file__}\nother: {args.against}\nlargest "
              f"gradient difference between them: {difference:.2g}\n")
        print("| what | this tree ms | other ms | this / other |")
        print("| --- | --- | --- | --- |")
    else:
        print("| what | ms | per column step |")
        print("| --- | --- | --- |")
    for name, functions in rows.items():
        ms = median_ms(functions, args.steps)
        if args.against:
            print(f"| {name} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[0] / ms[1]:.2f} |", flush=True)
        else:
            print(f"| {name} | {ms[0]:.1f} | {1e3 * ms[0] / columns:.0f} us |", flush=True)
    return 0


def scan_functions(module, inputs, weights):
    """tf.functions of `module.scan_directions`: forward, forward under a tape, forward and
    backward (returns the gradients of every input)."""

    def scan():
        return module.scan_directions(inputs, *weights, (False, True))

    @tf.function
    def forward():
        return scan()

    @tf.function
    def forward_taped():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            hidden = scan()
        return hidden

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.add_n([tf.reduce_sum(h * h) for h in scan()])
        return tape.gradient(loss, [inputs, *weights])

    return forward, forward_taped, forward_backward


if __name__ == "__main__":
    sys.exit(main())
