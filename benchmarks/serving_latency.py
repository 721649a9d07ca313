"""Serving latency, throughput and a soak of an exported SavedModel, loaded as TF Serving does.

    python benchmarks/serving_latency.py EXPORT_DIR [--repeats 30] [--soak 60] [--threads 4]

EXPORT_DIR is one version written by export.py (e.g. exports/pixelrnn/1) with its warm-up
records. Every measurement runs in a fresh Python process that cannot import this project or
Keras: it loads the SavedModel with the TF1 session loader
(`tf.compat.v1.saved_model.loader.load`, tag "serve") into one `tf.compat.v1.Session` and
runs signatures through Session callables, which, like TF Serving's C++ Session::Run, do not
check a feed against the signature (the export's in-graph checks must).

1. First response. A cold process loads the model and sends the first request of each kind
   (`serving_default` of one image, `sample` of one, `complete` of one); a warm process loads
   it, replays the warm-up records (assets.extra/tf_serving_warmup_requests, as TF Serving
   does before it reports a model available), then sends the same requests. Reported: load
   time, warm-up replay time, and each first request's time.
2. Steady state, in the warm process: p50/p99 latency and images/s (at the p50) of
   `serving_default` at each of --batch-sizes, `sample` at each of --sample-sizes and
   `complete` of one image with half its pixels known; --repeats timed requests each, after
   one untimed. Sizes over the export's max_batch are left out.
3. Soak (--soak SECONDS, 0 skips it), in the warm process: --threads client threads share
   the session for SECONDS, each cycling through good `serving_default` (batch
   min(8, max_batch)) and `sample` (one image) requests and bad ones: an image without its
   batch dimension (wrong rank), one row too many (wrong size), a value >= levels (out of
   range; none exists for 256 levels), max_batch + 1 images, num_samples -1. Reported per
   kind: requests sent, served, errors by type with the first message, failures (a good
   request that failed or returned the wrong shape, a bad one that was served or not
   rejected with InvalidArgumentError), and VmRSS (/proc/self/status) at its start and end.

Prints markdown tables. Exits 1 with one line on stderr if the export cannot be benchmarked,
the serving process died, or the soak had a failure (after printing the tables).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

PROG = "serving_latency.py"
GOOD, BAD = "served", "InvalidArgumentError"
SOAK_SCORE_BATCH = 8
# The names a serving process must not import (TF Serving has no Python at all).
NOT_IN_SERVER = ("pixelrnn_tf", "keras", "data_prep")


class BenchmarkError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# The serving process: TensorFlow and numpy only.

def vm_rss_mib(field="VmRSS"):
    """Resident memory of this process in MiB, from /proc/self/status (`field`: VmRSS, or
    VmHWM for its peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise BenchmarkError(f"/proc/self/status has no {field}")


class SessionServer:
    """One SavedModel in one `tf.compat.v1.Session`, as TF Serving holds it; thread-safe.

    `run(signature, inputs)` feeds {input name: numpy value} and fetches every output of the
    signature: {output name: numpy value}. A signature's callable (its executor) is made on
    its first request, as Session::Run makes one for a new feed/fetch set.
    """

    def __init__(self, export_dir):
        import tensorflow as tf

        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"],
                                                              export_dir)
        self.signatures = dict(meta_graph.signature_def)
        self._callables = {}
        self._lock = threading.Lock()

    def _callable(self, name):
        from tensorflow.core.protobuf import config_pb2

        with self._lock:
            if name not in self._callables:
                signature = self.signatures[name]
                inputs, outputs = sorted(signature.inputs), sorted(signature.outputs)
                options = config_pb2.CallableOptions()
                options.feed.extend(signature.inputs[k].name for k in inputs)
                options.fetch.extend(signature.outputs[k].name for k in outputs)
                self._callables[name] = (
                    self.session._make_callable_from_options(options), inputs, outputs)
            return self._callables[name]

    def run(self, signature, inputs):
        run, input_names, output_names = self._callable(signature)
        return dict(zip(output_names, run(*(inputs[k] for k in input_names))))


