"""gRPC client for a PixelRNN SavedModel served by TF Serving.

Needs `tensorflow-serving-api` installed WITHOUT its dependencies (it would pull the 572 MB
`tensorflow` wheel on top of tensorflow-cpu):

    pip install --no-deps "tensorflow-serving-api==2.21.0"

It sends ``tensorflow.serving.PredictRequest``s to ``PredictionService/Predict``, the model
picked by name and either a version (``model_spec.version``, ``--version``) or a version label
(``model_spec.version_label``, ``--label``, e.g. "stable" or "canary"), or neither (the
latest). The signatures (DESIGN.md section 2, pixelrnn_tf/serving.py) are those of
examples/rest_client.py, the REST client: ``serving_default`` uint8 ``images``
[N, H, W, C] -> float32 ``log_prob`` [N] (nats), ``bits_per_dim`` [N], ``pixel_log_prob``
[N, H, W, C]; ``sample`` int32 ``num_samples``, int64 ``seed``, float32 ``temperature`` ->
uint8 ``images``; ``complete`` ``images``, int32 ``known_pixels``, ``seed``, ``temperature``
-> uint8 ``images``. A class-conditional model adds int32 ``labels`` [N] to these three (one
label per image or sample) and has ``classify``: ``images`` -> float32 ``probabilities``
[N, K], int32 ``label`` [N], float32 ``log_prob`` [N] (the marginal log p(x)).

Usage (the server listening for gRPC on port 8500, the model named "pixelrnn"):

    python examples/serving_client.py --server localhost:8500 --model pixelrnn \\
        score IMAGES.npz [--labels 0,1,2] [--out scores.npz]
    python examples/serving_client.py --server localhost:8500 --model pixelrnn --label canary \\
        sample --num 4 --seed 0 --out samples.npz
    python examples/serving_client.py --server localhost:8500 --model pixelrnn \\
        complete IMAGES.npz --known-pixels 392 --seed 0 --out completions.npz
    python examples/serving_client.py --server localhost:8500 --model pixelrnn --version 2 \\
        classify IMAGES.npz --out classes.npz

IMAGES.npz holds one uint8 array [N, H, W, C] (or the array named by --key). Any error (an
RPC error from the server, bad local input) is one line on stderr and exit status 1; the
.npz files are written under a temporary name, then renamed.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile

import numpy as np

# Input names and dtypes of each signature of an unconditional model (pixelrnn_tf/serving.py,
# DESIGN.md section 2); a class-conditional model's signatures in LABELLED_SIGNATURES take
# LABELS_INPUT as well.
SIGNATURE_INPUTS = {
    "serving_default": {"images": np.uint8},
    "sample": {"num_samples": np.int32, "seed": np.int64, "temperature": np.float32},
    "complete": {"images": np.uint8, "known_pixels": np.int32, "seed": np.int64,
                 "temperature": np.float32},
    "classify": {"images": np.uint8},
}
LABELS_INPUT = "labels"  # int32 [N]: one label per image (or sample)
LABELLED_SIGNATURES = ("serving_default", "sample", "complete")
BATCHED_INPUTS = ("images", LABELS_INPUT)  # the inputs with the batch dimension N first


def _to_array(name, value, dtype):
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numbers, got {array.dtype}")
    if dtype is np.uint8:
        if array.dtype.kind not in "iub":
            raise ValueError(f"{name} must hold integer pixel levels, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{name} values must lie in [0, 255]")
    elif dtype in (np.int32, np.int64):
        if array.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer, got {value!r}")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(f"{name} values must lie in [{info.min}, {info.max}]")
    elif not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if name not in BATCHED_INPUTS and array.ndim:
        raise ValueError(f"{name} must be a single number, got shape {array.shape}")
    if name == LABELS_INPUT and array.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {array.shape}")
    return array.astype(dtype)


def _check_version(version, label):
    if version is not None and label is not None:
        raise ValueError("give a version or a label, not both")
    if version is not None and (isinstance(version, bool) or
                                not isinstance(version, (int, np.integer)) or version < 0):
        raise ValueError(f"version must be an integer >= 0, got {version!r}")
    if label is not None and not label:
        raise ValueError("the version label is empty")


def build_request(model_name, signature, inputs, version=None, label=None):
    """A PredictRequest for `signature` with `inputs` {name: value} converted to the
    signature's dtypes.

    Args:
      model_name: the served model's name.
      signature: "serving_default", "sample", "complete" or "classify".
      inputs: exactly the signature's inputs, plus "labels" (int [N]) for a class-conditional
        model's serving_default, sample and complete.
      version, label: a version number or a version label (not both), or neither (latest).

    Raises ValueError for an unknown signature, missing or unknown inputs, values of the wrong
    kind or range, labels not one per image, and a bad version or label.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    _check_version(version, label)
    if signature not in SIGNATURE_INPUTS:
        raise ValueError(f"unknown signature {signature!r}; one of {sorted(SIGNATURE_INPUTS)}")
    expected = dict(SIGNATURE_INPUTS[signature])
    if signature in LABELLED_SIGNATURES and LABELS_INPUT in inputs:
        expected[LABELS_INPUT] = np.int32
    if set(inputs) != set(expected):
        raise ValueError(f"{signature} takes inputs {sorted(expected)}, got {sorted(inputs)}")
    arrays = {name: _to_array(name, inputs[name], dtype) for name, dtype in expected.items()}
    sizes = {name: len(arrays[name]) for name in BATCHED_INPUTS
             if name in arrays and arrays[name].ndim}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{signature}: give one label per image, got batch sizes {sizes}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    elif label is not None:
        request.model_spec.version_label = label
    for name, array in arrays.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def parse_response(response):
    """A PredictResponse -> {output name: numpy array}."""
    import tensorflow as tf

    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


