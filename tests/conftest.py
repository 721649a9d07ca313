import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def loaded_saved_models():
    """{export dir (real path): its tf.saved_model.load} shared by a module's tests."""
    return {}


@pytest.fixture
def load_each_saved_model_once(monkeypatch, loaded_saved_models):
    """tf.saved_model.load loads an export once per test module and returns that object after,
    for tests that run a CLI many times on one export: the CLI still calls the loader each
    time (and an export that fails to load still fails), but a second load of the same
    directory (~1 s each) would give the same signatures."""
    import tensorflow as tf

    load = tf.saved_model.load

    def load_once(export_dir, *args, **kwargs):
        if args or kwargs:
            return load(export_dir, *args, **kwargs)
        key = os.path.realpath(os.fspath(export_dir))
        if key not in loaded_saved_models:
            loaded_saved_models[key] = load(export_dir)
        return loaded_saved_models[key]

    monkeypatch.setattr(tf.saved_model, "load", load_once)