def read_warmup(path):
    """TF Serving's warm-up file: [(signature name, {input name: numpy value})], in order."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            raise BenchmarkError(f"{path}: a {log.WhichOneof('log_type')} record; only "
                                 "predict_log is used by this export")
        request = log.predict_log.request
        requests.append((request.model_spec.signature_name or "serving_default",
                         {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
    return requests


def replay_warmup(server, path):
    """Runs every warm-up record through its signature, in order, as TF Serving does after
    loading: [{"signature", "inputs", "seconds", "outputs": {name: [dtype, shape]}}]."""
    def described(tensors):
        return {k: ["string" if v.dtype == object else v.dtype.name, list(v.shape)]
                for k, v in sorted(tensors.items())}

    replayed = []
    for signature, inputs in read_warmup(path):
        start = time.perf_counter()
        outputs = server.run(signature, inputs)
        replayed.append({"signature": signature, "seconds": time.perf_counter() - start,
                         "inputs": described(inputs), "outputs": described(outputs)})
    return replayed


class Requests:
    """Requests for an export of image shape [H, W, C] with `levels` values (uint8 images
    drawn from `rng`); labels 0, 1, ... mod K where a signature takes them (a conditional
    model). Each method returns (signature, inputs)."""

    def __init__(self, server, image_shape, levels, num_classes, rng):
        self.shape, self.levels, self.num_classes = tuple(image_shape), levels, num_classes
        self.server, self.rng = server, rng

    def _with_labels(self, signature, inputs, count):
        if "labels" in self.server.signatures[signature].inputs:
            inputs["labels"] = (self.rng.permutation(max(count, 0)) % self.num_classes
                                ).astype("int32")
        return signature, inputs

    def images(self, n, shape=None):
        return self.rng.integers(0, self.levels, (n, *(shape or self.shape))).astype("uint8")

    def score(self, n, images=None):
        images = self.images(n) if images is None else images
        return self._with_labels("serving_default", {"images": images}, len(images))

    def sample(self, n, seed=0):
        import numpy as np

        return self._with_labels("sample", {"num_samples": np.int32(n), "seed": np.int64(seed),
                                            "temperature": np.float32(1.0)}, n)

    def complete(self, n, known_pixels, seed=0):
        import numpy as np

        return self._with_labels("complete", {
            "images": self.images(n), "known_pixels": np.int32(known_pixels),
            "seed": np.int64(seed), "temperature": np.float32(1.0)}, n)


def first_requests(server, requests):
    """Seconds of the first request of each kind: {kind: seconds}."""
    height, width, _ = requests.shape
    timed = {}
    for kind, request in (("serving_default", requests.score(1)),
                          ("sample", requests.sample(1)),
                          ("complete", requests.complete(1, height * width // 2))):
        start = time.perf_counter()
        server.run(*request)
        timed[kind] = time.perf_counter() - start
    return timed


def steady_state(server, requests, batch_sizes, sample_sizes, repeats):
    """[{"signature", "images", "seconds": [one per timed request]}]."""
    height, width, _ = requests.shape
    cases = ([("serving_default", n, lambda n=n: requests.score(n)) for n in batch_sizes]
             + [("sample", n, lambda n=n: requests.sample(n)) for n in sample_sizes]
             + [("complete", 1, lambda: requests.complete(1, height * width // 2))])
    rows = []
    for signature, n, make in cases:
        server.run(*make())
        seconds = []
        for _ in range(repeats):
            request = make()
            start = time.perf_counter()
            server.run(*request)
            seconds.append(time.perf_counter() - start)
        rows.append({"signature": signature, "images": n, "seconds": seconds})
    return rows


def soak_kinds(requests, max_batch):
    """[(kind, expected outcome, make request, expected output shapes or None)]: the good
    and bad requests of the soak (module docstring)."""
    shape, levels = requests.shape, requests.levels
    batch = min(SOAK_SCORE_BATCH, max_batch)
    kinds = [
        (f"serving_default ({batch} images)", GOOD, lambda: requests.score(batch),
         {"log_prob": (batch,), "pixel_log_prob": (batch, *shape)}),
        ("sample (1 image)", GOOD, lambda: requests.sample(1), {"images": (1, *shape)}),
        ("wrong rank: images [H, W, C]", BAD,
         lambda: requests.score(1, requests.images(1)[0]), None),
        ("wrong size: images [1, H + 1, W, C]", BAD,
         lambda: requests.score(1, requests.images(1, (shape[0] + 1, *shape[1:]))), None),
        (f"batch over max_batch: {max_batch + 1} images", BAD,
         lambda: requests.score(max_batch + 1), None),
        ("negative num_samples: -1", BAD, lambda: requests.sample(-1), None),
    ]
    if levels < 256:
        kinds.insert(4, (f"out-of-range values: a pixel = {levels}", BAD,
                         lambda: requests.score(1, out_of_range(requests)), None))
    return kinds


def out_of_range(requests):
    images = requests.images(1)
    images[0, -1, -1, -1] = requests.levels
    return images


def soak(server, spec, seconds, threads):
    """`threads` clients share `server` for `seconds`, each cycling through `soak_kinds`
    (every good kind, then one bad kind, and so on: a third of the requests are bad; each
    thread starts at another point of the cycle): {"kinds": [{...per kind}], "threads",
    "seconds", "rss_start_mib", "rss_end_mib", "rss_peak_mib"}."""
    import numpy as np

    kinds = soak_kinds(Requests(server, spec["image_shape"], spec["levels"],
                                spec["num_classes"], np.random.default_rng(0)),
                       spec["max_batch"])
    good = [i for i, kind in enumerate(kinds) if kind[1] == GOOD]
    schedule = [i for b in range(len(kinds)) if kinds[b][1] == BAD for i in (*good, b)]
    stats = [{"sent": 0, "served": 0, "errors": Counter(), "failures": 0, "message": "",
              "failure": ""} for _ in kinds]
    lock = threading.Lock()

    def client(index):
        rng = np.random.default_rng(index + 1)
        requests = Requests(server, spec["image_shape"], spec["levels"], spec["num_classes"],
                            rng)
        makers = soak_kinds(requests, spec["max_batch"])
        position = index * 2
        while time.perf_counter() < deadline:
            k = schedule[position % len(schedule)]
            position += 1
            _, expected, make, shapes = makers[k]
            error = failure = None
            try:
                outputs = server.run(*make())
                if expected == BAD:
                    failure = "served"
                elif any(outputs[name].shape != want for name, want in shapes.items()):
                    failure = f"wrong output shapes {({n: o.shape for n, o in outputs.items()})}"
            except Exception as e:  # every error is counted, by type
                error = e
                if expected == GOOD or type(e).__name__ != BAD:
                    failure = f"{type(e).__name__}: {first_line(e)}"
            with lock:
                row = stats[k]
                row["sent"] += 1
                row["served"] += error is None
                if error is not None:
                    row["errors"][type(error).__name__] += 1
                    row["message"] = row["message"] or first_line(error)
                if failure:
                    row["failures"] += 1
                    row["failure"] = row["failure"] or failure

    rss_start = vm_rss_mib()
    start = time.perf_counter()
    deadline = start + seconds
    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"kinds": [{"kind": kind[0], "expected": kind[1], **row,
                       "errors": dict(row["errors"])} for kind, row in zip(kinds, stats)],
            "seconds": time.perf_counter() - start, "threads": threads,
            "rss_start_mib": rss_start, "rss_end_mib": vm_rss_mib(),
            "rss_peak_mib": vm_rss_mib("VmHWM")}


def first_line(error):
    text = getattr(error, "message", None) or str(error)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__


def serve(spec):
    """The serving process: load, (warm-up,) first requests, (steady state, soak)."""
    import numpy as np

    result = {}
    start = time.perf_counter()
    server = SessionServer(spec["export_dir"])
    result["load_seconds"] = time.perf_counter() - start
    result["rss_after_load_mib"] = vm_rss_mib()
    if spec["warm"]:
        start = time.perf_counter()
        result["warmup"] = replay_warmup(server, spec["warmup_path"])
        result["warmup_seconds"] = time.perf_counter() - start
    requests = Requests(server, spec["image_shape"], spec["levels"], spec["num_classes"],
                        np.random.default_rng(0))
    result["first"] = first_requests(server, requests)
    if spec["warm"]:
        result["steady"] = steady_state(server, requests, spec["batch_sizes"],
                                        spec["sample_sizes"], spec["repeats"])
        if spec["soak"] > 0:
            result["soak"] = soak(server, spec, spec["soak"], spec["threads"])
    leaked = sorted(m for m in sys.modules if m.startswith(NOT_IN_SERVER) and sys.modules[m])
    if leaked:
        raise BenchmarkError(f"the serving process imported {leaked}")
    return result


def serving_process_main(spec_path, result_path):
    """Entry of the serving process (`--serve SPEC RESULT`): runs `serve` on the JSON spec,
    writes the JSON result."""
    for name in NOT_IN_SERVER:
        sys.modules[name] = None
    with open(spec_path) as f:
        spec = json.load(f)
    result = serve(spec)
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(result_path + ".tmp", result_path)
    return 0


# --------------------------------------------------------------------------------------------
# The benchmark: starts the serving processes, prints the tables.

def run_serving_process(spec, directory, timeout):
    """Runs `serve(spec)` in a fresh process (no PYTHONPATH, cwd `directory`); its result."""
    name = "warm" if spec["warm"] else "cold"
    spec_path = os.path.join(directory, f"{name}.spec.json")
    result_path = os.path.join(directory, f"{name}.result.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    try:
        process = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--serve", spec_path, result_path],
            cwd=directory, env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"the {name} serving process took over {timeout:.0f} s") from None
    if process.returncode != 0 or not os.path.exists(result_path):
        how = (f"died of signal {-process.returncode}" if process.returncode < 0
               else f"exited {process.returncode}")
        last = (process.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchmarkError(f"the {name} serving process {how}: {last}")
    with open(result_path) as f:
        return json.load(f)


def milliseconds(seconds):
    return f"{seconds * 1000:.1f}"


def cell(text, width=110):
    text = str(text).replace("|", "/")
    return text if len(text) <= width else text[:width - 3] + "..."


def print_first_response(cold, warm):
    print("### First response (a fresh process each)\n")
    print("| process | load s | warm-up replay s (records) | first serving_default, 1 image "
          "ms | first sample, 1 image ms | first complete, 1 image ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, result in (("cold", cold), ("after warm-up", warm)):
        replay = (f"{result['warmup_seconds']:.2f} ({len(result['warmup'])})"
                  if "warmup" in result else "-")
        first = result["first"]
        print(f"| {name} | {result['load_seconds']:.2f} | {replay} | "
              f"{milliseconds(first['serving_default'])} | {milliseconds(first['sample'])} | "
              f"{milliseconds(first['complete'])} |")
    print("\nThe warm-up records, replayed in order:\n")
    print("| signature | inputs | ms | outputs |")
    print("| --- | --- | --- | --- |")
    for record in warm["warmup"]:
        def tensors(named):
            return ", ".join(f"{k} {dtype}{shape}" for k, (dtype, shape) in named.items())
        print(f"| {record['signature']} | {tensors(record['inputs'])} | "
              f"{milliseconds(record['seconds'])} | {tensors(record['outputs'])} |")


def print_steady_state(rows, repeats):
    import numpy as np

    print(f"\n### Steady state (after warm-up; {repeats} timed requests per row)\n")
    print("| signature | images per request | p50 ms | p99 ms | images/s at p50 |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        p50, p99 = np.percentile(row["seconds"], [50, 99])
        label = (f"{row['signature']} (half the pixels known)" if row["signature"] == "complete"
                 else row["signature"])
        print(f"| {label} | {row['images']} | {milliseconds(p50)} | {milliseconds(p99)} | "
              f"{row['images'] / p50:.1f} |")


def print_soak(result):
    print(f"\n### Soak: {result['threads']} client threads, one session, "
          f"{result['seconds']:.0f} s\n")
    print("| request | expected | sent | served | errors returned | failures | first error "
          "message |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in result["kinds"]:
        errors = ", ".join(f"{name} x{count}" for name, count in sorted(row["errors"].items()))
        failure = f" ({cell(row['failure'], 60)})" if row["failures"] else ""
        print(f"| {cell(row['kind'])} | {row['expected']} | {row['sent']} | {row['served']} | "
              f"{errors or '-'} | {row['failures']}{failure} | "
              f"{cell(row['message']) if row['message'] else '-'} |")
    print(f"\nResident memory (VmRSS) at the start of the soak {result['rss_start_mib']:.0f} "
          f"MiB, at the end {result['rss_end_mib']:.0f} MiB (peak VmHWM "
          f"{result['rss_peak_mib']:.0f} MiB); the serving process exited normally.")


def sizes(text):
    """argparse `type=` for comma-separated integers >= 1."""
    import argparse

    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def non_negative_int(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_parser():
    from pixelrnn_tf.cli import ArgumentParser, positive_int

    parser = ArgumentParser(prog=PROG, description=__doc__.strip().splitlines()[0])
    parser.add_argument("export_dir", help="one exported version, e.g. exports/pixelrnn/1")
    parser.add_argument("--repeats", type=positive_int, default=30,
                        help="timed requests per steady-state row (default: 30)")
    parser.add_argument("--batch-sizes", type=sizes, default=[1, 16, 64],
                        help="serving_default batch sizes (default: 1,16,64)")
    parser.add_argument("--sample-sizes", type=sizes, default=[1, 16],
                        help="sample num_samples (default: 1,16)")
    parser.add_argument("--soak", type=non_negative_int, default=60, metavar="SECONDS",
                        help="soak duration; 0 skips it (default: 60)")
    parser.add_argument("--threads", type=positive_int, default=4,
                        help="soak client threads (default: 4)")
    parser.add_argument("--timeout", type=positive_int, default=1800, metavar="SECONDS",
                        help="longest a serving process may run (default: 1800)")
    return parser


def benchmark(args):
    """Runs the cold and the warm serving process; prints the tables; returns the exit
    status (1 if the soak had a failure)."""
    export_dir = os.path.abspath(args.export_dir)
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise BenchmarkError(f"{args.export_dir}: no saved_model.pb (give one version "
                             "directory of export.py, e.g. exports/pixelrnn/1)")
    from pixelrnn_tf import serving

    metadata = serving.read_metadata(export_dir)
    if metadata is None:
        raise BenchmarkError(f"{args.export_dir}: no {serving.METADATA_PATH} (not written by "
                             "export.py)")
    warmup_path = os.path.join(export_dir, serving.WARMUP_PATH)
    if not os.path.isfile(warmup_path):
        raise BenchmarkError(f"{args.export_dir}: no warm-up records {serving.WARMUP_PATH} "
                             "(exported with --no-warmup?)")
    max_batch = metadata["max_batch"]
    spec = {"export_dir": export_dir, "warmup_path": warmup_path,
            "image_shape": metadata["image_shape"], "levels": metadata["levels"],
            "num_classes": metadata.get("num_classes", 0), "max_batch": max_batch,
            "batch_sizes": [n for n in args.batch_sizes if n <= max_batch],
            "sample_sizes": [n for n in args.sample_sizes if n <= max_batch],
            "repeats": args.repeats, "soak": args.soak, "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="serving_latency-") as directory:
        cold = run_serving_process({**spec, "warm": False}, directory, args.timeout)
        warm = run_serving_process({**spec, "warm": True}, directory, args.timeout)
    shape = "x".join(map(str, metadata["image_shape"]))
    print(f"## Serving {args.export_dir}: {shape}, {metadata['levels']} levels, "
          f"{metadata.get('architecture', '?')}, sampler {metadata['sampler']}, max_batch "
          f"{max_batch}; TF1 session loader in a fresh process\n")
    print_first_response(cold, warm)
    print_steady_state(warm["steady"], args.repeats)
    if "soak" not in warm:
        return 0
    print_soak(warm["soak"])
    failed = [row["kind"] for row in warm["soak"]["kinds"] if row["failures"]]
    if failed:
        print(f"{PROG}: error: soak failures in: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    from pixelrnn_tf.cli import Failure, run_command, unexpected_error_line

    return run_command(PROG, lambda: benchmark(args), [
        Failure((BenchmarkError, ValueError, OSError)),
        Failure(Exception, unexpected_error_line)])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serving_process_main(*sys.argv[2:4]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
