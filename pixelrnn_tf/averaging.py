"""Checkpoint averaging: a model whose weights are the mean of a run's last checkpoints.

Averaging the weights of the last few checkpoints of a run (Polyak averaging over the end of
training, as in tensor2tensor's avg_checkpoints) smooths the noise of the last SGD steps at no
training cost (binarized MNIST, 3 checkpoints: test NLL -0.044 nats per image; README). The
average is written as a work directory of its own, so that everything that reads a work
directory (`train.py --evaluate`, `export.py`, `pixelrnn_tf.cli.sample`,
`benchmarks/report.py`) uses it unchanged:

    AVERAGED/config.json         the source's config and data, plus "averaged": {"from" (the
                                 source, relative to AVERAGED), "checkpoints", "steps"}
    AVERAGED/checkpoints/ckpt-N  the mean weights; N is the last averaged step
    AVERAGED/model.keras         the same weights as a Keras model

It holds no optimizer state: it cannot be trained further (train the source instead).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from pixelrnn_tf.workdir import (
    AVERAGED_KEY,
    TrainingError,
    Workdir,
    build_model,
    make_checkpoint,
    model_variables,
    restore_checkpoint,
    save_keras_model,
)


def kept_checkpoints(workdir: str) -> list[str]:
    """The checkpoint prefixes kept in WORKDIR/checkpoints, oldest first."""
    directory = Workdir(workdir).checkpoint_dir
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (ValueError, tf.errors.OpError) as e:  # an empty or corrupt state file
        raise TrainingError(f"{directory}/checkpoint: unreadable ({e})") from None
    paths = list(state.all_model_checkpoint_paths) if state else []
    # The state file may name checkpoints by absolute paths from another machine.
    paths = [os.path.join(directory, os.path.basename(p)) for p in paths]
    missing = [p for p in paths if not tf.io.gfile.exists(f"{p}.index")]
    if missing:
        raise TrainingError(f"{missing[0]}: listed in {directory}/checkpoint but its files "
                            "are missing")
    return paths


def average_checkpoints(source: str, out: str, last: int | None = None) -> dict:
    """Writes the work directory `out` holding the mean weights of the last `last` (default:
    all kept) checkpoints of the trained work directory `source`.

    The mean is taken in float64 per variable, then cast back. `out` must not exist yet; it
    is written under a temporary name and renamed, so a failure leaves nothing behind.
    Returns the "averaged" record {"from", "checkpoints", "steps"} plus "workdir": out.
    Raises TrainingError with a one-line message.
    """
    source, out = str(source), os.path.normpath(str(out))
    workdir = Workdir(source)
    config, spec = workdir.require()
    if workdir.averaged_source() is not None:
        raise TrainingError(f"{source} is itself an average of checkpoints; average the "
                            "checkpoints of the run it came from")
    if last is not None and last < 1:
        raise TrainingError(f"the number of checkpoints to average must be >= 1, got {last}")
    paths = kept_checkpoints(source)
    if not paths:
        raise TrainingError(f"{workdir.checkpoint_dir}: no checkpoint; train first")
    if last is not None:
        if last > len(paths):
            raise TrainingError(f"asked to average the last {last} checkpoints but "
                                f"{source} keeps {len(paths)}")
        paths = paths[-last:]
    if os.path.exists(out):
        raise TrainingError(f"{out} already exists; averaging writes a new work directory")
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"cannot create {parent} for {out} ({e.strerror})") from None

    model = build_model(config, spec)
    variables = model_variables(model)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = make_checkpoint(model, step=step_var)
    sums = {name: np.zeros(v.shape, np.float64) for name, v in variables.items()}
    steps = []
    for path in paths:
        restore_checkpoint(checkpoint, path, partial=True)
        steps.append(int(step_var.numpy()))
        for name, variable in variables.items():
            sums[name] += variable.numpy()
    for name, variable in variables.items():
        variable.assign((sums[name] / len(paths)).astype(variable.numpy().dtype))
    step_var.assign(steps[-1])

    record = {"from": os.path.relpath(os.path.abspath(source), os.path.abspath(out)),
              "checkpoints": [os.path.basename(p) for p in paths], "steps": steps}
    raw_config = workdir.raw_config()  # format, config, data and "changes" as the source has
    raw_config[AVERAGED_KEY] = record
    tmp = os.path.join(parent, f".{os.path.basename(out)}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        written = Workdir(tmp)
        with open(written.config_path, "w") as f:
            f.write(json.dumps(raw_config, indent=2) + "\n")
        manager = tf.train.CheckpointManager(checkpoint, written.checkpoint_dir, max_to_keep=1,
                                             checkpoint_name="ckpt")
        manager.save(checkpoint_number=steps[-1])
        save_keras_model(model, written.final_model)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**record, "workdir": out}
