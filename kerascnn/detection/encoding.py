"""The YOLO output layout: encoding ground-truth boxes against a grid, decoding predictions.

An image is cut into an S x S grid; the cell holding a box's centre is responsible for it.
Every cell predicts ``B`` boxes and one set of ``C`` class scores, ``B * 5 + C`` numbers
(Redmon et al. 2016): for each box ``tx, ty, tw, th, to``, then the class logits. They read:

- centre: ``((col + sigmoid(tx)) / S, (row + sigmoid(ty)) / S)`` of the image size;
- size without anchors (YOLOv1): ``(sigmoid(tw), sigmoid(th))`` of the image size; with
  anchors (YOLOv2): ``anchor * exp(t)``, each of the ``B`` boxes having its own anchor;
- confidence ``sigmoid(to)``, class probabilities ``softmax(logits)``.

The paper's outputs are linear; the sigmoid/exp parametrisation (YOLOv2's) keeps every size
positive, so the loss's square roots of ``w`` and ``h`` are defined from the first step.

Targets have the same ``(S, S, B * 5 + C)`` layout: per box slot ``x, y`` (offsets in the
cell, 0-1), ``w, h`` (fractions of the image), an objectness flag, then the one-hot class.
Without anchors every slot of an occupied cell holds the cell's box and the loss picks the
predictor whose box overlaps it most (the paper's "responsible" predictor); with anchors,
only the slot of the anchor of best shape IoU is set (YOLOv2's assignment), decided here.
One cell has one class: when two boxes share a cell (and an anchor), the later one wins.

Example:
    >>> target = encode_boxes(boxes, labels, image_size=(64, 64), grid_size=8, num_classes=3)
    >>> boxes, scores, classes = decode_predictions(model.predict(images), (64, 64), 3)[0]
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from kerascnn.detection.boxes import check_boxes, iou
from kerascnn.detection.nms import non_max_suppression
from kerascnn.errors import BoxError


def check_anchors(anchors, boxes_per_cell: int) -> np.ndarray | None:
    """``(B, 2)`` anchor widths and heights as fractions of the image, or ``None``.

    Raises:
        BoxError: not ``(boxes_per_cell, 2)`` or not positive.
    """
    if anchors is None:
        return None
    anchors = np.asarray(anchors, np.float32)
    if anchors.shape != (boxes_per_cell, 2) or not np.all(anchors > 0):
        raise BoxError(
            f"anchors must be {boxes_per_cell} positive (width, height) pairs (fractions of the image), "
            f"shape ({boxes_per_cell}, 2); got shape {anchors.shape}"
        )
    return anchors


def assign_anchors(sizes, anchors) -> np.ndarray:
    """YOLOv2's assignment: the anchor whose shape overlaps each box most (both centred).

    Args:
        sizes: ``(N, 2)`` box widths and heights.
        anchors: ``(A, 2)`` anchor widths and heights, same units.

    Returns:
        ``(N,)`` index of the best anchor of each box.
    """
    sizes, anchors = np.asarray(sizes, np.float32).reshape(-1, 2), np.asarray(anchors, np.float32)
    centred = lambda wh: np.concatenate([np.zeros_like(wh), wh], axis=1)  # noqa: E731
    return np.argmax(iou(centred(sizes), centred(anchors), "cxcywh"), axis=1)


def encode_boxes(
    boxes,
    labels,
    image_size: Sequence[int],
    grid_size: int | Sequence[int],
    num_classes: int,
    boxes_per_cell: int = 2,
    anchors=None,
) -> np.ndarray:
    """The YOLO target of one image.

    Args:
        boxes: ``(N, 4)`` corner boxes in pixels (``x1, y1, x2, y2``); may be empty.
        labels: ``(N,)`` class ids in ``[0, num_classes)``.
        image_size: ``(height, width)`` in pixels.
        grid_size: ``S`` or ``(S_rows, S_cols)``.
        num_classes: ``C``.
        boxes_per_cell: ``B``.
        anchors: optional ``(B, 2)`` anchor sizes as fractions of the image (YOLOv2).

    Returns:
        ``(S_rows, S_cols, B * 5 + C)`` float32.

    Raises:
        BoxError: malformed boxes or labels, a label out of range, or a box centre outside
            the image.
    """
    boxes = check_boxes(boxes)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.shape != (len(boxes),):
        raise BoxError(f"labels must have one entry per box, {len(boxes)}, got shape {labels.shape}")
    if np.any((labels < 0) | (labels >= num_classes)):
        raise BoxError(f"labels must be in [0, {num_classes}), got {sorted(set(labels.tolist()))}")
    anchors = check_anchors(anchors, boxes_per_cell)
    rows, cols = (grid_size, grid_size) if np.isscalar(grid_size) else tuple(grid_size)
    height, width = image_size[:2]
    target = np.zeros((rows, cols, boxes_per_cell * 5 + num_classes), np.float32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / np.array([width, height], np.float32)
    size = (boxes[:, 2:] - boxes[:, :2]) / np.array([width, height], np.float32)
    outside = np.flatnonzero(np.any((centre < 0) | (centre > 1), axis=1))
    if outside.size:
        raise BoxError(f"box {int(outside[0])} {boxes[outside[0]].tolist()} has its centre outside the "
                       f"{height}x{width} image")
    cell = np.minimum(centre * np.array([cols, rows]), np.array([cols, rows]) - 1e-4)
    slots = assign_anchors(size, anchors) if anchors is not None else None
    for i in range(len(boxes)):
        col, row = int(cell[i, 0]), int(cell[i, 1])
        box = [cell[i, 0] - col, cell[i, 1] - row, size[i, 0], size[i, 1], 1.0]
        for b in range(boxes_per_cell) if slots is None else [int(slots[i])]:
            target[row, col, 5 * b:5 * b + 5] = box
        target[row, col, 5 * boxes_per_cell:] = np.eye(num_classes, dtype=np.float32)[labels[i]]
    return target


def encode_batch(
    boxes: Sequence,
    labels: Sequence,
    image_size: Sequence[int],
    grid_size: int | Sequence[int],
    num_classes: int,
    boxes_per_cell: int = 2,
    anchors=None,
) -> np.ndarray:
    """:func:`encode_boxes` for a list of images: ``(N, S_rows, S_cols, B * 5 + C)`` float32."""
    return np.stack([
        encode_boxes(b, l, image_size, grid_size, num_classes, boxes_per_cell, anchors)
        for b, l in zip(boxes, labels)
    ])


def split_predictions(y, boxes_per_cell: int, anchors=None) -> dict:
    """Read raw outputs ``(batch, S, S, B * 5 + C)`` as boxes (backend tensors, differentiable).

    Args:
        y: the network's raw outputs.
        boxes_per_cell: ``B``.
        anchors: optional ``(B, 2)`` anchors (fractions of the image).

    Returns:
        ``{"xy": (batch, S, S, B, 2) offsets in the cell, "wh": (..., B, 2) fractions of the
        image, "confidence": (..., B), "class_logits": (batch, S, S, C)}``.
    """
    y = ops.cast(y, "float32")
    rows, cols = y.shape[1], y.shape[2]
    raw = ops.reshape(y[..., : 5 * boxes_per_cell], (-1, rows, cols, boxes_per_cell, 5))
    if anchors is None:
        wh = ops.sigmoid(raw[..., 2:4])
    else:
        wh = ops.convert_to_tensor(np.asarray(anchors, np.float32)) * ops.exp(ops.clip(raw[..., 2:4], -8.0, 8.0))
    return {
        "xy": ops.sigmoid(raw[..., 0:2]),
        "wh": wh,
        "confidence": ops.sigmoid(raw[..., 4]),
        "class_logits": y[..., 5 * boxes_per_cell:],
    }


def cell_offsets(rows: int, cols: int) -> np.ndarray:
    """``(rows, cols, 1, 2)`` column and row index of every cell (to add to the in-cell offsets)."""
    col, row = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))
    return np.stack([col, row], axis=-1)[:, :, None, :]


def decode_predictions(
    predictions,
    image_size: Sequence[int],
    num_classes: int,
    boxes_per_cell: int = 2,
    anchors=None,
    score_threshold: float = 0.2,
    iou_threshold: float = 0.5,
    class_agnostic: bool = False,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Turn raw YOLO outputs into boxes, then per-class NMS.

    A box's score is the paper's class-specific confidence, ``confidence * max class
    probability``; its class is the most probable one.

    Args:
        predictions: ``(batch, S, S, B * 5 + C)`` raw outputs.
        image_size: ``(height, width)`` in pixels.
        num_classes: ``C``.
        boxes_per_cell: ``B``.
        anchors: the anchors the model was trained with, or ``None``.
        score_threshold: boxes scoring at most this are dropped.
        iou_threshold: NMS threshold.
        class_agnostic: suppress across classes.

    Returns:
        Per image, ``(boxes (K, 4) xyxy pixels, scores (K,), classes (K,))``.

    Raises:
        BoxError: the last axis is not ``B * 5 + C``.
    """
    predictions = ops.convert_to_tensor(predictions)
    if predictions.shape[-1] != 5 * boxes_per_cell + num_classes:
        raise BoxError(
            f"predictions must have B * 5 + C = {5 * boxes_per_cell + num_classes} channels "
            f"(B={boxes_per_cell}, C={num_classes}), got shape {tuple(predictions.shape)}"
        )
    anchors = check_anchors(anchors, boxes_per_cell)
    parts = {k: keras.ops.convert_to_numpy(v) for k, v in split_predictions(predictions, boxes_per_cell, anchors).items()}
    rows, cols = parts["class_logits"].shape[1:3]
    height, width = image_size[:2]
    scale = np.array([width, height], np.float32)
    centre = (parts["xy"] + cell_offsets(rows, cols)) / np.array([cols, rows], np.float32) * scale
    size = parts["wh"] * scale
    corners = np.concatenate([centre - size / 2, centre + size / 2], axis=-1)
    logits = parts["class_logits"] - parts["class_logits"].max(axis=-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    scores = parts["confidence"] * probs.max(axis=-1)[..., None]
    classes = np.broadcast_to(probs.argmax(axis=-1)[..., None], scores.shape)
    results = []
    for i in range(len(corners)):
        b, s, c = corners[i].reshape(-1, 4), scores[i].reshape(-1), classes[i].reshape(-1)
        keep = non_max_suppression(b, s, iou_threshold, score_threshold, classes=None if class_agnostic else c)
        results.append((b[keep], s[keep], c[keep]))
    return results
