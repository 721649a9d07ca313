"""Helpers for the SavedModel tests (single- and multi-scale exports have the same signatures):
requests written to files, the signatures run in a process without this project or through
saved_model_cli, and the outputs compared with the in-memory model."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

from pixelrnn_tf import records, sampling

from draws import assert_same_draws

SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
# Runs first in every subprocess: neither this project nor Keras can be imported there,
# as in TF Serving, which has no Python at all.
NO_PROJECT = textwrap.dedent("""
    import sys
    for name in ("pixelrnn_tf", "keras", "data_prep"):
        sys.modules[name] = None
    import numpy as np
    import tensorflow as tf
""")
# The requests every test sends (seed, temperature; num_samples of the sample signature).
SEED, TEMPERATURE, NUM_SAMPLES = 5, 0.8, 3


def randomize_weights(model, seed=0):
    """Every weight (biases and initial states too, zero when initialised) ~ N(0, 0.3)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype(np.float32))
    return model


def run_process(args, cwd, timeout=300, env_changes=None):
    with process_in_background(args, cwd, timeout, env_changes) as finish:
        return finish()


@contextlib.contextmanager
def process_in_background(args, cwd, timeout=300, env_changes=None):
    """Starts `args` (in `cwd`, without PYTHONPATH, killed after `timeout` s) and yields a
    function that waits for it and returns its subprocess.CompletedProcess; leaving the block
    earlier kills it. A test computes its expected values meanwhile: the process's TensorFlow
    import and SavedModel loading take the other core. env_changes: {name: value, or None to
    unset} over this process's environment."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    for name, value in (env_changes or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    # `timeout` runs the command in its own process group: killing that group ends both.
    process = subprocess.Popen(["timeout", "-k", "10", str(timeout), *args], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, start_new_session=True)

    def finish():
        stdout, stderr = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    try:
        yield finish
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def random_images(n, shape, levels, seed=1):
    """[n, *shape] uint8; the last byte is never zero (see `serialized_examples`)."""
    images = np.random.default_rng(seed).integers(0, levels, (n, *shape)).astype(np.uint8)
    images[..., -1, -1, -1] = 1
    return images


def serialized_examples(images, shape_features=True):
    """tf.train.Examples in the data_prep format (the height, width and channels features
    are optional for the serve_examples signature). None of them ends with a zero byte, so
    numpy's fixed-width bytes arrays (used for saved_model_cli) keep them intact."""
    out = list(records.encode_examples(np.asarray(images), shape_features=shape_features))
    assert not any(e.endswith(b"\0") for e in out)
    return out


def expected_outputs(model, images, known_pixels):
    """What every signature must return for `images` (and the module's requests), computed
    with the in-memory model."""
    ints = images.astype(np.int32)
    pixel_log_prob = model.pixel_log_prob(ints).numpy()
    log_prob = model.log_prob(ints).numpy()
    np.testing.assert_allclose(pixel_log_prob.sum(axis=(1, 2, 3)), log_prob, rtol=1e-5,
                               atol=1e-4)
    scores = {"log_prob": log_prob, "pixel_log_prob": pixel_log_prob,
              "bits_per_dim": -log_prob / (np.prod(images.shape[1:]) * np.log(2))}
    draws = dict(seed=SEED, temperature=TEMPERATURE)
    return {
        "serving_default": scores,
        "serve_examples": scores,
        "sample": {"images": sampling.sample(model, NUM_SAMPLES, **draws).numpy()},
        "complete": {"images": sampling.complete(model, ints, known_pixels, **draws).numpy()},
    }


def assert_outputs_match(model, got, want, where):
    """Scores to float tolerance; images drawn with the module's SEED and TEMPERATURE equal up
    to a rounding tie (`draws.assert_same_draws`): the SavedModel's graph may round a logit
    differently from the in-memory model's."""
    for key, value in want.items():
        if value.dtype == np.uint8:
            assert_same_draws(model, got[key], value, SEED, TEMPERATURE, f"{where}: {key}")
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-4,
                                       err_msg=f"{where}: {key}")


