"""Mean average precision at an IoU threshold, PASCAL VOC style (VOC 2010 onwards).

Per class, the detections of every image are sorted by score; each is a true positive when its
best-overlapping ground-truth box of that class in its image has IoU >= ``iou_threshold`` and
was not claimed by a higher-scoring detection, else a false positive. AP is the area under the
precision-recall curve with precision made monotone (the maximum at any higher recall), the
mean is over the classes that have ground-truth boxes.

Empty inputs: an image with no detections or no ground truth is fine; a class with ground
truth and no detection has AP 0; a class with no ground truth is left out of the mean (its
detections can only be false positives, VOC does the same). With no ground-truth box at all,
mAP is undefined and :class:`~kerascnn.errors.BoxError` is raised.

Example:
    >>> result = mean_average_precision(detections, ground_truth)
    >>> result.map, result.per_class
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from kerascnn.detection.boxes import check_boxes, iou
from kerascnn.errors import BoxError


@dataclass(frozen=True)
class MAPResult:
    """Mean average precision and its parts.

    Attributes:
        map: the mean of ``per_class`` over the classes with ground truth.
        per_class: class id -> AP.
        num_ground_truth: class id -> number of ground-truth boxes.
    """

    map: float
    per_class: dict[int, float]
    num_ground_truth: dict[int, int]


def average_precision(tp: np.ndarray, num_ground_truth: int) -> float:
    """Area under the monotone precision-recall curve of detections sorted by score.

    Args:
        tp: ``(K,)`` booleans, true positive or not, detections by decreasing score.
        num_ground_truth: ground-truth boxes of the class (> 0).

    Returns:
        AP in [0, 1].
    """
    tp = np.asarray(tp, bool)
    tp_cum = np.cumsum(tp)
    recall = np.concatenate([[0.0], tp_cum / num_ground_truth, [1.0]])
    precision = np.concatenate([[0.0], tp_cum / np.arange(1, len(tp) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _check_labels(labels, n: int, what: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.shape != (n,):
        raise BoxError(f"{what} must have one entry per box, {n}, got shape {labels.shape}")
    return labels.astype(np.int64)


def mean_average_precision(
    detections: Sequence[tuple],
    ground_truth: Sequence[tuple],
    iou_threshold: float = 0.5,
    box_format: str = "xyxy",
) -> MAPResult:
    """VOC-style mAP over a set of images.

    Args:
        detections: per image, ``(boxes (K, 4), scores (K,), classes (K,))``.
        ground_truth: per image (same order), ``(boxes (G, 4), classes (G,))``.
        iou_threshold: IoU needed for a match (0.5: mAP@0.5).
        box_format: format of every box.

    Returns:
        A :class:`MAPResult`.

    Raises:
        BoxError: the two lists differ in length, boxes are malformed, labels do not match
            the boxes, or there is no ground-truth box at all.
    """
    if len(detections) != len(ground_truth):
        raise BoxError(
            f"detections and ground_truth must list the same images, got {len(detections)} and {len(ground_truth)}"
        )
    records = []  # (score, class, image, box)
    truth = []  # per image: (boxes, classes)
    for image, ((boxes, scores, classes), (gt_boxes, gt_classes)) in enumerate(zip(detections, ground_truth)):
        boxes = check_boxes(boxes, box_format, f"detections[{image}] boxes")
        scores = np.asarray(scores, np.float32).reshape(-1)
        if scores.shape != (len(boxes),):
            raise BoxError(f"detections[{image}] scores must have one entry per box, {len(boxes)}, got {scores.shape}")
        classes = _check_labels(classes, len(boxes), f"detections[{image}] classes")
        gt_boxes = check_boxes(gt_boxes, box_format, f"ground_truth[{image}] boxes")
        truth.append((gt_boxes, _check_labels(gt_classes, len(gt_boxes), f"ground_truth[{image}] classes")))
        records += [(scores[i], classes[i], image, boxes[i]) for i in range(len(boxes))]
    counts = {}
    for _, gt_classes in truth:
        for c in gt_classes.tolist():
            counts[c] = counts.get(c, 0) + 1
    if not counts:
        raise BoxError("mAP is undefined without ground-truth boxes: every image's ground truth is empty")
    per_class = {}
    for c in sorted(counts):
        mine = sorted((r for r in records if r[1] == c), key=lambda r: -r[0])
        claimed = [np.zeros(int(np.sum(classes == c)), bool) for _, classes in truth]
        tp = np.zeros(len(mine), bool)
        for k, (_, _, image, box) in enumerate(mine):
            gt_boxes, gt_classes = truth[image]
            candidates = gt_boxes[gt_classes == c]
            if not len(candidates):
                continue
            overlaps = iou(box[None], candidates, box_format)[0]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou_threshold and not claimed[image][best]:
                claimed[image][best] = tp[k] = True
        per_class[c] = average_precision(tp, counts[c])
    return MAPResult(float(np.mean(list(per_class.values()))), per_class, counts)
