"""examples/serving_client.py: its requests and response parsing, against a stand-in for
TF Serving (an in-process gRPC PredictionService on 127.0.0.1 that runs the SavedModels of an
unconditional and a class-conditional model), compared with the SavedModels and the models
computed locally; the conditional model's labels and classify, and version labels, as
tests/test_rest_client.py checks them over REST."""

import functools
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tensorflow_serving.apis.predict_pb2",
                    reason="pip install --no-deps tensorflow-serving-api")
grpc = pytest.importorskip("grpc")

from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from pixelrnn_tf import PixelRNN, class_conditional, sampling, serving  # noqa: E402

from cli_fixtures import load_script, run_main  # noqa: E402
from export_fixtures import random_images, randomize_weights, signature_defs  # noqa: E402

SHAPE, LEVELS, K = (3, 4, 1), 2, 3
MAX_BATCH = 8
VERSION_LABELS = {"stable": 1, "canary": 2}  # the stand-in serves versions 1 and 2 of each


client_lib = load_script("examples/serving_client.py")


def _braces(names):
    return "{" + ",".join(sorted(names)) + "}"


class FakeTFServing(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers Predict like TF Serving: the named signature of the named model's SavedModel,
    inputs and outputs as TensorProtos; NOT_FOUND for an unknown model, version or version
    label, FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for inputs that are
    not the signature's or that the model rejects (the status message, several lines, as TF
    Serving sends it). Keeps every request it received in `requests`."""

    def __init__(self):
        self.models, self.requests = {}, []

    def Predict(self, request, context):
        self.requests.append(request)
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            version = spec.version.value
        elif choice == "version_label":
            version = VERSION_LABELS.get(spec.version_label)
        else:
            version = max(VERSION_LABELS.values())
        loaded = self.models.get(spec.name)
        if loaded is None or version not in VERSION_LABELS.values():
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"Servable not found for request: {spec.name} ({choice})")
        signature = spec.signature_name or "serving_default"
        if signature not in loaded.signatures:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f'Serving signature key "{signature}" not found.')
        function = loaded.signatures[signature]
        names, sent = set(function.structured_input_signature[1]), set(request.inputs)
        if len(sent) != len(names):  # TF Serving's messages (predict_util.cc)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"input size does not match signature: {len(sent)}!={len(names)} "
                          f"len({_braces(sent)}) != len({_braces(names)}). Sent extra: "
                          f"{_braces(sent - names)}. Missing but required: "
                          f"{_braces(names - sent)}.")
        if sent != names:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"input tensor alias not found in signature: "
                          f"{sorted(sent - names)[0]}. Inputs expected to be in the set "
                          f"{_braces(names)}.")
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        try:
            outputs = function(**inputs)
        except tf.errors.InvalidArgumentError as e:
            preamble = ("Graph execution error", "Detected at node", "<stack traces")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "\n".join(
                line for line in e.message.splitlines()
                if line.strip() and not line.startswith(preamble)))
        except (TypeError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e).splitlines()[0])
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


@pytest.fixture(scope="module")
def stand_in():
    """(the FakeTFServing, a grpc channel to it on a free loopback port); the fixtures below
    add their models to its `models`."""
    fake = FakeTFServing()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield fake, channel
    channel.close()
    server.stop(grace=None)


@pytest.fixture(scope="module")
def served(tmp_path_factory, stand_in):
    """(model, export dir, grpc channel to the stand-in serving it as "pixelrnn"); a Row
    LSTM: the default run's other exports that draw are a Diagonal BiLSTM's and PixelCNNs',
    and this module compares the export's samples and completions with the model's."""
    fake, channel = stand_in
    tf.keras.utils.set_random_seed(2)
    model = PixelRNN("row_lstm", image_shape=SHAPE, levels=LEVELS, num_layers=1,
                     hidden_dim=4, output_dim=8, first_kernel=3)
    model.build()
    path = str(tmp_path_factory.mktemp("served") / "1")
    serving.write_saved_model(model, path, max_batch=MAX_BATCH, examples=False)
    fake.models["pixelrnn"] = tf.saved_model.load(path)
    return model, path, channel


@pytest.fixture(scope="module")
def conditional(tmp_path_factory, stand_in):
    """(model, export dir, channel) of a class-conditional Row LSTM (K = 3 classes, random
    weights so that the label matters, label frequencies 3:2:1), served as "conditional"."""
    fake, channel = stand_in
    tf.keras.utils.set_random_seed(3)
    model = PixelRNN("row_lstm", image_shape=SHAPE, levels=LEVELS, num_layers=1,
                     hidden_dim=4, output_dim=8, first_kernel=3, num_classes=K)
    model.build()
    randomize_weights(model, seed=K)
    model.set_label_prior([3, 2, 1])
    path = str(tmp_path_factory.mktemp("conditional") / "1")
    serving.write_saved_model(model, path, max_batch=MAX_BATCH, examples=False, warmup=False)
    fake.models["conditional"] = tf.saved_model.load(path)
    return model, path, channel


def test_build_request_and_parse_response():
    images = np.random.default_rng(0).integers(0, LEVELS, (2, *SHAPE))
    request = client_lib.build_request("pixelrnn", "complete", dict(
        images=images, known_pixels=5, seed=3, temperature=0.5), version=7)
    assert request.model_spec.name == "pixelrnn"
    assert request.model_spec.signature_name == "complete"
    assert request.model_spec.version.value == 7
    decoded = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    assert decoded["images"].dtype == np.uint8
    np.testing.assert_array_equal(decoded["images"], images)
    assert decoded["known_pixels"].dtype == np.int32 and decoded["known_pixels"] == 5
    assert decoded["seed"].dtype == np.int64 and decoded["seed"] == 3
    assert decoded["temperature"].dtype == np.float32 and decoded["temperature"] == 0.5
    # Round trip through the wire format.
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]), images)

    response = predict_pb2.PredictResponse()
    log_prob = np.array([-1.5, -2.5], np.float32)
    response.outputs["log_prob"].CopyFrom(tf.make_tensor_proto(log_prob))
    parsed = client_lib.parse_response(predict_pb2.PredictResponse.FromString(
        response.SerializeToString()))
    np.testing.assert_array_equal(parsed["log_prob"], log_prob)

    for signature, inputs in [("sample", {"num_samples": 1}), ("nope", {}),
                              ("serving_default", {"images": images.astype(np.float32)}),
                              ("serving_default", {"images": images + 300})]:
        with pytest.raises(ValueError):
            client_lib.build_request("pixelrnn", signature, inputs)


def test_labelled_requests_and_version_labels():
    images, labels = random_images(3, SHAPE, LEVELS), np.array([2, 0, 1])
    draw = {"seed": 7, "temperature": 0.5}
    for signature, inputs in [
            ("serving_default", {"images": images, "labels": labels}),
            ("sample", {"num_samples": 3, **draw, "labels": labels}),
            ("complete", {"images": images, "known_pixels": 5, **draw, "labels": labels}),
            ("classify", {"images": images})]:
        request = predict_pb2.PredictRequest.FromString(client_lib.build_request(
            "m", signature, inputs, label="canary").SerializeToString())  # the wire
        assert request.model_spec.signature_name == signature
        assert request.model_spec.WhichOneof("version_choice") == "version_label"
        assert request.model_spec.version_label == "canary"
        decoded = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert sorted(decoded) == sorted(inputs)
        if "labels" in inputs:
            assert decoded["labels"].dtype == np.int32
            np.testing.assert_array_equal(decoded["labels"], labels)
    request = client_lib.build_request("m", "classify", {"images": images})
    assert request.model_spec.WhichOneof("version_choice") is None

    one = np.zeros((1, *SHAPE), np.uint8)
    for signature, inputs, kwargs, message in [
            ("classify", {"images": one, "labels": [0]}, {}, "takes inputs"),
            ("serving_default", {"images": one, "labels": [0.5]}, {}, "integer"),
            ("serving_default", {"images": one, "labels": ["0"]}, {}, "numbers"),
            ("serving_default", {"images": one, "labels": [[0]]}, {}, r"labels must be \[N\]"),
            ("serving_default", {"images": one, "labels": [2**32 + 1]}, {}, "must lie in"),
            ("serving_default", {"images": images, "labels": [0, 1]}, {},
             "one label per image"),
            ("sample", {"num_samples": [2], "seed": 0, "temperature": 1.0}, {},
             "single number"),
            ("serving_default", {"images": one}, {"version": 1, "label": "stable"},
             "not both"),
            ("serving_default", {"images": one}, {"label": ""}, "label is empty"),
            ("serving_default", {"images": one}, {"version": -1}, ">= 0")]:
        with pytest.raises(ValueError, match=message):
            client_lib.build_request("m", signature, inputs, **kwargs)


def test_signature_tables_match_the_exports(served, conditional):
    """The client's input table is that of real exports (names and dtypes)."""
    for path, labelled in ((served[1], False), (conditional[1], True)):
        defs = signature_defs(path)
        assert ("classify" in defs) == labelled
        for signature, (_, inputs, _) in defs.items():
            expected = dict(client_lib.SIGNATURE_INPUTS[signature])
            if labelled and signature in client_lib.LABELLED_SIGNATURES:
                expected["labels"] = np.int32
            assert {k: v[0] for k, v in inputs.items()} == {
                k: tf.as_dtype(v).as_datatype_enum for k, v in expected.items()}, signature


