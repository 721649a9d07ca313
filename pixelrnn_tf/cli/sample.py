"""Sample or complete images with a trained PixelRNN and write a PNG grid.

    python -m pixelrnn_tf.cli.sample --workdir DIR [--checkpoint latest|best] --num 16 \\
        --out samples.png
    python -m pixelrnn_tf.cli.sample --saved-model EXPORT_BASE/1 --num 16 --out samples.png
    python -m pixelrnn_tf.cli.sample --workdir DIR --complete IMAGES.npz --known-rows 14 \\
        --out completions.png

A completion grid has one row per image: the original, the occluded input (unknown rows
painted dark red) and --completions independent completions. --npz FILE also saves the raw
uint8 images. Also installed as `pixelrnn-sample`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from pixelrnn_tf.cli import (
    ArgumentParser,
    Failure,
    first_line,
    positive_int,
    run_command,
    unexpected_error_line,
)
from pixelrnn_tf.images import grid, to_display, to_rgb, write_png

PROG = "pixelrnn-sample"
OCCLUDED_RGB = (96, 0, 0)
BORDER = 2  # pixels between the images of a grid


class SampleError(Exception):
    """Bad flags or inputs: reported as one line."""


# --------------------------------------------------------------------------------------------
# Where the model comes from: an in-memory PixelRNN or an exported SavedModel


class ModelSampler:
    """Samples with an in-memory PixelRNN (`pixelrnn_tf.sampling`)."""

    def __init__(self, model, method="cached"):
        self.model, self.method = model, method
        self.image_shape, self.levels = tuple(model.image_shape), model.levels

    def sample(self, num, seed, temperature):
        from pixelrnn_tf import sampling

        return np.asarray(sampling.sample(self.model, num, seed, temperature, self.method))

    def complete(self, images, known_pixels, seed, temperature):
        from pixelrnn_tf import sampling

        return np.asarray(sampling.complete(self.model, images, known_pixels, seed,
                                            temperature, self.method))


class SavedModelSampler:
    """Samples through the `sample` / `complete` signatures of an export (in batches of at
    most its max_batch)."""

    def __init__(self, export_dir, levels=None):
        import tensorflow as tf

        from pixelrnn_tf import serving

        if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
            raise SampleError(f"--saved-model {export_dir}: no saved_model.pb (pass a version "
                              "directory such as EXPORT_BASE/1)")
        try:
            metadata = serving.read_metadata(export_dir)
        except (ValueError, OSError) as e:
            raise SampleError(f"--saved-model {export_dir}: {e}") from None
        loaded = tf.saved_model.load(export_dir)
        missing = [s for s in ("sample", "complete") if s not in loaded.signatures]
        if missing:
            raise SampleError(f"--saved-model {export_dir}: no {', '.join(missing)} signature")
        self.loaded, self.tf = loaded, tf
        spec = loaded.signatures["complete"].structured_input_signature[1]["images"]
        self.image_shape = tuple(int(d) for d in spec.shape[1:])
        if levels is None:
            if metadata is None:
                raise SampleError(f"--saved-model {export_dir} has no {serving.METADATA_PATH} "
                                  "to tell its number of levels; pass --levels")
            levels = int(metadata["levels"])
        self.levels = levels
        self.max_batch = int(metadata["max_batch"]) if metadata else 1

    def _batches(self, num):
        return [(start, min(num, start + self.max_batch)) for start in range(0, num,
                                                                             self.max_batch)]

    def sample(self, num, seed, temperature):
        # Batch k of a request larger than max_batch is drawn with seed + k.
        tf, sign = self.tf, self.loaded.signatures["sample"]
        parts = [sign(num_samples=tf.constant(stop - start, tf.int32),
                      seed=tf.constant(seed + k, tf.int64),
                      temperature=tf.constant(temperature, tf.float32))["images"].numpy()
                 for k, (start, stop) in enumerate(self._batches(num))]
        return np.concatenate(parts) if parts else np.zeros((0, *self.image_shape), np.uint8)

    def complete(self, images, known_pixels, seed, temperature):
        tf, sign = self.tf, self.loaded.signatures["complete"]
        parts = [sign(images=tf.constant(images[start:stop].astype(np.uint8)),
                      known_pixels=tf.constant(known_pixels, tf.int32),
                      seed=tf.constant(seed + k, tf.int64),
                      temperature=tf.constant(temperature, tf.float32))["images"].numpy()
                 for k, (start, stop) in enumerate(self._batches(len(images)))]
        return np.concatenate(parts)


# --------------------------------------------------------------------------------------------
# Inputs and pictures


def load_images(path, key, image_shape, levels):
    """Integer images from an .npz file (never unpickled) -> uint8 [N, H, W, C] (int32 for
    more than 256 levels)."""
    if not os.path.isfile(path):
        raise SampleError(f"--complete {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if key is None:
                if len(keys) == 1:
                    key = keys[0]
                elif "images" in keys:
                    key = "images"
                else:
                    raise SampleError(f"--complete {path} holds arrays {keys}; pick one with "
                                      "--key")
            if key not in keys:
                raise SampleError(f"--complete {path} has no array {key!r} (has {keys})")
            images = archive[key]
    except SampleError:
        raise
    except Exception as e:
        raise SampleError(f"--complete {path}: not a readable .npz file ({e})") from None
    where = f"--complete {path}[{key}]"
    if not (images.dtype.kind in "iu" or images.dtype == bool):
        raise SampleError(f"{where} has dtype {images.dtype}; expected integer pixel levels")
    if images.ndim == 3 and image_shape[2] == 1:
        images = images[..., None]
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise SampleError(f"{where} has shape {images.shape}; the model takes "
                          f"[N, {', '.join(map(str, image_shape))}]")
    if len(images) == 0:
        raise SampleError(f"{where} holds no images")
    low, high = int(images.min()), int(images.max())
    if low < 0 or high >= levels:
        raise SampleError(f"{where} has values {low}..{high}; the model takes [0, {levels})")
    return images.astype(np.uint8 if levels <= 256 else np.int32)


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


def build_parser():
    parser = ArgumentParser(
        prog=PROG, description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.strip().splitlines()[2:]))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", metavar="DIR", help="training work directory")
    source.add_argument("--saved-model", metavar="DIR",
                        help="an exported version directory (EXPORT_BASE/N)")
    source.add_argument("--keras-model", metavar="FILE", help="a saved .keras PixelRNN")
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
    parser.add_argument("--columns", type=positive_int, default=8,
                        help="images per row of a sample grid (8)")
    parser.add_argument("--npz", metavar="FILE.npz", help="also save the raw uint8 images")
    return parser


def make_sampler(args):
    from pixelrnn_tf.workdir import TrainingError, load_model

    if args.saved_model:
        return SavedModelSampler(args.saved_model, args.levels)
    if args.workdir is not None and not os.path.isdir(args.workdir):
        raise SampleError(f"--workdir {args.workdir}: no such directory")
    if args.keras_model is not None and not os.path.isfile(args.keras_model):
        raise SampleError(f"--keras-model {args.keras_model}: no such file")
    try:
        model = load_model(args.workdir or args.keras_model, args.checkpoint)
    except (TrainingError, OSError, ValueError) as e:
        # A .keras file's errors start with its path: name the flag, as for a missing file.
        prefix = "" if args.workdir is not None else "--keras-model "
        raise SampleError(f"{prefix}{first_line(e)}") from None
    return ModelSampler(model, args.method)


def run(args):
    if args.known_rows is not None and not args.complete:
        raise SampleError("--known-rows needs --complete IMAGES.npz")
    if not args.out.lower().endswith(".png"):
        raise SampleError(f"--out {args.out}: expected a .png file name")
    sampler = make_sampler(args)
    height, width, _ = sampler.image_shape
    zoom = max(1, -(-64 // max(height, width)))
    if not args.complete:
        num = args.num or 16
        samples = sampler.sample(num, args.seed, args.temperature)
        save_png(args.out, grid(rgb(samples, sampler.levels), args.columns, BORDER, zoom))
        if args.npz:
            save_npz(args.npz, samples=samples)
        return f"wrote {num} samples to {args.out}"
    images = load_images(args.complete, args.key, sampler.image_shape, sampler.levels)
    images = images[: args.num or 16]
    known_rows = height // 2 if args.known_rows is None else args.known_rows
    if not 0 <= known_rows <= height:
        raise SampleError(f"--known-rows must lie in [0, {height}], got {known_rows}")
    k = args.completions
    repeated = np.repeat(images, k, axis=0)  # image 0 k times, image 1 k times, ...
    completed = sampler.complete(repeated, known_rows * width, args.seed, args.temperature)
    completed = completed.reshape(len(images), k, *sampler.image_shape)
    save_png(args.out, completion_grid(images, completed, known_rows, sampler.levels, zoom))
    if args.npz:
        save_npz(args.npz, originals=images, completions=completed,
                 known_rows=np.array(known_rows))
    return f"wrote {len(images)} x {k} completions ({known_rows} rows known) to {args.out}"


def main(argv=None):
    args = build_parser().parse_args(argv)

    def command():
        print(run(args))
        return 0

    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.workdir import TrainingError

    return run_command(PROG, command, [
        Failure((SampleError, TrainingError, ConfigError)),
        Failure(Exception, unexpected_error_line)])


if __name__ == "__main__":
    sys.exit(main())
