"""Cost of the generative classifier of a class-conditional model, in images/s.

    python benchmarks/classify.py results/runs/mnist128_diagonal_bilstm_conditional \\
        --split test --batch-sizes 1,16,64,256 --repeats 5

`classify` scores every image under each of the K labels (`class_conditional`), so it should
cost about K times one `log_prob` pass, which the table gives beside it. Each cell is the
median over --repeats timed calls of one traced `tf.function` (a first call traces and is not
timed) on the first images of --split. Prints a table; exits 1 with one line on bad input.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pixelrnn_tf.cli import ArgumentParser, positive_int


class BenchmarkError(Exception):
    pass


def positive_ints(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def measure(run, split, batch_sizes, repeats, data_dir=None):
    """[{"batch", "classify_images_per_second", "log_prob_images_per_second", "ratio"}]."""
    import tensorflow as tf

    from pixelrnn_tf import class_conditional, data
    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.workdir import TrainingError, Workdir, load_model

    try:
        saved = Workdir(run).require()
        model = load_model(run)
    except (TrainingError, ConfigError, OSError) as err:
        raise BenchmarkError(f"{run}: cannot load the model ({err})") from None
    if not model.num_classes:
        raise BenchmarkError(f"{run}: not a class-conditional model (num_classes=0)")
    config, spec = saved
    try:
        dataset = data.make_dataset(data_dir or spec.data_dir, split, max(batch_sizes), False,
                                    expected_shape=spec.image_shape,
                                    expected_levels=spec.levels,
                                    binarize=config.model.binarize, dtype=tf.int32)
        images = next(iter(dataset))
    except (data.DataError, StopIteration) as err:
        raise BenchmarkError(f"{run}: cannot read {split!r} ({err})") from None
    classify = tf.function(lambda x: class_conditional.classify(model, x))
    labels = tf.zeros([max(batch_sizes)], tf.int32)
    log_prob = tf.function(lambda x, y: model.log_prob(x, y))

    def median_seconds(call):
        call()  # traces
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    rows = []
    for batch in batch_sizes:
        x, y = images[:batch], labels[:batch]
        if x.shape[0] < batch:
            raise BenchmarkError(f"{split!r} has fewer than {batch} images")
        t_classify = median_seconds(lambda x=x: classify(x)[0].numpy())
        t_score = median_seconds(lambda x=x, y=y: log_prob(x, y).numpy())
        rows.append({"batch": batch, "classify_images_per_second": batch / t_classify,
                     "log_prob_images_per_second": batch / t_score,
                     "ratio": t_classify / t_score})
    return model.num_classes, rows


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run", help="a train.py work directory of a conditional model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data", help="data directory (default: the run's)")
    parser.add_argument("--batch-sizes", default="1,16,64,256")
    parser.add_argument("--repeats", type=positive_int, default=5)
    args = parser.parse_args(argv)
    try:
        batch_sizes = positive_ints(args.batch_sizes)
        num_classes, rows = measure(args.run, args.split, batch_sizes, args.repeats, args.data)
    except (BenchmarkError, ValueError) as err:
        print(f"classify.py: error: {err}", file=sys.stderr)
        return 1
    print(f"classify vs log_prob of {args.run} (K = {num_classes} classes), median of "
          f"{args.repeats}")
    print("| batch | classify images/s | log_prob images/s | classify / log_prob time |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['batch']} | {row['classify_images_per_second']:.1f} | "
              f"{row['log_prob_images_per_second']:.1f} | {row['ratio']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
