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
        self.num_classes = model.num_classes  # 0: unconditional

    def sample(self, num, seed, temperature, labels=None):
        from pixelrnn_tf import sampling

        return np.asarray(sampling.sample(self.model, num, seed, temperature, self.method,
                                          labels=labels))

    def complete(self, images, known_pixels, seed, temperature, labels=None):
        from pixelrnn_tf import sampling

        return np.asarray(sampling.complete(self.model, images, known_pixels, seed,
                                            temperature, self.method, labels=labels))


class SavedModelSampler:
    """Samples through the `sample` / `complete` signatures of an export (in batches of at
    most its max_batch). A class-conditional export's signatures take ``labels``; its
    metadata's ``num_classes`` gives K (None when it has no metadata: the export's own
    checks then judge the labels)."""

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
        inputs = loaded.signatures["complete"].structured_input_signature[1]
        self.image_shape = tuple(int(d) for d in inputs["images"].shape[1:])
        if levels is None:
            if metadata is None:
                raise SampleError(f"--saved-model {export_dir} has no {serving.METADATA_PATH} "
                                  "to tell its number of levels; pass --levels")
            levels = int(metadata["levels"])
        self.levels = levels
        self.max_batch = int(metadata["max_batch"]) if metadata else 1
        conditional = "labels" in inputs
        num_classes = int(metadata.get("num_classes", 0)) if metadata else None
        if metadata is not None and conditional != bool(num_classes):
            raise SampleError(
                f"--saved-model {export_dir}: its {serving.METADATA_PATH} says num_classes="
                f"{num_classes} but its signatures {'take' if conditional else 'have no'} "
                "labels")
        # 0: unconditional; None: conditional with K unknown (no metadata)
        self.num_classes = num_classes if conditional else 0

    def _batches(self, num):
        return [(start, min(num, start + self.max_batch)) for start in range(0, num,
                                                                             self.max_batch)]

    def _labels(self, labels, start, stop):
        if labels is None:
            return {}
        return {"labels": self.tf.constant(np.asarray(labels[start:stop]), self.tf.int32)}

    def _run(self, requests, labels):
        if labels is None:
            return [request().numpy() for request in requests]
        try:
            return [request().numpy() for request in requests]
        except self.tf.errors.InvalidArgumentError as e:  # the export's label checks
            raise SampleError(f"--saved-model: the export refused the labels: "
                              f"{assertion_text(e.message)}") from None

    def sample(self, num, seed, temperature, labels=None):
        # Batch k of a request larger than max_batch is drawn with seed + k.
        tf, sign = self.tf, self.loaded.signatures["sample"]
        parts = self._run([
            lambda k=k, start=start, stop=stop: sign(
                num_samples=tf.constant(stop - start, tf.int32),
                seed=tf.constant(seed + k, tf.int64),
                temperature=tf.constant(temperature, tf.float32),
                **self._labels(labels, start, stop))["images"]
            for k, (start, stop) in enumerate(self._batches(num))], labels)
        return np.concatenate(parts) if parts else np.zeros((0, *self.image_shape), np.uint8)

    def complete(self, images, known_pixels, seed, temperature, labels=None):
        tf, sign = self.tf, self.loaded.signatures["complete"]
        parts = self._run([
            lambda k=k, start=start, stop=stop: sign(
                images=tf.constant(images[start:stop].astype(np.uint8)),
                known_pixels=tf.constant(known_pixels, tf.int32),
                seed=tf.constant(seed + k, tf.int64),
                temperature=tf.constant(temperature, tf.float32),
                **self._labels(labels, start, stop))["images"]
            for k, (start, stop) in enumerate(self._batches(len(images)))], labels)
        return np.concatenate(parts)


