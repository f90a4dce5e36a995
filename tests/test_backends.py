"""Backend choice: kerascnn follows Keras' own (KERAS_BACKEND, then keras.json) and the parts that
need TensorFlow refuse another backend with one clear error."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerascnn.backends import require_tensorflow
from kerascnn.data import make_dataset
from kerascnn.data.pk import pk_batches_from_arrays
from kerascnn.errors import BackendError
from kerascnn.training import get_strategy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, env: dict) -> str:
    run = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": REPO}, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


def test_importing_kerascnn_leaves_the_backend_to_keras(tmp_path):
    """No KERAS_BACKEND forced on import: Keras reads ~/.keras/keras.json (here $KERAS_HOME's)."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)
    code = "import os, kerascnn.models; print(os.environ.get('KERAS_BACKEND'))"
    assert _python(code, env) == "None"
    if importlib.util.find_spec("jax") is not None:  # the backend matrix's environment has JAX
        (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
        assert _python("import kerascnn.models, keras; print(keras.backend.backend())", env) == "jax"


def test_tensorflow_parts_name_themselves_and_the_backend_on_another_backend(monkeypatch):
    if keras.backend.backend() == "tensorflow":
        monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    backend = keras.backend.backend()
    calls = {
        "data.make_dataset": lambda: make_dataset(["a.jpg"], [0]),
        "training.get_strategy": get_strategy,
        "data.pk_batches_from_arrays": lambda: pk_batches_from_arrays(np.zeros((4, 8, 8, 3), np.uint8),
                                                                      np.array([0, 0, 1, 1]), 2, 2),
    }
    for what, call in calls.items():
        with pytest.raises(BackendError) as error:
            call()
        assert str(error.value) == (
            f"kerascnn.{what} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs {backend}"
        )


def test_require_tensorflow_passes_on_tensorflow_only(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    require_tensorflow("x")
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(BackendError, match="x needs the TensorFlow backend .*this process runs torch"):
        require_tensorflow("x")
