"""gRPC client for a PixelRNN SavedModel served by TF Serving.

Needs `tensorflow-serving-api` installed WITHOUT its dependencies (it would pull the 572 MB
`tensorflow` wheel on top of tensorflow-cpu):

    pip install --no-deps "tensorflow-serving-api==2.21.0"

Usage (the server listening for gRPC on port 8500, the model named "pixelrnn"):

    python examples/serving_client.py --server localhost:8500 --model pixelrnn \\
        score IMAGES.npz
    python examples/serving_client.py --server localhost:8500 --model pixelrnn \\
        sample --num 4 --seed 0 --out samples.npz
    python examples/serving_client.py --server localhost:8500 --model pixelrnn \\
        complete IMAGES.npz --known-pixels 392 --seed 0 --out completions.npz

IMAGES.npz holds one uint8 array [N, H, W, C] (or the array named by --key).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

# Input names and dtypes of each signature (pixelrnn_tf/serving.py, DESIGN.md section 2).
SIGNATURE_INPUTS = {
    "serving_default": {"images": np.uint8},
    "sample": {"num_samples": np.int32, "seed": np.int64, "temperature": np.float32},
    "complete": {"images": np.uint8, "known_pixels": np.int32, "seed": np.int64,
                 "temperature": np.float32},
}


def _to_array(name, value, dtype):
    array = np.asarray(value)
    if dtype is np.uint8:
        if array.dtype.kind not in "iub":
            raise ValueError(f"{name} must hold integer pixel levels, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{name} values must lie in [0, 255]")
    elif dtype in (np.int32, np.int64) and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return array.astype(dtype)


def build_request(model_name, signature, inputs, version=None):
    """A PredictRequest for `signature` with `inputs` {name: value} converted to the
    signature's dtypes; raises ValueError for unknown or missing inputs."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if signature not in SIGNATURE_INPUTS:
        raise ValueError(f"unknown signature {signature!r}; one of {sorted(SIGNATURE_INPUTS)}")
    expected = SIGNATURE_INPUTS[signature]
    if set(inputs) != set(expected):
        raise ValueError(f"{signature} takes inputs {sorted(expected)}, got {sorted(inputs)}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, dtype in expected.items():
        request.inputs[name].CopyFrom(
            tf.make_tensor_proto(_to_array(name, inputs[name], dtype)))
    return request


def parse_response(response):
    """A PredictResponse -> {output name: numpy array}."""
    import tensorflow as tf

    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


class PixelRNNClient:
    """The three signatures of a served PixelRNN over gRPC.

    Args:
      target: "host:port" of TF Serving's gRPC endpoint.
      model_name: the served model's name (--model_name of tensorflow_model_server).
      version: a fixed version, or None for the latest.
      timeout: seconds per call.
      channel: an existing grpc channel (instead of `target`).
    """

    def __init__(self, target, model_name, version=None, timeout=60.0, channel=None):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = channel or grpc.insecure_channel(target)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_name, self.version, self.timeout = model_name, version, timeout

    def predict(self, signature, inputs):
        request = build_request(self.model_name, signature, inputs, self.version)
        return parse_response(self.stub.Predict(request, timeout=self.timeout))

    def score(self, images):
        """uint8 [N, H, W, C] -> {"log_prob" [N], "bits_per_dim" [N], "pixel_log_prob"}."""
        return self.predict("serving_default", {"images": images})

    def sample(self, num_samples, seed, temperature=1.0):
        """-> uint8 [num_samples, H, W, C]."""
        return self.predict("sample", {"num_samples": num_samples, "seed": seed,
                                       "temperature": temperature})["images"]

    def complete(self, images, known_pixels, seed, temperature=1.0):
        """Keeps the first `known_pixels` pixels (raster order); -> uint8 [N, H, W, C]."""
        return self.predict("complete", {"images": images, "known_pixels": known_pixels,
                                         "seed": seed, "temperature": temperature})["images"]


def _load_images(path, key):
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        key = key or (keys[0] if len(keys) == 1 else "images")
        if key not in keys:
            raise ValueError(f"{path} has no array {key!r} (has {keys}); pass --key")
        return archive[key]


def _write_npz(path, **arrays):
    tmp = f"{path}.partial-{os.getpid()}.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def build_parser():
    parser = argparse.ArgumentParser(description="Query a PixelRNN served by TF Serving.")
    parser.add_argument("--server", default="localhost:8500", help="gRPC host:port")
    parser.add_argument("--model", default="pixelrnn", help="served model name")
    parser.add_argument("--version", type=int, help="model version (default: latest)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="log-likelihood of images")
    score.add_argument("images", help=".npz with uint8 images [N, H, W, C]")
    score.add_argument("--key", help="array name inside the .npz")
    sample = sub.add_parser("sample", help="draw images")
    sample.add_argument("--num", type=int, default=4)
    complete = sub.add_parser("complete", help="complete images")
    complete.add_argument("images", help=".npz with uint8 images [N, H, W, C]")
    complete.add_argument("--key", help="array name inside the .npz")
    complete.add_argument("--known-pixels", type=int, required=True)
    for p in (sample, complete):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--temperature", type=float, default=1.0)
        p.add_argument("--out", required=True, help=".npz to write the images to")
    return parser


def main(argv=None, channel=None):
    args = build_parser().parse_args(argv)
    try:
        import grpc

        client = PixelRNNClient(args.server, args.model, args.version, args.timeout, channel)
        if args.command == "score":
            out = client.score(_load_images(args.images, args.key))
            for k, (nats, bits) in enumerate(zip(out["log_prob"], out["bits_per_dim"])):
                print(f"image {k}: log p = {nats:.3f} nats, {bits:.4f} bits/dim")
        elif args.command == "sample":
            images = client.sample(args.num, args.seed, args.temperature)
            _write_npz(args.out, images=images)
            print(f"wrote {len(images)} samples to {args.out}")
        else:
            images = client.complete(_load_images(args.images, args.key), args.known_pixels,
                                     args.seed, args.temperature)
            _write_npz(args.out, images=images)
            print(f"wrote {len(images)} completions to {args.out}")
    except ImportError as e:
        print(f"serving_client: error: {e}; pip install --no-deps tensorflow-serving-api",
              file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"serving_client: error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"serving_client: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
