"""TF Serving's warm-up records of an export (assets.extra/tf_serving_warmup_requests): parsed
with the `tensorflow_serving.apis` protos, listed in the metadata, and every record replayed
through its signature in a process that cannot import this project, with the TF1 session
loader TF Serving uses (the SessionServer of benchmarks/serving_latency.py), for an
unconditional and a class-conditional model; `export.py --no-warmup` writes none."""

import os
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from pixelrnn_tf import PixelRNN, serving
from pixelrnn_tf.cli import export as export_cli

from cli_fixtures import ROOT, run_main
from export_fixtures import (
    ASSERT_NO_PROJECT_LOADED,
    NO_PROJECT,
    randomize_weights,
    run_process,
    signature_defs,
)

MAX_BATCH = 5
K = 3  # classes of the conditional model
MODELS = {  # name: (image shape, levels, classes)
    "unconditional": ((4, 5, 3), 7, 0),
    "conditional": ((6, 6, 1), 4, K),
}


def make_model(name):
    """A PixelCNN: the records do not depend on the architecture, and it exports quickest."""
    shape, levels, num_classes = MODELS[name]
    tf.keras.utils.set_random_seed(0)
    model = PixelRNN("pixelcnn", image_shape=shape, levels=levels, num_layers=1,
                     hidden_dim=4, output_dim=8, first_kernel=3, num_classes=num_classes)
    model.build()
    randomize_weights(model)
    if num_classes:
        model.set_label_prior([5, 3, 2])
    return model


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{name: (model, export dir)}: the unconditional model through export.py's defaults
    (warm-up on), the conditional one through `serving.write_saved_model`'s."""
    root = tmp_path_factory.mktemp("warmup")
    unconditional, conditional = make_model("unconditional"), make_model("conditional")
    unconditional.save(root / "unconditional.keras")
    code = export_cli.main(["--keras-model", str(root / "unconditional.keras"),
                            "--export-base", str(root / "unconditional"), "--max-batch",
                            str(MAX_BATCH), "--no-verify"])
    assert code == 0
    serving.write_saved_model(conditional, root / "conditional" / "1", max_batch=MAX_BATCH)
    return {"unconditional": (unconditional, str(root / "unconditional" / "1")),
            "conditional": (conditional, str(root / "conditional" / "1")),
            "keras_file": root / "unconditional.keras"}


