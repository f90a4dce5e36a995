"""Face alignment: landmarks to a similarity transform onto a canonical crop.

Each face model expects faces placed where it learned them: an :class:`AlignmentTemplate`
says where a detector's five landmarks, or its two eye centres, or the five mean landmark
positions of its box, go in the model's crop. The default is the widely used 5-point template
of ArcFace/InsightFace at 112x112 (eyes, nose tip, mouth corners), which the small face model
was trained on; a model's card can carry its own (the dlib model's was fitted on dlib's own
chips, see ``scripts/fit_dlib_alignment.py``). Training and inference both go through
:func:`align_face`, so the embedder sees faces placed exactly as it learned them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# (x, y) of right eye, left eye (as seen in the image: the subject's right eye is on the image's
# left), nose tip, right and left mouth corners, in a 112x112 crop (InsightFace's template)
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def template(size: int = 112) -> np.ndarray:
    """The 5-point template scaled to a ``size`` x ``size`` crop."""
    return TEMPLATE_112 * (size / 112.0)


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where a face's reference points go in a model's square crop.

    Attributes:
        size: the crop side the points are given for (they scale with the crop).
        landmarks: ``(5, 2)`` destinations of a detector's five landmarks (image-left eye,
            image-right eye, nose tip, mouth corners: YuNet's points).
        eyes: ``(2, 2)`` destinations of two eye centres (Haar's eye cascade), image-left first.
        box: ``(5, 2)`` destinations of :func:`kerascnn.face.detect.box_landmarks` of a face box,
            for detections with neither.
        source: how the points were measured.
    """

    size: int
    landmarks: np.ndarray
    eyes: np.ndarray
    box: np.ndarray
    source: str = ""

    def points(self, kind: str, size: int) -> np.ndarray:
        """The destinations of ``kind`` (``"landmarks"``, ``"eyes"`` or ``"box"``) in a ``size`` crop."""
        return np.asarray(getattr(self, kind), np.float32) * (size / float(self.size))

    def to_dict(self) -> dict:
        """A JSON-ready dict (the ``alignment`` entry of a model card)."""
        rounded = lambda a: np.round(np.asarray(a, np.float64), 4).tolist()  # noqa: E731
        return {"size": int(self.size), "landmarks": rounded(self.landmarks), "eyes": rounded(self.eyes),
                "box": rounded(self.box), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> "AlignmentTemplate":
        """The template of a card's ``alignment`` entry.

        Raises:
            ValueError: a missing key or points of the wrong shape.
        """
        try:
            size = int(data["size"])
            arrays = {k: np.asarray(data[k], np.float32) for k in ("landmarks", "eyes", "box")}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"an alignment needs size, landmarks, eyes and box: {exc}") from exc
        expected = {"landmarks": (5, 2), "eyes": (2, 2), "box": (5, 2)}
        for key, shape in expected.items():
            if arrays[key].shape != shape or not np.all(np.isfinite(arrays[key])):
                raise ValueError(f"alignment {key} must be {shape} finite points, got shape {arrays[key].shape}")
        return cls(size, arrays["landmarks"], arrays["eyes"], arrays["box"], str(data.get("source", "")))


DEFAULT_TEMPLATE = AlignmentTemplate(112, TEMPLATE_112, TEMPLATE_112[:2], TEMPLATE_112,
                                     "InsightFace's 5-point template (eyes, nose tip, mouth corners)")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Umeyama's closed form; works from 2 points up.

    Args:
        src: ``(n, 2)`` points in the image.
        dst: ``(n, 2)`` points in the crop.

    Returns:
        The ``2x3`` affine matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need matching (n>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    var = (s**2).sum() / len(src)
    scale = (sigma * np.diag(sign)).sum() / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix.astype(np.float32)


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``cv2.warpAffine`` onto a ``size`` square (bilinear, replicated border), shrinking with area
    averaging first when the warp shrinks by more than 2x (as dlib samples its chips through an
    image pyramid), so that a large photo gives the same crop as a small one, not an aliased one."""
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))
    if scale < 0.5:
        factor = 2.0 * scale
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        if small.ndim == 2 and image.ndim == 3:
            small = small[:, :, None]
        # the resize maps x to (x + 0.5) * factor - 0.5; undo that, then apply the warp
        shift = 0.5 * (1.0 / factor - 1.0)
        inverse = np.array([[1.0 / factor, 0.0, shift], [0.0, 1.0 / factor, shift], [0.0, 0.0, 1.0]])
        matrix = (np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]]) @ inverse)[:2]
        image = small
    return cv2.warpAffine(image, np.asarray(matrix, np.float32), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112, dst: np.ndarray | None = None) -> np.ndarray:
    """Warp a face onto the canonical crop.

    The warp is :func:`warp` (area averaging before large shrinks).

    Args:
        image: ``uint8`` image ``(h, w, c)``.
        landmarks: ``(5, 2)`` points in template order (see :data:`TEMPLATE_112`), or ``(2, 2)``
            eye centres (image-left eye first).
        size: side of the square output crop.
        dst: where the points go in the crop (as many as ``landmarks``); default the
            InsightFace template scaled to ``size``.

    Returns:
        The aligned ``(size, size, c)`` crop.
    """
    landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    if dst is None:
        dst = template(size)
        if len(landmarks) == 2:
            dst = dst[:2]
        elif len(landmarks) != 5:
            raise ValueError(f"landmarks must be 5 points or 2 eye centres, got {len(landmarks)} points")
    dst = np.asarray(dst, np.float32).reshape(-1, 2)
    if len(dst) != len(landmarks):
        raise ValueError(f"{len(landmarks)} landmarks cannot go to {len(dst)} template points")
    crop = warp(image, similarity_transform(landmarks, dst), size)
    if crop.ndim == 2:
        crop = crop[:, :, None]
    return crop
