"""Distillation: the loss against a NumPy reference, the dlib teacher, the face-crop cache."""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest

from kerascnn import distillation
from kerascnn.distillation import EmbeddingDistillationLoss
from kerascnn.errors import DatasetError, DetectorError, TeacherUnavailableError
from kerascnn.facetrain import data as facedata


def _reference(teacher, student, distance):
    t = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    s = student / np.linalg.norm(student, axis=1, keepdims=True)
    cos = np.array([sum(a * b for a, b in zip(ti, si)) for ti, si in zip(t, s)])
    return np.mean(1 - cos if distance == "cosine" else np.sum((t - s) ** 2, axis=1))


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_loss_matches_reference(distance):
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    loss = EmbeddingDistillationLoss(distance)
    np.testing.assert_allclose(float(loss(teacher, student)), _reference(teacher, student, distance), rtol=1e-5)
    assert float(loss(teacher, 3.0 * teacher)) == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    assert float(loss(teacher, -teacher)) == pytest.approx(2.0 if distance == "cosine" else 4.0, rel=1e-5)


def test_loss_is_finite_at_zero_and_in_half_precision():
    loss = EmbeddingDistillationLoss()
    import tensorflow as tf

    zeros = np.zeros((2, 4), np.float32)
    x = tf.Variable(zeros)
    with tf.GradientTape() as tape:
        value = loss(np.ones((2, 4), np.float32), x)
    grad = tape.gradient(value, x)
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad.numpy()))
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    half = float(loss(t.astype("float16"), s.astype("float16")))
    assert half == pytest.approx(_reference(t, s, "cosine"), abs=2e-3)
    assert float(loss(zeros, zeros)) == pytest.approx(1.0)


def test_loss_config_round_trip_and_bad_distance():
    loss = EmbeddingDistillationLoss("l2", name="d")
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, EmbeddingDistillationLoss) and again.distance == "l2" and again.name == "d"
    with pytest.raises(ValueError, match="distance must be 'cosine' or 'l2', got 'dot'"):
        EmbeddingDistillationLoss("dot")


def test_missing_teacher_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(TeacherUnavailableError, match="face_recognition_models, which is not installed: pip install dlib-bin"):
        distillation.dlib_model_dir()


def test_missing_model_file_is_named(tmp_path):
    pytest.importorskip("dlib")
    teacher = distillation.DlibTeacher(model_dir=tmp_path)
    with pytest.raises(TeacherUnavailableError, match="shape_predictor_5_face_landmarks.dat is missing"):
        teacher.prepare(np.zeros((50, 50, 3), np.uint8), (5, 5, 40, 40))


@pytest.fixture(scope="module")
def dlib_teacher():
    pytest.importorskip("dlib")
    try:
        return distillation.DlibTeacher()
    except TeacherUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def tiny_faces(tmp_path, orl_dir):
    """Two ORL people with two images each."""
    for person in ("s1", "s2"):
        (tmp_path / "faces" / person).mkdir(parents=True)
        for name in ("1.pgm", "2.pgm"):
            shutil.copy(orl_dir / person / name, tmp_path / "faces" / person / name)
    return tmp_path / "faces"


@pytest.mark.slow
def test_dlib_teacher_separates_people(dlib_teacher, tiny_faces, yunet_path, tmp_path):
    data = facedata.prepare_faces(tiny_faces, yunet_path, 32, 40, dlib_teacher, cache_dir=tmp_path / "c", progress=False)
    assert data.teacher.shape == (4, 128) and data.chips.shape == (4, 150, 150, 3)
    np.testing.assert_allclose(np.linalg.norm(data.teacher, axis=1), 1.0, atol=1e-5)
    sims = data.teacher @ data.teacher.T
    assert min(sims[0, 1], sims[2, 3]) > max(sims[0, 2], sims[1, 3])  # same person closer
    np.testing.assert_allclose(dlib_teacher.embed(np.repeat(data.chips[0][None], 1, 0)[0], (0, 0, 150, 150)).shape, (128,))
    with pytest.raises(ValueError, match=r"expected chips \(n, 150, 150, 3\), got shape \(2, 10, 10, 3\)"):
        dlib_teacher.describe(np.zeros((2, 10, 10, 3), np.uint8))


def test_prepare_faces_caches_and_resumes(tiny_faces, yunet_path, tmp_path, monkeypatch):
    data = facedata.prepare_faces(tiny_faces, yunet_path, 32, 40, cache_dir=tmp_path / "c", progress=False)
    assert data.crops.shape == (4, 40, 40, 3) and data.detected.all() and data.teacher is None
    assert list(data.labels) == [0, 0, 1, 1] and data.class_names == ["s1", "s2"]
    # eyes land on the template: the centre 32 square of the canvas is align_face's crop
    marks = data.landmarks[0]
    from kerascnn.data.folders import read_image
    from kerascnn.face.align import align_face

    expected = align_face(read_image(data.paths[0]), marks, 32)
    assert np.abs(data.crops[0, 4:36, 4:36].astype(int) - expected).mean() < 2
    monkeypatch.setattr(facedata, "_process_chunk", lambda *a: pytest.fail("the cache was not used"))
    again = facedata.prepare_faces(tiny_faces, yunet_path, 32, 40, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(again.crops, data.crops)
    other = facedata.prepare_faces(tiny_faces, yunet_path, 24, 30, cache_dir=tmp_path / "c", progress=False)
    assert other.crops.shape == (4, 30, 30, 3)  # recropped from the cached landmarks


def test_prepare_faces_errors(tiny_faces, tmp_path):
    with pytest.raises(DatasetError, match="canvas must be at least the face size 32, got 30"):
        facedata.prepare_faces(tiny_faces, tmp_path / "y.onnx", 32, 30, cache_dir=tmp_path)
    with pytest.raises(DetectorError, match="face detector model .*y.onnx does not exist"):
        facedata.prepare_faces(tiny_faces, tmp_path / "y.onnx", 32, 40, cache_dir=tmp_path)


def test_undetected_faces_get_the_mean_landmarks(tiny_faces, yunet_path, tmp_path):
    (tiny_faces / "s2" / "blank.png").write_bytes(
        __import__("cv2").imencode(".png", np.full((112, 92), 127, np.uint8))[1].tobytes())
    data = facedata.prepare_faces(tiny_faces, yunet_path, 32, 40, cache_dir=tmp_path / "c", progress=False)
    assert list(data.detected) == [True, True, True, True, False]
    np.testing.assert_allclose(data.landmarks[4], data.landmarks[:4].mean(0), atol=1e-4)