def write_requests(directory, images, shape_features=True):
    """inputs.npz for `call_every_signature` (the examples, see `serialized_examples`, as one
    blob plus their lengths: object arrays would need pickle)."""
    examples = serialized_examples(images, shape_features)
    np.savez(os.path.join(directory, "inputs.npz"), images=images,
             examples=np.frombuffer(b"".join(examples), np.uint8),
             lengths=np.array([len(e) for e in examples]))


def call_every_signature(export_dir, known_pixels):
    """Script lines (after `NO_PROJECT`, in the directory of `write_requests`) that run every
    signature through tf.saved_model.load and save the results to outputs.npz."""
    return textwrap.dedent(f"""
        loaded = tf.saved_model.load({str(export_dir)!r})
        inputs = np.load("inputs.npz", allow_pickle=False)
        images = tf.constant(inputs["images"])
        blob, ends = inputs["examples"].tobytes(), np.cumsum(inputs["lengths"])
        examples = [blob[a:b] for a, b in zip(np.r_[0, ends[:-1]], ends)]
        s = loaded.signatures
        scalars = dict(seed=tf.constant({SEED}, tf.int64),
                       temperature=tf.constant({TEMPERATURE}))
        results = {{
            "serving_default": s["serving_default"](images=images),
            "serve_examples": s["serve_examples"](examples=tf.constant(examples)),
            "sample": s["sample"](num_samples=tf.constant({NUM_SAMPLES}), **scalars),
            "complete": s["complete"](images=images, known_pixels=tf.constant({known_pixels}),
                                      **scalars),
        }}
        np.savez("outputs.npz", **{{f"{{name}}/{{key}}": value.numpy()
                                   for name, out in results.items()
                                   for key, value in out.items()}})
    """)


def good_requests(known_pixels):
    """Script lines, after `call_every_signature`'s and `write_requests`' files: `images`, the
    feeds `good` of every signature of an unconditional export, and `short`, a serialized
    example whose image is 10 bytes (the in-graph size check must answer)."""
    return textwrap.dedent(f"""
        images = inputs["images"]
        good = dict(images=images, known_pixels=np.int32({known_pixels}), seed=np.int64({SEED}),
                    temperature=np.float32({TEMPERATURE}), num_samples=np.int32({NUM_SAMPLES}),
                    examples=np.array(examples, object))
        short = tf.train.Example(features=tf.train.Features(feature={{"image": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[b"\\x01" * 10]))}})).SerializeToString()
    """)


def tf1_session_requests(export_dir):
    """Script lines that send requests through a TF1 session, as TF Serving's C++ loader and
    Session::Run do (neither checks feeds against the signature: the in-graph checks must).

    The script must define `good` ({input name: value} for every signature's inputs) and
    `cases` ([(signature, input name, bad value)]). Per case the signature runs on the good
    request (its "images" output, else "log_prob", is saved to tf1_<signature>.npy), then
    with the one bad input; prints "rejected <signature> <input> <error>" or "ACCEPTED ..."."""
    return textwrap.dedent(f"""
        from tensorflow.core.protobuf import config_pb2
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], {str(export_dir)!r})
            for signature, bad_key, bad_value in cases:
                sig = meta.signature_def[signature]
                keys = sorted(sig.inputs)
                options = config_pb2.CallableOptions()
                options.feed.extend(sig.inputs[k].name for k in keys)
                fetch = sorted(sig.outputs)
                options.fetch.extend(sig.outputs[k].name for k in fetch)
                run = sess._make_callable_from_options(options)
                out = run(*(good[k] for k in keys))
                np.save(f"tf1_{{signature}}.npy", out[fetch.index(
                    "images" if "images" in fetch else "log_prob")])
                try:
                    run(*(bad_value if k == bad_key else good[k] for k in keys))
                    print("ACCEPTED", signature, bad_key)
                except tf.errors.InvalidArgumentError as e:
                    print("rejected", signature, bad_key, str(e).splitlines()[0])
    """)