def test_client_against_a_served_savedmodel(served):
    model, path, channel = served
    client = client_lib.PixelRNNClient(None, "pixelrnn", channel=channel)
    images = np.random.default_rng(1).integers(0, LEVELS, (3, *SHAPE)).astype(np.uint8)
    loaded = tf.saved_model.load(path)

    scores = client.score(images)
    local = loaded.signatures["serving_default"](images=tf.constant(images))
    for key in ("log_prob", "bits_per_dim", "pixel_log_prob"):
        np.testing.assert_array_equal(scores[key], local[key].numpy())
    np.testing.assert_allclose(scores["log_prob"], model.log_prob(images.astype(np.int32)),
                               rtol=1e-5, atol=1e-4)

    samples = client.sample(4, seed=9, temperature=0.7)
    assert samples.dtype == np.uint8 and samples.shape == (4, *SHAPE)
    np.testing.assert_array_equal(samples, sampling.sample(model, 4, 9, 0.7).numpy())

    completed = client.complete(images, known_pixels=6, seed=2)
    np.testing.assert_array_equal(completed, sampling.complete(model, images, 6, 2).numpy())

    with pytest.raises(grpc.RpcError) as error:
        client.score(images[0])  # no batch dimension: rejected, the server lives on
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    np.testing.assert_array_equal(client.score(images)["log_prob"], scores["log_prob"])


