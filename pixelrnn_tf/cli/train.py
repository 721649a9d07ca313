"""Train or evaluate a PixelRNN: `python train.py --data DIR --workdir DIR [--preset NAME]`.

Running the same command again resumes from the latest checkpoint in --workdir. A config with
small_size > 0 (the *_multiscale presets) trains a Multi-Scale PixelRNN, both stages jointly.
Also installed as the console script `pixelrnn-train`.
"""

from __future__ import annotations

import argparse
import os
import sys

from pixelrnn_tf.cli import (
    EXIT_PREEMPTED,
    ArgumentParser,
    Failure,
    positive_int,
    run_command,
    tensorflow_error_line,
)

PROG = "train.py"

EXAMPLES = """\
examples:
  python -m data_prep convert digits --out out/data/digits --val-fraction 0.1 --test-fraction 0.1
  python train.py --data out/data/digits --workdir out/runs/demo --preset demo
  python train.py --data out/data/digits --workdir out/runs/demo --evaluate test
  python train.py --data out/data/mnist --workdir out/runs/mnist \\
      --preset mnist_diagonal_bilstm --set cpu_replicas=2
  python train.py --data out/data/mnist --workdir out/runs/mnist_ms --preset mnist_multiscale
  python train.py --workdir out/runs/mnist_ms --evaluate test    # both terms and the total
  tensorboard --logdir out/runs/demo
  python train.py --workdir out/runs/demo_avg3 --average-from out/runs/demo --average-last 3
  python train.py --workdir out/runs/demo_avg3 --evaluate test    # the averaged weights
  python train.py --evaluate test --preset binarized_mnist --data out/data/binarized_mnist
      # a pretrained model shipped with the package; no work directory needed

multi-worker: set TF_CONFIG in every worker process (one per machine), e.g. worker 0 of 2:
  TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
              "task": {"type": "worker", "index": 0}}' python train.py --data ... --workdir ...
  (--workdir and --data on a shared file system; worker 0 writes the work directory)

exit status: 0 done, 1 a problem with the data, the config or the work directory, or a
non-finite loss (one line on stderr), 2 bad flags, 143 stopped by SIGTERM after saving a
checkpoint (rerun to resume), 130 Ctrl-C (not saved; the last periodic checkpoint stays).
"""


def build_parser() -> argparse.ArgumentParser:
    from pixelrnn_tf import presets
    from pixelrnn_tf.config import describe_keys, describe_presets

    epilog = (f"presets (--preset, training):\n{describe_presets()}\n\n"
              f"pretrained presets (--preset with --evaluate):\n"
              f"{presets.describe_presets()}\n\n"
              f"config keys (--set key=value):\n{describe_keys()}\n\n{EXAMPLES}")
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0], epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="DIR",
                        help="dataset directory written by `python -m data_prep convert` "
                        "(default when resuming: the one in WORKDIR/config.json)")
    parser.add_argument("--workdir", metavar="DIR",
                        help="checkpoints, TensorBoard logs, config.json, model.keras "
                        "(required, except with --evaluate --preset: there it is optional, "
                        "a directory for eval_SPLIT.json)")
    parser.add_argument("--preset", metavar="NAME",
                        help="training: start from this training config preset (default: "
                        "WORKDIR/config.json when resuming, else demo); with --evaluate: "
                        "the pretrained model of this name shipped with the package (see "
                        "the two lists below)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one config key (repeatable)")
    parser.add_argument("--stop-at-step", type=positive_int, metavar="N",
                        help="end this run at step N with a checkpoint (the learning-rate "
                        "schedule still runs over train_steps; rerun to continue)")
    parser.add_argument("--evaluate", metavar="SPLIT",
                        help="evaluate a checkpoint on the whole split instead of training; "
                        "writes WORKDIR/eval_SPLIT.json (a Multi-Scale run: also its terms "
                        "for the small image and for the rest given it); with --preset, "
                        "the pretrained model on --data (written only if --workdir is given)")
    parser.add_argument("--checkpoint", metavar="latest|best|PREFIX",
                        help="with --evaluate: the checkpoint to evaluate (default latest)")
    parser.add_argument("--average-from", metavar="RUN",
                        help="instead of training: write --workdir (a new directory) holding "
                        "the mean weights of the last checkpoints of the trained work "
                        "directory RUN; evaluate or export it like any run")
    parser.add_argument("--average-last", type=positive_int, metavar="N",
                        help="with --average-from: average the last N checkpoints (default: "
                        "all that RUN keeps, see keep_checkpoints)")
    return parser


def resolve_config(preset, overrides, saved):
    """The config of this run: --preset (or the saved config, or demo) plus --set."""
    from pixelrnn_tf import config as config_lib

    if preset is not None:
        base = config_lib.get_preset(preset)
    elif saved is not None:
        base = saved.config
    else:
        base = config_lib.get_preset("demo")
    return config_lib.apply_overrides(base, overrides)


def print_terms(result, config):
    """The two terms of a Multi-Scale evaluation, one line each (nothing for single-scale)."""
    terms = result.get("terms")
    if not terms:
        return
    size = config.model.small_size
    what = {"small": f"stage 1, the {size}x{size} image",
            "conditional": "stage 2, the other pixels given it"}
    for name, term in terms.items():
        print(f"  {name} ({what[name]}): {term['nats']:.4f} nats per image, "
              f"{term['bits_per_dim']:.4f} bits/dim over its {term['dims']} sub-pixels")
    print("  total = small + conditional: the exact -log p(x)")


