"""Compares models image by image: mean NLL with its standard error, and the paired difference.

    python benchmarks/compare_nll.py results/runs/A results/runs/B --split test

Each RUN is a `train.py --workdir` (its latest checkpoint: for an average of checkpoints, the
average). Every model scores the same images of --split: file order, read as the first run
reads them (its data directory, or --data; its binarization and seed). Prints a table: per
model the mean NLL (nats per image), the standard error of that mean over the images, and
bits/dim; then for every model after the first its paired difference to the first (mean of
the per-image differences and its standard error). A test set of 10,000 images measures a
mean NLL only to within about +-0.2 nats, but two models scored on the same images differ far
more precisely than that: the paired standard error says how much. A class-conditional model
is scored by its exact marginal -log p(x) = -logsumexp_y [log p(x | y) + log p(y)], comparable
with an unconditional model's.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pixelrnn_tf.cli import ArgumentParser, positive_int


class CompareError(Exception):
    pass


def per_image_nll(model, dataset) -> np.ndarray:
    """-log p(x) in nats of every image of `dataset` (batches [B, H, W, C]) -> float64 [N];
    for a class-conditional model the exact marginal -log p(x) (K passes per image)."""
    import tensorflow as tf

    from pixelrnn_tf.class_conditional import marginal_log_prob

    if model.num_classes:
        score = tf.function(lambda images: -marginal_log_prob(model, images))
    else:
        score = tf.function(lambda images: -model.log_prob(images))
    return np.concatenate([score(batch).numpy().astype(np.float64) for batch in dataset])


def standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def compare(runs, split, data_dir=None, batch_size=100) -> list[dict]:
    """[{"run", "images", "nats", "standard_error", "bits_per_dim", and for every run after
    the first "difference", "difference_standard_error" (this run minus the first)}]."""
    import tensorflow as tf

    from pixelrnn_tf import data
    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.losses import nats_to_bits_per_dim
    from pixelrnn_tf.steps import nll_dims
    from pixelrnn_tf.workdir import TrainingError, Workdir, load_model

    rows, first, images = [], None, None
    for run in runs:
        try:
            saved = Workdir(run).read()
            if saved is None:
                raise CompareError(f"{run}: no config.json (not a train.py workdir)")
            config, spec = saved
            model = load_model(run)
        except (TrainingError, ConfigError) as err:
            raise CompareError(f"{run}: cannot load the model ({err})") from None
        if images is None:  # the first run's data, binarization and seed, for every model
            images = dict(data_dir=data_dir or spec.data_dir, expected_shape=spec.image_shape,
                          expected_levels=spec.levels, binarize=config.model.binarize,
                          seed=config.optimization.seed)
        elif (spec.image_shape, spec.levels) != (images["expected_shape"],
                                                 images["expected_levels"]):
            raise CompareError(f"{run}: a model of {spec.describe()}, unlike the first run's; "
                               "compare models of the same data")
        source = images["data_dir"]
        try:
            dataset = data.make_dataset(split=split, batch_size=batch_size, training=False,
                                        **images)
            nll = per_image_nll(model, dataset)
        except (data.DataError, TrainingError) as err:
            raise CompareError(f"{run}: cannot score {split!r} of {source} ({err})") from None
        except tf.errors.OpError as err:
            raise CompareError(f"{run}: cannot score {split!r} of {source} "
                               f"({err.message.strip().splitlines()[0]})") from None
        row = {"run": run, "images": len(nll), "nats": float(nll.mean()),
               "standard_error": standard_error(nll),
               "bits_per_dim": nats_to_bits_per_dim(float(nll.mean()),
                                                    nll_dims(model)["total"])}
        if first is None:
            first = nll
        else:  # the same images, read alike: nll[i] and first[i] score the same image
            difference = nll - first
            row.update(difference=float(difference.mean()),
                       difference_standard_error=standard_error(difference))
        rows.append(row)
    return rows


def table(rows, split) -> str:
    lines = [f"| run | {split} images | mean nats | standard error | bits/dim | minus the "
             "first run (paired) |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        paired = (f"{row['difference']:+.4f} +- {row['difference_standard_error']:.4f}"
                  if "difference" in row else "")
        lines.append(f"| {row['run']} | {row['images']} | {row['nats']:.4f} | "
                     f"{row['standard_error']:.4f} | {row['bits_per_dim']:.4f} | {paired} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="compare_nll.py", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="train.py workdirs")
    parser.add_argument("--split", default="test", help="split to score (default test)")
    parser.add_argument("--data", metavar="DIR",
                        help="data directory (default: the one in the first run's "
                        "config.json)")
    parser.add_argument("--batch-size", type=positive_int, default=100,
                        help="images per batch (default 100)")
    args = parser.parse_args(argv)
    try:
        rows = compare(args.runs, args.split, args.data, args.batch_size)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(table(rows, args.split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
