"""The pretrained presets travel in the wheel: build it and find each preset's file in it; (slow)
install it into a fresh venv, load `PixelRNN.from_preset` there and score binarized-MNIST
test images as the work directory's model does.

The fresh venv sees the project venv's site-packages (TensorFlow, Keras) through a .pth
file, to avoid downloading TensorFlow. A directory added by a .pth is not scanned for .pth
files, so the project's editable install stays inactive there: the test checks that
pixelrnn_tf and the weights are imported from the fresh venv. Without the venv, the default
run covers loading the preset from the package (test_presets.py: `from_preset` of each
entry, its file byte for byte the source run's model)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import numpy as np
import pytest

from pixelrnn_tf import presets
from pixelrnn_tf.workdir import load_model

from cli_fixtures import ROOT

NAME = "binarized_mnist"
TEST_IMAGES = ROOT.parent / "shared" / "data" / "binarized_mnist" / "binarized_mnist.npz"
NUM_IMAGES = 64
# What the wheel is built from (setup.cfg's packages and metadata).
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "pixelrnn_tf", "data_prep")

SCORE = textwrap.dedent("""
    import json
    import sys

    import numpy as np

    import pixelrnn_tf
    from pixelrnn_tf import presets

    images_path, scores_path = sys.argv[1:]
    model = pixelrnn_tf.PixelRNN.from_preset("binarized_mnist")
    np.save(scores_path, model.log_prob(np.load(images_path, allow_pickle=False)).numpy())
    print(json.dumps({"package": pixelrnn_tf.__file__, "weights": str(presets.weights_path(
        presets.entry("binarized_mnist")))}))
""")


def run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    """The wheel of a copy of the sources (the build writes build/ and *.egg-info)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", root / "dist", source], root)
    (path,) = (root / "dist").glob("pixelrnn_tf-*.whl")
    return path


@pytest.mark.parametrize("name", presets.list_presets())
def test_the_wheel_ships_every_preset(wheel, name):
    preset = presets.entry(name)
    member = f"pixelrnn_tf/{presets.WEIGHTS_DIR}/{preset.file}"
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(member) == presets.weights_path(preset).read_bytes()


@pytest.mark.slow  # a fresh venv and a process that imports TensorFlow: ~40 s on 2 busy cores
def test_the_installed_wheel_scores_like_the_workdir(wheel, tmp_path):
    if not TEST_IMAGES.is_file():
        pytest.skip(f"{TEST_IMAGES} is absent (the binarized-MNIST test images)")
    preset = presets.entry(NAME)
    workdir = ROOT / preset.source
    if not workdir.is_dir():
        pytest.skip(f"{workdir} is not in this checkout")
    with np.load(TEST_IMAGES, allow_pickle=False) as archive:
        test = archive["test"]
    images = test[:NUM_IMAGES].reshape(-1, *preset.image_shape).astype(np.int32)
    np.save(tmp_path / "images.npy", images)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)  # 5 s less
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
         "--no-index", "--quiet", wheel], tmp_path)
    site = pathlib.Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                           "['purelib'])"], tmp_path).strip())
    (site / "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    out = run([python, "-c", SCORE, tmp_path / "images.npy", tmp_path / "scores.npy"],
              tmp_path)
    where = {k: pathlib.Path(v).resolve()
             for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    for name, path in where.items():
        assert path.is_relative_to(site.resolve()), (name, path)
        assert not path.is_relative_to(ROOT / "pixelrnn_tf"), (name, path)

    want = load_model(workdir).log_prob(images).numpy()
    got = np.load(tmp_path / "scores.npy", allow_pickle=False)
    np.testing.assert_allclose(got, want, rtol=1e-4)