def average(args) -> int:
    """--average-from: writes the averaged work directory."""
    from pixelrnn_tf.averaging import average_checkpoints
    from pixelrnn_tf.config import ConfigError

    other = [flag for flag, value in (
        ("--evaluate", args.evaluate), ("--data", args.data), ("--preset", args.preset),
        ("--set", args.overrides), ("--stop-at-step", args.stop_at_step),
        ("--checkpoint", args.checkpoint)) if value]
    if other:
        raise ConfigError(f"--average-from cannot be combined with {other[0]}")
    record = average_checkpoints(args.average_from, args.workdir, args.average_last)
    print(f"wrote {record['workdir']}: the mean of {', '.join(record['checkpoints'])} "
          f"of {args.average_from} (steps {', '.join(map(str, record['steps']))})")
    return 0


def print_evaluation(result, config, source, written):
    """The result of --evaluate: the NLL line, then a Multi-Scale model's terms and a
    class-conditional model's marginal NLL and accuracy."""
    where = f"; wrote {written}" if written else ""
    print(f"{result['split']}: {result['nats']:.4f} nats per image, "
          f"{result['bits_per_dim']:.4f} bits/dim over {result['num_images']} images "
          f"({source}){where}")
    print_terms(result, config)
    if "marginal" in result:
        print(f"  conditioned on the true labels; marginal -log p(x): "
              f"{result['marginal']['nats']:.4f} nats ({result['marginal']['bits_per_dim']:.4f} "
              f"bits/dim); generative classifier accuracy: "
              f"{100 * result['classifier_accuracy']:.2f}%")


def evaluate(args, saved) -> int:
    """--evaluate SPLIT: scores a checkpoint (or, with --preset, a pretrained model) and
    prints the result."""
    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.evaluation import evaluate
    from pixelrnn_tf.workdir import TrainingError

    if args.stop_at_step is not None:
        raise ConfigError("--stop-at-step only applies to training")
    if args.preset is not None:
        return evaluate_preset(args, saved)
    if saved is None:
        raise TrainingError(f"{args.workdir}: no config.json; train first")
    config = resolve_config(None, args.overrides, saved)
    result = evaluate(args.workdir, args.data, args.evaluate, args.checkpoint or "latest",
                      config)
    print_evaluation(result, config, f"step {result['step']}",
                     os.path.join(args.workdir, 'eval_' + args.evaluate + '.json'))
    return 0


def evaluate_preset(args, saved) -> int:
    """--evaluate SPLIT --preset NAME: scores the pretrained model NAME on --data; writes
    WORKDIR/eval_SPLIT.json only when --workdir is given (a directory that is not a
    training run's)."""
    from pixelrnn_tf import presets
    from pixelrnn_tf.config import PRESETS, ConfigError
    from pixelrnn_tf.evaluation import evaluate_model
    from pixelrnn_tf.workdir import TrainingError, Workdir

    if args.preset in PRESETS and args.preset not in presets.PRESETS:
        raise ConfigError(f"--preset {args.preset} is a training config; with --evaluate, "
                          "--preset names a pretrained model: "
                          f"{', '.join(presets.list_presets())}")
    preset = presets.entry(args.preset)
    if args.checkpoint is not None:
        raise ConfigError("--checkpoint does not apply to a pretrained preset (it has one set "
                          "of weights)")
    if args.data is None:
        raise ConfigError(f"--data DIR is required to evaluate preset {preset.name!r} (its "
                          f"test data: {preset.data_command})")
    if saved is not None:
        raise TrainingError(f"--workdir {args.workdir} holds a training run; its eval files "
                            "are its own model's: give another --workdir, or none")
    config = presets.evaluation_config(preset, args.overrides)
    result = evaluate_model(lambda: presets.load_preset(preset.name), args.data,
                            args.evaluate, config)
    result.update(preset=preset.name, sha256=preset.sha256)
    written = None
    if args.workdir is not None:
        workdir = Workdir(args.workdir)
        workdir.write_eval(args.evaluate, result)
        written = workdir.eval_path(args.evaluate)
    print_evaluation(result, config, f"preset {preset.name}", written)
    print(f"  recorded for the preset: {preset.test_nats:.4f} nats per image on "
          f"{preset.dataset} test ({preset.test_images} images)")
    return 0


def run(args) -> int:
    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.trainer import train_and_evaluate
    from pixelrnn_tf.workdir import Workdir

    if args.average_last is not None and args.average_from is None:
        raise ConfigError("--average-last only applies to --average-from")
    if args.average_from is not None:
        return average(args)
    saved = None if args.workdir is None else Workdir(args.workdir).read()
    if args.checkpoint is not None and args.evaluate is None:
        raise ConfigError("--checkpoint only applies to --evaluate (training always "
                          "resumes from the latest checkpoint)")
    if args.evaluate is not None:
        return evaluate(args, saved)
    if args.data is None and saved is None:
        raise ConfigError("--data DIR is required (no WORKDIR/config.json to resume from)")
    config = resolve_config(args.preset, args.overrides, saved)
    train_and_evaluate(config, args.workdir, args.data, args.stop_at_step)
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workdir is None and (args.evaluate is None or args.preset is None):
        parser.error("the following arguments are required: --workdir")
    import tensorflow as tf

    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.data import DataError
    from pixelrnn_tf.presets import PresetError
    from pixelrnn_tf.trainer import Preempted
    from pixelrnn_tf.workdir import TrainingError

    return run_command(PROG, lambda: run(args), [
        Failure(Preempted, str, EXIT_PREEMPTED),
        Failure((ConfigError, DataError, TrainingError, PresetError, OSError)),
        Failure(tf.errors.OpError, tensorflow_error_line)])


if __name__ == "__main__":
    sys.exit(main())
