"""What a `pixelrnn-sample` run draws from, checked before anything is drawn: the images (and
labels) of an .npz file to complete, and the labels of a class-conditional model (--labels,
--per-class, --label-key). A bad flag or input raises `SampleError`, reported as one line.
"""

from __future__ import annotations

import os

import numpy as np


class SampleError(Exception):
    """Bad flags or inputs: reported as one line."""


# --------------------------------------------------------------------------------------------
# The .npz file of --complete (never unpickled)


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


# --------------------------------------------------------------------------------------------
# The labels of a class-conditional model


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
