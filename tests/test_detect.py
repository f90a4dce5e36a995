"""Face detection, selection and alignment on a tiny set of real faces with known outcomes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from _face_helpers import BOX, EYES, SEVERAL, two_faces
from kerascnn.data.folders import read_image
from kerascnn.errors import DetectorError, ImageReadError, MultipleFacesError, NoFaceError
from kerascnn.face.align import similarity_transform, template
from kerascnn.face.detect import (
    BOX_LANDMARKS,
    CallableDetector,
    Detection,
    HaarDetector,
    YuNetDetector,
    align_detection,
    box_landmarks,
    get_detector,
    select_faces,
)


@pytest.fixture(scope="module")
def haar():
    return HaarDetector()


@pytest.fixture(scope="module")
def yunet(yunet_path):
    return YuNetDetector(yunet_path)


def _warp(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("rel", EYES + BOX)
def test_lfw_face_found_centred_with_both_detectors(lfw_dir, haar, yunet, rel):
    image = read_image(lfw_dir / rel)
    for detector in (haar, yunet):
        face = select_faces(detector(image), image.shape, "central", source=rel)[0]
        # deep-funneled LFW: the face is at the centre of the 250x250 image
        assert abs(face.center[0] - 125) < 20 and abs(face.center[1] - 125) < 30, (detector, face.box)
        assert 70 < face.box[2] < 180


@pytest.mark.parametrize("rel,kind", [(r, "eyes") for r in EYES] + [(r, "box") for r in BOX])
def test_haar_alignment_puts_yunet_landmarks_near_template(lfw_dir, haar, yunet, rel, kind):
    """Align with Haar (eyes or box fallback); YuNet's independent landmarks land near the template."""
    image = read_image(lfw_dir / rel)
    face = select_faces(haar(image), image.shape, "central")[0]
    crop, got = align_detection(image, face, 112)
    assert got == kind and crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    source = face.eyes if kind == "eyes" else box_landmarks(face.box)
    matrix = similarity_transform(source, template(112)[: len(source)])
    landmarks = select_faces(yunet(image), image.shape, "central")[0].landmarks
    error = np.linalg.norm(_warp(landmarks, matrix) - template(112), axis=1)
    # measured on 150 LFW images: 95% of eye errors under 9 px (eyes) and 10 px (box) of 112
    assert error[:2].max() < 10.0, error


def test_yunet_landmarks_in_template_order_and_aligned_exactly(lfw_dir, yunet):
    image = read_image(lfw_dir / EYES[0])
    face = yunet(image)[0]
    left_eye, right_eye, nose, mouth_l, mouth_r = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and nose[1] < mouth_l[1] and mouth_l[0] < mouth_r[0]
    crop, kind = align_detection(image, face, 64)
    assert kind == "landmarks" and crop.shape == (64, 64, 3)
    matrix = similarity_transform(face.landmarks, template(64))
    assert np.abs(_warp(face.landmarks, matrix) - template(64)).max() < 3.0


def test_box_landmarks_are_the_means_inside_the_box():
    points = box_landmarks((10, 20, 100, 200))
    np.testing.assert_allclose(points, BOX_LANDMARKS * [100, 200] + [10, 20], rtol=1e-6)
    assert BOX_LANDMARKS[0, 0] < BOX_LANDMARKS[2, 0] < BOX_LANDMARKS[1, 0]  # nose between the eyes


def test_orl_one_face_each_grey_images(orl_dir, haar, yunet):
    for person in ("s1", "s7", "s23"):
        grey = read_image(orl_dir / person / "1.pgm", channels=1)
        assert grey.shape == (112, 92, 1)
        for detector in (haar, yunet):
            assert len(detector(grey)) == 1, (person, detector)


def test_rgba_image_gives_the_same_faces(lfw_dir, haar):
    image = read_image(lfw_dir / EYES[0])
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert [d.box for d in haar(rgba)] == [d.box for d in haar(image)]


def test_blank_image_has_no_face(haar, yunet, tmp_path):
    blank = np.full((200, 200, 3), 200, np.uint8)
    for detector in (haar, yunet):
        assert detector(blank) == []
        with pytest.raises(NoFaceError, match="no face found in blank.png"):
            select_faces(detector(blank), blank.shape, "largest", source="blank.png")


def test_two_faces_largest_central_all_single(lfw_dir, haar, yunet):
    image, big, central = two_faces(lfw_dir)
    for detector in (haar, yunet):
        faces = detector(image)
        assert len(faces) == 2
        largest = select_faces(faces, image.shape, "largest")[0]
        middle = select_faces(faces, image.shape, "central")[0]
        assert np.hypot(largest.center[0] - big[0], largest.center[1] - big[1]) < 25
        assert np.hypot(middle.center[0] - central[0], middle.center[1] - central[1]) < 25
        both = select_faces(faces, image.shape, "all")
        assert len(both) == 2 and both[0].area >= both[1].area
        with pytest.raises(MultipleFacesError, match="2 faces found in two.jpg, expected exactly one"):
            select_faces(faces, image.shape, "largest", source="two.jpg", single=True)


