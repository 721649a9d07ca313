"""Trains several configurations for the same wall time, side by side, then evaluates each.

    python benchmarks/equal_time.py --data out/data/mnist --minutes 15 --out out/bench/mnist256 \\
        --common binarize=false num_layers=4 \\
        --run single mnist_diagonal_bilstm \\
        --run multi mnist_multiscale

Every run is `train.py --data DATA --workdir OUT/NAME --preset PRESET --set ...` (the --common
settings, then the run's own). The runs start together and share the machine for the whole
budget, so each gets the same share of the CPU; after --minutes each gets SIGTERM, which saves
a checkpoint (a run that finishes its train_steps earlier stops on its own). Then each run's
latest checkpoint is evaluated on --split with `train.py --evaluate`. Prints a markdown table:
steps, images seen, evaluation nats and bits/dim (and a Multi-Scale model's two terms).
Exit status 1 if a run fails (its log is OUT/NAME.log).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pixelrnn_tf.cli import ArgumentParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")
STOPPED = (0, 143)  # done, or stopped by SIGTERM after saving


def train_command(data, workdir, preset, settings):
    command = [sys.executable, TRAIN, "--data", data, "--workdir", workdir, "--preset", preset,
               "--set", "progress_bar=false"]
    for setting in settings:
        command += ["--set", setting]
    return command


def run_side_by_side(runs, data, out, common, minutes):
    """Starts every run, SIGTERMs them after `minutes`; returns {name: wall seconds}."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    procs = {}
    for name, preset, settings in runs:
        log = open(os.path.join(out, f"{name}.log"), "w")
        command = train_command(data, os.path.join(out, name), preset, common + settings)
        procs[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env),
                       log, time.monotonic())
    deadline = time.monotonic() + 60 * minutes
    ended = {}  # name: when a run was first seen finished on its own
    while time.monotonic() < deadline and len(ended) < len(procs):
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        ended.update({name: time.monotonic() for name, (p, _, _) in procs.items()
                      if name not in ended and p.poll() is not None})
    # Stop every run at once (so none trains on while another saves), and all of them
    # before any error is raised (so none is left running). A run's wall time ends here:
    # saving the checkpoint after SIGTERM is not training.
    stopped_at = time.monotonic()
    for proc, _, _ in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    walls, failed = {}, []
    for name, (proc, log, start) in procs.items():
        try:
            proc.wait(timeout=600)  # saving a checkpoint, or a final validation pass
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        walls[name] = ended.get(name, stopped_at) - start
        log.close()
        if proc.returncode not in STOPPED:
            early = (" (SIGTERM came before it started training: raise --minutes)"
                     if proc.returncode == -signal.SIGTERM else "")
            failed.append(f"run {name} exited with status {proc.returncode}{early}; see "
                          f"{os.path.join(out, name + '.log')}")
    if failed:
        raise RuntimeError("; ".join(failed))
    return walls


def evaluate(out, name, split):
    workdir = os.path.join(out, name)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, TRAIN, "--workdir", workdir, "--evaluate", split],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"evaluating {name} failed: {result.stderr.strip()[-500:]}")
    with open(os.path.join(workdir, f"eval_{split}.json")) as f:
        report = json.load(f)
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)["config"]
    report["images_seen"] = report["step"] * config["batch_size"]
    return report


def table(runs, reports, walls, split):
    lines = [f"| run | preset | settings | steps | images seen | wall min | {split} nats | "
             f"{split} bits/dim | small bits/dim | conditional bits/dim |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, preset, settings in runs:
        r = reports[name]
        terms = r.get("terms", {})
        term = lambda k, terms=terms: (f"{terms[k]['bits_per_dim']:.4f}" if k in terms
                                       else "")
        lines.append(f"| {name} | {preset} | {' '.join(settings)} | {r['step']} | "
                     f"{r['images_seen']} | {walls[name] / 60:.1f} | {r['nats']:.2f} | "
                     f"{r['bits_per_dim']:.4f} | {term('small')} | {term('conditional')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = ArgumentParser(prog="equal_time.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data_prep dataset directory")
    parser.add_argument("--out", required=True, help="new directory for the work directories")
    parser.add_argument("--minutes", type=float, required=True, help="wall-time budget per run")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--common", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config settings for every run")
    parser.add_argument("--run", nargs="+", action="append", required=True,
                        metavar="NAME PRESET [KEY=VALUE]",
                        help="a run: its name, its preset and its own settings (repeatable)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")
    runs = []
    for run in args.run:
        if len(run) < 2:
            parser.error(f"--run needs NAME PRESET [KEY=VALUE ...], got {' '.join(run)!r}")
        runs.append((run[0], run[1], run[2:]))
    if len({name for name, _, _ in runs}) != len(runs):
        parser.error("run names must differ")
    if os.path.exists(args.out):
        parser.error(f"--out {args.out} exists; choose a new directory")
    os.makedirs(args.out)
    load = os.getloadavg()
    try:
        walls = run_side_by_side(runs, args.data, args.out, args.common, args.minutes)
        reports = {name: evaluate(args.out, name, args.split) for name, _, _ in runs}
    except RuntimeError as e:
        print(f"equal_time.py: error: {e}", file=sys.stderr)
        return 1
    print(f"{len(runs)} runs side by side for {args.minutes:g} min each on {os.cpu_count()} "
          f"CPUs; load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}; "
          f"common settings: {' '.join(args.common) or '(none)'}\n")
    print(table(runs, reports, walls, args.split))
    path = os.path.join(args.out, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"minutes": args.minutes, "split": args.split, "common": args.common,
                   "runs": [{"name": n, "preset": p, "settings": s, "wall_seconds": walls[n],
                             **reports[n]} for n, p, s in runs]}, f, indent=2)
    os.replace(path + ".tmp", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