def assertion_text(message):
    """The message of a failed in-graph check ("assertion failed: [labels must be < 3] ...")
    from an error's text, or its last line that says anything."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("assertion failed: ["):
            return line[len("assertion failed: ["):].split("]", 1)[0].strip()
    useful = [line for line in lines if not line.startswith(
        ("Graph execution error", "Detected at node", "<stack traces", "[["))]
    return (useful or lines or ["invalid argument"])[-1]


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


def load_labels(path, key, count):
    """The label array of an .npz file of `count` images: `key`, or "labels" if the file
    has it (None if not) -> int64 [count]."""
    explicit = key is not None
    key = key or "labels"
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if key not in keys:
                if explicit:
                    raise SampleError(f"--label-key: --complete {path} has no array {key!r} "
                                      f"(has {keys})")
                return None
            labels = archive[key]
    except SampleError:
        raise
    except Exception as e:
        raise SampleError(f"--complete {path}: not a readable .npz file ({e})") from None
    where = f"--complete {path}[{key}]"
    if not (labels.dtype.kind in "iu" and labels.ndim == 1):
        raise SampleError(f"{where} has dtype {labels.dtype} and shape {labels.shape}; "
                          "expected integer labels [N], one per image")
    if len(labels) != count:
        raise SampleError(f"{where} holds {len(labels)} labels for {count} images; expected "
                          "one per image")
    return labels.astype(np.int64)


def check_labels(labels, num_classes, where):
    """labels int [N] against a model of `num_classes` classes (None: unknown, the
    export's own checks judge them) -> int32 [N]."""
    labels = np.asarray(labels, np.int64)
    high = num_classes or 2**31 - 1
    bad = labels[(labels < 0) | (labels >= high)]
    if bad.size:
        allowed = f"[0, {num_classes}) (the model has {num_classes} classes)" if num_classes \
            else "[0, 2**31 - 1)"
        raise SampleError(f"{where}: labels must lie in {allowed}, got {int(bad[0])}")
    return labels.astype(np.int32)


def describe_labels(labels, limit=16):
    shown = ",".join(str(int(label)) for label in labels[:limit])
    return shown + (",..." if len(labels) > limit else "")


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


def make_sampler(args):
    from pixelrnn_tf.workdir import TrainingError, load_model

    if args.saved_model:
        return SavedModelSampler(args.saved_model, args.levels)
    if args.preset is not None:
        from pixelrnn_tf.presets import load_preset

        return ModelSampler(load_preset(args.preset), args.method)
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


def check_label_flags(args, sampler):
    """The label flags against the model: an unconditional model takes none."""
    if sampler.num_classes == 0:
        given = [flag for flag, value in (("--labels", args.labels),
                                          ("--per-class", args.per_class),
                                          ("--label-key", args.label_key)) if value is not None]
        if given:
            raise SampleError(f"{given[0]} needs a class-conditional model; this one is "
                              "unconditional (num_classes=0)")


def conditional_text(num_classes):
    """'this model is class-conditional (K classes)', K left out when unknown."""
    return "this model is class-conditional" + (f" ({num_classes} classes)" if num_classes
                                                else "")


def sample_labels(args, sampler):
    """(labels int32 [num] or None, num, grid columns) of a sampling run."""
    num_classes = sampler.num_classes
    if num_classes == 0:
        return None, args.num or 16, args.columns or 8
    if args.per_class is not None:
        if num_classes is None:
            raise SampleError("--per-class needs the number of classes, which this export "
                              "does not record (no pixelrnn_tf metadata); pass --labels")
        labels = np.repeat(np.arange(num_classes), args.per_class)
        if args.num is not None and args.num != len(labels):
            raise SampleError(f"--per-class {args.per_class} draws {len(labels)} samples "
                              f"({num_classes} classes) but --num is {args.num}; leave out "
                              "--num")
        return labels.astype(np.int32), len(labels), args.columns or args.per_class
    if args.labels is None:
        raise SampleError(f"{conditional_text(num_classes)}: "
                          "pass --labels L,L,... (one per sample) or --per-class N")
    if args.num is not None and args.num != len(args.labels):
        raise SampleError(f"--labels gives {len(args.labels)} labels but --num is {args.num}: "
                          "give one label per sample (or leave out --num)")
    return (check_labels(args.labels, num_classes, "--labels"), len(args.labels),
            args.columns or 8)


def completion_labels(args, sampler, images):
    """(images, labels int32 or None) of a completion run: images [N, ...] from the file."""
    num_classes = sampler.num_classes
    if num_classes == 0:
        return images[: args.num or 16], None
    if args.labels is not None:
        count = len(args.labels)
        if args.num is not None and args.num != count:
            raise SampleError(f"--labels gives {count} labels but --num is {args.num}: give "
                              "one label per image (or leave out --num)")
        if count > len(images):
            raise SampleError(f"--labels gives {count} labels but --complete {args.complete} "
                              f"holds {len(images)} images")
        return images[:count], check_labels(args.labels, num_classes, "--labels")
    labels = load_labels(args.complete, args.label_key, len(images))
    if labels is None:
        raise SampleError(
            f"{conditional_text(num_classes)}: pass --labels "
            f"L,L,... (one per image) or a label array in --complete {args.complete} "
            "(--label-key KEY; default 'labels')")
    count = args.num or 16
    where = f"--complete {args.complete}[{args.label_key or 'labels'}]"
    return images[:count], check_labels(labels[:count], num_classes, where)


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
