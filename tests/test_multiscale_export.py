"""The SavedModel of a Multi-Scale PixelRNN: the same signatures as a single-scale export (a
TF Serving client cannot tell them apart), every signature in a process without this project,
through the TF1 session loader and (slow) saved_model_cli, likelihood terms in the model's own
pixel order, cached and naive exports, and export.py / the sample CLI on a .keras file."""

import json
import os
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from pixelrnn_tf import MultiScalePixelRNN, PixelRNN, sampling, serving
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
    run_saved_model_cli,
    tf1_session_requests,
    write_requests,
)

N, S, F = 8, 4, 2
CHANNELS, LEVELS = 3, 7
SHAPE = (N, N, CHANNELS)
MAX_BATCH = 8
KNOWN = 13  # pixels kept by `complete`: row 0, and row 1 up to column 4 (grid pixels too)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, export dir): a small RGB Multi-Scale model saved as .keras and exported from
    that file by export.py (which reloads the export and checks it before publishing)."""
    tf.keras.utils.set_random_seed(0)
    model = randomize_weights(MultiScalePixelRNN("diagonal_bilstm", SHAPE, S, levels=LEVELS,
                                                 num_layers=1, hidden_dim=6, output_dim=12,
                                                 first_kernel=3))
    root = tmp_path_factory.mktemp("multiscale_export")
    model.save(root / "model.keras")
    code = export_cli.main(["--keras-model", str(root / "model.keras"), "--export-base",
                            str(root / "base"), "--max-batch", str(MAX_BATCH)])
    assert code == 0
    assert os.listdir(root / "base") == ["1"]
    return model, str(root / "base" / "1")


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[1])


def images_for(n, seed=1):
    return random_images(n, SHAPE, LEVELS, seed)


def signature_defs(export_dir):
    """What TF Serving reads: {signature: (method, {input: (dtype, shape)}, {output: ...})}."""
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


def test_same_signatures_as_a_single_scale_export(exported, tmp_path):
    _, path = exported
    # The architecture does not show in the signatures; PixelCNN exports quickest.
    single = PixelRNN("pixelcnn", image_shape=SHAPE, levels=LEVELS, num_layers=1,
                      hidden_dim=3, output_dim=12, first_kernel=3)
    serving.write_saved_model(single, tmp_path / "single", max_batch=MAX_BATCH)
    want = signature_defs(tmp_path / "single")
    assert sorted(want) == sorted(serving.SIGNATURES + (serving.EXAMPLES_SIGNATURE,))
    assert signature_defs(path) == want
    metadata = serving.read_metadata(path)
    assert metadata["model"] == "MultiScalePixelRNN" and metadata["small_size"] == S
    assert metadata["factor"] == F and metadata["levels"] == LEVELS
    assert metadata["image_shape"] == list(SHAPE) and metadata["max_batch"] == MAX_BATCH
    assert "model" not in serving.read_metadata(tmp_path / "single")


def test_signatures_without_the_project_and_in_a_tf1_session(exported, tmp_path):
    """Every signature through tf.saved_model.load, then good and bad requests to every
    signature through a TF1 session callable, which (like TF Serving's C++ Session::Run)
    does not check feeds against the signature: the in-graph checks must answer
    InvalidArgument."""
    model, path = exported
    images = images_for(2)
    write_requests(tmp_path, images, shape_features=False)  # only the image feature
    script = NO_PROJECT + call_every_signature(path, KNOWN) + good_requests(KNOWN)
    script += textwrap.dedent(f"""
        cases = [
            ("serving_default", "images", images[0]),         # no batch dimension
            ("serving_default", "images", images[:, :3]),     # wrong height
            ("complete", "images", images[0]),
            ("complete", "known_pixels", np.int32({N * N + 1})),
            ("serve_examples", "examples", np.array([short], object)),
            ("sample", "num_samples", np.array([2, 2], np.int32)),
            ("sample", "temperature", np.float32(0)),
        ]
    """) + tf1_session_requests(path) + ASSERT_NO_PROJECT_LOADED
    with process_in_background([sys.executable, "-c", script], tmp_path) as finish:
        want = expected_outputs(model, images, KNOWN)
        result = finish()
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]
    assert "ACCEPTED" not in result.stdout and result.stdout.count("rejected") == 7, \
        result.stdout
    assert_saved_outputs_match(model, tmp_path, want)
    for name, key in (("serving_default", "log_prob"), ("serve_examples", "log_prob"),
                      ("sample", "images"), ("complete", "images")):
        assert_outputs_match(model, {key: np.load(tmp_path / f"tf1_{name}.npy")},
                             {key: want[name][key]}, f"TF1 session {name}")


@pytest.mark.slow  # the TF1-session test above runs the same loader; so does saved_model_cli
# on a single-scale export in the default run (test_export.py)
@pytest.mark.parametrize("signature", ["complete", "serving_default", "serve_examples", "sample"])
def test_saved_model_cli_runs_every_signature(exported, tmp_path, signature):
    """saved_model_cli runs the SavedModel through the TF1 loader TF Serving uses (`make
    test-all`; the TF1-session test above runs the same loader in the default run)."""
    model, path = exported
    images = images_for(2)
    got = run_saved_model_cli(path, signature, images, KNOWN, tmp_path)
    assert_outputs_match(model, got, expected_outputs(model, images, KNOWN)[signature],
                         f"saved_model_cli {signature}")


def model_order():
    """[H, W, C] int: the position of each sub-pixel in the model's factorisation: the grid
    sub-pixels first (small-image raster order, then channel), then the others in raster
    order."""
    on_grid = np.zeros(SHAPE, bool)
    on_grid[::F, ::F] = True
    order = np.empty(SHAPE, np.int64)
    order[on_grid] = np.arange(on_grid.sum())
    order[~on_grid] = on_grid.sum() + np.arange((~on_grid).sum())
    return order


def test_pixel_log_prob_in_the_model_s_order(exported, loaded):
    """pixel_log_prob sums to log_prob and matches the in-memory model; changing a sub-pixel
    changes its own term and no term before it in the model's order (grid first, then raster
    order), while some grid-later, raster-earlier terms do change (they see the whole small
    image); every term is a normalised distribution over the sub-pixel's values."""
    model, _ = exported
    score = loaded.signatures["serving_default"]
    images = images_for(3, seed=4)
    out = {k: v.numpy() for k, v in score(images=tf.constant(images)).items()}
    np.testing.assert_allclose(out["log_prob"], out["pixel_log_prob"].sum(axis=(1, 2, 3)),
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(out["log_prob"], model.log_prob(images.astype(np.int32)),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["pixel_log_prob"],
                               model.pixel_log_prob(images.astype(np.int32)), atol=1e-4)
    terms = model.log_prob_terms(images.astype(np.int32))
    np.testing.assert_allclose(terms["small"] + terms["conditional"], out["log_prob"],
                               rtol=1e-5, atol=1e-4)

    # The perturbed images are scored one at a time, so the base is too: the same batch
    # shape runs the same kernels, and terms that cannot see the change are bit-identical.
    # (Base and perturbed in batches of different sizes may round 1 ULP apart.)
    order = model_order().reshape(-1)
    base = score(images=tf.constant(images[:1]))["pixel_log_prob"].numpy().reshape(-1)
    rng = np.random.default_rng(3)
    later_on_grid_seen = False
    for k in [0, 1, 5, 26, 47, 48, 50, 100, 191]:
        changed = images[0].reshape(-1).copy()
        changed[k] = (changed[k] + 1 + rng.integers(LEVELS - 1)) % LEVELS
        got = score(images=tf.constant(changed.reshape(1, *SHAPE)))["pixel_log_prob"]
        got = got.numpy().reshape(-1)
        before = order < order[k]
        np.testing.assert_array_equal(got[before], base[before], err_msg=f"sub-pixel {k}")
        assert got[k] != base[k], f"sub-pixel {k}'s own term ignores its value"
        raster_earlier = np.arange(order.size) < k
        later_on_grid_seen |= np.any(got[raster_earlier & ~before] != base[raster_earlier
                                                                            & ~before])
    assert later_on_grid_seen, "stage 2 does not see the grid pixels after it"

    for k in range(images[0].size):
        variants = np.repeat(images[:1].reshape(1, -1), LEVELS, axis=0)
        variants[:, k] = np.arange(LEVELS)
        pixel = score(images=tf.constant(variants.reshape(LEVELS, *SHAPE)))["pixel_log_prob"]
        total = np.exp(pixel.numpy().reshape(LEVELS, -1)[:, k].astype(np.float64)).sum()
        assert abs(total - 1.0) < 1e-5, (k, total)


def scalars(seed):
    return dict(seed=tf.constant(seed, tf.int64), temperature=tf.constant(1.0))


def exported_draws(signatures, images):
    """(sample of 2 with seed 7, completion of `images` keeping KNOWN pixels, seed 7)."""
    return (signatures["sample"](num_samples=tf.constant(2), **scalars(7))["images"].numpy(),
            signatures["complete"](images=tf.constant(images), known_pixels=tf.constant(KNOWN),
                                   **scalars(7))["images"].numpy())


def test_sampling_signatures(exported, loaded):
    model, _ = exported
    s = loaded.signatures
    images = images_for(2, seed=5)
    first, part = exported_draws(s, images)
    assert first.dtype == np.uint8 and first.shape == (2, *SHAPE) and first.max() < LEVELS
    np.testing.assert_array_equal(s["sample"](num_samples=tf.constant(2), **scalars(7))[
        "images"], first)
    assert not np.array_equal(s["sample"](num_samples=tf.constant(2), **scalars(8))[
        "images"], first)
    assert_same_draws(model.small, first[:, ::F, ::F],
                      sampling.sample(model.small, 2, seed=7).numpy(), 7)
    # completion: the known prefix is kept, the rest of the input ignored
    flat = images.reshape(2, N * N, CHANNELS)
    np.testing.assert_array_equal(part.reshape(2, N * N, CHANNELS)[:, :KNOWN],
                                  flat[:, :KNOWN])
    changed = flat.copy()
    changed[:, KNOWN:] = (changed[:, KNOWN:] + 3) % LEVELS
    np.testing.assert_array_equal(
        s["complete"](images=tf.constant(changed.reshape(images.shape)),
                      known_pixels=tf.constant(KNOWN), **scalars(7))["images"], part)
    np.testing.assert_array_equal(
        s["complete"](images=tf.constant(images), known_pixels=tf.constant(N * N),
                      **scalars(7))["images"], images)


@pytest.mark.slow
def test_a_naive_export_draws_the_same_images(exported, loaded, tmp_path):
    model, _ = exported
    naive_path = tmp_path / "naive"
    serving.write_saved_model(model, naive_path, method="naive", max_batch=MAX_BATCH,
                              examples=False)
    assert serving.read_metadata(naive_path)["sampler"] == "naive"
    images = images_for(2, seed=5)
    for got, want in zip(exported_draws(tf.saved_model.load(str(naive_path)).signatures,
                                        images), exported_draws(loaded.signatures, images)):
        assert_same_draws(model, got, want, 7)


def test_export_cli_rejects_other_keras_models_and_sample_cli_reads_the_export(
        exported, tmp_path, capsys):
    model, path = exported
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    other.save(tmp_path / "other.keras")
    code, _, err = run_main(export_cli.main, ["--keras-model", tmp_path / "other.keras",
                                              "--export-base", tmp_path / "e"], capsys)
    assert code == 1 and "not a PixelRNN or MultiScalePixelRNN" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "e").exists()

    code, _, err = run_main(sample_cli.main, ["--saved-model", path, "--num", "3", "--seed",
                                              "2", "--out", tmp_path / "s.png", "--npz",
                                              tmp_path / "s.npz"], capsys)
    assert code == 0, err
    assert_same_draws(model, np.load(tmp_path / "s.npz")["samples"],
                      sampling.sample(model, 3, seed=2).numpy(), 2)
    meta = json.loads(open(os.path.join(path, serving.METADATA_PATH)).read())
    assert meta["sampler"] == "cached" and "pixel_log_prob" in meta["pixel_order"]
