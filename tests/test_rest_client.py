"""examples/rest_client.py: its JSON requests (both of TF Serving's forms, every signature, the
URL with a version or a label), its reply parsing and errors, and the client end to end
against a stand-in for TF Serving's REST predict endpoint (http.server on 127.0.0.1) that
runs the exported SavedModels of an unconditional and a class-conditional model: the
client's answers must equal the signatures called directly with the same inputs."""

import http.server
import json
import re
import socket
import threading
import urllib.parse

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import PixelRNN, serving

from cli_fixtures import load_script, run_main
from export_fixtures import random_images, randomize_weights, signature_defs

rest = load_script("examples/rest_client.py")

SHAPE, LEVELS, K = (3, 4, 1), 2, 3
MAX_BATCH = 8
MODEL = "pixelrnn"
LABELS = {"stable": 1, "canary": 2}  # the stand-in serves versions 1 and 2 of each model


class TFServingREST(http.server.BaseHTTPRequestHandler):
    """POST /v1/models/NAME[/versions/V | /labels/L]:predict as TF Serving's REST API
    answers it: the JSON body turned into tensors of the signature's dtypes (row form: one
    item per image, an object per item when there are several inputs; columnar: an object
    of the inputs), the signature run, and {"predictions": [...]} (row) or {"outputs": ...}
    (columnar; the value alone for a single output). Errors are {"error": message}: 404 for
    an unknown model, version or label, 400 for a bad body or an INVALID_ARGUMENT."""

    URL = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:predict")

    def log_message(self, *args):  # quiet
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.server.paths.append(self.path)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        match = self.URL.fullmatch(self.path)
        if not match:
            return self.reply(404, {"error": f"Malformed request: POST {self.path}"})
        name, version, label = (urllib.parse.unquote(g) if g else g for g in match.groups())
        version = LABELS.get(label) if label else int(version or max(LABELS.values()))
        loaded = self.server.models.get(name)
        if loaded is None or version not in LABELS.values():
            return self.reply(404, {"error": f"Servable not found for request: {name}"})
        try:
            request = json.loads(body)
            function = loaded.signatures[request.get("signature_name", "serving_default")]
            specs = function.structured_input_signature[1]
            columns, form = self.columns(request, sorted(specs))
            outputs = function(**{name: self.tensor(columns[name], specs[name])
                                  for name in specs})
            return self.reply(200, self.encode({k: v.numpy() for k, v in outputs.items()},
                                               form))
        except KeyError as e:
            return self.reply(400, {"error": f"Serving signature key {e} not found."})
        except tf.errors.InvalidArgumentError as e:
            return self.reply(400, {"error": self.status_message(e)})
        except (ValueError, TypeError) as e:
            return self.reply(400, {"error": str(e).strip().splitlines()[0]})

    @staticmethod
    def status_message(error):
        """The message of the C++ Status TF Serving would send (several lines): the eager
        runtime's preamble ("Graph execution error:", "Detected at node ...") left out."""
        preamble = ("Graph execution error", "Detected at node", "<stack traces")
        return "\n".join(line for line in error.message.splitlines()
                         if line.strip() and not line.startswith(preamble))

    @staticmethod
    def columns(request, names):
        if ("instances" in request) == ("inputs" in request):
            raise ValueError("Missing 'inputs' or 'instances' key (or both given)")
        if "inputs" in request:
            inputs = request["inputs"]
            if not (isinstance(inputs, dict) and sorted(inputs) == names):
                if len(names) > 1:
                    raise ValueError(f"'inputs' must be an object of {names}")
                inputs = {names[0]: inputs}
            return inputs, "columnar"
        instances = request["instances"]
        if instances and all(isinstance(item, dict) for item in instances):
            if any(sorted(item) != names for item in instances):
                raise ValueError(f"every instance must hold exactly {names}")
            return {n: [item[n] for item in instances] for n in names}, "row"
        if len(names) > 1:
            raise ValueError("instances is a plain list, but expecting list of objects as "
                             "multiple input tensors required")
        return {names[0]: instances}, "row"

    @staticmethod
    def tensor(value, spec):
        array = np.asarray(value)
        if spec.dtype.is_integer and array.dtype.kind not in "iu":
            raise ValueError(f"{spec.name}: expected {spec.dtype.name} numbers")
        return tf.constant(array.astype(spec.dtype.as_numpy_dtype))

    @staticmethod
    def encode(outputs, form):
        if form == "columnar":
            if len(outputs) == 1:
                return {"outputs": next(iter(outputs.values())).tolist()}
            return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
        (count,) = {len(v) for v in outputs.values()}  # TF Serving too needs one batch size
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()}
                                for i in range(count)]}