def test_conditional_client_against_the_model(conditional):
    model, path, channel = conditional
    client = client_lib.PixelRNNClient(None, "conditional", channel=channel)
    images, labels = random_images(3, SHAPE, LEVELS), np.array([2, 0, 1], np.int32)
    loaded = tf.saved_model.load(path)

    scores = client.score(images, labels)
    local = loaded.signatures["serving_default"](images=tf.constant(images),
                                                 labels=tf.constant(labels))
    for key in ("log_prob", "bits_per_dim", "pixel_log_prob"):
        np.testing.assert_array_equal(scores[key], local[key].numpy())
    np.testing.assert_allclose(scores["log_prob"],
                               model.log_prob(images.astype(np.int32), labels),
                               rtol=1e-5, atol=1e-4)
    # The labels reach the model: other labels, other scores.
    other = client.score(images, (labels + 1) % K)["log_prob"]
    assert not np.allclose(other, scores["log_prob"])

    samples = client.sample(3, seed=9, temperature=0.7, labels=labels)
    assert samples.dtype == np.uint8 and samples.shape == (3, *SHAPE)
    np.testing.assert_array_equal(
        samples, sampling.sample(model, 3, 9, 0.7, labels=labels).numpy())
    completed = client.complete(images, known_pixels=6, seed=2, labels=labels)
    np.testing.assert_array_equal(
        completed, sampling.complete(model, images, 6, 2, labels=labels).numpy())

    classes = client.classify(images)
    local = loaded.signatures["classify"](images=tf.constant(images))
    assert {k: v.dtype for k, v in classes.items()} == {
        "probabilities": np.float32, "label": np.int32, "log_prob": np.float32}
    for key in ("probabilities", "label", "log_prob"):
        np.testing.assert_array_equal(classes[key], local[key].numpy())
    label, posterior = class_conditional.classify(model, images.astype(np.int32))
    assert classes["probabilities"].shape == (3, K)
    np.testing.assert_allclose(classes["probabilities"], posterior, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(classes["label"], label)
    np.testing.assert_allclose(
        classes["log_prob"], class_conditional.marginal_log_prob(model, images.astype(np.int32)),
        rtol=1e-5, atol=1e-4)


def test_bad_labels_are_rejected_by_the_export(served, conditional):
    """What only the server can tell: the model's K, whether it is conditional at all, and
    num_samples against the labels' count; INVALID_ARGUMENT, and the server lives on."""
    channel = conditional[2]
    plain = client_lib.PixelRNNClient(None, "pixelrnn", channel=channel)
    labelled = client_lib.PixelRNNClient(None, "conditional", channel=channel)
    images = random_images(2, SHAPE, LEVELS)
    for call, message in [
            (lambda: labelled.score(images, [0, K]), f"labels must be < {K}"),
            (lambda: labelled.sample(3, 0, labels=[0, 1]), "one label per image"),
            (lambda: labelled.score(images), "Missing but required: {labels}"),
            (lambda: labelled.complete(images, 4, 0), "Missing but required: {labels}"),
            (lambda: plain.score(images, [0, 1]), "Sent extra: {labels}"),
            (lambda: plain.sample(2, 0, labels=[0, 1]), "Sent extra: {labels}")]:
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        plain.classify(images)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert labelled.score(images, [0, 1])["log_prob"].shape == (2,)


def test_versions_and_version_labels_reach_the_model_spec(served, stand_in):
    fake, channel = stand_in
    images = random_images(2, SHAPE, LEVELS)
    want = client_lib.PixelRNNClient(None, "pixelrnn", channel=channel).score(images)
    for kwargs, choice, value in [({"label": "canary"}, "version_label", "canary"),
                                  ({"version": 2}, "version", 2), ({}, None, None)]:
        client = client_lib.PixelRNNClient(None, "pixelrnn", channel=channel, **kwargs)
        np.testing.assert_array_equal(client.score(images)["log_prob"], want["log_prob"])
        spec = fake.requests[-1].model_spec
        assert (spec.name, spec.signature_name) == ("pixelrnn", "serving_default")
        assert spec.WhichOneof("version_choice") == choice
        if choice == "version":
            assert spec.version.value == value
        elif choice:
            assert spec.version_label == value
    for kwargs in ({"version": 7}, {"label": "beta"}):
        with pytest.raises(grpc.RpcError) as error:
            client_lib.PixelRNNClient(None, "pixelrnn", channel=channel, **kwargs).score(images)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ValueError, match="not both"):
        client_lib.PixelRNNClient(None, "pixelrnn", 1, channel=channel, label="stable")


