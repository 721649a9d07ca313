"""Regenerates the results table, per-run JSON and training curves from run directories.

    python benchmarks/report.py results/runs/* --out results

    python benchmarks/report.py results/runs/* --out results --figures

Every run directory is a `train.py --workdir`. Writes, into --out:
  <run>.json       config (and the settings changed on resume, with their step), data
                   checksum, steps, wall time, validation/test NLL and bits/dim; for an
                   average of checkpoints (train.py --average-from) what it averages, and
                   the steps and wall time of the run it comes from
  results.md       the table (paper numbers side by side)
  curves.png       validation (solid) and training (dotted) bits/dim against training hours
                   (wall clock; gaps over 30 min between summaries, i.e. stops, left out)
and prints the table. With --figures (it samples, so it takes a while) also, for every run,
from its best checkpoint (the latest if it has none yet):
  <run>_samples.png      a grid of --num-samples samples (cached sampler, --seed,
                         temperature 1)
  <run>_completions.png  like the paper's Figure 1: one row per image of --figure-split (the
                         first --num-completions in file order, from the run's data directory
                         or --data): the image with its bottom half hidden (grey), then
                         --completions-per-image completions of the hidden half, then the
                         original
and prints their paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from typing import NamedTuple

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pixelrnn_tf.cli import ArgumentParser, positive_int
from pixelrnn_tf.images import BORDER_GREY, grid, to_display, write_png, zoomed

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
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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


MAX_GAP_SECONDS = 30 * 60  # longer between two summaries: the run was stopped, not training


def training_clock(times):
    """Maps event wall times to seconds of training: from the first event, with every gap
    longer than MAX_GAP_SECONDS (a run stopped, then resumed later) left out."""
    times = sorted(times)
    offsets, skipped = {}, 0.0
    for previous, current in zip([None] + times[:-1], times):
        if previous is not None and current - previous > MAX_GAP_SECONDS:
            skipped += current - previous
        offsets[current] = current - times[0] - skipped
    return lambda t: offsets[t]


def summarize(run_dir):
    try:
        saved = read_json(os.path.join(run_dir, "config.json"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{run_dir}: not a train.py workdir ({err})") from err
    config = saved.get("config", {})
    data_dir = saved.get("data", {}).get("data_dir")
    dataset, checksum = data_checksum(data_dir) if data_dir else (None, None)
    dataset = dataset or saved.get("data", {}).get("dataset")
    # An average of checkpoints (train.py --average-from) has no events of its own: its steps
    # and wall time are those of the run it averages, its curves that run's (not drawn twice).
    averaged = saved.get("averaged")
    events_dir = os.path.normpath(os.path.join(run_dir, averaged["from"])) if averaged \
        else run_dir
    if not os.path.isdir(events_dir):
        raise ReportError(f"{run_dir}: averages the checkpoints of {events_dir}, which is "
                          "missing (its steps and wall time come from there)")
    train = scalar_series(os.path.join(events_dir, "train"), "bits_per_dim")
    valid_nats = scalar_series(os.path.join(events_dir, "validation"), "nll_nats")
    valid_bits = scalar_series(os.path.join(events_dir, "validation"), "bits_per_dim")
    clock = training_clock([t for t, _, _ in train + valid_bits])
    wall = max([clock(t) for t, _, _ in train + valid_bits] or [0.0])
    steps = max([s for _, s, _ in train + valid_bits] or [0])
    if averaged:
        steps, valid_nats, valid_bits, train = averaged["steps"][-1], [], [], []
    result = {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "dataset": dataset,
        "data_dir": data_dir,
        "data_checksum": checksum,
        "config": config,
        "config_changes": saved.get("changes", []),
        "averaged": averaged,
        "steps": steps,
        "wall_hours": wall / 3600.0,
        "best_validation_nats": min([v for _, _, v in valid_nats], default=None),
        "best_validation_bits_per_dim": min([v for _, _, v in valid_bits], default=None),
        "curves": {"train_bits_per_dim": [(clock(t), s, v) for t, s, v in train],
                   "validation_bits_per_dim": [(clock(t), s, v) for t, s, v in valid_bits]},
    }
    for split in ("validation", "test"):
        path = os.path.join(run_dir, f"eval_{split}.json")
        if os.path.exists(path):
            result[f"eval_{split}"] = read_json(path)
    return result


def fmt(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def table(results):
    lines = ["| run | data | trained on | architecture | layers x h | steps | wall h | valid "
             "nats (best) | valid bits/dim | test nats | test bits/dim | paper |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        c = r["config"]
        test = r.get("eval_test", {})
        valid_nats, valid_bits = r["best_validation_nats"], r["best_validation_bits_per_dim"]
        if r["averaged"]:  # no validation during training: its own evaluation, if any
            valid = r.get("eval_validation", {})
            valid_nats, valid_bits = valid.get("nats"), valid.get("bits_per_dim")
        paper = PAPER.get((r["dataset"] or "", c.get("architecture")))
        paper_text = f"{paper[0]} {paper[1]} {paper[2]}".strip() if paper else ""
        # A config.json from before train_split existed: the run trained on "train".
        lines.append(
            f"| {r['run']} | {r['dataset']} | {c.get('train_split', 'train')} | "
            f"{c.get('architecture')} | "
            f"{c.get('num_layers')} x {c.get('hidden_dim')} | {r['steps']} | "
            f"{r['wall_hours']:.2f} | {fmt(valid_nats)} | "
            f"{fmt(valid_bits, 4)} | {fmt(test.get('nats'))} | "
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
    ax.set_xlabel("training hours (wall clock, stops between resumes left out)")
    ax.set_ylabel("bits / dim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Figures: sample grids and completions (--figures)

HIDDEN_GREY = BORDER_GREY  # the occluded half of an image, grey as the 1-pixel borders


class FigureInputs(NamedTuple):
    """What one run's figures need, gathered before anything is written."""

    run: str  # the run's name, the prefix of its PNGs
    model: object  # PixelRNN or MultiScalePixelRNN
    checkpoint: str  # the restored checkpoint prefix
    originals: np.ndarray  # uint8 [N, H, W, C], the first N images of the figure split


