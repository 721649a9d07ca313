"""Sample or complete images with a trained PixelRNN and write a PNG grid.

    python -m pixelrnn_tf.cli.sample --workdir DIR [--checkpoint latest|best] --num 16 \\
        --out samples.png
    python -m pixelrnn_tf.cli.sample --saved-model EXPORT_BASE/1 --num 16 --out samples.png
    python -m pixelrnn_tf.cli.sample --preset binarized_mnist --num 16 --out samples.png
    python -m pixelrnn_tf.cli.sample --workdir DIR --complete IMAGES.npz --known-rows 14 \\
        --out completions.png

A class-conditional model (trained with num_classes=K) draws p(x | y) and needs a label per
image: --labels L,L,... (one per sample; their count is --num) or --per-class N (N samples
of every class, one grid row per class); a completion takes --labels or the npz file's
label array (--label-key, default "labels"):

    python -m pixelrnn_tf.cli.sample --workdir DIR --per-class 8 --out classes.png
    python -m pixelrnn_tf.cli.sample --saved-model EXPORT_BASE/1 --labels 7,7,1,1 \\
        --out sevens_and_ones.png
    python -m pixelrnn_tf.cli.sample --workdir DIR --complete DIGITS.npz --label-key labels \\
        --out completions.png

A completion grid has one row per image: the original, the occluded input (unknown rows
painted dark red) and --completions independent completions. --npz FILE also saves the raw
uint8 images (and, for a conditional model, their labels). Also installed as
`pixelrnn-sample`.
"""

# The docstring above is the --help text. This module holds the flags, the run and its
# output files; where the model comes from is in sample_sources, the checks of labels and
# .npz inputs in sample_inputs.

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from pixelrnn_tf.cli import (
    ArgumentParser,
    Failure,
    positive_int,
    run_command,
    unexpected_error_line,
)
from pixelrnn_tf.cli.sample_inputs import (
    SampleError,
    check_label_flags,
    completion_labels,
    describe_labels,
    load_images,
    sample_labels,
)
from pixelrnn_tf.cli.sample_sources import make_sampler
from pixelrnn_tf.images import grid, to_display, to_rgb, write_png

PROG = "pixelrnn-sample"
OCCLUDED_RGB = (96, 0, 0)
BORDER = 2  # pixels between the images of a grid


# --------------------------------------------------------------------------------------------
# Pictures and output files


def completion_grid(originals, completions, known_rows, levels, zoom):
    """originals [N, H, W, C], completions [N, K, H, W, C] -> rows of
    original | occluded | K completions."""
    n, k = completions.shape[:2]
    occluded = rgb(originals, levels)
    occluded[:, known_rows:] = OCCLUDED_RGB
    cells = np.concatenate([rgb(originals, levels)[:, None], occluded[:, None],
                            rgb(completions.reshape(n * k, *originals.shape[1:]),
                                levels).reshape(n, k, *occluded.shape[1:])], axis=1)
    return grid(cells.reshape(-1, *occluded.shape[1:]), k + 2, BORDER, zoom)


def rgb(images, levels):
    """[N, H, W, C] levels -> uint8 RGB [N, H, W, 3] scaled to 0..255."""
    return to_rgb(to_display(images, levels))


def check_directory(path):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SampleError(f"{path}: directory {directory} does not exist")


def write_atomic(path, write):
    """Calls write(temporary_path) and renames the result to `path`."""
    check_directory(path)
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                               dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_png(path, picture):
    check_directory(path)
    write_png(path, picture)


def save_npz(path, **arrays):
    write_atomic(path, lambda tmp: np.savez_compressed(tmp, **arrays))


# --------------------------------------------------------------------------------------------
# CLI


