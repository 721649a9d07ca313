"""Where a Diagonal BiLSTM layer's time goes: its scan alone, forward and backward.

    python benchmarks/scan_time.py [--batch 16] [--size 28] [--units 16] [--steps 20]

One layer's `scan_directions` call with the shapes it has inside the paper's binarized-MNIST
model (both directions, input 2h maps plus the bias channel, h units), timed as a
`tf.function`: forward with plain loops (inference and SavedModels), forward while a
gradient tape records (each direction's loops as an XLA program, the two in parallel), and
forward plus the hand-written backward. Compare with `step_time.py --layers 1,7`: the
difference between the per-layer step time and the scan is everything else in a layer
(1x1 convolutions, residual, the down-shift, their gradients). Prints a markdown table of
medians.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from pixelrnn_tf.cli import ArgumentParser, positive_int
from pixelrnn_tf.diagonal_scan import phase_windows, scan_directions


def median_ms(function, steps):
    function()  # trace and compile
    function()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), function())
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv=None):
    parser = ArgumentParser(prog="scan_time.py", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument("--size", type=positive_int, default=28, help="image height and width")
    parser.add_argument("--units", type=positive_int, default=16, help="h")
    parser.add_argument("--steps", type=positive_int, default=20, help="timed calls per row")
    args = parser.parse_args(argv)
    b, n, u = args.batch, args.size, args.units
    channels = 2 * u + 1  # the block's 2h input maps and the constant-one bias channel
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(1, b, n, n, channels)), tf.float32)
    weights = [tf.Variable(rng.normal(size=shape) * 0.1, dtype=tf.float32)
               for shape in ((2, channels, 4 * u), (2, 2 * u, 4 * u), (2, u), (2, u))]

    def scan():
        return scan_directions(inputs, *weights, (False, True))

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

    columns = 2 * n - 1
    print(f"batch {b}, {n}x{n}, h={u}, {channels} input channels, both directions; "
          f"{columns} skewed columns in {len(phase_windows(n, n))} phases per direction; "
          f"median of {args.steps} calls, TensorFlow {tf.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| what | ms | per column step |")
    print("| --- | --- | --- |")
    for name, function in (("forward, plain loops (inference)", forward),
                           ("forward under a tape (XLA loops)", forward_taped),
                           ("forward + hand-written backward", forward_backward)):
        ms = median_ms(function, args.steps)
        print(f"| {name} | {ms:.1f} | {1e3 * ms / columns:.0f} us |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
