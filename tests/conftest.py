"""Shared fixtures: paths to the real data beside the checkout, seeds, small settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASCNN_SMALL", "1")  # notebooks and scripts pick their small settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KERASCNN_SHARED", REPO.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is missing (set KERASCNN_SHARED to the folder holding data/ and models/)")
    return path


# the longest tests (minutes each on 2 cores) start first: under pytest-xdist they then run beside
# the many short ones instead of alone at the end
LONGEST_FIRST = ("tests/test_notebooks.py", "tests/test_detection.py::test_small_yolo_learns_shapes")


def pytest_collection_modifyitems(config, items):
    """Start the longest tests first (the rest keep their order); skip the ``tensorflow_only``
    tests, saying why, when KERAS_BACKEND names another backend (.ci/run's backend matrix); on
    TensorFlow every test runs."""
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))  # stable
    backend = os.environ["KERAS_BACKEND"]
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend; KERAS_BACKEND={backend}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (or ``$KERASCNN_SHARED``)."""
    return _require(SHARED)


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """The LFW development images, ``<name>/<name>_NNNN.jpg``."""
    return _require(SHARED / "data" / "lfw" / "images")


@pytest.fixture(scope="session")
def lfw_pairs() -> Path:
    """LFW View 2 ``pairs.txt`` of folds 1-7."""
    return _require(SHARED / "data" / "lfw" / "pairs.txt")


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    """The AT&T/ORL faces, ``s1..s40/1..10.pgm``."""
    return _require(SHARED / "data" / "orl")


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    """OpenCV Zoo's YuNet face detector model."""
    return _require(SHARED / "models" / "face_detection_yunet_2026may.onnx")


@pytest.fixture(autouse=True)
def _seed():
    """Seed Python, NumPy and TensorFlow before every test (cheap; no clear_session, which
    costs 1-2 s a test)."""
    import keras

    keras.utils.set_random_seed(1234)


@pytest.fixture(autouse=True)
def kerascnn_home(tmp_path_factory, monkeypatch):
    """Every test (and the commands it runs) stores calibrations in a fresh temporary
    ``$KERASCNN_HOME``, never in the real home."""
    home = tmp_path_factory.mktemp("kerascnn_home")
    monkeypatch.setenv("KERASCNN_HOME", str(home))
    return home
