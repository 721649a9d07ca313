"""Images/s of naive vs cached sampling, in a tf.function and through the SavedModel.

    python benchmarks/sampling.py [--configs mnist,mnist_multiscale,colour] [--batches 1,16]
        [--naive-pixels 8] [--repeats 3] [--architecture diagonal_bilstm]

The naive sampler does one full forward pass per sub-pixel, so its cost per pixel is the
same at every position: it is timed on the last --naive-pixels pixels only (a completion
with all earlier pixels known) and extrapolated to the whole image; the table says so. For a
Multi-Scale PixelRNN each stage is timed that way (stage 1 on the small model alone, stage 2
with the whole small image known) and extrapolated to the pixels it samples (s * s, and
n * n - s * s), like every stage of `model.sampling_stages()`. The cached sampler is timed
on whole images (median of --repeats calls after a warm-up). Prints a markdown table.

    python benchmarks/sampling.py --compare-scales [--scale-pair mnist|colour] [--batches 1,16]
        [--repeats 5]

Single-scale vs Multi-Scale (mnist vs mnist_multiscale, or colour vs colour_multiscale),
cached sampler in a tf.function:
the single-scale model, the multi-scale model's stage 1 alone and the whole multi-scale model
are timed in turn within each repeat, so that a shared machine's changing load hits them
alike. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from pixelrnn_tf import MultiScalePixelRNN, PixelRNN, sampling, serving

CONFIGS = {
    "mnist": ("28x28x1, 2 levels, 7 layers h=16",
              dict(image_shape=(28, 28, 1), levels=2, num_layers=7, hidden_dim=16)),
    "mnist_multiscale": ("28x28x1 multi-scale 14->28, 2 levels, 7 layers h=16 per stage",
                         dict(image_shape=(28, 28, 1), small_size=14, levels=2, num_layers=7,
                              hidden_dim=16)),
    "colour": ("32x32x3, 256 levels, 4 layers h=32, output 1024",
               dict(image_shape=(32, 32, 3), levels=256, num_layers=4, hidden_dim=32)),
    "colour_multiscale": ("32x32x3 multi-scale 16->32, 256 levels, 4 layers h=32 per stage",
                          dict(image_shape=(32, 32, 3), small_size=16, levels=256,
                               num_layers=4, hidden_dim=32)),
}
SCALE_PAIRS = {"mnist": ("mnist", "mnist_multiscale"), "colour": ("colour", "colour_multiscale")}


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


def make_model(architecture, config):
    if "small_size" in config:
        return MultiScalePixelRNN(architecture, **config)
    return PixelRNN(architecture, **config)


def naive_seconds(runtime, model, batch, tail, make_runtime):
    """Seconds for the naive sampler to draw `batch` whole images, extrapolated from the
    last `tail` pixels of each sampling stage. The last stage is timed through the whole
    model (a completion with every earlier stage's pixels known, so they draw nothing);
    each earlier stage on its own model (`make_runtime(stage_model)`)."""
    height, width, channels = model.image_shape
    num_pixels = height * width
    images = np.zeros((batch, height, width, channels), np.int32)
    seconds = median_seconds(lambda: runtime.naive_tail(images, num_pixels - tail, 1), 1)
    *earlier, last = model.sampling_stages()
    fixed = np.zeros(num_pixels, bool) if last.fixed is None else last.fixed
    if fixed[num_pixels - tail:].any():
        raise SystemExit(f"--naive-pixels {tail} reaches a pixel an earlier stage draws; "
                         "use fewer")
    total = seconds * (num_pixels - fixed.sum()) / tail
    for stage in earlier:
        stage_pixels = stage.model.image_shape[0] * stage.model.image_shape[1]
        total += naive_seconds(make_runtime(stage.model), stage.model, batch,
                               min(tail, stage_pixels), make_runtime)
    return total


def stage_runtimes(runtime_class, directory):
    """model -> a `runtime_class` of it, one per model name, built on first use."""
    built = {}

    def runtime_of(model):
        if model.name not in built:
            built[model.name] = runtime_class(model, os.path.join(directory, model.name))
        return built[model.name]

    return runtime_of


def compare_scales(architecture, batches, repeats, pair="mnist"):
    """Cached sampling time of single- vs multi-scale, interleaved; prints a table."""
    single_name, multi_name = SCALE_PAIRS[pair]
    single = make_model(architecture, CONFIGS[single_name][1])
    multi = make_model(architecture, CONFIGS[multi_name][1])
    small, full = multi.small_size, multi.image_shape[0]
    contenders = {
        f"single-scale: {CONFIGS[single_name][0]}": single,
        f"multi-scale {small}->{full}: stage 1 alone ({small}x{small})": multi.small,
        f"multi-scale {small}->{full}: both stages": multi,
    }
    print(f"{architecture}, cached sampler in a tf.function; {os.cpu_count()} CPU cores (load "
          f"average {os.getloadavg()[0]:.1f} at the start), TF {tf.__version__}; median of "
          f"{repeats}, the models timed in turn within each repeat\n")
    print("| model | batch | s/batch | images/s | vs single-scale |")
    print("| --- | --- | --- | --- | --- |")
    for batch in batches:
        times = {name: [] for name in contenders}
        for model in contenders.values():
            sampling.sample(model, batch, 0).numpy()  # trace / warm up
        for repeat in range(repeats):
            for name, model in contenders.items():
                start = time.perf_counter()
                sampling.sample(model, batch, repeat).numpy()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(next(iter(times.values())))
        for name, seconds in times.items():
            median = statistics.median(seconds)
            print(f"| {name} | {batch} | {median:.2f} | {batch / median:.3g} | "
                  f"{median / base:.2f}x |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="mnist,mnist_multiscale,colour")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runtimes", default="function,savedmodel")
    parser.add_argument("--architecture", default="diagonal_bilstm")
    parser.add_argument("--naive-pixels", type=int, default=8,
                        help="pixels the naive sampler is timed on (then extrapolated)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale-pair", choices=sorted(SCALE_PAIRS), default="mnist",
                        help="with --compare-scales: the configurations compared")
    parser.add_argument("--compare-scales", action="store_true",
                        help="only time single- vs multi-scale cached sampling, interleaved")
    args = parser.parse_args()
    if args.compare_scales:
        compare_scales(args.architecture, [int(b) for b in args.batches.split(",")],
                       args.repeats, args.scale_pair)
        return
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
        model = make_model(args.architecture, config)
        height, width, _ = config["image_shape"]
        tail = min(args.naive_pixels, height * width)
        with tempfile.TemporaryDirectory() as directory:
            for runtime_key in args.runtimes.split(","):
                runtime = runtimes[runtime_key](model, directory)
                make_runtime = stage_runtimes(runtimes[runtime_key], directory)
                for batch in (int(b) for b in args.batches.split(",")):
                    naive = naive_seconds(runtime, model, batch, tail, make_runtime)
                    cached = median_seconds(
                        lambda runtime=runtime, batch=batch: runtime.cached(batch, 1),
                        args.repeats)
                    print(f"| {label} | {batch} | {runtime.name} | {batch / naive:.3g} | "
                          f"{batch / cached:.3g} | {cached:.2f} | {naive / cached:.0f}x |",
                          flush=True)


if __name__ == "__main__":
    main()
