"""Regenerates the results table, per-run JSON and training curves from run directories.

    python benchmarks/report.py results/runs/* --out results

Every run directory is a `train.py --workdir`. Writes, into --out:
  <run>.json       config, data checksum, steps, wall time, validation/test NLL and bits/dim
  results.md       the table (paper numbers side by side)
  curves.png       validation (solid) and training (dotted) bits/dim against wall-clock hours
and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (dataset in the manifest, architecture) -> the paper's test result and its unit
PAPER = {
    ("binarized_mnist", "diagonal_bilstm"): (79.20, "nats", "7 layers h=16 (80.75 for 1 layer)"),
    ("cifar10", "pixelcnn"): (3.14, "bits/dim", ""),
    ("cifar10", "row_lstm"): (3.07, "bits/dim", ""),
    ("cifar10", "diagonal_bilstm"): (3.00, "bits/dim", ""),
}


class ReportError(Exception):
    pass


def read_json(path):
    with open(path) as f:
        return json.load(f)


def scalar_series(logdir, tag):
    """[(wall_time, step, value)] of a TF2 scalar summary (stored as a tensor summary)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import tensorflow as tf

    if not os.path.isdir(logdir):
        return []
    acc = EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    if tag not in acc.Tags().get("tensors", []):
        return []
    return [(e.wall_time, e.step, float(tf.make_ndarray(e.tensor_proto)))
            for e in acc.Tensors(tag)]


def data_checksum(data_dir):
    """sha256 over the manifest's shard checksums: names the exact data a run used."""
    try:
        manifest = read_json(os.path.join(data_dir, "manifest.json"))
    except (OSError, ValueError):
        return None, None
    digest = hashlib.sha256()
    for split in sorted(manifest.get("splits", {})):
        for shard in manifest["splits"][split].get("shards", []):
            digest.update(str(shard.get("sha256")).encode())
    return manifest.get("dataset"), digest.hexdigest()


def summarize(run_dir):
    try:
        saved = read_json(os.path.join(run_dir, "config.json"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{run_dir}: not a train.py workdir ({err})") from err
    config = saved.get("config", {})
    data_dir = saved.get("data", {}).get("data_dir")
    dataset, checksum = data_checksum(data_dir) if data_dir else (None, None)
    dataset = dataset or saved.get("data", {}).get("dataset")
    train = scalar_series(os.path.join(run_dir, "train"), "bits_per_dim")
    valid_nats = scalar_series(os.path.join(run_dir, "validation"), "nll_nats")
    valid_bits = scalar_series(os.path.join(run_dir, "validation"), "bits_per_dim")
    start = min([t for t, _, _ in train + valid_bits] or [0.0])
    wall = max([t for t, _, _ in train + valid_bits] or [start]) - start
    result = {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "dataset": dataset,
        "data_dir": data_dir,
        "data_checksum": checksum,
        "config": config,
        "steps": max([s for _, s, _ in train + valid_bits] or [0]),
        "wall_hours": wall / 3600.0,
        "best_validation_nats": min([v for _, _, v in valid_nats], default=None),
        "best_validation_bits_per_dim": min([v for _, _, v in valid_bits], default=None),
        "curves": {"train_bits_per_dim": [(t - start, s, v) for t, s, v in train],
                   "validation_bits_per_dim": [(t - start, s, v) for t, s, v in valid_bits]},
    }
    for split in ("validation", "test"):
        path = os.path.join(run_dir, f"eval_{split}.json")
        if os.path.exists(path):
            result[f"eval_{split}"] = read_json(path)
    return result


def fmt(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def table(results):
    lines = ["| run | data | architecture | layers x h | steps | wall h | valid nats "
             "(best) | valid bits/dim | test nats | test bits/dim | paper |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        c = r["config"]
        test = r.get("eval_test", {})
        paper = PAPER.get((r["dataset"] or "", c.get("architecture")))
        paper_text = f"{paper[0]} {paper[1]} {paper[2]}".strip() if paper else ""
        lines.append(
            f"| {r['run']} | {r['dataset']} | {c.get('architecture')} | "
            f"{c.get('num_layers')} x {c.get('hidden_dim')} | {r['steps']} | "
            f"{r['wall_hours']:.2f} | {fmt(r['best_validation_nats'])} | "
            f"{fmt(r['best_validation_bits_per_dim'], 4)} | {fmt(test.get('nats'))} | "
            f"{fmt(test.get('bits_per_dim'), 4)} | {paper_text} |")
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, r in enumerate(results):
        colour = f"C{k}"
        for name, style in (("validation_bits_per_dim", "-"), ("train_bits_per_dim", ":")):
            series = r["curves"][name]
            if series:
                ax.plot([t / 3600 for t, _, _ in series], [v for _, _, v in series], style,
                        color=colour, label=f"{r['run']} ({name.split('_')[0]})")
    ax.set_xlabel("wall-clock hours")
    ax.set_ylabel("bits / dim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="train.py workdirs")
    parser.add_argument("--out", default="results", help="where to write the report")
    args = parser.parse_args(argv)
    try:
        results = [summarize(run) for run in args.runs]
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    for r in results:
        path = os.path.join(args.out, f"{r['run']}.json")
        with open(path + ".tmp", "w") as f:
            json.dump({k: v for k, v in r.items() if k != "curves"}, f, indent=2)
        os.replace(path + ".tmp", path)
    text = table(results)
    with open(os.path.join(args.out, "results.md.tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(args.out, "results.md.tmp"), os.path.join(args.out, "results.md"))
    if any(r["curves"]["validation_bits_per_dim"] or r["curves"]["train_bits_per_dim"]
           for r in results):
        plot(results, os.path.join(args.out, "curves.png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
