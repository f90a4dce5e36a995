"""The YOLO loss (Redmon et al. 2016, equation 3), trainable with ``model.fit(images, targets)``.

Sum-squared error over the grid, per image:

- coordinates, for the predictor responsible for a box: ``lambda_coord * [(x - x')^2 +
  (y - y')^2 + (sqrt w - sqrt w')^2 + (sqrt h - sqrt h')^2]`` (square roots so that an error
  counts more on a small box than on a large one);
- objectness of the responsible predictor: ``(C - C')^2`` with ``C'`` the IoU of its box with
  the truth (``rescore=True``, the paper's and darknet's) or 1;
- no-object: ``lambda_noobj * C^2`` for every other predictor;
- classes, for cells holding an object: ``sum_c (p(c) - p'(c))^2``.

The responsible predictor is the one of the cell whose predicted box overlaps the truth most
(paper), or with ``anchors`` the slot the target assigned (YOLOv2). Targets and outputs are
laid out as :mod:`kerascnn.detection.encoding` says. The loss returns one value per image;
Keras averages over the batch.

Example:
    >>> model.compile("adam", YoloLoss(boxes_per_cell=2, num_classes=3))
    >>> model.fit(images, targets)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerascnn.detection.encoding import cell_offsets, check_anchors, split_predictions


def _corners(xy, wh, rows: int, cols: int):
    """Image-fraction corners of boxes given by in-cell centre offsets and sizes."""
    centre = (xy + cell_offsets(rows, cols)) / np.array([cols, rows], np.float32)
    return centre - wh / 2, centre + wh / 2


def box_iou(xy_a, wh_a, xy_b, wh_b, rows: int, cols: int):
    """Element-wise IoU of two sets of grid boxes (``(..., 2)`` offsets and sizes), tensors."""
    a1, a2 = _corners(xy_a, wh_a, rows, cols)
    b1, b2 = _corners(xy_b, wh_b, rows, cols)
    inter = ops.prod(ops.maximum(ops.minimum(a2, b2) - ops.maximum(a1, b1), 0.0), axis=-1)
    union = ops.prod(wh_a, axis=-1) + ops.prod(wh_b, axis=-1) - inter
    return inter / ops.maximum(union, 1e-9)


@keras.saving.register_keras_serializable(package="kerascnn")
class YoloLoss(keras.losses.Loss):
    """YOLO's multi-part loss.

    Args:
        boxes_per_cell: ``B``.
        num_classes: ``C``.
        anchors: optional ``(B, 2)`` anchor sizes (fractions of the image): YOLOv2's
            parametrisation and assignment (see :func:`~kerascnn.detection.encode_boxes`).
        lambda_coord: weight of the coordinate terms (5 in the paper).
        lambda_noobj: weight of the no-object confidence term (0.5 in the paper).
        rescore: objectness target = IoU of the predicted and true boxes (else 1).
        name: the loss's name.
    """

    def __init__(
        self,
        boxes_per_cell: int = 2,
        num_classes: int = 20,
        anchors=None,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        rescore: bool = True,
        name: str = "yolo_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.boxes_per_cell, self.num_classes = int(boxes_per_cell), int(num_classes)
        checked = check_anchors(anchors, self.boxes_per_cell)
        self.anchors = None if checked is None else checked.tolist()
        self.lambda_coord, self.lambda_noobj, self.rescore = float(lambda_coord), float(lambda_noobj), bool(rescore)

    def terms(self, y_true, y_pred) -> dict:
        """The four terms per image, ``{"coord", "object", "noobject", "class"}``, each ``(batch,)``."""
        B = self.boxes_per_cell
        y_true = ops.cast(y_true, "float32")
        rows, cols = y_pred.shape[1], y_pred.shape[2]
        pred = split_predictions(y_pred, B, self.anchors)
        truth = ops.reshape(y_true[..., : 5 * B], (-1, rows, cols, B, 5))
        true_xy, true_wh, flags = truth[..., 0:2], truth[..., 2:4], truth[..., 4]
        overlap = ops.stop_gradient(box_iou(pred["xy"], pred["wh"], true_xy, true_wh, rows, cols))
        cell_has_object = ops.max(flags, axis=-1)  # (batch, S, S)
        if self.anchors is None:  # the predictor whose box fits the truth best is responsible
            best = ops.one_hot(ops.argmax(overlap, axis=-1), B)
            responsible = best * cell_has_object[..., None]
        else:
            responsible = flags
        sum_grid = lambda t: ops.sum(t, axis=(1, 2, 3))  # noqa: E731  per image
        coord = ops.sum(ops.square(pred["xy"] - true_xy), axis=-1) + ops.sum(
            ops.square(ops.sqrt(pred["wh"] + 1e-9) - ops.sqrt(true_wh + 1e-9)), axis=-1)
        confidence_target = overlap if self.rescore else ops.ones_like(overlap)
        probs = ops.softmax(pred["class_logits"], axis=-1)
        class_error = ops.sum(ops.square(probs - y_true[..., 5 * B:]), axis=-1) * cell_has_object
        return {
            "coord": self.lambda_coord * sum_grid(responsible * coord),
            "object": sum_grid(responsible * ops.square(pred["confidence"] - confidence_target)),
            "noobject": self.lambda_noobj * sum_grid((1 - responsible) * ops.square(pred["confidence"])),
            "class": ops.sum(class_error, axis=(1, 2)),
        }

    def call(self, y_true, y_pred):
        return sum(self.terms(y_true, y_pred).values())

    def get_config(self) -> dict:
        return {
            **super().get_config(), "boxes_per_cell": self.boxes_per_cell, "num_classes": self.num_classes,
            "anchors": self.anchors, "lambda_coord": self.lambda_coord, "lambda_noobj": self.lambda_noobj,
            "rescore": self.rescore,
        }
