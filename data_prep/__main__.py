"""Command line: `python -m data_prep {convert,verify,show} ...` (also `pixelrnn-data-prep`).

    python -m data_prep convert SOURCE [SOURCE ...] --out DIR [options]
    python -m data_prep verify DIR
    python -m data_prep show DIR [--split S] [--png FILE] [--num N]

Exit status: 0 success, 1 a problem with the data or inputs (one line per problem on
stderr), 2 bad command-line flags, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from data_prep.errors import DataPrepError

SOURCES_HELP = """\
SOURCE forms (several SOURCEs may be given; --splits names their splits in order):
  digits                       scikit-learn's bundled 8x8 digits (17 levels), offline
  tfds:NAME                    a tensorflow-datasets image dataset (mnist, fashion_mnist,
                               binarized_mnist, cifar10, imagenet_resized/32x32, ...);
                               must be prepared (--tfds-data-dir) or downloadable
  npz:PATH                     arrays (N,H,W), (N,H,W,C) or flat (N,H*W) (+ --image-shape);
                               split keys train/valid/test or x_train/y_train are found
                               automatically, else --key/--split-keys and label keys
  npy:IMAGES[,LABELS]          .npy arrays (memory-mapped)
  idx:IMAGES[,LABELS]          MNIST / Fashion-MNIST IDX files, gzipped or not
  amat:TRAIN,VALID,TEST        Larochelle & Murray binarized MNIST text files (or one file)
  cifar10-bin:DIR              the CIFAR-10 *binary* version (never the pickled one)
  images:DIR                   PNG/JPEG files, sub-folders as labels (--resize, --grayscale)
"""

EXAMPLES = """\
examples:
  python -m data_prep convert digits --out out/data/digits --val-fraction 0.1 --test-fraction 0.1
  python -m data_prep convert npz:mnist_train.npz npz:mnist_test.npz --splits train,test \\
      --val-fraction 0.1 --out out/data/mnist
  python -m data_prep convert images:photos --resize 32 --out out/data/photos32
  python -m data_prep verify out/data/mnist