def figure_checkpoint(run_dir):
    """"best" when the run has a best checkpoint (written at its first validation), else
    "latest"."""
    import tensorflow as tf

    from pixelrnn_tf.workdir import Workdir

    best = tf.train.latest_checkpoint(Workdir(run_dir).best_dir)
    return "best" if best else "latest"


def prepare_figures(run_dir, split, num_images, data_dir=None):
    """Loads a run's model and the first `num_images` images of `split` -> FigureInputs.

    data_dir: where to read the images (default: the data_dir in the run's config.json).
    Raises ReportError (one line) for a run, checkpoint or data directory that is unusable.
    """
    import tensorflow as tf

    from pixelrnn_tf import data
    from pixelrnn_tf.config import ConfigError
    from pixelrnn_tf.summaries import first_images
    from pixelrnn_tf.workdir import TrainingError, Workdir, load_model

    run = os.path.basename(os.path.normpath(run_dir))
    try:
        workdir = Workdir(run_dir)
        saved = workdir.read()
        if saved is None:
            raise ReportError(f"{run_dir}: no config.json (not a train.py workdir)")
        config, spec = saved
        checkpoint = workdir.checkpoint_path(figure_checkpoint(run_dir))
        model = load_model(run_dir, checkpoint)
    except (TrainingError, ConfigError) as err:
        raise ReportError(f"{run_dir}: cannot load the model ({err})") from None
    spec = dataclasses.replace(spec, data_dir=data_dir or spec.data_dir)
    try:
        originals, _ = first_images(spec, config, split, num_images)
    except (data.DataError, TrainingError) as err:
        hint = "" if data_dir else "; pass --data DIR if the data moved"
        raise ReportError(f"{run_dir}: cannot read the {split!r} images for the completion "
                          f"figure ({err}){hint}") from None
    except tf.errors.OpError as err:
        raise ReportError(f"{run_dir}: cannot read the {split!r} images for the completion "
                          f"figure ({err.message.strip().splitlines()[0]})") from None
    return FigureInputs(run, model, checkpoint, originals)


def draw_samples(model, num_samples, seed):
    """num_samples samples at temperature 1 -> [num_samples, H, W, C] in [0, levels)."""
    from pixelrnn_tf import sampling

    return np.asarray(sampling.sample(model, num_samples, seed=seed, temperature=1.0,
                                      method="cached"))