def _temperature(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _labels(text):
    """argparse `type=` for --labels: comma-separated integers."""
    try:
        labels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integer labels such as 0,1,2, got {text!r}") from None
    for label in labels:
        if not -2**31 <= label < 2**31:
            raise argparse.ArgumentTypeError(f"label {label} is out of range")
    return labels


def build_parser():
    from pixelrnn_tf.presets import list_presets

    parser = ArgumentParser(
        prog=PROG, description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.strip().splitlines()[2:]))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", metavar="DIR", help="training work directory")
    source.add_argument("--saved-model", metavar="DIR",
                        help="an exported version directory (EXPORT_BASE/N)")
    source.add_argument("--keras-model", metavar="FILE", help="a saved .keras PixelRNN")
    source.add_argument("--preset", metavar="NAME",
                        help="a pretrained model shipped with pixelrnn_tf: "
                             f"{', '.join(list_presets())}")
    parser.add_argument("--checkpoint", default="latest",
                        help="with --workdir: latest, best or a checkpoint prefix (latest)")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="PNG grid to write")
    parser.add_argument("--num", type=positive_int, default=None, metavar="N",
                        help="images to sample (16), or to take from --complete (all, at "
                             "most 16)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    parser.add_argument("--temperature", type=_temperature, default=1.0,
                        help="logits are divided by this (1.0)")
    parser.add_argument("--method", choices=("cached", "naive"), default="cached",
                        help="in-memory sampler (cached); a SavedModel has its own")
    parser.add_argument("--complete", metavar="IMAGES.npz",
                        help="complete these images instead of sampling")
    parser.add_argument("--key", help="array of --complete to use (default: the only one, "
                                      "or 'images')")
    parser.add_argument("--known-rows", type=int, metavar="K",
                        help="with --complete: top rows kept (default: half the height)")
    parser.add_argument("--completions", type=positive_int, default=3, metavar="K",
                        help="completions per image (3)")
    parser.add_argument("--levels", type=positive_int, metavar="L",
                        help="levels of a SavedModel without pixelrnn_tf metadata")
    parser.add_argument("--columns", type=positive_int, default=None,
                        help="images per row of a sample grid (8; --per-class N: N)")
    parser.add_argument("--npz", metavar="FILE.npz", help="also save the raw uint8 images")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=_labels, metavar="L,L,...",
                        help="class-conditional model: the label of each sample (their count "
                             "sets --num) or, with --complete, of each image")
    labels.add_argument("--per-class", type=positive_int, metavar="N",
                        help="class-conditional model: N samples of every class, one grid row "
                             "per class")
    parser.add_argument("--label-key", metavar="KEY",
                        help="class-conditional model with --complete: the label array of the "
                             "npz file (default: 'labels', if it has one)")
    return parser


def run(args):
    if args.known_rows is not None and not args.complete:
        raise SampleError("--known-rows needs --complete IMAGES.npz")
    if args.label_key is not None and not args.complete:
        raise SampleError("--label-key needs --complete IMAGES.npz")
    if args.per_class is not None and args.complete:
        raise SampleError("--per-class draws new samples; with --complete pass --labels or a "
                          "label array (--label-key)")
    if args.labels is not None and args.label_key is not None:
        raise SampleError("pass --labels or --label-key, not both")
    if not args.out.lower().endswith(".png"):
        raise SampleError(f"--out {args.out}: expected a .png file name")
    sampler = make_sampler(args)
    check_label_flags(args, sampler)
    height, width, _ = sampler.image_shape
    zoom = max(1, -(-64 // max(height, width)))
    if not args.complete:
        labels, num, columns = sample_labels(args, sampler)
        samples = sampler.sample(num, args.seed, args.temperature, labels)
        save_png(args.out, grid(rgb(samples, sampler.levels), columns, BORDER, zoom))
        if args.npz:
            save_npz(args.npz, samples=samples,
                     **({} if labels is None else {"labels": labels}))
        if labels is None:
            return f"wrote {num} samples to {args.out}"
        if args.per_class is not None:
            return (f"wrote {num} samples ({args.per_class} of each of "
                    f"{sampler.num_classes} classes, one row per class) to {args.out}")
        return f"wrote {num} samples (labels {describe_labels(labels)}) to {args.out}"
    images = load_images(args.complete, args.key, sampler.image_shape, sampler.levels)
    images, labels = completion_labels(args, sampler, images)
    known_rows = height // 2 if args.known_rows is None else args.known_rows
    if not 0 <= known_rows <= height:
        raise SampleError(f"--known-rows must lie in [0, {height}], got {known_rows}")
    k = args.completions
    repeated = np.repeat(images, k, axis=0)  # image 0 k times, image 1 k times, ...
    completed = sampler.complete(repeated, known_rows * width, args.seed, args.temperature,
                                 None if labels is None else np.repeat(labels, k))
    completed = completed.reshape(len(images), k, *sampler.image_shape)
    save_png(args.out, completion_grid(images, completed, known_rows, sampler.levels, zoom))
    if args.npz:
        save_npz(args.npz, originals=images, completions=completed,
                 known_rows=np.array(known_rows),
                 **({} if labels is None else {"labels": labels}))
    text = f"wrote {len(images)} x {k} completions ({known_rows} rows known) to {args.out}"
    if labels is not None:
        text = (f"wrote {len(images)} x {k} completions ({known_rows} rows known, labels "
                f"{describe_labels(labels)}) to {args.out}")
    return text


def main(argv=None):
    args = build_parser().parse_args(argv)

    def command():
        print(run(args))
        return 0

    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.presets import PresetError
    from pixelrnn_tf.workdir import TrainingError

    return run_command(PROG, command, [
        Failure((SampleError, TrainingError, ConfigError, PresetError)),
        Failure(Exception, unexpected_error_line)])


if __name__ == "__main__":
    sys.exit(main())
