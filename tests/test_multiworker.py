"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train in lock step."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 12

# Runs one worker: the real Trainer, then dumps this worker's own copy of the weights.
DRIVER = """
import json, os, sys
import numpy as np
from pixelrnn_tf.config import apply_overrides, get_preset
from pixelrnn_tf.trainer import Trainer

workdir, data_dir, out = sys.argv[1:4]
config = apply_overrides(get_preset("test"), sys.argv[4:])
trainer = Trainer(config, workdir, data_dir)
results = trainer.run()
np.savez(out, **{v.path.split("/", 1)[1].replace("/", "."): v.numpy()
                 for v in trainer.model.variables})
print("RESULT " + json.dumps({"replicas": trainer.distribution.num_replicas,
                              "chief": trainer.distribution.is_chief,
                              "step": results["step"]}))
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from data_prep.convert import convert

    out = tmp_path_factory.mktemp("data") / "digits"
    convert(["digits"], str(out), val_fraction=0.1, test_fraction=0.1, seed=0)
    return str(out)


@pytest.mark.slow  # two worker processes on 2 cores: 25 s idle, minutes on a busy machine
def test_two_workers_end_with_identical_weights(tmp_path, digits):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    workdir = tmp_path / "work"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(scratch),
                   PYTHONPATH=str(ROOT),
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        # A worker whose peer never starts waits forever and ignores SIGTERM: timeout -k.
        procs.append(subprocess.Popen(
            ["timeout", "-k", "10", "240", sys.executable, str(driver), str(workdir), digits,
             str(tmp_path / f"weights{index}.npz"), f"train_steps={STEPS}",
             "image_every_epochs=0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    results = [json.loads(out.split("RESULT ", 1)[1]) for out, _ in outputs]
    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["chief"] for r in results] == [True, False]
    assert [r["step"] for r in results] == [STEPS, STEPS]

    first, second = np.load(tmp_path / "weights0.npz"), np.load(tmp_path / "weights1.npz")
    assert sorted(first.files) == sorted(second.files) and len(first.files) > 5
    # Bit-identical by construction: both workers apply the same all-reduced gradients with
    # the same ops and shapes to the same initial weights.
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)

    # Only the chief wrote the work directory; the other worker's scratch is gone.
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert latest.endswith(f"ckpt-{STEPS}")
    assert (workdir / "model.keras").exists() and (workdir / "config.json").exists()
    assert os.listdir(tmp_path / "tmp1") == []
    # The weights are those of the chief's last checkpoint ...
    from pixelrnn_tf.workdir import load_model

    trained = load_model(str(workdir))
    for variable in trained.variables:
        name = variable.path.split("/", 1)[1].replace("/", ".")
        np.testing.assert_allclose(variable.numpy(), first[name], rtol=0, atol=0)
    # ... and training did something: the validation NLL went down.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "validation"), size_guidance={"tensors": 0})
    events.Reload()
    nats = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("nll_nats")]
    assert len(nats) == STEPS // 3 and nats[-1] < nats[0]
