"""Export a trained PixelRNN or Multi-Scale PixelRNN as a versioned SavedModel for TF Serving.

    python export.py --workdir DIR [--checkpoint latest|best] --export-base DIR [--version N]
    python export.py --keras-model MODEL.keras --export-base DIR
    python export.py --preset binarized_mnist --export-base DIR   # a pretrained model

Writes EXPORT_BASE/VERSION/ (TF Serving's layout; VERSION defaults to one more than the
largest existing version, 1 for an empty base) with the signatures serving_default, sample,
complete and serve_examples (see pixelrnn_tf/serving.py). The export is written to a
temporary directory, checked by reloading it and comparing its log-likelihoods with the
model's, and only then renamed into place; an existing version is never overwritten.
A MultiScalePixelRNN gets the same signatures (a client cannot tell the difference).

The export carries TF Serving's warm-up records, assets.extra/tf_serving_warmup_requests
(PredictionLogs: serving_default at batch 1 and at --max-batch, a one-image sample, a
one-image complete, serve_examples and classify when exported), which TF Serving replays
before it serves the model, so the first client request is not the slow one; --no-warmup
leaves them out. assets.extra/pixelrnn_tf.json lists them.

A class-conditional model (num_classes=K) exports p(x | y): serving_default, sample and
complete also take int32 labels [None], one in [0, K) per image (sample: num_samples must
equal their count); serve_examples reads each example's label; and one more signature,
classify, takes uint8 images [None, H, W, C] and returns probabilities float32 [None, K]
(p(y | x) under the training label frequencies), label int32 [None] (their argmax) and
log_prob float32 [None] (the marginal log p(x), nats). The check before publishing scores
with labels too. An unconditional model's signatures are exactly those above.
"""

from __future__ import annotations

import argparse
import os
import sys

from pixelrnn_tf.cli import (
    ArgumentParser,
    Failure,
    positive_int,
    run_command,
    unexpected_error_line,
)

PROG = "export.py"


class ExportError(Exception):
    """A bad flag or destination: reported as one line."""