def read_records(export_dir):
    """[(signature, {input: numpy value})] parsed with TF Serving's PredictionLog proto."""
    records = []
    path = os.path.join(export_dir, serving.WARMUP_PATH)
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        records.append((request.model_spec.signature_name,
                        {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
    return records


def request_size(signature, inputs):
    """How many images a request scores or draws."""
    if signature == "sample":
        return int(inputs["num_samples"])
    return len(inputs["examples" if signature == "serve_examples" else "images"])


def documented_outputs(signature, n, shape, num_classes):
    """{output: (numpy dtype, shape)} of a request of n images, as serving.py documents."""
    scores = {"log_prob": (np.float32, (n,)), "bits_per_dim": (np.float32, (n,)),
              "pixel_log_prob": (np.float32, (n, *shape))}
    return {"serving_default": scores, "serve_examples": scores,
            "sample": {"images": (np.uint8, (n, *shape))},
            "complete": {"images": (np.uint8, (n, *shape))},
            "classify": {"probabilities": (np.float32, (n, num_classes)),
                         "label": (np.int32, (n,)), "log_prob": (np.float32, (n,))},
            }[signature]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_records_are_prediction_logs_one_per_signature(exports, name):
    _, path = exports[name]
    shape, _, num_classes = MODELS[name]
    records = read_records(path)
    expected = ["serving_default", "serving_default", "sample", "complete", "serve_examples"]
    assert [s for s, _ in records] == expected + (["classify"] if num_classes else [])
    signatures = signature_defs(path)
    for signature, inputs in records:
        declared = signatures[signature][1]
        assert sorted(inputs) == sorted(declared), signature
        for key, value in inputs.items():
            dtype, dims, _ = declared[key]
            assert value.dtype == tf.dtypes.as_dtype(dtype).as_numpy_dtype, (signature, key)
            assert len(value.shape) == len(dims) and all(
                d in (-1, s) for d, s in zip(dims, value.shape)), (signature, key)
        if num_classes and "labels" in inputs:
            assert inputs["labels"].shape == (request_size(signature, inputs),), signature
            assert 0 <= inputs["labels"].min() and inputs["labels"].max() < K
    batches = [inputs["images"].shape[0] for s, inputs in records if s == "serving_default"]
    assert batches == [1, MAX_BATCH]
    sample = dict(records)["sample"]
    assert sample["num_samples"] == 1  # cheap, but the same graph as any sample request
    complete = dict(records)["complete"]
    assert complete["known_pixels"] == (shape[0] - 1) * shape[1]
    described = serving.read_metadata(path)["warmup_requests"]
    assert described == [serving.describe_request(s, x) for s, x in records]


# Run after NO_PROJECT with SCRIPT (benchmarks/serving_latency.py) and EXPORTS ({name: export
# dir}): replays every record of each export through one TF1 session, as TF Serving does after
# loading, saving the outputs to <name>.npz.
REPLAY = textwrap.dedent("""
    import importlib.util, os
    spec = importlib.util.spec_from_file_location("serving_latency", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name, export_dir in EXPORTS.items():
        server = bench.SessionServer(export_dir)
        outputs = {}
        records = bench.read_warmup(os.path.join(export_dir, WARMUP_PATH))
        for i, (signature, inputs) in enumerate(records):
            for key, value in server.run(signature, inputs).items():
                outputs[f"{i}/{key}"] = value
        np.savez(f"{name}.npz", **outputs)
""")


def test_replay_every_record_without_the_project(exports, tmp_path):
    """One process for both models (each in its own session)."""
    constants = (f"SCRIPT = {str(ROOT / 'benchmarks' / 'serving_latency.py')!r}\n"
                 f"EXPORTS = {({name: exports[name][1] for name in MODELS})!r}\n"
                 f"WARMUP_PATH = {serving.WARMUP_PATH!r}\n")
    script = NO_PROJECT + constants + REPLAY + ASSERT_NO_PROJECT_LOADED
    result = run_process([sys.executable, "-c", script], tmp_path)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]
    for name in MODELS:
        check_replayed(*exports[name], MODELS[name], np.load(tmp_path / f"{name}.npz"))


def check_replayed(model, path, description, outputs):
    """The replayed `outputs` ({"<record>/<output>": value}) have the documented keys,
    dtypes and shapes; scores are the model's, completions keep their known pixels."""
    shape, _, num_classes = description
    for i, (signature, inputs) in enumerate(read_records(path)):
        want = documented_outputs(signature, request_size(signature, inputs), shape,
                                  num_classes)
        got = {key[len(f"{i}/"):]: outputs[key] for key in outputs if key.startswith(f"{i}/")}
        assert sorted(got) == sorted(want), signature
        for key, (dtype, out_shape) in want.items():
            assert got[key].dtype == dtype and got[key].shape == out_shape, (signature, key)
        if signature == "serving_default":
            ints = tf.constant(inputs["images"], tf.int32)
            np.testing.assert_allclose(got["log_prob"], model.log_prob(ints, inputs.get("labels")),
                                       rtol=1e-5, atol=1e-4)
        if signature == "complete":
            known = int(inputs["known_pixels"])
            flat = (-1, shape[0] * shape[1], shape[2])
            np.testing.assert_array_equal(got["images"].reshape(flat)[:, :known],
                                          inputs["images"].reshape(flat)[:, :known])
        if signature == "classify":
            np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_no_warmup_writes_no_records(exports, tmp_path, capsys):
    base = tmp_path / "base"
    code, out, err = run_main(export_cli.main, [
        "--keras-model", exports["keras_file"], "--export-base", base, "--no-warmup",
        "--no-verify", "--no-examples"], capsys)
    assert code == 0, err
    assert not os.path.exists(base / "1" / serving.WARMUP_PATH)
    assert os.listdir(base / "1" / "assets.extra") == ["pixelrnn_tf.json"]
    assert "warmup_requests" not in serving.read_metadata(base / "1")
