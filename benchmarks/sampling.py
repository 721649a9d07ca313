"""Images/s of naive vs cached sampling, in a tf.function and through the SavedModel.

    python benchmarks/sampling.py [--configs mnist,colour] [--batches 1,16]
        [--naive-pixels 8] [--repeats 3] [--architecture diagonal_bilstm]

The naive sampler does one full forward pass per sub-pixel, so its cost per pixel is the
same at every position: it is timed on the last --naive-pixels pixels only (a completion
with all earlier pixels known) and extrapolated to the whole image; the table says so.
The cached sampler is timed on whole images (median of --repeats calls after a warm-up).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pixelrnn_tf import PixelRNN, sampling, serving  # noqa: E402

CONFIGS = {
    "mnist": ("28x28x1, 2 levels, 7 layers h=16",
              dict(image_shape=(28, 28, 1), levels=2, num_layers=7, hidden_dim=16)),
    "colour": ("32x32x3, 256 levels, 4 layers h=32, output 1024",
               dict(image_shape=(32, 32, 3), levels=256, num_layers=4, hidden_dim=32)),
}


def median_seconds(fn, repeats):
    fn()  # trace / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class InMemory:
    name = "tf.function"

    def __init__(self, model, directory):
        self.model = model

    def cached(self, batch, seed):
        return sampling.sample(self.model, batch, seed).numpy()

    def naive_tail(self, images, known_pixels, seed):
        return sampling.complete(self.model, images, known_pixels, seed,
                                 method="naive").numpy()


class ThroughSavedModel:
    name = "SavedModel"

    def __init__(self, model, directory):
        self.signatures = {}
        for method in ("cached", "naive"):
            path = os.path.join(directory, method)
            serving.write_saved_model(model, path, method=method, max_batch=64,
                                      examples=False)
            self.signatures[method] = tf.saved_model.load(path).signatures

    def cached(self, batch, seed):
        return self.signatures["cached"]["sample"](
            num_samples=tf.constant(batch), seed=tf.constant(seed, tf.int64),
            temperature=tf.constant(1.0))["images"].numpy()

    def naive_tail(self, images, known_pixels, seed):
        return self.signatures["naive"]["complete"](
            images=tf.constant(images.astype(np.uint8)),
            known_pixels=tf.constant(known_pixels), seed=tf.constant(seed, tf.int64),
            temperature=tf.constant(1.0))["images"].numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="mnist,colour")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runtimes", default="function,savedmodel")
    parser.add_argument("--architecture", default="diagonal_bilstm")
    parser.add_argument("--naive-pixels", type=int, default=8,
                        help="pixels the naive sampler is timed on (then extrapolated)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runtimes = {"function": InMemory, "savedmodel": ThroughSavedModel}
    print(f"{args.architecture}; {os.cpu_count()} CPU cores (load average "
          f"{os.getloadavg()[0]:.1f} at the start), TF {tf.__version__}; naive timed on the "
          f"last {args.naive_pixels} pixels and extrapolated; cached on whole images, median "
          f"of {args.repeats}\n")
    print("| configuration | batch | runtime | naive images/s (extrapolated) | cached images/s "
          "| cached s/batch | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key in args.configs.split(","):
        label, config = CONFIGS[key]
        model = PixelRNN(args.architecture, **config)
        model.build()
        height, width, channels = config["image_shape"]
        num_pixels = height * width
        tail = min(args.naive_pixels, num_pixels)
        with tempfile.TemporaryDirectory() as directory:
            for runtime_key in args.runtimes.split(","):
                runtime = runtimes[runtime_key](model, directory)
                for batch in (int(b) for b in args.batches.split(",")):
                    images = np.zeros((batch, height, width, channels), np.int32)
                    naive = median_seconds(lambda: runtime.naive_tail(
                        images, num_pixels - tail, 1), 1) * num_pixels / tail
                    cached = median_seconds(lambda: runtime.cached(batch, 1), args.repeats)
                    print(f"| {label} | {batch} | {runtime.name} | {batch / naive:.3g} | "
                          f"{batch / cached:.3g} | {cached:.2f} | {naive / cached:.0f}x |",
                          flush=True)


if __name__ == "__main__":
    main()