def existing_versions(export_base):
    """Integer version directories under `export_base` (none if it does not exist)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base)
                  if name.isdigit() and os.path.isdir(os.path.join(export_base, name)))


def next_version(export_base):
    versions = existing_versions(export_base)
    return versions[-1] + 1 if versions else 1


def export(model, export_base, version=None, method="cached", max_batch=None, examples=True,
           verify=True, warmup=True):
    """Writes `model` to EXPORT_BASE/VERSION atomically (with TF Serving's warm-up records
    unless not `warmup`); returns that path."""
    import numpy as np

    from pixelrnn_tf import serving

    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ExportError(f"--export-base {export_base} is a file, not a directory")
    if version is None:
        version = next_version(export_base)
    path = os.path.join(export_base, str(version))
    if os.path.lexists(path):
        raise ExportError(f"{path} already exists; pick another --version (existing: "
                          f"{existing_versions(export_base)})")
    check = None
    if verify:
        rng = np.random.default_rng(0)
        images = rng.integers(0, model.levels, (2, *model.image_shape)).astype(np.uint8)

        def check(tmp):
            serving.verify_export(tmp, model, images)  # scores, with labels if conditional
            if model.num_classes:
                verify_classify(tmp, model, images)
    serving.write_saved_model(model, path, method=method,
                              max_batch=max_batch or serving.DEFAULT_MAX_BATCH,
                              examples=examples, verify=check, warmup=warmup)
    return path


def verify_classify(export_dir, model, images):
    """Checks a conditional export's ``classify`` outputs against the model's
    (`class_conditional.classify`, `marginal_log_prob`: they also read the stored label
    frequencies p(y)) on uint8 `images`; raises AssertionError on a mismatch."""
    import numpy as np
    import tensorflow as tf

    from pixelrnn_tf import class_conditional

    loaded = tf.saved_model.load(os.fspath(export_dir))
    if "classify" not in loaded.signatures:
        raise AssertionError(f"{export_dir}: signature classify missing")
    got = {k: v.numpy() for k, v in loaded.signatures["classify"](
        images=tf.constant(images, tf.uint8)).items()}
    ints = tf.constant(images, tf.int32)
    _, probabilities = class_conditional.classify(model, ints)
    marginal = class_conditional.marginal_log_prob(model, ints).numpy()
    tolerance = 1e-4 * max(1.0, float(np.abs(marginal).max()))
    chosen = np.take_along_axis(got["probabilities"], got["label"][:, None].astype(np.int64),
                                axis=1)[:, 0]  # the label is the argmax, up to a rounding tie
    if not (np.abs(got["probabilities"] - probabilities.numpy()).max() <= 1e-4
            and np.abs(got["log_prob"] - marginal).max() <= tolerance
            and np.all(chosen >= got["probabilities"].max(axis=1) - 1e-6)):
        raise AssertionError(f"{export_dir}: exported classify {got} differs from the "
                             f"model's probabilities {probabilities.numpy()}, log p(x) "
                             f"{marginal}")


def build_parser():
    from pixelrnn_tf.presets import list_presets

    parser = ArgumentParser(
        prog=PROG, description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.strip().splitlines()[2:]) + "\n\nThe SavedModel runs "
               "without this project (tf.saved_model.load, saved_model_cli, TF Serving).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", metavar="DIR", help="training work directory")
    source.add_argument("--keras-model", metavar="FILE",
                        help="a saved .keras PixelRNN or MultiScalePixelRNN")
    source.add_argument("--preset", metavar="NAME",
                        help="a pretrained model shipped with pixelrnn_tf: "
                             f"{', '.join(list_presets())}")
    parser.add_argument("--checkpoint", default="latest",
                        help="with --workdir: 'latest', 'best' (lowest validation NLL) or a "
                             "checkpoint prefix (default: latest)")
    parser.add_argument("--export-base", required=True, metavar="DIR",
                        help="directory of versions; the model goes to DIR/VERSION")
    parser.add_argument("--version", type=positive_int, metavar="N",
                        help="version number (default: one more than the largest present)")
    parser.add_argument("--sampler", choices=("cached", "naive"), default="cached",
                        help="sampler inside the sample/complete signatures (default: cached)")
    parser.add_argument("--max-batch", type=positive_int, metavar="N",
                        help="largest batch a request may send or ask for (default: 64)")
    parser.add_argument("--no-examples", action="store_true",
                        help="leave out the serve_examples signature")
    parser.add_argument("--no-warmup", action="store_true",
                        help="leave out TF Serving's warm-up records "
                             "(assets.extra/tf_serving_warmup_requests)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip reloading the export and comparing it with the model")
    return parser


def run(args) -> int:
    from pixelrnn_tf.presets import load_preset
    from pixelrnn_tf.workdir import load_model

    if args.workdir is not None and not os.path.isdir(args.workdir):
        raise ExportError(f"--workdir {args.workdir}: no such directory")
    if args.keras_model is not None and not os.path.isfile(args.keras_model):
        raise ExportError(f"--keras-model {args.keras_model}: no such file")
    if args.preset is not None:
        model = load_preset(args.preset)
    else:
        model = load_model(args.workdir or args.keras_model, args.checkpoint)
    path = export(model, args.export_base, args.version, args.sampler, args.max_batch,
                  examples=not args.no_examples, verify=not args.no_verify,
                  warmup=not args.no_warmup)
    print(f"exported {path}")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.presets import PresetError
    from pixelrnn_tf.workdir import TrainingError

    return run_command(PROG, lambda: run(args), [
        Failure((ExportError, TrainingError, ConfigError, PresetError, FileExistsError)),
        Failure(AssertionError, lambda e: "error: the export does not match the model, not "
                f"published: {e}"),
        Failure(Exception, unexpected_error_line)],
        interrupted="interrupted; nothing was published")


if __name__ == "__main__":
    sys.exit(main())
