"""Online distillation: a Keras teacher describes every augmented view the student sees.

The offline recipe (:mod:`kerascnn.facetrain.trainer` with ``teacher=True``) computes one teacher
embedding per image and asks every augmented view of that image to match it: a flipped or
rotated view gets the target of the unflipped, unrotated face. Here the teacher (the default
``dlib`` model, or any embedder) runs on each batch, on the *same* augmented view.

The two models see the face through different crops: the student a ``size`` square aligned on
the InsightFace template (stored on a ``canvas`` with a margin, :mod:`kerascnn.facetrain.data`),
the teacher its own ``chip_size`` chip aligned on its card's template. Both are similarity
warps of the same photo, so one augmentation can be drawn once and applied to both:

* geometric: rotation, zoom and shift are a similarity ``G`` drawn in the student's canvas
  frame (about its centre; shift as a fraction of the face crop); the teacher gets
  ``S @ G @ inv(S)``, where ``S`` is the fixed similarity from the student's template (in
  canvas pixels) to the teacher's template (in chip pixels). That is the same motion of the
  face, exact when the landmarks fit both templates, to within the templates' fit residual
  otherwise. A horizontal flip mirrors each crop about its own centre (both templates are
  left-right symmetric to within a pixel), so the teacher's flipped view is exactly its
  mirrored chip, as with its test-time flip.
* photometric: brightness, contrast (about the student view's channel means), saturation,
  greyscale are the same per-pixel maps for both; the blur's sigma is scaled by ``S``'s scale,
  so it is the same blur of the face.

Where the warped chip leaves the stored chip (corners after a rotation or shift) the border is
replicated, as the student's canvas augmentation does with ``fill_mode="nearest"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np

from kerascnn.errors import DatasetError
from kerascnn.face.align import AlignmentTemplate, align_face, similarity_transform, template

GREY = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class ViewAugment:
    """Ranges of the paired augmentation (the offline recipe's, :func:`kerascnn.facetrain.trainer.build_augmenter`).

    Attributes:
        flip: probability of a horizontal mirror.
        rotation: largest rotation, in turns (0.03 turn is about 11 degrees).
        zoom: largest relative zoom in or out.
        shift: largest shift, as a fraction of the face crop's side, in x and in y.
        brightness: largest brightness change, as a fraction of 255.
        contrast: largest relative contrast change.
        saturation: range of Keras' ``RandomSaturation`` factor (0.5 keeps the colours).
        grey: probability of turning the view grey.
        blur: largest Gaussian blur sigma, in student pixels.
    """

    flip: float = 0.5
    rotation: float = 0.03
    zoom: float = 0.08
    shift: float = 0.03
    brightness: float = 0.15
    contrast: float = 0.3
    saturation: tuple[float, float] = (0.3, 0.7)
    grey: float = 0.2
    blur: float = 1.0

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw the parameters of ``n`` views (one row each)."""
        sat = rng.uniform(*self.saturation, n)
        return {
            "flip": rng.random(n) < self.flip,
            "angle": rng.uniform(-1, 1, n) * self.rotation * 2 * np.pi,
            "scale": 1.0 + rng.uniform(-1, 1, n) * self.zoom,
            "shift": rng.uniform(-1, 1, (n, 2)) * self.shift,
            "brightness": rng.uniform(-1, 1, n) * self.brightness * 255.0,
            "contrast": 1.0 + rng.uniform(-1, 1, n) * self.contrast,
            "saturation": sat / np.maximum(1.0 - sat, 1e-6),
            "grey": rng.random(n) < self.grey,
            "blur": rng.uniform(0, 1, n) * self.blur,
        }


def _rotate_scale(angle: float, scale: float, centre, shift) -> np.ndarray:
    """3x3: rotate by ``angle`` and scale about ``centre``, then translate by ``shift`` (pixels)."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    a = np.array([[c, -s], [s, c]])
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = np.asarray(centre) - a @ np.asarray(centre) + np.asarray(shift)
    return m


def _mirror(side: int) -> np.ndarray:
    """3x3: x -> side - 1 - x (what ``np.fliplr`` does to pixel centres)."""
    return np.array([[-1.0, 0, side - 1], [0, 1, 0], [0, 0, 1]])


def _photometric(x: np.ndarray, p: dict, i: int, mean: np.ndarray, sigma: float) -> np.ndarray:
    """The photometric part of view ``i`` on a float32 image (contrast about ``mean``)."""
    x = x + p["brightness"][i]
    x = (x - mean) * p["contrast"][i] + mean
    grey = (x @ GREY)[..., None]
    x = grey + (x - grey) * p["saturation"][i]
    if p["grey"][i]:
        x = np.repeat(x @ GREY, 3).reshape(x.shape)
    if sigma > 0.05:
        x = cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return np.clip(x, 0.0, 255.0)


class PairedAugment:
    """One augmentation drawn per view, applied to the student's canvas and the teacher's chip.

    Args:
        canvas: side of the student's stored crops.
        size: side of the student's input (the centre of the canvas).
        chip_size: side of the teacher's chips.
        teacher_points: ``(5, 2)`` the teacher template's landmarks in a ``chip_size`` chip.
        augment: the ranges (:class:`ViewAugment`).
    """

    def __init__(self, canvas: int, size: int, chip_size: int, teacher_points: np.ndarray,
                 augment: ViewAugment = ViewAugment()):
        self.canvas, self.size, self.chip_size, self.augment = canvas, size, chip_size, augment
        student_points = template(size) + (canvas - size) / 2.0
        self.frame = np.vstack([similarity_transform(student_points, teacher_points), [0, 0, 1]]).astype(np.float64)
        self.frame_scale = float(np.sqrt(abs(np.linalg.det(self.frame[:2, :2]))))

    def matrices(self, p: dict, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The 3x3 warps of view ``i``: canvas -> student input, chip -> teacher view."""
        centre = ((self.canvas - 1) / 2.0,) * 2
        motion = _rotate_scale(p["angle"][i], p["scale"][i], centre, p["shift"][i] * self.size)
        crop = np.eye(3)
        crop[:2, 2] = -(self.canvas - self.size) / 2.0
        student = crop @ motion
        teacher = self.frame @ motion @ np.linalg.inv(self.frame)
        if p["flip"][i]:
            student, teacher = student @ _mirror(self.canvas), teacher @ _mirror(self.chip_size)
        return student, teacher

    def __call__(self, canvases: np.ndarray, chips: np.ndarray, rng: np.random.Generator):
        """Augmented views of a batch.

        Args:
            canvases: ``(n, canvas, canvas, 3)`` student crops.
            chips: ``(n, chip_size, chip_size, 3)`` teacher chips of the same faces.
            rng: where the parameters are drawn from.

        Returns:
            ``(student_views, teacher_views, params)``: float32 ``(n, size, size, 3)`` and
            ``(n, chip_size, chip_size, 3)`` in 0..255, and the drawn parameters.
        """
        p = self.augment.sample(len(canvases), rng)
        student = np.empty((len(canvases), self.size, self.size, 3), np.float32)
        teacher = np.empty((len(canvases), self.chip_size, self.chip_size, 3), np.float32)
        for i in range(len(canvases)):
            ms, mt = self.matrices(p, i)
            s = cv2.warpAffine(canvases[i].astype(np.float32), ms[:2], (self.size, self.size),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            t = cv2.warpAffine(chips[i].astype(np.float32), mt[:2], (self.chip_size, self.chip_size),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            mean = (s + p["brightness"][i]).mean(axis=(0, 1))
            student[i] = _photometric(s, p, i, mean, p["blur"][i])
            teacher[i] = _photometric(t, p, i, mean, p["blur"][i] * self.frame_scale)
        return student, teacher, p


def teacher_chips(paths, landmarks: np.ndarray, alignment: AlignmentTemplate, chip_size: int) -> np.ndarray:
    """The teacher's ``uint8`` chips: each image aligned on the teacher's template from its landmarks.

    Args:
        paths: the source images (:attr:`FaceData.paths`).
        landmarks: ``(n, 5, 2)`` landmarks in those images (:attr:`FaceData.landmarks`).
        alignment: the teacher's template (:func:`kerascnn.face.model.load_alignment`).
        chip_size: the teacher's input side.

    Returns:
        ``(n, chip_size, chip_size, 3)`` uint8 RGB chips.
    """
    from kerascnn.data.folders import read_image

    dst = alignment.points("landmarks", chip_size)
    out = np.empty((len(paths), chip_size, chip_size, 3), np.uint8)
    for i, (path, marks) in enumerate(zip(paths, landmarks)):
        out[i] = align_face(read_image(path), marks, chip_size, dst=dst)
    return out


def describe(teacher: keras.Model, views: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Unit float32 embeddings of ``views`` by ``teacher`` (inference mode)."""
    out = np.concatenate([
        keras.ops.convert_to_numpy(teacher(views[i:i + batch_size].astype(np.float32), training=False))
        for i in range(0, len(views), batch_size)
    ]).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class OnlineDistillBatches(keras.utils.PyDataset):
    """Batches of (augmented student views, the teacher's centred targets for those very views).

    The views of batch ``i`` of the ``e``-th epoch run are drawn from
    ``np.random.default_rng([seed, e, i])`` (reproducible from the seed).

    Args:
        canvases: ``(n, canvas, canvas, 3)`` uint8 student crops.
        chips: ``(n, chip, chip, 3)`` uint8 teacher chips of the same faces, in the same order.
        teacher: the teacher embedder (chips in, vectors out).
        augment: the :class:`PairedAugment`.
        batch_size: views per batch.
        mean: the mean teacher embedding subtracted from every target
            (:func:`kerascnn.distillation.centred_targets`).
        seed: shuffling and augmentation seed.

    Raises:
        DatasetError: canvases and chips of different counts, or chips of the wrong size.
    """

    def __init__(self, canvases, chips, teacher, augment: PairedAugment, batch_size: int, mean: np.ndarray,
                 seed: int = 0):
        super().__init__()
        if len(canvases) != len(chips):
            raise DatasetError(f"online distillation needs one teacher chip per crop, got {len(chips)} chips "
                               f"for {len(canvases)} crops")
        if chips.shape[1:3] != (augment.chip_size, augment.chip_size):
            raise DatasetError(f"the teacher takes {augment.chip_size}x{augment.chip_size} chips, "
                               f"got {chips.shape[1]}x{chips.shape[2]}")
        self.canvases, self.chips, self.teacher, self.augment = canvases, chips, teacher, augment
        self.batch_size, self.mean, self.seed, self.epoch = batch_size, np.asarray(mean, np.float32), seed, 0
        self.steps = int(np.ceil(len(canvases) / batch_size))
        self._shuffle()

    def _shuffle(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.canvases))
        self.order = np.resize(order, self.steps * self.batch_size)

    def __len__(self):
        return self.steps

    def views(self, i: int):
        """Batch ``i``: ``(indices, student views, teacher views, params)``."""
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        student, teacher, params = self.augment(self.canvases[idx], self.chips[idx],
                                                np.random.default_rng([self.seed, self.epoch, i]))
        return idx, student, teacher, params

    def __getitem__(self, i):
        from kerascnn.distillation import centred_targets

        _, student, teacher_views, _ = self.views(i)
        targets, _ = centred_targets(describe(self.teacher, teacher_views, self.batch_size), self.mean)
        return student, targets

    def on_epoch_end(self):
        self.epoch += 1
        self._shuffle()
