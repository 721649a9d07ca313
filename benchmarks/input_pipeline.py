"""Input pipeline throughput: images/s that `pixelrnn_tf.data.make_dataset` delivers.

Builds 28x28x1 and 32x32x3 datasets, plain and GZIP, in a temporary directory (from the
offline MNIST / CIFAR-10 JPEG files in <project>/../shared/data when present, else random
images), reads each in training mode (shuffle, repeat, batch, parse) and prints a table of
the median images/s over several runs. The train-step column comes from the core benchmark
(benchmarks/step_time.py); pass it with --train-images-per-s to get the ratio, which should
be at least 20x so that training is never input-bound.

    python benchmarks/input_pipeline.py [--batch-size 16] [--runs 5] \\
        [--train-images-per-s 28x28x1=900,32x32x3=120]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def build(tmp: pathlib.Path, shape: str, compression: str, shards: int, synthetic: bool,
          limit: int | None) -> tuple[pathlib.Path, str]:
    import numpy as np

    from data_prep.convert import convert

    out = tmp / f"{shape}-{compression}"
    real = {"28x28x1": SHARED / "mnist" / "mnist_train.npz",
            "32x32x3": SHARED / "cifar10_jpeg" / "cifar10_test_jpeg.npz"}[shape]
    if real.exists() and not synthetic:
        source, origin = f"npz:{real}", real.parent.name
    else:
        h, w, c = map(int, shape.split("x"))
        rng = np.random.default_rng(0)
        n = 60000 if c == 1 else 10000
        # Smooth random images (compress like photos, unlike white noise).
        small = rng.integers(0, 256, (n, h // 4, w // 4, c), dtype=np.uint8)
        images = small.repeat(4, axis=1).repeat(4, axis=2)
        np.save(tmp / f"{shape}.npy", images)
        source, origin = f"npy:{tmp / f'{shape}.npy'}", "synthetic"
    convert([source], str(out), shards=shards, compression=compression, limit=limit,
            log=lambda m: None)
    return out, origin


def measure(data_dir: pathlib.Path, batch_size: int, batches: int, runs: int) -> list[float]:
    from pixelrnn_tf import data

    rates = []
    for run in range(runs):
        ds = data.make_dataset(str(data_dir), "train", batch_size=batch_size, training=True,
                               seed=run)
        it = iter(ds)
        for _ in range(20):  # warm up: fill the shuffle buffer, start the threads
            next(it)
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        rates.append(batches * batch_size / (time.perf_counter() - t))
        del it
    return rates


def parse_train_rates(text: str | None) -> dict[str, float]:
    out = {}
    for part in (text or "").split(","):
        if part.strip():
            k, _, v = part.partition("=")
            out[k.strip()] = float(v)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (16, paper)")
    p.add_argument("--batches", type=int, default=2000, help="batches timed per run")
    p.add_argument("--runs", type=int, default=5, help="runs per cell; the median is shown")
    p.add_argument("--shards", type=int, default=4, help="shards per dataset")
    p.add_argument("--limit", type=int, help="examples per dataset (default: all)")
    p.add_argument("--synthetic", action="store_true", help="random images, not ../shared/data")
    p.add_argument("--train-images-per-s", metavar="28x28x1=R,32x32x3=R",
                   help="train-step images/s from the core benchmark, for the ratio column")
    args = p.parse_args(argv)
    train = parse_train_rates(args.train_images_per_s)

    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, batch {args.batch_size}, "
          f"{args.shards} shards, median of {args.runs} runs x {args.batches} batches",
          file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pixelrnn_input_bench_") as tmp:
        for shape in ("28x28x1", "32x32x3"):
            for comp in ("none", "GZIP"):
                d, origin = build(pathlib.Path(tmp), shape, comp, args.shards, args.synthetic,
                                  args.limit)
                rates = measure(d, args.batch_size, args.batches, args.runs)
                med = statistics.median(rates)
                mb = sum(f.stat().st_size for f in d.glob("train-*")) / 1e6
                t = train.get(shape)
                rows.append((shape, origin, comp, f"{mb:.0f}", f"{med:,.0f}",
                             f"{min(rates):,.0f}-{max(rates):,.0f}",
                             f"{t:,.0f}" if t else "(fill in)",
                             f"{med / t:,.0f}x" if t else "-"))
                print(f"  {shape} {comp}: {med:,.0f} images/s", file=sys.stderr)
    head = ("images", "data", "compression", "MB", "reader images/s", "range",
            "train step images/s", "reader / train")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(" --- " for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
