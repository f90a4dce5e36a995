"""Greedy non-maximum suppression, class-agnostic or per class.

The highest-scoring box is kept, every remaining box overlapping it by more than
``iou_threshold`` is dropped, and so on down the scores: ``tf.image.non_max_suppression``'s
rule (the tests check that both keep the same boxes), here in NumPy with per-class suppression.

Example:
    >>> keep = non_max_suppression(boxes, scores, iou_threshold=0.5, classes=labels)
"""

from __future__ import annotations

import numpy as np

from kerascnn.detection.boxes import convert_boxes, iou
from kerascnn.errors import BoxError


def _greedy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    overlaps = iou(boxes, boxes)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= overlaps[i] > iou_threshold
    return keep


def non_max_suppression(
    boxes,
    scores,
    iou_threshold: float = 0.5,
    score_threshold: float = -np.inf,
    max_output_size: int | None = None,
    classes=None,
    box_format: str = "xyxy",
) -> np.ndarray:
    """Indices of the boxes that greedy NMS keeps, by decreasing score.

    Args:
        boxes: ``(N, 4)`` boxes (an empty set gives an empty result).
        scores: ``(N,)`` scores.
        iou_threshold: a box is dropped when its IoU with a kept box is above this.
        score_threshold: only boxes scoring above this are considered.
        max_output_size: keep at most this many (all by default).
        classes: ``(N,)`` class ids: boxes suppress only boxes of their class. ``None``:
            class-agnostic (every box suppresses every other).
        box_format: ``"xyxy"`` or ``"cxcywh"``.

    Returns:
        ``(K,)`` int64 indices into ``boxes``, highest score first.

    Raises:
        BoxError: boxes of the wrong shape or format, or ``scores`` / ``classes`` not ``(N,)``.
    """
    boxes = convert_boxes(boxes, box_format, "xyxy")
    scores = np.asarray(scores, np.float32).reshape(-1)
    if scores.shape != (len(boxes),):
        raise BoxError(f"scores must have shape ({len(boxes)},), one per box, got {np.shape(scores)}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    candidates = np.flatnonzero(scores > score_threshold)
    if classes is None:
        groups = [candidates]
    else:
        classes = np.asarray(classes).reshape(-1)
        if classes.shape != (len(boxes),):
            raise BoxError(f"classes must have shape ({len(boxes)},), one per box, got {classes.shape}")
        groups = [candidates[classes[candidates] == c] for c in np.unique(classes[candidates])]
    keep = np.array(
        [g[i] for g in groups for i in _greedy(boxes[g], scores[g], iou_threshold)], np.int64
    )
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return keep if max_output_size is None else keep[:max_output_size]