def test_client_cli(served, tmp_path, capsys):
    model, _, channel = served
    code = client_lib.main(["--model", "pixelrnn", "sample", "--num", "2", "--seed", "4",
                            "--out", str(tmp_path / "s.npz")], channel=channel)
    assert code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["images"],
                                  sampling.sample(model, 2, 4).numpy())
    np.savez(tmp_path / "images.npz", images=np.ones((2, *SHAPE), np.uint8))
    assert client_lib.main(["score", str(tmp_path / "images.npz")], channel=channel) == 0
    assert "bits/dim" in capsys.readouterr().out
    code = client_lib.main(["--model", "other", "score", str(tmp_path / "images.npz")],
                           channel=channel)
    err = capsys.readouterr().err
    assert code == 1 and "NOT_FOUND" in err and len(err.strip().splitlines()) == 1


def test_conditional_cli(served, conditional, stand_in, tmp_path, capsys):
    model, path, channel = conditional
    fake = stand_in[0]
    loaded = tf.saved_model.load(path)

    def cli(*args):
        return run_main(functools.partial(client_lib.main, channel=channel), args, capsys)

    common = ["--model", "conditional"]
    images = random_images(3, SHAPE, LEVELS)
    np.savez(tmp_path / "images.npz", images=images)

    code, out, err = cli(*common, "sample", "--labels", "0,2", "--seed", 4,
                         "--out", tmp_path / "s.npz")
    assert (code, err) == (0, "") and "wrote 2 samples" in out
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["images"],
                                  sampling.sample(model, 2, 4, labels=[0, 2]).numpy())

    code, out, err = cli(*common, "classify", tmp_path / "images.npz", "--out",
                         tmp_path / "c.npz")
    want = {k: v.numpy() for k, v in
            loaded.signatures["classify"](images=tf.constant(images)).items()}
    lines = out.splitlines()
    assert (code, err) == (0, "") and [line.split()[3] for line in lines[:3]] == [
        str(label) for label in want["label"]]
    names, _, where = lines[3].removeprefix("wrote ").partition(" to ")
    assert sorted(names.split(", ")) == sorted(want) and where == str(tmp_path / "c.npz")
    written = dict(np.load(tmp_path / "c.npz"))
    assert sorted(written) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)

    code, out, err = cli(*common, "--label", "stable", "score", tmp_path / "images.npz",
                         "--labels", "1,1,0")
    assert (code, err) == (0, "") and out.count("bits/dim") == 3
    assert fake.requests[-1].model_spec.version_label == "stable"
    np.testing.assert_array_equal(tf.make_ndarray(fake.requests[-1].inputs["labels"]),
                                  [1, 1, 0])

    code, out, err = cli(*common, "--version", 1, "complete", tmp_path / "images.npz",
                         "--known-pixels", 5, "--labels", "1,1,0", "--out", tmp_path / "k.npz")
    assert (code, err) == (0, "") and fake.requests[-1].model_spec.version.value == 1
    np.testing.assert_array_equal(
        np.load(tmp_path / "k.npz")["images"],
        sampling.complete(model, images, 5, 0, labels=[1, 1, 0]).numpy())

    x = tmp_path / "x.npz"
    failures = [
        ([*common, "sample", "--num", 3, "--labels", "0,1", "--out", x], "one per sample"),
        ([*common, "score", tmp_path / "images.npz", "--labels", "1,x"], "comma-separated"),
        ([*common, "score", tmp_path / "images.npz", "--labels", "0,-1"], ">= 0"),
        ([*common, "score", tmp_path / "images.npz", "--labels", "0,1"], "one label per image"),
        ([*common, "score", tmp_path / "images.npz", "--labels", "0,1,5", "--out", x],
         "labels must be < 3"),
        ([*common, "complete", tmp_path / "images.npz", "--known-pixels", 5,
          "--labels", "0,1,5", "--out", x], "labels must be < 3"),
        ([*common, "sample", "--out", x], "Missing but required: {labels}"),
        (["--model", "pixelrnn", "sample", "--labels", "0,1", "--out", x],
         "Sent extra: {labels}"),
        (["--model", "pixelrnn", "classify", tmp_path / "images.npz", "--out", x],
         'FAILED_PRECONDITION: Serving signature key "classify" not found.'),
        ([*common, "--label", "beta", "classify", tmp_path / "images.npz", "--out", x],
         "NOT_FOUND"),
        ([*common, "--label", "", "classify", tmp_path / "images.npz"], "label is empty"),
        ([*common, "classify", tmp_path / "missing.npz", "--out", x], "missing.npz"),
        ([*common, "classify", tmp_path / "images.npz", "--key", "other"], "no array 'other'"),
    ]
    for args, message in failures:
        code, out, err = cli(*args)
        assert code == 1 and err.startswith("serving_client: error: ") and message in err, \
            (args, err)
        if "labels must be <" in message or "required" in message or "extra" in message:
            assert "INVALID_ARGUMENT" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, _, err = cli(*common, "--version", 1, "--label", "stable", "score",
                       tmp_path / "images.npz")
    assert code == 2 and "not allowed with" in err
    # Nothing partial was left behind by the failures.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "images.npz", "k.npz",
                                                          "s.npz"]
