"""How often the same seed gives the same images when the arithmetic changes.

    python benchmarks/draw_agreement.py --workdir WORKDIR [--num 64] [--seed 0]
        [--batches 1,8,32] [--save draws.npz] [--against other.npz]

Sample n of a batch draws the noise of (seed, n) whatever the batch size, but its logits are
float32 sums whose rounding depends on the batch shape and the CPU's kernels. Where two values
of a sub-pixel have scores within that rounding, the pick may flip, and every later pixel then
differs. This draws --num samples in one batch, then the first b of them in batches of each
--batches size b, and prints per size how many images are identical and how many sub-pixel
draws were compared. --save writes the full batch; --against compares it with a batch saved
by another process, e.g. one run under ONEDNN_MAX_CPU_ISA=SSE41 or TF_ENABLE_ONEDNN_OPTS=0.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from pixelrnn_tf import sampling
from pixelrnn_tf.workdir import load_model


def agreement(got, want):
    """(identical images, images) of two draws [N, H, W, C] of the same seed."""
    same = np.all(got.reshape(len(got), -1) == want.reshape(len(want), -1), axis=1)
    return int(same.sum()), len(same)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--save")
    parser.add_argument("--against")
    args = parser.parse_args(argv)
    model = load_model(args.workdir)
    full = sampling.sample(model, args.num, seed=args.seed).numpy()
    subpixels = int(np.prod(full.shape[1:]))
    print(f"| compared with the batch of {args.num} | identical images | sub-pixel draws |")
    print("| --- | --- | --- |")
    for batch in (int(b) for b in args.batches.split(",")):
        part = sampling.sample(model, batch, seed=args.seed).numpy()
        same, total = agreement(part, full[:batch])
        print(f"| batch of {batch} | {same} / {total} | {total * subpixels} |", flush=True)
    if args.against:
        other = np.load(args.against, allow_pickle=False)["images"]
        same, total = agreement(other, full)
        print(f"| {args.against} | {same} / {total} | {total * subpixels} |")
    if args.save:
        np.savez(args.save, images=full)


if __name__ == "__main__":
    main()
