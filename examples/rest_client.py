"""REST client for a PixelRNN SavedModel served by TF Serving (its HTTP/JSON predict API).

Standard library only, plus numpy for the .npz files (as examples/serving_client.py, the
gRPC client); it needs neither TensorFlow nor this project.

    POST http://HOST:8501/v1/models/NAME[/versions/V | /labels/LABEL]:predict

The body names the signature and carries the inputs in one of TF Serving's two JSON forms:

- row (``--format row``): ``{"signature_name": ..., "instances": [...]}``, one item per image:
  the image itself when the signature has one input, else ``{"images": ..., "labels": ...}``.
  TF Serving answers ``{"predictions": [...]}``, one item per image (an object of the outputs
  when there are several). Every input must then share the batch dimension, so only
  ``serving_default`` and ``classify`` can use it: ``sample`` (``num_samples``, ``seed``,
  ``temperature``) and ``complete`` (``known_pixels``, ``seed``, ``temperature``) take scalars
  and are refused in row form before anything is sent.
- columnar (``--format columnar``, the default): ``{"signature_name": ...,
  "inputs": {name: value}}``; the reply is ``{"outputs": {name: value}}``, or the value alone
  when the signature has a single output (``sample``, ``complete``). Works for every signature.

Signatures (DESIGN.md section 2, pixelrnn_tf/serving.py): ``serving_default`` uint8 ``images``
[N, H, W, C] -> float32 ``log_prob`` [N] (nats), ``bits_per_dim`` [N], ``pixel_log_prob``
[N, H, W, C]; ``sample`` int32 ``num_samples``, int64 ``seed``, float32 ``temperature`` -> uint8
``images``; ``complete`` ``images``, int32 ``known_pixels``, ``seed``, ``temperature`` -> uint8
``images``. A class-conditional model adds int32 ``labels`` [N] to these three (one label per
image or sample) and has ``classify``: ``images`` -> float32 ``probabilities`` [N, K], int32
``label`` [N], float32 ``log_prob`` [N] (the marginal log p(x)).

Usage (TF Serving's REST port 8501, the model named "pixelrnn"):

    python examples/rest_client.py --server localhost:8501 --model pixelrnn \\
        score IMAGES.npz [--labels 0,1,2] [--format row]
    python examples/rest_client.py --server localhost:8501 --model pixelrnn --label canary \\
        sample --num 4 --seed 0 --out samples.npz
    python examples/rest_client.py --server localhost:8501 --model pixelrnn \\
        complete IMAGES.npz --known-pixels 392 --seed 0 --out completions.npz
    python examples/rest_client.py --server localhost:8501 --model pixelrnn --version 2 \\
        classify IMAGES.npz --format row --out classes.npz

IMAGES.npz holds one uint8 array [N, H, W, C] (or the array named by --key). Any error (an
``{"error": ...}`` reply, an HTTP or connection failure, bad local input) is one line on
stderr and exit status 1. The request building and reply parsing are pure functions
(`build_request`, `parse_response`, `predict_url`): no network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import numpy as np

ROW, COLUMNAR = "row", "columnar"
FORMATS = (ROW, COLUMNAR)

# Every input: (dtype, batched: has the batch dimension N first; else a scalar).
INPUT_SPECS = {
    "images": (np.uint8, True),
    "labels": (np.int32, True),
    "num_samples": (np.int32, False),
    "seed": (np.int64, False),
    "temperature": (np.float32, False),
    "known_pixels": (np.int32, False),
}
# The inputs of each signature of an unconditional model; a class-conditional model's
# signatures in LABELLED_SIGNATURES take "labels" as well.
SIGNATURE_INPUTS = {
    "serving_default": ("images",),
    "sample": ("num_samples", "seed", "temperature"),
    "complete": ("images", "known_pixels", "seed", "temperature"),
    "classify": ("images",),
}
LABELLED_SIGNATURES = ("serving_default", "sample", "complete")
SIGNATURE_OUTPUTS = {
    "serving_default": {"log_prob": np.float32, "bits_per_dim": np.float32,
                        "pixel_log_prob": np.float32},
    "sample": {"images": np.uint8},
    "complete": {"images": np.uint8},
    "classify": {"probabilities": np.float32, "label": np.int32, "log_prob": np.float32},
}


class ServingError(RuntimeError):
    """The server refused the request or could not be reached (a one-line message)."""


def predict_url(server, model_name, version=None, label=None):
    """``http://SERVER/v1/models/NAME[/versions/V | /labels/LABEL]:predict``.

    Args:
      server: "host:port" or a URL ("http://host:port", "https://...").
      model_name: the served model's name.
      version: a version number (int >= 0), or None for the server's choice (the latest).
      label: a version label ("stable", "canary"); not with `version`.
    """
    if version is not None and label is not None:
        raise ValueError("give a version or a label, not both")
    base = server if "://" in server else f"http://{server}"
    path = f"/v1/models/{urllib.parse.quote(model_name, safe='')}"
    if version is not None:
        if not isinstance(version, (int, np.integer)) or version < 0:
            raise ValueError(f"version must be an integer >= 0, got {version!r}")
        path += f"/versions/{int(version)}"
    elif label is not None:
        if not label:
            raise ValueError("the version label is empty")
        path += f"/labels/{urllib.parse.quote(label, safe='')}"
    return f"{base.rstrip('/')}{path}:predict"


def _to_array(name, value):
    """`value` as the numpy array of input `name` (its dtype, its rank: [N, ...] or [])."""
    dtype, batched = INPUT_SPECS[name]
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numbers, got {array.dtype}")
    if dtype is np.float32:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite, got {value!r}")
    elif array.dtype.kind not in "biu":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    elif array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ValueError(f"{name} values must lie in [{info.min}, {info.max}]")
    if batched and array.ndim == 0:
        raise ValueError(f"{name} needs a batch dimension, got a scalar")
    if not batched and array.ndim:
        raise ValueError(f"{name} must be a single number, got shape {array.shape}")
    if name == "images" and array.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {array.shape}")
    if name == "labels" and array.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {array.shape}")
    return array.astype(dtype)


def _json_value(array):
    """A numpy array or scalar as JSON numbers (nested lists)."""
    return array.tolist()


def build_request(signature, inputs, form=COLUMNAR):
    """The JSON body (a dict) of a predict request.

    Args:
      signature: "serving_default", "sample", "complete" or "classify".
      inputs: {input name: value}: exactly the signature's inputs, plus "labels" for a
        class-conditional model's serving_default, sample and complete.
      form: "columnar" ({"inputs": {...}}) or "row" ({"instances": [...]}).

    Raises ValueError for an unknown signature or form, missing or unknown inputs, values of
    the wrong kind or shape, and the row form of a signature with scalar inputs.
    """
    if signature not in SIGNATURE_INPUTS:
        raise ValueError(f"unknown signature {signature!r}; one of {sorted(SIGNATURE_INPUTS)}")
    if form not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {form!r}")
    expected = set(SIGNATURE_INPUTS[signature])
    if signature in LABELLED_SIGNATURES and "labels" in inputs:
        expected.add("labels")
    if set(inputs) != expected:
        raise ValueError(f"{signature} takes inputs {sorted(expected)}, got {sorted(inputs)}")
    arrays = {name: _to_array(name, inputs[name]) for name in sorted(expected)}
    batched = [name for name in arrays if INPUT_SPECS[name][1]]
    sizes = {name: len(arrays[name]) for name in batched}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{signature}: give one label per image, got batch sizes {sizes}")
    body = {"signature_name": signature}
    if form == COLUMNAR:
        body["inputs"] = {name: _json_value(array) for name, array in arrays.items()}
        return body
    scalars = sorted(set(arrays) - set(batched))
    if scalars:
        raise ValueError(
            f"{signature} takes scalar inputs ({', '.join(scalars)}), which the row format "
            f"cannot carry (every input there has the batch dimension): use --format columnar")
    if len(arrays) == 1:
        (array,) = arrays.values()
        body["instances"] = _json_value(array)
    else:
        columns = {name: _json_value(array) for name, array in arrays.items()}
        count = len(next(iter(columns.values())))
        body["instances"] = [{name: column[k] for name, column in columns.items()}
                             for k in range(count)]
    return body


def _check_error(reply):
    if isinstance(reply, dict) and "error" in reply:
        raise ServingError(" ".join(str(reply["error"]).split()))


def parse_response(signature, reply, form=COLUMNAR):
    """A predict reply (the decoded JSON) -> {output name: numpy array of its dtype}.

    Row form replies {"predictions": [...]}, one item per image (an object of the outputs
    when the signature has several); columnar {"outputs": {...}} (the value alone for one
    output). Raises ServingError for an {"error": ...} reply and ValueError for a reply that
    lacks an output or does not fit the form.
    """
    if signature not in SIGNATURE_OUTPUTS:
        raise ValueError(f"unknown signature {signature!r}; one of {sorted(SIGNATURE_OUTPUTS)}")
    _check_error(reply)
    outputs = SIGNATURE_OUTPUTS[signature]
    key = "predictions" if form == ROW else "outputs"
    if not isinstance(reply, dict) or key not in reply:
        found = sorted(reply) if isinstance(reply, dict) else type(reply).__name__
        raise ValueError(f"a {form}-format reply needs {key!r}, got {found}")
    payload = reply[key]
    if form == ROW and len(outputs) > 1:
        if not isinstance(payload, list) or not all(isinstance(p, dict) for p in payload):
            raise ValueError("'predictions' must be a list of objects, one per image")
        try:
            payload = {name: [item[name] for item in payload] for name in outputs}
        except KeyError as e:
            raise ValueError(f"a prediction lacks output {e.args[0]!r}") from None
    elif len(outputs) == 1:
        (name,) = outputs
        if not (isinstance(payload, dict) and set(payload) == {name}):
            payload = {name: payload}
    elif not isinstance(payload, dict):
        raise ValueError(f"'outputs' must be an object of {sorted(outputs)}")
    missing = sorted(set(outputs) - set(payload))
    if missing:
        raise ValueError(f"the reply lacks outputs {missing} of {signature}")
    result = {}
    for name, dtype in outputs.items():
        try:
            result[name] = np.asarray(payload[name], dtype=dtype)
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"output {name} is not an array of numbers: {e}") from None
    return result


def post_json(url, body, timeout=60.0):
    """POSTs `body` as JSON; returns the decoded reply. Raises ServingError with one line for
    an error reply (TF Serving sends {"error": ...} with HTTP 400 for INVALID_ARGUMENT, 404
    for an unknown model or version), other HTTP errors and connection failures."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
    except urllib.error.HTTPError as e:
        detail = e.reason
        try:
            reply = json.loads(e.read())
            _check_error(reply)
        except ServingError as error:
            detail = str(error)
        except ValueError:
            pass
        raise ServingError(f"HTTP {e.code} from {url}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServingError(f"cannot reach {url}: {reason}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise ServingError(f"{url} did not answer JSON: {text[:80]!r}") from None


class RestClient:
    """The signatures of a served PixelRNN over TF Serving's REST API.

    Args:
      server: "host:port" (or a URL) of TF Serving's REST endpoint (--rest_api_port).
      model_name: the served model's name.
      version, label: a fixed version or a version label (not both), or neither (latest).
      form: "columnar" or "row" (row: serving_default and classify only).
      timeout: seconds per request.
    """

    def __init__(self, server, model_name, version=None, label=None, form=COLUMNAR,
                 timeout=60.0):
        self.url = predict_url(server, model_name, version, label)
        self.form, self.timeout = form, timeout

    def predict(self, signature, inputs):
        body = build_request(signature, inputs, self.form)
        return parse_response(signature, post_json(self.url, body, self.timeout), self.form)

    @staticmethod
    def _labelled(inputs, labels):
        return inputs if labels is None else {**inputs, "labels": labels}

    def score(self, images, labels=None):
        """uint8 [N, H, W, C] -> {"log_prob" [N], "bits_per_dim" [N], "pixel_log_prob"}."""
        return self.predict("serving_default", self._labelled({"images": images}, labels))

    def sample(self, num_samples, seed, temperature=1.0, labels=None):
        """-> uint8 [num_samples, H, W, C] (labels: one per sample)."""
        inputs = {"num_samples": num_samples, "seed": seed, "temperature": temperature}
        return self.predict("sample", self._labelled(inputs, labels))["images"]

    def complete(self, images, known_pixels, seed, temperature=1.0, labels=None):
        """Keeps the first `known_pixels` pixels (raster order); -> uint8 [N, H, W, C]."""
        inputs = {"images": images, "known_pixels": known_pixels, "seed": seed,
                  "temperature": temperature}
        return self.predict("complete", self._labelled(inputs, labels))["images"]

    def classify(self, images):
        """-> {"probabilities" [N, K], "label" [N], "log_prob" [N] (marginal, nats)}."""
        return self.predict("classify", {"images": images})


def parse_labels(text):
    """"0,1,2" -> int32 [3]."""
    try:
        labels = [int(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"--labels takes comma-separated integers, got {text!r}") from None
    if min(labels) < 0:
        raise ValueError(f"--labels must be >= 0, got {text!r}")
    return np.array(labels, np.int32)


def _load_images(path, key):
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        key = key or (keys[0] if len(keys) == 1 else "images")
        if key not in keys:
            raise ValueError(f"{path} has no array {key!r} (has {keys}); pass --key")
        return archive[key]


def _write_npz(path, **arrays):
    tmp = f"{path}.partial-{os.getpid()}.npz"
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_parser():
    parser = argparse.ArgumentParser(
        description="Query a PixelRNN served by TF Serving over its REST API.")
    parser.add_argument("--server", default="localhost:8501", help="REST host:port or URL")
    parser.add_argument("--model", default="pixelrnn", help="served model name")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: latest)")
    which.add_argument("--label", help="model version label, e.g. stable or canary")
    parser.add_argument("--format", choices=FORMATS, default=COLUMNAR,
                        help="JSON request form: columnar ('inputs', every signature; the "
                             "default) or row ('instances', score and classify only)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="log-likelihood of images")
    sample = sub.add_parser("sample", help="draw images")
    sample.add_argument("--num", type=int,
                        help="how many (default: one per --labels, else 4)")
    complete = sub.add_parser("complete", help="complete images")
    classify = sub.add_parser("classify", help="class posterior of images (conditional model)")
    for p in (score, complete, classify):
        p.add_argument("images", help=".npz with uint8 images [N, H, W, C]")
        p.add_argument("--key", help="array name inside the .npz")
    complete.add_argument("--known-pixels", type=int, required=True)
    for p in (score, sample, complete):
        p.add_argument("--labels", type=str,
                       help="class-conditional model: one label per image, e.g. 0,1,2")
    for p in (sample, complete):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--temperature", type=float, default=1.0)
        p.add_argument("--out", required=True, help=".npz to write the images to")
    for p in (score, classify):
        p.add_argument("--out", help=".npz to write every output to (optional)")
    return parser


def run(args):
    client = RestClient(args.server, args.model, args.version, args.label, args.format,
                        args.timeout)
    labels = parse_labels(args.labels) if getattr(args, "labels", None) else None
    if args.command == "score":
        out = client.score(_load_images(args.images, args.key), labels)
        for k, (nats, bits) in enumerate(zip(out["log_prob"], out["bits_per_dim"])):
            print(f"image {k}: log p = {nats:.3f} nats, {bits:.4f} bits/dim")
    elif args.command == "classify":
        out = client.classify(_load_images(args.images, args.key))
        for k, (label, probabilities) in enumerate(zip(out["label"], out["probabilities"])):
            print(f"image {k}: label {label} (p = {probabilities[label]:.4f}), "
                  f"log p(x) = {out['log_prob'][k]:.3f} nats")
    elif args.command == "sample":
        num = args.num if args.num is not None else (len(labels) if labels is not None else 4)
        if labels is not None and num != len(labels):
            raise ValueError(f"--num {num} but {len(labels)} --labels: give one per sample")
        images = client.sample(num, args.seed, args.temperature, labels)
        _write_npz(args.out, images=images)
        print(f"wrote {len(images)} samples to {args.out}")
        return
    else:
        images = client.complete(_load_images(args.images, args.key), args.known_pixels,
                                 args.seed, args.temperature, labels)
        _write_npz(args.out, images=images)
        print(f"wrote {len(images)} completions to {args.out}")
        return
    if args.out:
        _write_npz(args.out, **out)
        print(f"wrote {', '.join(out)} to {args.out}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ServingError, ValueError, OSError, zipfile.BadZipFile) as e:
        print(f"rest_client: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
