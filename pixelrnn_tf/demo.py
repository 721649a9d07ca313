"""The whole main job on the built-in digits: `python -m pixelrnn_tf.demo --out DIR`.

1. converts scikit-learn's 8x8 digits (17 levels) into TFRecords in OUT/data/digits;
2. trains the `demo` preset in OUT/workdir (rerunning resumes; a finished run is reused);
3. evaluates the best checkpoint (lowest validation NLL) on the test split;
4. writes OUT/samples.png and OUT/completions.png (rows: originals, the top halves given,
   the completions);
5. prints where the TensorBoard logs, checkpoints and the final model are.

Takes a couple of minutes on 2 CPU cores. `make demo` runs it with OUT=demo_out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


def write_png(path: str, picture) -> None:
    """uint8 [H, W, C] -> PNG at `path`, written to a temporary name first."""
    import numpy as np
    import tensorflow as tf

    picture = np.repeat(np.repeat(picture, PNG_SCALE, axis=0), PNG_SCALE, axis=1)
    tmp = f"{path}.partial-{os.getpid()}"
    tf.io.write_file(tmp, tf.io.encode_png(picture))
    os.replace(tmp, path)


def run(out_dir: str, overrides=()) -> dict:
    from pixelrnn_tf import config as config_lib
    from pixelrnn_tf import training

    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    data_dir = prepare_digits(out_dir)
    workdir = os.path.join(out_dir, "workdir")
    config = config_lib.apply_overrides(config_lib.get_preset("demo"), overrides)
    print(f"[2/4] training the demo preset in {workdir}", flush=True)
    training.train_and_evaluate(config, workdir, data_dir)

    print("[3/4] evaluating the best checkpoint on the test split", flush=True)
    result = training.evaluate(workdir, data_dir, "test", checkpoint="best", config=config)

    print("[4/4] sampling", flush=True)
    model = training.load_model(workdir, "best")
    spec = training.read_workdir_config(workdir)[1]
    originals = training.first_images(spec, config, "test", 8)
    grids = training.sample_grids(model, originals, num_samples=64, seed=0, temperature=1.0)
    samples_png = os.path.join(out_dir, "samples.png")
    completions_png = os.path.join(out_dir, "completions.png")
    write_png(samples_png, training.image_grid(grids["samples"], spec.levels, columns=8))
    write_png(completions_png, training.image_grid(grids["completions"], spec.levels,
                                                   columns=len(originals)))
    minutes = (time.perf_counter() - start) / 60
    print(f"""
demo finished in {minutes:.1f} min
  test NLL:     {result['nats']:.2f} nats per image ({result['bits_per_dim']:.3f} bits/dim) over \
{result['num_images']} images, best checkpoint (step {result['step']})
  samples:      {samples_png}
  completions:  {completions_png} (rows: originals, top halves given, completions)
  checkpoints:  {os.path.join(workdir, training.CHECKPOINT_DIR)} (best: \
{os.path.join(workdir, training.BEST_DIR)})
  final model:  {os.path.join(workdir, training.FINAL_MODEL)}
  evaluation:   {os.path.join(workdir, 'eval_test.json')}
  TensorBoard:  tensorboard --logdir {workdir}""", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixelrnn_tf.demo",
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
    from pixelrnn_tf.training import Preempted, TrainingError

    try:
        run(args.out, args.overrides)
        return 0
    except Preempted as e:
        print(f"demo: {e}", file=sys.stderr)
        return 143
    except (ConfigError, DataError, DataPrepError, TrainingError, OSError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    except tf.errors.OpError as e:
        print(f"demo: error: {e.message.strip().splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