# Script lines that fail if the subprocess imported this project or Keras after all.
ASSERT_NO_PROJECT_LOADED = textwrap.dedent("""
    leaked = sorted(m for m in sys.modules
                    if m.startswith(("pixelrnn_tf", "keras")) and sys.modules[m])
    assert not leaked, leaked
    print("done")
""")


def assert_saved_outputs_match(model, directory, want):
    """Compares outputs.npz of `call_every_signature` with `expected_outputs`."""
    outputs = np.load(os.path.join(directory, "outputs.npz"))
    for name, expected in want.items():
        assert_outputs_match(model, {key: outputs[f"{name}/{key}"] for key in expected},
                             expected, name)


def run_saved_model_cli(export_dir, signature, images, known_pixels, directory):
    """Runs one signature with `saved_model_cli run` (the TF1 loader TF Serving uses) on
    request files written to `directory`; returns {output: array}."""
    np.save(os.path.join(directory, "images.npy"), images)
    np.save(os.path.join(directory, "examples.npy"), np.array(serialized_examples(images)))
    for name, value in (("num_samples", np.array(NUM_SAMPLES, np.int32)),
                        ("seed", np.array(SEED, np.int64)),
                        ("temperature", np.array(TEMPERATURE, np.float32)),
                        ("known_pixels", np.array(known_pixels, np.int32))):
        np.save(os.path.join(directory, f"{name}.npy"), value)
    scalars = "seed=seed.npy;temperature=temperature.npy"
    inputs = {
        "serving_default": "images=images.npy",
        "serve_examples": "examples=examples.npy",
        "sample": f"num_samples=num_samples.npy;{scalars}",
        "complete": f"images=images.npy;known_pixels=known_pixels.npy;{scalars}",
    }[signature]
    out = os.path.join(directory, signature)
    result = run_process([SAVED_MODEL_CLI, "run", "--dir", str(export_dir), "--tag_set",
                          "serve", "--signature_def", signature, "--inputs", inputs,
                          "--outdir", out], directory)
    assert result.returncode == 0, f"{signature}: {result.stderr[-3000:]}"
    return {name[:-4]: np.load(os.path.join(out, name)) for name in os.listdir(out)}



def signature_defs(export_dir):
    """What TF Serving reads from saved_model.pb: {signature: (method, {input: (dtype enum,
    dims (-1: unknown), unknown_rank)}, {output: ...})}, the "__" internal ones left out."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    (meta_graph,) = proto.meta_graphs
    assert list(meta_graph.meta_info_def.tags) == ["serve"]

    def tensors(infos):
        return {key: (info.dtype, [d.size for d in info.tensor_shape.dim],
                      info.tensor_shape.unknown_rank) for key, info in infos.items()}

    return {name: (sig.method_name, tensors(sig.inputs), tensors(sig.outputs))
            for name, sig in meta_graph.signature_def.items()
            if not name.startswith("__")}


def run_saved_model_cli_inputs(export_dir, signature, inputs, directory):
    """Runs one signature with `saved_model_cli run` on {input name: numpy array} (each saved
    to <signature>.<name>.npy in `directory`); returns {output: array}."""
    files = []
    for name, value in inputs.items():
        file_name = f"{signature}.{name}.npy"
        np.save(os.path.join(directory, file_name), value)
        files.append(f"{name}={file_name}")
    out = os.path.join(directory, f"{signature}.out")
    result = run_process([SAVED_MODEL_CLI, "run", "--dir", str(export_dir), "--tag_set",
                          "serve", "--signature_def", signature, "--inputs", ";".join(files),
                          "--outdir", out], directory)
    assert result.returncode == 0, f"{signature}: {result.stderr[-3000:]}"
    return {name[:-4]: np.load(os.path.join(out, name)) for name in os.listdir(out)}