class PixelRNNClient:
    """The signatures of a served PixelRNN over gRPC.

    Args:
      target: "host:port" of TF Serving's gRPC endpoint.
      model_name: the served model's name (--model_name of tensorflow_model_server).
      version: a fixed version, or None for the latest (or `label`'s).
      timeout: seconds per call.
      channel: an existing grpc channel (instead of `target`).
      label: a version label ("stable", "canary"); not with `version`.
    """

    def __init__(self, target, model_name, version=None, timeout=60.0, channel=None,
                 label=None):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        _check_version(version, label)
        self.channel = channel or grpc.insecure_channel(target)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_name, self.version, self.label = model_name, version, label
        self.timeout = timeout

    def predict(self, signature, inputs):
        request = build_request(self.model_name, signature, inputs, self.version, self.label)
        return parse_response(self.stub.Predict(request, timeout=self.timeout))

    @staticmethod
    def _labelled(inputs, labels):
        return inputs if labels is None else {**inputs, LABELS_INPUT: labels}

    def score(self, images, labels=None):
        """uint8 [N, H, W, C] (labels: a conditional model's, one per image) ->
        {"log_prob" [N], "bits_per_dim" [N], "pixel_log_prob" [N, H, W, C]}."""
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
        """A conditional model's class posterior: uint8 [N, H, W, C] -> {"probabilities"
        [N, K], "label" [N], "log_prob" [N] (marginal log p(x), nats)}."""
        return self.predict("classify", {"images": images})


def parse_labels(text):
    """"0,1,2" -> int32 [3]."""
    try:
        labels = [int(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"--labels takes comma-separated integers, got {text!r}") from None
    if min(labels) < 0:
        raise ValueError(f"--labels must be >= 0, got {text!r}")
    if max(labels) > np.iinfo(np.int32).max:
        raise ValueError(f"--labels must fit in int32, got {text!r}")
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
    parser = argparse.ArgumentParser(description="Query a PixelRNN served by TF Serving.")
    parser.add_argument("--server", default="localhost:8500", help="gRPC host:port")
    parser.add_argument("--model", default="pixelrnn", help="served model name")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: latest)")
    which.add_argument("--label", help="model version label, e.g. stable or canary")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
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


def run(args, channel=None):
    client = PixelRNNClient(args.server, args.model, args.version, args.timeout, channel,
                            label=args.label)
    labels = parse_labels(args.labels) if getattr(args, "labels", None) else None
    if args.command == "score":
        out = client.score(_load_images(args.images, args.key), labels)
        for k, (nats, bits) in enumerate(zip(out["log_prob"], out["bits_per_dim"])):
            print(f"image {k}: log p = {nats:.3f} nats, {bits:.4f} bits/dim")
        what = ", ".join(out)
    elif args.command == "classify":
        out = client.classify(_load_images(args.images, args.key))
        for k, (label, probabilities) in enumerate(zip(out["label"], out["probabilities"])):
            print(f"image {k}: label {label} (p = {probabilities[label]:.4f}), "
                  f"log p(x) = {out['log_prob'][k]:.3f} nats")
        what = ", ".join(out)
    elif args.command == "sample":
        num = args.num if args.num is not None else (len(labels) if labels is not None else 4)
        if labels is not None and num != len(labels):
            raise ValueError(f"--num {num} but {len(labels)} --labels: give one per sample")
        out = {"images": client.sample(num, args.seed, args.temperature, labels)}
        what = f"{len(out['images'])} samples"
    else:
        out = {"images": client.complete(_load_images(args.images, args.key),
                                         args.known_pixels, args.seed, args.temperature,
                                         labels)}
        what = f"{len(out['images'])} completions"
    if args.out:
        _write_npz(args.out, **out)
        print(f"wrote {what} to {args.out}")


def _fail(message):
    print(f"serving_client: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 1


def main(argv=None, channel=None):
    args = build_parser().parse_args(argv)
    try:
        import grpc
    except ImportError as e:
        return _fail(f"{e}; pip install --no-deps tensorflow-serving-api")
    try:
        run(args, channel)
    except ImportError as e:
        return _fail(f"{e}; pip install --no-deps tensorflow-serving-api")
    except grpc.RpcError as e:
        if hasattr(e, "code") and hasattr(e, "details"):
            return _fail(f"{e.code().name}: {e.details()}")
        return _fail(e)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        return _fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
