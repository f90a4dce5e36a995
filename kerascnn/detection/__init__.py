"""Object detection: boxes, IoU, NMS, mAP, the YOLO layout and loss, a synthetic dataset.

One module per concept:

- :mod:`~kerascnn.detection.boxes`: check and convert boxes (corners / centre), pairwise IoU;
- :mod:`~kerascnn.detection.nms`: greedy non-max suppression, per class or class-agnostic;
- :mod:`~kerascnn.detection.metrics`: mAP@0.5, PASCAL VOC style;
- :mod:`~kerascnn.detection.encoding`: YOLO targets against a grid (and anchors), decoding;
- :mod:`~kerascnn.detection.loss`: the YOLO loss (``YoloLoss``);
- :mod:`~kerascnn.detection.shapes`: coloured squares, circles and triangles to train on;
- :mod:`~kerascnn.detection.draw`: boxes drawn on images;
- :mod:`~kerascnn.detection.sliding_windows`: a Dense head rewritten as convolutions.

The detectors themselves are models: ``yolo_v1`` (the paper's network) and
:func:`kerascnn.models.yolo.yolo_detector` (a YOLO head on any registry backbone).

Example:
    >>> from kerascnn import detection
    >>> data = detection.make_shapes(256, image_size=64)
    >>> targets = detection.encode_batch(data.boxes, data.labels, (64, 64), 8, 3)
"""

from kerascnn.detection.boxes import FORMATS, check_boxes, convert_boxes, iou  # noqa: F401
from kerascnn.detection.draw import draw_boxes  # noqa: F401
from kerascnn.detection.encoding import (  # noqa: F401
    assign_anchors,
    decode_predictions,
    encode_batch,
    encode_boxes,
    split_predictions,
)
from kerascnn.detection.loss import YoloLoss  # noqa: F401
from kerascnn.detection.metrics import MAPResult, average_precision, mean_average_precision  # noqa: F401
from kerascnn.detection.nms import non_max_suppression  # noqa: F401
from kerascnn.detection.shapes import CLASS_NAMES, ShapesData, make_shapes  # noqa: F401
from kerascnn.detection.sliding_windows import dense_head_to_conv  # noqa: F401
