"""Median train-step time (forward + backward + RMSProp update) per architecture.

    python benchmarks/step_time.py [--steps 20] [--quick]

Prints a markdown table: configuration, architecture, jit_compile, median ms/step, images/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pixelrnn_tf import ARCHITECTURES, PixelRNN  # noqa: E402

CONFIGS = {
    "mnist 28x28x1 L=2 7 layers h=16": dict(image_shape=(28, 28, 1), levels=2, num_layers=7,
                                            hidden_dim=16),
    "colour 32x32x3 L=256 4 layers h=32": dict(image_shape=(32, 32, 3), levels=256,
                                               num_layers=4, hidden_dim=32),
}


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
    model = PixelRNN(architecture, **config)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, config["levels"], (batch, *config["image_shape"])),
                         tf.int32)
    step = make_train_step(model, jit_compile)
    for _ in range(3):
        step(images).numpy()  # trace, compile, warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    parser.add_argument("--configs", default="all", help="'mnist', 'colour' or 'all'")
    parser.add_argument("--jit", default="off,on", help="'off', 'on' or 'off,on'")
    args = parser.parse_args()
    print(f"batch {args.batch}, median of {args.steps} steps, "
          f"{os.cpu_count()} CPU cores, TF {tf.__version__}\n")
    print("| configuration | architecture | jit_compile | ms/step | images/s |")
    print("| --- | --- | --- | --- | --- |")
    for name, config in CONFIGS.items():
        if args.configs != "all" and not name.startswith(args.configs):
            continue
        for architecture in args.architectures.split(","):
            for jit in args.jit.split(","):
                try:
                    seconds = time_step(config, architecture, jit == "on", args.batch,
                                        args.steps)
                    print(f"| {name} | {architecture} | {jit} | {seconds * 1e3:.0f} | "
                          f"{args.batch / seconds:.0f} |", flush=True)
                except Exception as err:  # noqa: BLE001 - report and continue the table
                    print(f"| {name} | {architecture} | {jit} | failed: "
                          f"{type(err).__name__} | |", flush=True)


if __name__ == "__main__":
    main()
