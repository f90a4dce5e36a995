"""Boxes: checking, converting between corner and centre formats, pairwise IoU.

Two formats, one box a row of 4 numbers:

- ``"xyxy"`` (corners): ``x1, y1, x2, y2`` with ``x2 >= x1`` and ``y2 >= y1``.
- ``"cxcywh"`` (centre): ``cx, cy, w, h`` with ``w, h >= 0``.

An empty set of boxes is an array of shape ``(0, 4)`` (an empty list is accepted as one).

Example:
    >>> import numpy as np
    >>> from kerascnn.detection import iou
    >>> iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [0, 0, 2, 2]]))
    array([[0.14285715, 1.        ]], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from kerascnn.errors import BoxError

FORMATS = ("xyxy", "cxcywh")


def check_boxes(boxes, box_format: str = "xyxy", what: str = "boxes") -> np.ndarray:
    """Validate boxes and return them as a ``(N, 4)`` float32 array.

    Args:
        boxes: array-like ``(N, 4)``; ``[]`` is an empty set.
        box_format: ``"xyxy"`` or ``"cxcywh"``.
        what: the argument's name, for the messages.

    Returns:
        The boxes, ``(N, 4)`` float32.

    Raises:
        BoxError: unknown format, not ``(N, 4)``, not finite, or a negative width or height.
    """
    if box_format not in FORMATS:
        raise BoxError(f"box_format must be one of {FORMATS}, got {box_format!r}")
    array = np.asarray(boxes, dtype=np.float32)
    if array.shape in ((0,), (0, 4)):
        return np.zeros((0, 4), np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise BoxError(f"{what} must have shape (N, 4) ({box_format}), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise BoxError(f"{what} must be finite; row {int(np.argwhere(~np.isfinite(array))[0, 0])} is not")
    if box_format == "xyxy":
        sizes = array[:, 2:] - array[:, :2]
    else:
        sizes = array[:, 2:]
    bad = np.flatnonzero(np.any(sizes < 0, axis=1))
    if bad.size:
        i = int(bad[0])
        raise BoxError(
            f"{what} must have non-negative width and height ({box_format}); row {i} is "
            f"{array[i].tolist()}, width {sizes[i, 0]:g}, height {sizes[i, 1]:g}"
            + (" (x2 < x1 or y2 < y1: centre-format boxes passed as corners?)" if box_format == "xyxy" else "")
        )
    return array


def convert_boxes(boxes, source: str, target: str) -> np.ndarray:
    """Convert boxes between ``"xyxy"`` and ``"cxcywh"``.

    Args:
        boxes: ``(N, 4)`` boxes in ``source`` format.
        source: their format.
        target: the format wanted.

    Returns:
        ``(N, 4)`` float32 boxes in ``target`` format.

    Raises:
        BoxError: see :func:`check_boxes`, or an unknown ``target``.
    """
    array = check_boxes(boxes, source)
    if target not in FORMATS:
        raise BoxError(f"target format must be one of {FORMATS}, got {target!r}")
    if source == target:
        return array
    if source == "xyxy":
        return np.concatenate([(array[:, :2] + array[:, 2:]) / 2, array[:, 2:] - array[:, :2]], axis=1)
    return np.concatenate([array[:, :2] - array[:, 2:] / 2, array[:, :2] + array[:, 2:] / 2], axis=1)


def iou(boxes_a, boxes_b, box_format: str = "xyxy") -> np.ndarray:
    """Pairwise intersection over union.

    Args:
        boxes_a: ``(N, 4)`` boxes.
        boxes_b: ``(M, 4)`` boxes.
        box_format: format of both, ``"xyxy"`` or ``"cxcywh"``.

    Returns:
        ``(N, M)`` float32 IoUs (0 where both boxes are empty).

    Raises:
        BoxError: boxes of the wrong shape or format, or with a negative size.
    """
    a = convert_boxes(check_boxes(boxes_a, box_format, "boxes_a"), box_format, "xyxy")
    b = convert_boxes(check_boxes(boxes_b, box_format, "boxes_b"), box_format, "xyxy")
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float32)
