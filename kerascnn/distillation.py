"""Knowledge distillation of face embedders: a teacher interface, dlib's recognizer, a loss.

A *teacher* maps a face image (with its detected box) to a unit embedding. A small Keras
*student* is then trained to reproduce the teacher's unit vectors on the same faces with
:class:`EmbeddingDistillationLoss` (every image is a training signal, even people with a single
image). The dlib teacher is a training-time-only dependency, the ``teacher`` extra::

    pip install dlib-bin face_recognition_models "setuptools<81"

Example:
    >>> teacher = DlibTeacher()                                  # doctest: +SKIP
    >>> vector = teacher.embed(rgb_image, box=(x, y, w, h))      # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from kerascnn.errors import TeacherUnavailableError

TEACHER_EXTRA = 'pip install dlib-bin face_recognition_models "setuptools<81"'
_DLIB_FILES = {
    "shape_predictor": "shape_predictor_5_face_landmarks.dat",
    "recognizer": "dlib_face_recognition_resnet_model_v1.dat",
}


class TeacherEmbedder:
    """Interface of a teacher: a face chip from an image and a box, unit vectors from chips.

    The two steps are separate so that chips (cheap) can be cut where the images are and the
    embeddings (costly) computed elsewhere, in batches, or in parallel.

    Attributes:
        name: a short identifier written in model cards and cache names.
        dim: the embedding size.
        chip_size: side of the square chips ``prepare`` returns.
    """

    name = "teacher"
    dim = 0
    chip_size = 0

    def prepare(self, image: np.ndarray, box) -> np.ndarray:
        """The teacher's ``uint8`` chip of the face in ``box`` (``x, y, w, h``) of an RGB image."""
        raise NotImplementedError

    def describe(self, chips: np.ndarray) -> np.ndarray:
        """``(n, dim)`` float32 unit embeddings of ``(n, chip, chip, 3)`` chips."""
        raise NotImplementedError

    def embed(self, image: np.ndarray, box) -> np.ndarray:
        """The unit embedding of the face in ``box`` of an RGB ``uint8`` image."""
        return self.describe(self.prepare(image, box)[None])[0]


def dlib_model_dir() -> Path:
    """The folder holding dlib's model files from the ``face_recognition_models`` package.

    ``face_recognition_models`` imports ``pkg_resources`` (gone from setuptools >= 81), so the
    folder is located with :func:`importlib.util.find_spec`, without importing the package.

    Raises:
        TeacherUnavailableError: the package is not installed or lacks the model files.
    """
    from kerascnn.models.dlib_resnet import face_recognition_models_dir

    folder = face_recognition_models_dir()
    if folder is None:
        raise TeacherUnavailableError(
            f"the dlib teacher needs the package face_recognition_models, which is not installed: {TEACHER_EXTRA}"
        )
    return folder


class DlibTeacher(TeacherEmbedder):
    """dlib's ResNet face recognizer (128-d, 99.38% on LFW by its authors) as a teacher.

    ``prepare``: dlib's 5-point shape predictor inside the given box, then dlib's own 150x150
    chip (padding 0.25). ``describe``: ``face_recognition_model_v1`` on the chips, scaled to unit
    length (about 90 ms per face on one CPU core). Model files are loaded on first use, so a
    machine that only describes chips needs only the recognizer's file.

    Args:
        model_dir: folder with ``shape_predictor_5_face_landmarks.dat`` and
            ``dlib_face_recognition_resnet_model_v1.dat``; default: the ``face_recognition_models``
            package's.

    Raises:
        TeacherUnavailableError: dlib is not installed (model files: on first use).
    """

    name = "dlib_face_recognition_resnet_model_v1"
    dim = 128
    chip_size = 150

    def __init__(self, model_dir: str | os.PathLike | None = None):
        try:
            import dlib
        except ImportError as exc:
            raise TeacherUnavailableError(f"the dlib teacher needs dlib, which is not installed: {TEACHER_EXTRA}") from exc
        self._dlib = dlib
        self._dir = Path(model_dir) if model_dir is not None else None
        self._shape = self._net = None

    def _file(self, key: str) -> str:
        folder = self._dir if self._dir is not None else dlib_model_dir()
        path = folder / _DLIB_FILES[key]
        if not path.is_file():
            raise TeacherUnavailableError(f"dlib model file {path} is missing; reinstall: {TEACHER_EXTRA}")
        return str(path)

    def prepare(self, image: np.ndarray, box) -> np.ndarray:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image (h, w, 3), got shape {image.shape}")
        if self._shape is None:
            self._shape = self._dlib.shape_predictor(self._file("shape_predictor"))
        x, y, w, h = (int(round(float(v))) for v in box)
        shape = self._shape(image, self._dlib.rectangle(x, y, x + w, y + h))
        return np.asarray(self._dlib.get_face_chip(image, shape, size=self.chip_size, padding=0.25), dtype=np.uint8)

    def describe(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips, dtype=np.uint8)
        if chips.ndim != 4 or chips.shape[1:] != (self.chip_size, self.chip_size, 3):
            raise ValueError(f"expected chips (n, {self.chip_size}, {self.chip_size}, 3), got shape {chips.shape}")
        if self._net is None:
            self._net = self._dlib.face_recognition_model_v1(self._file("recognizer"))
        vectors = np.array(
            [np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(chip))) for chip in chips],
            dtype=np.float32,
        ).reshape(len(chips), self.dim)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@keras.saving.register_keras_serializable(package="kerascnn")
class EmbeddingDistillationLoss(keras.losses.Loss):
    """Distance of the student's embeddings to the teacher's, both scaled to unit length.

    ``y_true`` is the teacher's ``(batch, dim)`` embeddings, ``y_pred`` the student's. With
    ``distance="cosine"`` the loss is ``1 - cos(student, teacher)``; with ``"l2"`` it is the
    squared Euclidean distance of the unit vectors (``2 - 2 cos``). Computed in float32, so it
    runs under mixed precision.

    Args:
        distance: ``"cosine"`` or ``"l2"``.
        name: the loss name.
        reduction: Keras reduction over the batch.

    Raises:
        ValueError: an unknown ``distance``.
    """

    def __init__(self, distance: str = "cosine", name: str = "embedding_distillation", reduction="sum_over_batch_size"):
        if distance not in ("cosine", "l2"):
            raise ValueError(f"distance must be 'cosine' or 'l2', got {distance!r}")
        super().__init__(name=name, reduction=reduction)
        self.distance = distance

    def call(self, y_true, y_pred):
        ops = keras.ops
        teacher = ops.cast(y_true, "float32")
        student = ops.cast(y_pred, "float32")
        teacher = teacher / ops.sqrt(ops.maximum(ops.sum(teacher * teacher, axis=-1, keepdims=True), 1e-12))
        student = student / ops.sqrt(ops.maximum(ops.sum(student * student, axis=-1, keepdims=True), 1e-12))
        cosine = ops.sum(teacher * student, axis=-1)
        return 1.0 - cosine if self.distance == "cosine" else 2.0 - 2.0 * cosine

    def get_config(self) -> dict:
        config = super().get_config()
        config["distance"] = self.distance
        return config


def centred_targets(teacher: np.ndarray, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Teacher unit vectors minus their mean, renormalised: the distillation targets.

    dlib's descriptors share a large common component (cosines of different people are about
    0.8); removing it spreads the targets over the sphere, which a unit-vector student matches
    more easily, without changing which faces are near each other.

    Returns:
        ``(targets, mean)``.
    """
    mean = teacher.mean(0) if mean is None else mean
    centred = teacher - mean
    return (centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)).astype(np.float32), mean
