"""The SavedModel: its signatures in processes without this project (tf.saved_model.load,
saved_model_cli, the TF1 C++ session TF Serving uses), causality and normalisation through
the export, input validation, atomic versioned export (export.py) and the sample CLI."""

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import PixelRNN, sampling, serving
from pixelrnn_tf.cli import export as export_cli
from pixelrnn_tf.cli import sample as sample_cli

from cli_fixtures import run_main
from draws import assert_same_draws
from export_fixtures import (
    ASSERT_NO_PROJECT_LOADED,
    NO_PROJECT,
    assert_outputs_match,
    assert_saved_outputs_match,
    call_every_signature,
    expected_outputs,
    good_requests,
    process_in_background,
    random_images,
    randomize_weights,
    run_process,
    run_saved_model_cli,
    signature_defs,
    tf1_session_requests,
    write_requests,
)

SHAPE = (4, 5, 3)
LEVELS = 7
MAX_BATCH = 8
KNOWN = 6  # pixels kept by the `complete` requests


def make_model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = PixelRNN("diagonal_bilstm", image_shape=SHAPE, levels=LEVELS, num_layers=1,
                     hidden_dim=6, output_dim=12, first_kernel=3)
    model.build()
    return randomize_weights(model, seed)


def make_quick_model():
    """A PixelCNN of the module's image shape, for the tests of files and errors: the
    architecture does not show in them, and PixelCNN exports quickest."""
    model = PixelRNN("pixelcnn", image_shape=SHAPE, levels=LEVELS, num_layers=1, hidden_dim=3,
                     output_dim=12, first_kernel=3)
    model.build()
    return randomize_weights(model)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, export dir) of a small RGB model."""
    model = make_model()
    path = tmp_path_factory.mktemp("export") / "1"
    serving.write_saved_model(model, path, max_batch=MAX_BATCH)
    return model, str(path)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[1])


def images_for(n, seed=1):
    return random_images(n, SHAPE, LEVELS, seed)


def test_signatures_without_the_project_and_in_a_tf1_session(exported, tmp_path):
    """Every signature through tf.saved_model.load in a process without this project, then
    good and bad requests to every signature through a TF1 session callable, which (like TF
    Serving's C++ Session::Run) does not check feeds against the signature: the in-graph
    checks must answer InvalidArgument instead of aborting the process."""
    model, path = exported
    images = images_for(2)
    write_requests(tmp_path, images)
    script = NO_PROJECT + call_every_signature(path, KNOWN) + good_requests(KNOWN)
    script += textwrap.dedent("""
        cases = [
            ("serving_default", "images", images[0]),         # no batch dimension
            ("serving_default", "images", images[:, :3]),     # wrong height
            ("serving_default", "images", images[..., None]),  # rank 5
            ("complete", "images", images[0]),
            ("complete", "seed", np.array([1], np.int64)),
            ("serve_examples", "examples", np.array([short], object)),
            ("sample", "num_samples", np.array([2, 2], np.int32)),
            ("sample", "temperature", np.array([[1.0]], np.float32)),
        ]
    """) + tf1_session_requests(path) + ASSERT_NO_PROJECT_LOADED
    with process_in_background([sys.executable, "-c", script], tmp_path) as finish:
        want = expected_outputs(model, images, KNOWN)
        result = finish()
    assert result.returncode == 0, f"process died ({result.returncode}): {result.stderr[-3000:]}"
    assert "done" in result.stdout
    assert "ACCEPTED" not in result.stdout, result.stdout
    assert result.stdout.count("rejected") == 8, result.stdout
    assert_saved_outputs_match(model, tmp_path, want)
    for name, key in (("serving_default", "log_prob"), ("serve_examples", "log_prob"),
                      ("sample", "images"), ("complete", "images")):
        assert_outputs_match(model, {key: np.load(tmp_path / f"tf1_{name}.npy")},
                             {key: want[name][key]}, f"TF1 session {name}")


@pytest.mark.parametrize("signature", [
    "serve_examples",
    pytest.param("serving_default", marks=pytest.mark.slow),
    pytest.param("sample", marks=pytest.mark.slow),
    pytest.param("complete", marks=pytest.mark.slow),
])
def test_saved_model_cli_runs_every_signature(exported, tmp_path, signature):
    """saved_model_cli runs the SavedModel through the TF1 loader TF Serving uses
    (serve_examples in the default run: the TF1-session test above runs the same loader on
    every signature; `make test-all` runs all four here)."""
    model, path = exported
    images = images_for(2)
    got = run_saved_model_cli(path, signature, images, KNOWN, tmp_path)
    assert_outputs_match(model, got, expected_outputs(model, images, KNOWN)[signature],
                         f"saved_model_cli {signature}")


@pytest.mark.slow
def test_unchecked_export_fails_where_the_checked_one_answers_invalid_argument(
        exported, tmp_path):
    """Why the checks exist: the same model exported without them cannot score an image
    without its batch dimension. What it does depends on the CPU's convolution kernels: on
    AVX-512 machines oneDNN's 'Check failed' aborts the process (SIGABRT); on AVX2-only ones
    it raises an error. Either way the request fails badly, while the checked export answers
    INVALID_ARGUMENT naming the input and the process survives."""
    import keras

    model, checked = exported
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda images: {"logits": model.head(
        model.features(model.scale_inputs(tf.cast(images, tf.int32))))},
        input_signature=[tf.TensorSpec((None, *SHAPE), tf.uint8, name="images")])
    archive.write_out(str(tmp_path / "unchecked"), verbose=False)
    np.save(tmp_path / "image.npy", images_for(1)[0])

    def score_one_image(export_dir, output):
        script = NO_PROJECT + textwrap.dedent(f"""
            from tensorflow.core.protobuf import config_pb2
            tf.compat.v1.disable_eager_execution()
            with tf.compat.v1.Session(graph=tf.Graph()) as sess:
                sig = tf.compat.v1.saved_model.loader.load(sess, ["serve"], {export_dir!r}) \\
                    .signature_def["serving_default"]
                options = config_pb2.CallableOptions()
                options.feed.append(sig.inputs["images"].name)
                options.fetch.append(sig.outputs[{output!r}].name)
                try:
                    sess._make_callable_from_options(options)(np.load("image.npy"))
                    print("ACCEPTED")
                except tf.errors.OpError as e:
                    print("survived", type(e).__name__, str(e).splitlines()[0])
        """)
        return run_process([sys.executable, "-c", script], tmp_path)

    unchecked = score_one_image(str(tmp_path / "unchecked"), "logits")
    assert unchecked.returncode != 124, "timed out"
    aborted = unchecked.returncode < 0 or unchecked.returncode > 128  # killed by a signal
    raised = unchecked.returncode == 0 and unchecked.stdout.startswith("survived")
    assert aborted or raised, (unchecked.returncode, unchecked.stdout, unchecked.stderr[-2000:])
    result = score_one_image(checked, "log_prob")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("survived InvalidArgumentError"), result.stdout
    assert "images" in result.stdout, result.stdout


def test_causality_through_the_export(loaded):
    """Base and perturbed images are scored in batches of 1, so the earlier terms are
    bit-identical (see test_causality_by_perturbation); a faint planted leak fails this."""
    score = loaded.signatures["serving_default"]
    rng = np.random.default_rng(3)
    images = images_for(1, seed=3)
    base = score(images=tf.constant(images))["pixel_log_prob"].numpy().reshape(-1)
    num = images.size
    for k in [0, 1, 2, 3, num // 2, num - 2, num - 1]:
        changed = images.reshape(-1).copy()
        changed[k] = (changed[k] + 1 + rng.integers(LEVELS - 1)) % LEVELS
        out = score(images=tf.constant(changed.reshape(images.shape)))["pixel_log_prob"]
        out = out.numpy().reshape(-1)
        np.testing.assert_array_equal(out[:k], base[:k],
                                      err_msg=f"changing sub-pixel {k} changed earlier ones")
        assert out[k] != base[k], f"sub-pixel {k}'s own log-probability ignores its value"


def test_log_prob_sums_and_probabilities_normalise(exported, loaded):
    model, _ = exported
    score = loaded.signatures["serving_default"]
    images = images_for(3, seed=4)
    out = {k: v.numpy() for k, v in score(images=tf.constant(images)).items()}
    np.testing.assert_allclose(out["log_prob"], out["pixel_log_prob"].sum(axis=(1, 2, 3)),
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(out["bits_per_dim"],
                               -out["log_prob"] / (np.prod(SHAPE) * np.log(2)), rtol=1e-6)
    np.testing.assert_allclose(out["log_prob"], model.log_prob(images.astype(np.int32)),
                               rtol=1e-5, atol=1e-4)
    # Every value of sub-pixel k, everything else fixed: the probabilities sum to 1.
    for k in range(images[0].size):
        variants = np.repeat(images[:1].reshape(1, -1), LEVELS, axis=0)
        variants[:, k] = np.arange(LEVELS)
        pixel = score(images=tf.constant(variants.reshape(LEVELS, *SHAPE)))["pixel_log_prob"]
        total = np.exp(pixel.numpy().reshape(LEVELS, -1)[:, k]).sum()
        assert abs(total - 1.0) < 1e-5, (k, total)


def test_sampling_signatures(loaded):
    sample, complete = loaded.signatures["sample"], loaded.signatures["complete"]
    scalars = lambda seed: dict(seed=tf.constant(seed, tf.int64),
                                temperature=tf.constant(1.0))
    first = sample(num_samples=tf.constant(2), **scalars(7))["images"].numpy()
    assert first.dtype == np.uint8 and first.shape == (2, *SHAPE) and first.max() < LEVELS
    np.testing.assert_array_equal(sample(num_samples=tf.constant(2), **scalars(7))["images"],
                                  first)
    assert not np.array_equal(sample(num_samples=tf.constant(2), **scalars(8))["images"],
                              first)
    images = images_for(2, seed=5)
    num_pixels = SHAPE[0] * SHAPE[1]
    everything = complete(images=tf.constant(images), known_pixels=tf.constant(num_pixels),
                          **scalars(7))["images"].numpy()
    np.testing.assert_array_equal(everything, images)
    known = 9
    part = complete(images=tf.constant(images), known_pixels=tf.constant(known),
                    **scalars(7))["images"].numpy()
    changed = images.reshape(2, num_pixels, -1).copy()
    changed[:, known:] = (changed[:, known:] + 3) % LEVELS
    again = complete(images=tf.constant(changed.reshape(images.shape)),
                     known_pixels=tf.constant(known), **scalars(7))["images"].numpy()
    np.testing.assert_array_equal(again, part)
    np.testing.assert_array_equal(part.reshape(2, num_pixels, -1)[:, :known],
                                  images.reshape(2, num_pixels, -1)[:, :known])


def test_bad_requests_raise_errors(loaded):
    s = loaded.signatures
    good = images_for(2)
    ok = dict(seed=tf.constant(1, tf.int64), temperature=tf.constant(1.0))
    python_side = (TypeError, ValueError, tf.errors.InvalidArgumentError)
    with pytest.raises(python_side):
        s["serving_default"](images=tf.constant(good.astype(np.float32)))
    with pytest.raises(python_side):
        s["serving_default"](images=tf.constant(good[0]))
    with pytest.raises(python_side):
        s["serving_default"](images=tf.constant(good[:, :, :2]))
    in_graph = [
        (lambda: s["serving_default"](images=tf.constant(np.full_like(good, LEVELS))),
         "values"),
        (lambda: s["serving_default"](images=tf.constant(
            np.zeros((MAX_BATCH + 1, *SHAPE), np.uint8))), "at most"),
        (lambda: s["sample"](num_samples=tf.constant(0), **ok), "num_samples"),
        (lambda: s["sample"](num_samples=tf.constant(MAX_BATCH + 1), **ok), "num_samples"),
        (lambda: s["sample"](num_samples=tf.constant(1), seed=ok["seed"],
                             temperature=tf.constant(0.0)), "temperature"),
        (lambda: s["sample"](num_samples=tf.constant(1), seed=ok["seed"],
                             temperature=tf.constant(np.nan, tf.float32)), "temperature"),
        (lambda: s["complete"](images=tf.constant(good), known_pixels=tf.constant(-1), **ok),
         "known_pixels"),
        (lambda: s["complete"](images=tf.constant(good), known_pixels=tf.constant(21), **ok),
         "known_pixels"),
        (lambda: s["serve_examples"](examples=tf.constant([b"not an example"])), None),
    ]
    for call, message in in_graph:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call()
    short = tf.train.Example(features=tf.train.Features(feature={"image": tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[b"\x01" * 10]))})).SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8 bytes"):
        s["serve_examples"](examples=tf.constant([short]))


def test_write_saved_model_is_atomic_and_refuses_to_overwrite(exported, tmp_path):
    model, path = exported
    with pytest.raises(FileExistsError):
        serving.write_saved_model(model, path)

    def failing_check(directory):
        assert os.path.isfile(os.path.join(directory, "saved_model.pb"))
        raise AssertionError("check failed")

    target = tmp_path / "base" / "1"
    with pytest.raises(AssertionError, match="check failed"):
        serving.write_saved_model(make_quick_model(), target, examples=False,
                                  verify=failing_check)
    assert os.listdir(tmp_path / "base") == []  # neither the version nor a temporary dir
    metadata = serving.read_metadata(path)
    assert metadata["image_shape"] == list(SHAPE) and metadata["levels"] == LEVELS
    assert metadata["sampler"] == "cached" and metadata["max_batch"] == MAX_BATCH


# --------------------------------------------------------------------------------------------
# export.py and the sample CLI


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A training workdir made by the real training code (tiny preset, a few steps)."""
    from data_prep.__main__ import main as data_prep_main
    from pixelrnn_tf import config as config_lib
    from pixelrnn_tf.trainer import train_and_evaluate

    root = tmp_path_factory.mktemp("training")
    assert data_prep_main(["convert", "digits", "--out", str(root / "data"), "--limit", "120",
                           "--val-fraction", "0.25"]) == 0
    config = config_lib.replace_keys(config_lib.get_preset("test"), train_steps=3,
                                 steps_per_epoch=3, checkpoint_every_steps=3, eval_batches=1,
                                 jit_compile="off")
    train_and_evaluate(config, str(root / "work"), str(root / "data"))
    return root / "work"


def test_export_cli_from_a_training_workdir(workdir, tmp_path, capsys):
    import keras

    base = tmp_path / "exports"
    code, out, err = run_main(export_cli.main, ["--workdir", workdir, "--export-base", base],
                              capsys)
    assert code == 0, err
    assert sorted(os.listdir(base)) == ["1"]
    # --no-verify: export.py's check ran on version 1.
    code, _, err = run_main(export_cli.main, ["--workdir", workdir, "--checkpoint", "latest",
                                              "--export-base", base, "--no-examples",
                                              "--no-verify"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(base)) == ["1", "2"]  # the next version; nothing else left
    assert sorted(signature_defs(base / "2")) == sorted(serving.SIGNATURES)  # no examples
    code, _, err = run_main(export_cli.main, ["--workdir", workdir, "--export-base", base,
                                              "--version", "1"], capsys)
    assert code == 1 and "already exists" in err and len(err.strip().splitlines()) == 1
    # The export holds the trained weights: the final model of the run scores the same.
    final = keras.saving.load_model(str(workdir / "model.keras"))
    digits = np.random.default_rng(0).integers(0, final.levels, (2, *final.image_shape))
    got = tf.saved_model.load(str(base / "1")).signatures["serving_default"](
        images=tf.constant(digits.astype(np.uint8)))["log_prob"].numpy()
    np.testing.assert_allclose(got, final.log_prob(digits).numpy(), rtol=1e-5, atol=1e-3)
    meta = json.loads((base / "1" / "assets.extra" / "pixelrnn_tf.json").read_text())
    assert meta["image_shape"] == list(final.image_shape)


def test_export_cli_bad_input(tmp_path, capsys):
    keras_file = tmp_path / "model.keras"
    make_quick_model().save(keras_file)
    base_file = tmp_path / "a_file"
    base_file.write_text("x")
    (tmp_path / "not_a_model.keras").write_text("garbage")
    cases = [
        (["--workdir", tmp_path / "missing", "--export-base", tmp_path / "e"], "no such"),
        (["--workdir", tmp_path, "--export-base", tmp_path / "e"], "config.json"),
        (["--keras-model", tmp_path / "not_a_model.keras", "--export-base", tmp_path / "e"],
         "cannot load"),
        (["--keras-model", keras_file, "--export-base", base_file], "not a directory"),
    ]
    for args, message in cases:
        code, _, err = run_main(export_cli.main, args, capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    for args, message in (
            (["--keras-model", keras_file, "--export-base", tmp_path, "--version", "0"],
             "--version: expected a positive integer, got 0"),
            (["--export-base", tmp_path], "--workdir")):
        code, _, err = run_main(export_cli.main, args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "e").exists()
    code, out, err = run_main(export_cli.main, ["--keras-model", keras_file, "--export-base",
                                                tmp_path / "ok", "--version", "7"], capsys)
    assert code == 0 and os.listdir(tmp_path / "ok") == ["7"], err


def test_sample_cli(exported, tmp_path, capsys, load_each_saved_model_once):
    from PIL import Image

    model, path = exported
    keras_file = tmp_path / "model.keras"
    model.save(keras_file)
    for source in (["--saved-model", path], ["--keras-model", keras_file]):
        code, out, err = run_main(sample_cli.main, [*source, "--num", "5", "--seed", "3",
                                                    "--out", tmp_path / "s.png", "--npz",
                                                    tmp_path / "s.npz"], capsys)
        assert code == 0, err
        samples = np.load(tmp_path / "s.npz")["samples"]
        assert_same_draws(model, samples, sampling.sample(model, 5, seed=3).numpy(), 3)
        assert Image.open(tmp_path / "s.png").size[0] > 5 * SHAPE[1]
    originals = images_for(3)
    np.savez(tmp_path / "images.npz", images=originals)
    code, out, err = run_main(sample_cli.main, [
        "--saved-model", path, "--complete", tmp_path / "images.npz", "--known-rows", "2",
        "--completions", "2", "--out", tmp_path / "c.png", "--npz", tmp_path / "c.npz"], capsys)
    assert code == 0, err
    saved = np.load(tmp_path / "c.npz")
    completions = saved["completions"]
    assert completions.shape == (3, 2, *SHAPE)
    np.testing.assert_array_equal(completions[:, :, :2], np.repeat(originals[:, None, :2], 2, 1))
    picture = np.asarray(Image.open(tmp_path / "c.png"))
    assert picture.shape[1] > picture.shape[0]  # 4 cells per row, 3 rows

    np.savez(tmp_path / "floats.npz", images=originals.astype(np.float32))
    np.savez(tmp_path / "two.npz", a=originals, b=originals)
    np.savez(tmp_path / "big.npz", images=originals + LEVELS)
    np.save(tmp_path / "pickled.npy", np.array([{"x": 1}], dtype=object))
    os.replace(tmp_path / "pickled.npy", tmp_path / "pickled.npz")
    bad = [
        (["--complete", tmp_path / "floats.npz"], "dtype"),
        (["--complete", tmp_path / "two.npz"], "--key"),
        (["--complete", tmp_path / "big.npz"], "values"),
        (["--complete", tmp_path / "missing.npz"], "no such file"),
        (["--complete", tmp_path / "pickled.npz"], "not a readable"),
        (["--complete", tmp_path / "images.npz", "--known-rows", "9"], "known-rows"),
        (["--known-rows", "2"], "--complete"),
    ]
    for args, message in bad:
        out_png = tmp_path / "bad.png"
        code, _, err = run_main(sample_cli.main, ["--saved-model", path, *args, "--out",
                                                  out_png], capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not out_png.exists()
    for args, message in ((["--num", "0"], "--num: expected a positive integer, got 0"),
                          (["--temperature", "-1"], "--temperature"),
                          (["--method", "fast"], "--method")):
        code, _, err = run_main(sample_cli.main, ["--saved-model", path, *args, "--out",
                                                  tmp_path / "bad.png"], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = run_main(sample_cli.main, ["--saved-model", tmp_path, "--out",
                                              tmp_path / "x.png"], capsys)
    assert code == 1 and "saved_model.pb" in err
    (tmp_path / "garbage.keras").write_text("not a model")
    code, _, err = run_main(sample_cli.main, ["--keras-model", tmp_path / "garbage.keras",
                                              "--out", tmp_path / "x.png"], capsys)
    assert code == 1 and "error: --keras-model " in err and "cannot load" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".")]
    assert not leftovers, leftovers