def test_several_faces_in_lfw_central_is_the_person(lfw_dir, yunet):
    image = read_image(lfw_dir / SEVERAL)
    faces = yunet(image)
    assert len(faces) > 1
    face = select_faces(faces, image.shape, "central")[0]
    assert abs(face.center[0] - 125) < 20 and abs(face.center[1] - 125) < 30


def test_large_image_is_shrunk_for_detection_and_boxes_scale_back(lfw_dir, yunet):
    image = read_image(lfw_dir / EYES[0])
    small = yunet(image)[0]
    big = yunet(cv2.resize(image, (2000, 2000), interpolation=cv2.INTER_LINEAR))[0]
    # resampled twice (up 8x, down to 1024): within 8% of the ~100 px face
    np.testing.assert_allclose(np.array(big.box) / 8.0, small.box, atol=8.0)
    np.testing.assert_allclose(big.landmarks / 8.0, small.landmarks, atol=8.0)


def test_select_rejects_unknown_mode():
    with pytest.raises(ValueError, match="select must be one of"):
        select_faces([Detection((0, 0, 10, 10))], (20, 20, 3), "biggest")


def test_bad_arrays_are_refused(haar):
    with pytest.raises(ImageReadError, match="expected a uint8 image .* got float32 array of shape \\(8, 8, 3\\)"):
        haar(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ImageReadError, match="shape \\(8, 8, 2\\)"):
        haar(np.zeros((8, 8, 2), np.uint8))


def test_callable_detector_boxes_and_box_alignment(lfw_dir):
    image = read_image(lfw_dir / EYES[0])
    detector = get_detector(lambda img: [(60, 60, 130, 130, 0.9), (0, 0, 20, 20)])
    assert isinstance(detector, CallableDetector)
    faces = detector(image)
    assert [d.box for d in faces] == [(60, 60, 130, 130), (0, 0, 20, 20)] and faces[0].score == 0.9
    face = select_faces(faces, image.shape, "largest")[0]
    crop, kind = align_detection(image, face, 48)
    assert kind == "box" and crop.shape == (48, 48, 3)


def test_callable_detector_bad_boxes():
    detector = get_detector(lambda img: [(1, 2, 3)])
    with pytest.raises(DetectorError, match=r"must return \(x, y, w, h\[, score\]\) boxes .* got \[1.0, 2.0, 3.0\]"):
        detector(np.zeros((10, 10, 3), np.uint8))


def test_get_detector_choices(yunet_path, tmp_path, monkeypatch):
    from kerascnn.face.detect import SHIPPED_YUNET

    monkeypatch.delenv("KERASCNN_DETECTOR_MODEL", raising=False)
    for spec in (None, "yunet", "YuNet"):  # the shipped YuNet is the default
        detector = get_detector(spec)
        assert isinstance(detector, YuNetDetector) and detector.model_path == str(SHIPPED_YUNET)
    assert isinstance(get_detector("haar"), HaarDetector)
    assert isinstance(get_detector(str(yunet_path)), YuNetDetector)
    own = tmp_path / "own.onnx"
    own.write_bytes(yunet_path.read_bytes())
    monkeypatch.setenv("KERASCNN_DETECTOR_MODEL", str(own))
    assert get_detector(None).model_path == get_detector("yunet").model_path == str(own)
    with pytest.raises(DetectorError, match="unknown face detector 'hog'"):
        get_detector("hog")


def test_the_shipped_yunet_is_the_released_file_with_its_licence(yunet_path, tmp_path, monkeypatch):
    import hashlib

    from kerascnn.face import detect

    assert detect.SHIPPED_YUNET.read_bytes() == yunet_path.read_bytes()
    assert hashlib.sha256(detect.SHIPPED_YUNET.read_bytes()).hexdigest() == detect.SHIPPED_YUNET_SHA256
    licence = (detect.SHIPPED_YUNET.parent / "YUNET_LICENSE.txt").read_text()
    assert "MIT License" in licence and detect.SHIPPED_YUNET_SHA256 in licence
    damaged = tmp_path / "yunet.onnx"
    data = bytearray(yunet_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(detect, "SHIPPED_YUNET", damaged)
    with pytest.raises(DetectorError, match="shipped with kerascnn .* is damaged: sha256 .* reinstall kerascnn"):
        detect.YuNetDetector()
    assert isinstance(detect.YuNetDetector(damaged), detect.YuNetDetector)  # a user's own file is not hash-checked


def test_get_detector_bad_model_files(tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(DetectorError, match=f"face detector model {missing} does not exist"):
        get_detector(missing)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match=f"cannot load face detector model {junk}"):
        get_detector(junk)
