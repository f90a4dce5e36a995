"""Face alignment: landmarks to a similarity transform onto a canonical crop.

The canonical crop is the widely used 5-point template of ArcFace/InsightFace at 112x112
(eyes, nose tip, mouth corners), scaled to the requested size. Training (the default face
model) and inference (enroll, verify, evaluate) both go through :func:`align_face`, so the
embedder sees faces placed exactly as it learned them.
"""

from __future__ import annotations

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


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp a face onto the canonical crop.

    Args:
        image: ``uint8`` image ``(h, w, c)``.
        landmarks: ``(5, 2)`` points in template order (see :data:`TEMPLATE_112`), or ``(2, 2)``
            eye centres (image-left eye first).
        size: side of the square output crop.

    Returns:
        The aligned ``(size, size, c)`` crop.
    """
    landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    dst = template(size)
    if len(landmarks) == 2:
        dst = dst[:2]
    elif len(landmarks) != 5:
        raise ValueError(f"landmarks must be 5 points or 2 eye centres, got {len(landmarks)} points")
    matrix = similarity_transform(landmarks, dst)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if crop.ndim == 2:
        crop = crop[:, :, None]
    return crop