def export(tmp_path_factory, name, num_classes):
    """The export of a PixelCNN (the architecture does not show in the requests and replies;
    it exports quickest)."""
    tf.keras.utils.set_random_seed(3)
    model = PixelRNN("pixelcnn", image_shape=SHAPE, levels=LEVELS, num_layers=1, hidden_dim=4,
                     output_dim=8, first_kernel=3, num_classes=num_classes)
    model.build()
    randomize_weights(model, seed=num_classes)
    if num_classes:
        model.set_label_prior([3, 2, 1])
    path = tmp_path_factory.mktemp(name) / "1"
    serving.write_saved_model(model, path, max_batch=MAX_BATCH, examples=False, warmup=False)
    return str(path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{served model name: export dir}: an unconditional model and a conditional one."""
    return {MODEL: export(tmp_path_factory, "rest_plain", 0),
            "conditional": export(tmp_path_factory, "rest_conditional", K)}


@pytest.fixture(scope="module")
def server(exports):
    """(base "host:port" of the stand-in on a free loopback port, {name: loaded SavedModel},
    the request paths it received)."""
    loaded = {name: tf.saved_model.load(path) for name, path in exports.items()}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TFServingREST)
    httpd.models, httpd.paths = loaded, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}", loaded, httpd.paths
    httpd.shutdown()
    httpd.server_close()


def images_for(n, seed=1):
    return random_images(n, SHAPE, LEVELS, seed)


def direct(loaded, signature, **inputs):
    """The signature called in-process with `inputs` in its dtypes: what the server must
    answer."""
    specs = loaded.signatures[signature].structured_input_signature[1]
    tensors = {k: tf.constant(np.asarray(v).astype(specs[k].dtype.as_numpy_dtype))
               for k, v in inputs.items()}
    return {k: v.numpy() for k, v in loaded.signatures[signature](**tensors).items()}


def assert_same(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


# ---------------------------------------------------------------------------------------------
# Pure functions: no network.

def test_predict_url():
    assert rest.predict_url("localhost:8501", "pixelrnn") == \
        "http://localhost:8501/v1/models/pixelrnn:predict"
    assert rest.predict_url("http://h:1/", "m", version=3) == "http://h:1/v1/models/m/versions/3:predict"
    assert rest.predict_url("https://h", "m", label="canary") == \
        "https://h/v1/models/m/labels/canary:predict"
    assert rest.predict_url("h:1", "a b", label="x/y") == "http://h:1/v1/models/a%20b/labels/x%2Fy:predict"
    for kwargs in ({"version": 1, "label": "stable"}, {"version": -1}, {"version": "2"},
                   {"label": ""}):
        with pytest.raises(ValueError):
            rest.predict_url("h:1", "m", **kwargs)


def test_columnar_requests_of_every_signature():
    images = images_for(3)
    labels = np.array([2, 0, 1])
    draw = {"seed": 7, "temperature": 0.5}
    cases = [
        ("serving_default", {"images": images}),
        ("serving_default", {"images": images, "labels": labels}),
        ("sample", {"num_samples": 3, **draw}),
        ("sample", {"num_samples": 3, **draw, "labels": labels}),
        ("complete", {"images": images, "known_pixels": 5, **draw}),
        ("complete", {"images": images, "known_pixels": 5, **draw, "labels": labels}),
        ("classify", {"images": images}),
    ]
    for signature, inputs in cases:
        body = json.loads(json.dumps(rest.build_request(signature, inputs)))  # the wire
        assert sorted(body) == ["inputs", "signature_name"]
        assert body["signature_name"] == signature
        assert sorted(body["inputs"]) == sorted(inputs)
        for name, value in inputs.items():
            np.testing.assert_array_equal(body["inputs"][name], value, err_msg=name)
    body = rest.build_request("sample", {"num_samples": np.int64(3), "seed": 7,
                                         "temperature": np.float64(0.5)})["inputs"]
    # Scalars stay JSON numbers of their kind (no [] around them: they have no batch dim).
    assert body == {"num_samples": 3, "seed": 7, "temperature": 0.5}
    assert isinstance(body["num_samples"], int) and isinstance(body["temperature"], float)
    # An image is nested lists [H][W][C] of integers.
    image = rest.build_request("classify", {"images": images[:1]})["inputs"]["images"][0]
    assert len(image) == SHAPE[0] and len(image[0]) == SHAPE[1]
    assert image[0][0] == [images[0, 0, 0, 0]] and isinstance(image[0][0][0], int)


def test_row_requests():
    images, labels = images_for(2), np.array([1, 2])
    body = rest.build_request("serving_default", {"images": images}, "row")
    # One input: the instances are the images themselves.
    assert body == {"signature_name": "serving_default", "instances": images.tolist()}
    assert rest.build_request("classify", {"images": images}, "row")["instances"] == \
        images.tolist()
    # Several inputs: one object per image.
    body = rest.build_request("serving_default", {"images": images, "labels": labels}, "row")
    assert body["instances"] == [{"images": images[k].tolist(), "labels": int(labels[k])}
                                 for k in range(2)]
    # Scalar inputs have no batch dimension: refused, with a pointer to the columnar form.
    for signature, inputs in [
            ("sample", {"num_samples": 2, "seed": 0, "temperature": 1.0}),
            ("complete", {"images": images, "known_pixels": 3, "seed": 0, "temperature": 1.0,
                          "labels": labels})]:
        with pytest.raises(ValueError, match="columnar") as error:
            rest.build_request(signature, inputs, "row")
        assert "scalar" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("signature, inputs, message", [
    ("nope", {"images": np.zeros((1, 3, 4, 1))}, "unknown signature"),
    ("sample", {"num_samples": 1}, "takes inputs"),
    ("classify", {"images": np.zeros((1, 3, 4, 1), np.uint8), "labels": [0]}, "takes inputs"),
    ("serving_default", {"images": np.zeros((1, 3, 4, 1), np.float32)}, "integers"),
    ("serving_default", {"images": np.full((1, 3, 4, 1), 300)}, r"\[0, 255\]"),
    ("serving_default", {"images": np.zeros((3, 4, 1), np.uint8)}, r"\[N, H, W, C\]"),
    ("serving_default", {"images": np.zeros((2, 3, 4, 1), np.uint8), "labels": [0]},
     "one label per image"),
    ("serving_default", {"images": np.zeros((1, 3, 4, 1), np.uint8), "labels": [[0]]},
     r"labels must be \[N\]"),
    ("sample", {"num_samples": [2], "seed": 0, "temperature": 1.0}, "single number"),
    ("sample", {"num_samples": 2, "seed": 0, "temperature": float("nan")}, "finite"),
    ("sample", {"num_samples": 2, "seed": "0", "temperature": 1.0}, "numbers"),
])
def test_bad_requests_are_refused_locally(signature, inputs, message):
    with pytest.raises(ValueError, match=message):
        rest.build_request(signature, inputs)


def test_parse_replies_of_both_forms():
    log_prob = [-1.5, -2.25]
    pixel = np.arange(2 * 12, dtype=np.float32).reshape(2, *SHAPE)
    columnar = {"outputs": {"log_prob": log_prob, "bits_per_dim": [0.5, 0.75],
                            "pixel_log_prob": pixel.tolist()}}
    row = {"predictions": [{"log_prob": log_prob[k], "bits_per_dim": [0.5, 0.75][k],
                            "pixel_log_prob": pixel[k].tolist()} for k in range(2)]}
    for reply, form in ((columnar, "columnar"), (row, "row")):
        out = rest.parse_response("serving_default", json.loads(json.dumps(reply)), form)
        assert {k: v.dtype for k, v in out.items()} == {
            "log_prob": np.float32, "bits_per_dim": np.float32, "pixel_log_prob": np.float32}
        np.testing.assert_array_equal(out["log_prob"], log_prob)
        np.testing.assert_array_equal(out["pixel_log_prob"], pixel)
    # One output: TF Serving leaves out its name.
    images = images_for(2)
    for reply in ({"outputs": images.tolist()}, {"outputs": {"images": images.tolist()}}):
        out = rest.parse_response("sample", reply)
        assert out["images"].dtype == np.uint8
        np.testing.assert_array_equal(out["images"], images)
    out = rest.parse_response("classify", {"predictions": [
        {"probabilities": [0.5, 0.25, 0.25], "label": 0, "log_prob": -3.0},
        {"probabilities": [0.0, 0.0, 1.0], "label": 2, "log_prob": -4.0}]}, "row")
    assert out["label"].dtype == np.int32 and out["label"].tolist() == [0, 2]
    assert out["probabilities"].shape == (2, K)


def test_error_and_malformed_replies():
    with pytest.raises(rest.ServingError, match="^at most 8 images per request$"):
        rest.parse_response("serving_default", {"error": "at most 8 images\n per request"})
    bad = [
        ({"predictions": []}, "columnar", "'outputs'"),
        ({"outputs": {"log_prob": [1.0]}}, "columnar", "lacks outputs"),
        ({"outputs": [1.0]}, "columnar", "object"),
        ({"predictions": [[1.0]]}, "row", "list of objects"),
        ({"predictions": [{"log_prob": 1.0}]}, "row", "lacks output"),
        ({"outputs": {"log_prob": ["x"], "bits_per_dim": [1.0], "pixel_log_prob": [1.0]}},
         "columnar", "not an array of numbers"),
    ]
    for reply, form, message in bad:
        with pytest.raises(ValueError, match=message):
            rest.parse_response("serving_default", reply, form)


def test_signature_tables_match_the_exports(exports):
    """The client's input and output tables are those of real exports (names, dtypes, and
    which inputs carry the batch dimension)."""
    for name, path in exports.items():
        defs = signature_defs(path)
        for signature, (_, inputs, outputs) in defs.items():
            expected = set(rest.SIGNATURE_INPUTS[signature])
            if name == "conditional" and signature in rest.LABELLED_SIGNATURES:
                expected.add("labels")
            assert set(inputs) == expected, (name, signature)
            for key, (dtype, dims, _) in inputs.items():
                want_dtype, batched = rest.INPUT_SPECS[key]
                assert dtype == tf.as_dtype(want_dtype).as_datatype_enum, (signature, key)
                assert (dims[:1] == [-1]) == batched and (len(dims) == 0) != batched
            assert {k: v[0] for k, v in outputs.items()} == {
                k: tf.as_dtype(v).as_datatype_enum
                for k, v in rest.SIGNATURE_OUTPUTS[signature].items()}, (name, signature)
        assert "classify" in defs if name == "conditional" else "classify" not in defs


# ---------------------------------------------------------------------------------------------
# End to end against the stand-in server.

def test_client_against_served_savedmodels(server):
    address, loaded, paths = server
    images, labels = images_for(3), np.array([2, 0, 1], np.int32)
    plain, conditional = loaded[MODEL], loaded["conditional"]
    draw = {"seed": 9, "temperature": 0.7}
    for form in rest.FORMATS:
        client = rest.RestClient(address, MODEL, form=form)
        assert_same(client.score(images), direct(plain, "serving_default", images=images))
        client = rest.RestClient(address, "conditional", form=form)
        assert_same(client.score(images, labels),
                    direct(conditional, "serving_default", images=images, labels=labels))
        assert_same(client.classify(images), direct(conditional, "classify", images=images))
    # The labels reach the model: other labels, other scores.
    other = client.score(images, (labels + 1) % K)["log_prob"]
    assert not np.allclose(other, client.score(images, labels)["log_prob"])

    client = rest.RestClient(address, MODEL)  # columnar
    want = direct(plain, "sample", num_samples=4, **draw)["images"]
    np.testing.assert_array_equal(client.sample(4, **draw), want)
    want = direct(plain, "complete", images=images, known_pixels=6, **draw)["images"]
    np.testing.assert_array_equal(client.complete(images, 6, **draw), want)
    client = rest.RestClient(address, "conditional")
    want = direct(conditional, "sample", num_samples=3, labels=labels, **draw)["images"]
    np.testing.assert_array_equal(client.sample(3, labels=labels, **draw), want)
    want = direct(conditional, "complete", images=images, known_pixels=6, labels=labels,
                  **draw)["images"]
    np.testing.assert_array_equal(client.complete(images, 6, labels=labels, **draw), want)

    # Row form of a scalar-input signature: refused before sending anything ...
    count = len(paths)
    with pytest.raises(ValueError, match="columnar"):
        rest.RestClient(address, MODEL, form="row").sample(2, 0)
    assert len(paths) == count
    # ... and what the server would make of it (each scalar becomes [N]): INVALID_ARGUMENT.
    with pytest.raises(rest.ServingError, match="HTTP 400"):
        rest.post_json(rest.predict_url(address, MODEL), {"signature_name": "sample",
                       "instances": [{"num_samples": 2, "seed": 0, "temperature": 1.0}]})


def test_versions_labels_and_errors(server):
    address, loaded, paths = server
    images = images_for(2)
    want = direct(loaded[MODEL], "serving_default", images=images)
    for kwargs, path in [({"version": 2}, "/versions/2"), ({"label": "canary"}, "/labels/canary"),
                         ({}, "")]:
        assert_same(rest.RestClient(address, MODEL, **kwargs).score(images), want)
        assert paths[-1] == f"/v1/models/{MODEL}{path}:predict"
    for kwargs in ({"version": 7}, {"label": "beta"}):
        with pytest.raises(rest.ServingError, match="^HTTP 404 .*Servable not found"):
            rest.RestClient(address, MODEL, **kwargs).score(images)
    # A request the model's in-graph checks reject: HTTP 400 {"error": ...}, one line.
    with pytest.raises(rest.ServingError) as error:
        rest.RestClient(address, MODEL).score(images + 1)  # a value 2 at LEVELS = 2
    assert str(error.value).startswith("HTTP 400") and "image values must lie in [0, 2)" in \
        str(error.value) and "\n" not in str(error.value)
    with pytest.raises(rest.ServingError, match="HTTP 400.*labels must be < 3"):
        rest.RestClient(address, "conditional").score(images, [0, 3])
    with pytest.raises(rest.ServingError, match="HTTP 400.*at most 8 images"):
        rest.RestClient(address, MODEL).score(images_for(MAX_BATCH + 1))
    # The server lives on.
    assert_same(rest.RestClient(address, MODEL).score(images), want)


def test_cli(server, tmp_path, capsys):
    address, loaded, _ = server
    common = ["--server", address, "--model", "conditional"]
    images = images_for(3)
    np.savez(tmp_path / "images.npz", images=images)

    code, out, err = run_main(rest.main, [*common, "sample", "--labels", "0,2", "--seed", 4,
                                          "--out", tmp_path / "s.npz"], capsys)
    assert (code, err) == (0, "") and "wrote 2 samples" in out
    want = direct(loaded["conditional"], "sample", num_samples=2, seed=4, temperature=1.0,
                  labels=[0, 2])["images"]
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["images"], want)

    code, out, err = run_main(rest.main, [*common, "--format", "row", "classify",
                                          tmp_path / "images.npz", "--out", tmp_path / "c.npz"],
                              capsys)
    want = direct(loaded["conditional"], "classify", images=images)
    lines = out.splitlines()
    assert code == 0 and [line.split()[3] for line in lines[:3]] == [
        str(label) for label in want["label"]]
    assert lines[3].startswith("wrote probabilities, label, log_prob")
    assert_same(dict(np.load(tmp_path / "c.npz")), want)

    code, out, err = run_main(rest.main, [*common, "--label", "stable", "score",
                                          tmp_path / "images.npz", "--labels", "1,1,0"], capsys)
    assert code == 0 and out.count("bits/dim") == 3

    code, out, err = run_main(rest.main, [*common, "complete", tmp_path / "images.npz",
                                          "--known-pixels", 5, "--labels", "1,1,0",
                                          "--out", tmp_path / "k.npz"], capsys)
    assert code == 0 and np.load(tmp_path / "k.npz")["images"].shape == (3, *SHAPE)

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    failures = [
        ([*common, "--format", "row", "sample", "--out", tmp_path / "x.npz"], "columnar"),
        ([*common, "sample", "--num", 3, "--labels", "0,1", "--out", tmp_path / "x.npz"],
         "one per sample"),
        ([*common, "score", tmp_path / "images.npz", "--labels", "1,x"], "comma-separated"),
        ([*common, "score", tmp_path / "missing.npz"], "missing.npz"),
        ([*common, "score", tmp_path / "images.npz", "--key", "other"], "no array 'other'"),
        ([*common, "score", tmp_path / "images.npz", "--labels", "0,1,5"], "HTTP 400"),
        (["--server", closed, "sample", "--out", tmp_path / "x.npz"], "cannot reach"),
        ([*common[:2], "--model", "nope", "score", tmp_path / "images.npz"], "HTTP 404"),
    ]
    for args, message in failures:
        code, out, err = run_main(rest.main, args, capsys)
        assert code == 1 and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, _, err = run_main(rest.main, [*common, "--version", 1, "--label", "stable", "score",
                                        tmp_path / "images.npz"], capsys)
    assert code == 2 and "not allowed with" in err
    # Nothing partial was left behind by the failures.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "images.npz", "k.npz",
                                                          "s.npz"]