"""


def build_parser() -> argparse.ArgumentParser:
    # Imported here: pixelrnn_tf loads TensorFlow, which must see main()'s environment.
    from pixelrnn_tf.cli import ArgumentParser

    p = ArgumentParser(prog="data_prep", description="Turn image datasets into verified, sharded "
                "TFRecords for pixelrnn_tf.", epilog=EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    c = sub.add_parser("convert", help="convert SOURCE(s) to a dataset directory",
                       description="Convert SOURCE(s) into DIR/<split>-NNNNN-of-NNNNN.tfrecord "
                       "shards and DIR/manifest.json.", epilog=SOURCES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("sources", nargs="+", metavar="SOURCE")
    c.add_argument("--out", required=True, metavar="DIR", help="output directory")
    c.add_argument("--name", help="dataset name for the manifest (default: from the source)")
    c.add_argument("--splits", metavar="SPEC",
                   help="which input split is which: names in order (train,test), a subset "
                   "by name, or OUT=IN pairs (validation=valid; for tfds IN may be a slice "
                   "like train[:90%%])")
    c.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="carve a 'validation' split of this fraction out of 'train'")
    c.add_argument("--test-fraction", type=float, default=0.0, metavar="F",
                   help="carve a 'test' split of this fraction out of 'train'")
    c.add_argument("--seed", type=int, default=0, help="seed for carving and shuffling (0)")
    c.add_argument("--shards", metavar="N|SPLIT=N,...",
                   help="shards per split (default: ~128 MB per shard, at least --workers "
                   "for train)")
    c.add_argument("--workers", type=int, default=1, metavar="W",
                   help="expected input workers: train gets at least W shards (1)")
    c.add_argument("--compression", metavar="GZIP|none", help="shard compression (none)")
    c.add_argument("--binarize", metavar="threshold:T|stochastic:SEED",
                   help="binarize: pixel > T * top level, or 1 with probability "
                   "pixel / top level (a fixed sample drawn with SEED)")
    c.add_argument("--levels", type=int, metavar="K",
                   help="requantize to K levels: x * K // source_levels")
    c.add_argument("--source-levels", type=int, metavar="K",
                   help="levels the source pixels use (default: 2 when all pixels are 0/1, "
                   "17 for digits, else 256)")
    c.add_argument("--resize", type=int, metavar="N",
                   help="centre-crop to a square and area-downsample to N x N")
    c.add_argument("--grayscale", action="store_true", help="convert colour to 1 channel")
    c.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                   help="keep the source order in train (default: shuffled with --seed)")
    c.add_argument("--limit", type=int, metavar="N",
                   help="use only the first N examples of each input split")
    c.add_argument("--overwrite", action="store_true",
                   help="replace DIR if it already holds a dataset")
    c.add_argument("--label-names", metavar="A,B,...", help="class names for the labels")
    g = c.add_argument_group("npz/npy/amat options")
    g.add_argument("--key", help="npz array holding the images (one split)")
    g.add_argument("--label-key", help="npz array holding the labels (with --key)")
    g.add_argument("--split-keys", metavar="SPLIT=KEY,...", help="npz image array per split")
    g.add_argument("--split-label-keys", metavar="SPLIT=KEY,...",
                   help="npz label array per split")
    g.add_argument("--image-shape", metavar="H,W[,C]", help="shape of flat (N, H*W*C) rows")
    c.add_argument("--tfds-data-dir", metavar="DIR", help="tensorflow-datasets data_dir")

    v = sub.add_parser("verify", help="check every shard against the manifest")
    v.add_argument("dir", metavar="DIR")

    s = sub.add_parser("show", help="print a summary; --png writes a grid of images")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--split", help="split to draw (default: test, else the first)")
    s.add_argument("--png", metavar="FILE", help="write a grid of the first images here")
    s.add_argument("--num", type=int, default=64, help="images in the grid (64)")
    return p


def _convert(args) -> int:
    from data_prep.convert import convert

    m = convert(
        args.sources, args.out, name=args.name, splits=args.splits,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
        shards=args.shards, workers=args.workers, compression=args.compression,
        binarize=args.binarize, levels=args.levels, source_levels=args.source_levels,
        resize=args.resize, grayscale=args.grayscale, shuffle=args.shuffle, limit=args.limit,
        overwrite=args.overwrite,
        label_names=args.label_names.split(",") if args.label_names else None,
        key=args.key, label_key=args.label_key, split_keys=args.split_keys,
        split_label_keys=args.split_label_keys, image_shape=args.image_shape,
        tfds_data_dir=args.tfds_data_dir)
    shape = "x".join(map(str, m["image_shape"]))
    parts = ", ".join(f"{k} {v['num_examples']} ({len(v['shards'])} shard"
                      f"{'s' if len(v['shards']) != 1 else ''})" for k, v in m["splits"].items())
    print(f"wrote {args.out}: {m['dataset']}, {shape}, {m['levels']} levels: {parts}")
    return 0


def _verify(args) -> int:
    from data_prep.verify import verify

    problems, stats = verify(args.dir)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"verify: {len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    def n(k, word):
        return f"{stats[k]} {word}{'' if stats[k] == 1 else 's'}"

    print(f"OK {args.dir}: {n('splits', 'split')}, {n('shards', 'shard')}, "
          f"{n('examples', 'example')} (sha256, record counts, shapes, levels checked)")
    return 0


def _show(args) -> int:
    from data_prep.show import show

    for line in show(args.dir, split=args.split, png=args.png, num=args.num):
        print(line)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _unexpected_line(error) -> str:
    """Last resort: still one line, the traceback on request."""
    if os.environ.get("DATA_PREP_DEBUG"):
        traceback.print_exc()
    msg = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (f"error: unexpected {type(error).__name__}: {msg} (set DATA_PREP_DEBUG=1 for a "
            "traceback)")


def _os_error_line(error: OSError) -> str:
    where = f"{error.filename}: " if getattr(error, "filename", None) else ""
    return f"error: {where}{error.strerror or error}"


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its banner would break 1-line errors
    args = build_parser().parse_args(argv)
    from pixelrnn_tf.cli import Failure, run_command

    handler = {"convert": _convert, "verify": _verify, "show": _show}[args.command]
    old = None
    try:
        old = signal.signal(signal.SIGTERM, _interrupt)  # clean up temp output on kill
    except ValueError:  # not the main thread
        pass
    try:
        return run_command("data_prep", lambda: handler(args), [
            Failure(DataPrepError),
            Failure(OSError, _os_error_line),
            Failure(Exception, _unexpected_line)],
            interrupted="interrupted; no output written")
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
