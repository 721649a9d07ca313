"""The whole main job on the built-in digits: `python -m pixelrnn_tf.cli.demo --out DIR`.

1. converts scikit-learn's 8x8 digits (17 levels) into TFRecords in OUT/data/digits;
2. trains the `demo` preset in OUT/workdir (rerunning resumes; a finished run is reused);
3. evaluates the best checkpoint (lowest validation NLL) on the test split;
4. writes OUT/samples.png and OUT/completions.png (rows: originals, the top halves given,
   the completions);
5. prints where the TensorBoard logs, checkpoints and the final model are.

Takes a couple of minutes on 2 CPU cores. `make demo` runs it with OUT=demo_out.
"""

from __future__ import annotations

import os
import sys
import time

from pixelrnn_tf.cli import (
    EXIT_PREEMPTED,
    ArgumentParser,
    Failure,
    run_command,
    tensorflow_error_line,
)

PNG_SCALE = 4  # 8x8 digits are tiny: draw every pixel as a 4x4 block


def prepare_digits(out_dir: str) -> str:
    """OUT/data/digits, converted once (an existing valid dataset is reused)."""
    from data_prep.convert import convert
    from pixelrnn_tf import data

    data_dir = os.path.join(out_dir, "data", "digits")
    if os.path.exists(os.path.join(data_dir, data.MANIFEST_NAME)):
        data.read_manifest(data_dir)  # raises DataError if it is not usable
        print(f"[1/4] using the digits in {data_dir}", flush=True)
        return data_dir
    print(f"[1/4] converting scikit-learn's digits into {data_dir}", flush=True)
    convert(["digits"], data_dir, val_fraction=0.1, test_fraction=0.1, seed=0)
    return data_dir


def run(out_dir: str, overrides=()) -> dict:
    from pixelrnn_tf import config as config_lib
    from pixelrnn_tf.evaluation import evaluate
    from pixelrnn_tf.images import image_grid, write_png, zoomed
    from pixelrnn_tf.summaries import first_images, sample_grids
    from pixelrnn_tf.trainer import train_and_evaluate
    from pixelrnn_tf.workdir import Workdir, load_model

    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    data_dir = prepare_digits(out_dir)
    workdir = os.path.join(out_dir, "workdir")
    config = config_lib.apply_overrides(config_lib.get_preset("demo"), overrides)
    print(f"[2/4] training the demo preset in {workdir}", flush=True)
    train_and_evaluate(config, workdir, data_dir)

    print("[3/4] evaluating the best checkpoint on the test split", flush=True)
    result = evaluate(workdir, data_dir, "test", checkpoint="best", config=config)

    print("[4/4] sampling", flush=True)
    model = load_model(workdir, "best")
    files = Workdir(workdir)
    spec = files.read().data
    originals, _ = first_images(spec, config, "test", 8)
    grids = sample_grids(model, originals, num_samples=64, seed=0, temperature=1.0)
    samples_png = os.path.join(out_dir, "samples.png")
    completions_png = os.path.join(out_dir, "completions.png")
    write_png(samples_png, zoomed(image_grid(grids["samples"], spec.levels, columns=8),
                                  PNG_SCALE))
    write_png(completions_png, zoomed(image_grid(grids["completions"], spec.levels,
                                                 columns=len(originals)), PNG_SCALE))
    minutes = (time.perf_counter() - start) / 60
    print(f"""
demo finished in {minutes:.1f} min
  test NLL:     {result['nats']:.2f} nats per image ({result['bits_per_dim']:.3f} bits/dim) over \
{result['num_images']} images, best checkpoint (step {result['step']})
  samples:      {samples_png}
  completions:  {completions_png} (rows: originals, top halves given, completions)
  checkpoints:  {files.checkpoint_dir} (best: {files.best_dir})
  final model:  {files.final_model}
  evaluation:   {files.eval_path('test')}
  TensorBoard:  tensorboard --logdir {workdir}""", flush=True)
    return result


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m pixelrnn_tf.cli.demo",
                            description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", metavar="DIR",
                        help="output directory (default demo_out)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a key of the demo preset")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from data_prep.errors import DataPrepError
    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.data import DataError
    from pixelrnn_tf.trainer import Preempted
    from pixelrnn_tf.workdir import TrainingError

    def command():
        run(args.out, args.overrides)
        return 0

    return run_command("demo", command, [
        Failure(Preempted, str, EXIT_PREEMPTED),
        Failure((ConfigError, DataError, DataPrepError, TrainingError, OSError)),
        Failure(tf.errors.OpError, tensorflow_error_line)])


if __name__ == "__main__":
    sys.exit(main())
