"""examples/serving_client.py: its requests and response parsing, against a stand-in for
TF Serving (an in-process gRPC PredictionService on 127.0.0.1 that runs the SavedModel),
compared with the SavedModel and the model computed locally."""

from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tensorflow_serving.apis.predict_pb2",
                    reason="pip install --no-deps tensorflow-serving-api")
grpc = pytest.importorskip("grpc")

from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from pixelrnn_tf import PixelRNN, sampling, serving  # noqa: E402

from cli_fixtures import load_script  # noqa: E402

SHAPE, LEVELS = (3, 4, 1), 2


client_lib = load_script("examples/serving_client.py")


class FakeTFServing(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers Predict like TF Serving: the named signature of the SavedModel, inputs and
    outputs as TensorProtos, INVALID_ARGUMENT for a request the model rejects."""

    def __init__(self, export_dir, name):
        self.loaded, self.name = tf.saved_model.load(export_dir), name

    def Predict(self, request, context):
        if request.model_spec.name != self.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_spec.name}")
        signature = request.model_spec.signature_name or "serving_default"
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        try:
            outputs = self.loaded.signatures[signature](**inputs)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e).splitlines()[0])
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(model, export dir, grpc channel to a stand-in server on a free loopback port); a Row
    LSTM: the default run's other exports that draw are a Diagonal BiLSTM's and PixelCNNs',
    and this module compares the export's samples and completions with the model's."""
    tf.keras.utils.set_random_seed(2)
    model = PixelRNN("row_lstm", image_shape=SHAPE, levels=LEVELS, num_layers=1,
                     hidden_dim=4, output_dim=8, first_kernel=3)
    model.build()
    path = str(tmp_path_factory.mktemp("served") / "1")
    serving.write_saved_model(model, path, max_batch=8, examples=False)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        FakeTFServing(path, "pixelrnn"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield model, path, channel
    channel.close()
    server.stop(grace=None)


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