def draw_completions(model, originals, per_image, seed):
    """`per_image` completions of the bottom half of each image, its top half rows
    [0, H // 2) known.

    originals: int [N, H, W, C] in [0, levels). Returns [N, per_image, H, W, C] whose rows
    [0, H // 2) are those of the originals.
    """
    from pixelrnn_tf import sampling

    height, width, _ = model.image_shape
    # Every copy of an image is its own batch element, so it draws its own noise.
    repeated = np.repeat(np.asarray(originals, np.int32), per_image, axis=0)
    completed = np.asarray(sampling.complete(model, repeated, (height // 2) * width,
                                             seed=seed, temperature=1.0, method="cached"))
    return completed.reshape((len(originals), per_image) + completed.shape[1:])


def samples_figure(samples, levels, zoom=1):
    """samples [N, H, W, C] in [0, levels) -> uint8 picture [zoom (rows (H + 1) + 1),
    zoom (cols (W + 1) + 1), C'] with cols = ceil(sqrt(N)) (`pixelrnn_tf.images.grid`)."""
    columns = math.ceil(math.sqrt(len(samples)))
    return zoomed(grid(to_display(samples, levels), columns), zoom)


def completion_figure(originals, completions, levels, zoom=1):
    """The paper's Figure 1 layout, one row per image: occluded, the completions, original.

    originals: [N, H, W, C] in [0, levels); completions: [N, K, H, W, C].
    Returns a uint8 picture [zoom (N (H + 1) + 1), zoom ((K + 2) (W + 1) + 1), C']; the
    occluded image shows its rows [H // 2, H) in grey (HIDDEN_GREY).
    """
    shown = to_display(originals, levels)
    occluded = shown.copy()
    occluded[:, shown.shape[1] // 2:] = HIDDEN_GREY
    rows = np.concatenate([occluded[:, None], to_display(completions, levels),
                           shown[:, None]], axis=1)  # [N, K + 2, H, W, C]
    return zoomed(grid(rows.reshape((-1,) + rows.shape[2:]), rows.shape[1]), zoom)


def write_figures(inputs, out, num_samples, per_image, seed, zoom):
    """Samples and completes with one run's model; writes its two PNGs and returns
    [(path, description)]."""
    model, levels = inputs.model, inputs.model.levels
    samples = draw_samples(model, num_samples, seed)
    completions = draw_completions(model, inputs.originals, per_image, seed + 1)
    source = f"checkpoint {os.path.basename(inputs.checkpoint)}"
    written = []
    for name, picture, what in (
            ("samples", samples_figure(samples, levels, zoom), f"{num_samples} samples"),
            ("completions", completion_figure(inputs.originals, completions, levels, zoom),
             f"{len(inputs.originals)} images x {per_image} completions")):
        path = os.path.join(out, f"{inputs.run}_{name}.png")
        write_png(path, picture)
        written.append((path, f"{what}, {source}"))
    return written


def main(argv=None):
    parser = ArgumentParser(prog="report.py", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="train.py workdirs")
    parser.add_argument("--out", default="results", help="where to write the report")
    figures = parser.add_argument_group("figures")
    figures.add_argument("--figures", action="store_true",
                         help="also write <run>_samples.png and <run>_completions.png (samples "
                         "from each run's model: slow for big models)")
    figures.add_argument("--num-samples", type=positive_int, default=16,
                         help="samples in the sample grid (default 16)")
    figures.add_argument("--num-completions", type=positive_int, default=6,
                         help="images (rows) in the completion figure (default 6)")
    figures.add_argument("--completions-per-image", type=positive_int, default=4,
                         help="completions of each image (default 4)")
    figures.add_argument("--figure-split", default="test",
                         help="split the completed images come from (default test)")
    figures.add_argument("--data", metavar="DIR",
                         help="data directory for the completion figure (default: the one in "
                         "each run's config.json)")
    figures.add_argument("--seed", type=int, default=0,
                         help="sampling seed: samples use it, completions seed + 1 (default 0)")
    figures.add_argument("--zoom", type=positive_int, default=4,
                         help="each image pixel becomes zoom x zoom PNG pixels (default 4)")
    args = parser.parse_args(argv)
    try:
        results = [summarize(run) for run in args.runs]
        # Models and images first: a bad run or data directory fails before any output.
        inputs = [prepare_figures(run, args.figure_split, args.num_completions, args.data)
                  for run in args.runs] if args.figures else []
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
    sampling_errors = ()
    if inputs:
        import tensorflow as tf

        sampling_errors = (tf.errors.OpError, ValueError)
    for run_inputs in inputs:
        try:
            written = write_figures(run_inputs, args.out, args.num_samples,
                                    args.completions_per_image, args.seed, args.zoom)
        except sampling_errors as err:
            message = getattr(err, "message", str(err)).strip().splitlines()[0]
            print(f"error: {run_inputs.run}: sampling failed ({message})", file=sys.stderr)
            return 1
        for path, description in written:
            print(f"wrote {path} ({description})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
