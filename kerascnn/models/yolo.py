"""YOLO v1 (Redmon et al. 2016, You Only Look Once): detection as one regression.

``yolo_v1`` is the paper's network (figure 3): 24 convolutions with leaky ReLU (slope 0.1),
then a fully connected layer of 4096 units, dropout 0.5, and a linear fully connected layer of
``S * S * (B * 5 + C)`` outputs reshaped to the ``S x S x (B * 5 + C)`` grid: S = 7, B = 2,
C = 20 (PASCAL VOC) at 448x448 (the grid is the input / 64). The paper has no batch norm
(YOLOv2 added it; ``batch_norm=True`` adds it here).

``yolo_detector`` puts a convolutional YOLO head (3x3 conv + BN + leaky ReLU, 1x1 conv to
``B * 5 + C`` channels, YOLOv2's fully convolutional head) on any registry backbone's stage:
the small detectors of the tests and the notebook. Both output raw scores, read by
:mod:`kerascnn.detection.encoding` and trained with :class:`kerascnn.detection.YoloLoss`.

Example:
    >>> model = yolo_detector("squeezenet1_1", input_shape=(64, 64, 3), classes=3, stage=2)
    >>> model.output_shape
    (None, 7, 7, 13)
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import layers

from kerascnn.blocks import conv_bn_act
from kerascnn.models.base import build_model
from kerascnn.models.registry import create_model, register_model

# Figure 3 of the paper: per stage, its convolutions as (filters, kernel, stride); a 2x2/2 max
# pool follows the first four stages. The paper draws the stride-2 conv at the end of its fifth
# group; here it opens the sixth stage, so that each stage has one resolution.
YOLO_V1_STAGES: tuple[tuple[str, tuple[tuple[int, int, int], ...], bool], ...] = (
    ("conv1", ((64, 7, 2),), True),
    ("conv2", ((192, 3, 1),), True),
    ("conv3", ((128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1)), True),
    ("conv4", ((256, 1, 1), (512, 3, 1)) * 4 + ((512, 1, 1), (1024, 3, 1)), True),
    ("conv5", ((512, 1, 1), (1024, 3, 1)) * 2 + ((1024, 3, 1),), False),
    ("conv6", ((1024, 3, 2), (1024, 3, 1), (1024, 3, 1)), False),
)
LEAKY_SLOPE = 0.1


def _feature_info() -> list[dict]:
    info, reduction = [], 1
    for name, convs, pool in YOLO_V1_STAGES:
        for _, _, stride in convs:
            reduction *= stride
        info.append({"name": f"{name}_{len(convs)}_leaky", "channels": convs[-1][0], "reduction": reduction})
        reduction *= 2 if pool else 1
    return info


def _conv_leaky(x, filters: int, kernel: int, stride: int, batch_norm: bool, name: str):
    """Conv (+ BN) + leaky ReLU(0.1): ``{name}_conv``, ``{name}_bn``, ``{name}_leaky``."""
    x = conv_bn_act(x, filters, kernel, stride, batch_norm=batch_norm, activation=None, name=name)
    return layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_leaky")(x)


@register_model(
    "yolo_v1",
    default_input_shape=(448, 448, 3),
    min_input_size=64,
    feature_info=_feature_info(),
    reference="Redmon et al. 2016, You Only Look Once: Unified, Real-Time Object Detection (figure 3)",
)
def yolo_v1(
    boxes_per_cell: int = 2,
    batch_norm: bool = False,
    dropout: float = 0.5,
    classes: int = 20,
    classifier_activation: str | None = None,
    **kwargs: Any,
) -> keras.Model:
    """YOLO v1, the paper's 24-conv network and its fully connected detection head.

    Args:
        boxes_per_cell: ``B``, boxes each cell predicts (2).
        batch_norm: add batch norm after every conv (YOLOv2's change; the paper has none).
        dropout: dropout after the 4096-unit layer.
        classes: ``C`` (20, PASCAL VOC).
        classifier_activation: must be ``None``: the head is linear, and
            :mod:`kerascnn.detection.encoding` reads its raw outputs.
        **kwargs: ``include_top`` (the detection head), ``weights`` (``None`` or a file),
            ``input_shape`` (sides multiples of 64; the grid is input / 64), ``input_tensor``,
            ``pooling``, ``features_only``.

    Returns:
        The ``keras.Model``; with the head, output ``(batch, S, S, B * 5 + C)``.

    Raises:
        ValueError: a ``classifier_activation``, or an input side that is not a multiple of 64.
    """
    if classifier_activation is not None:
        raise ValueError(f"yolo_v1 outputs raw scores; classifier_activation must be None, got {classifier_activation!r}")
    depth = boxes_per_cell * 5 + classes

    def body(x) -> list:
        features = []
        for stage, convs, pool in YOLO_V1_STAGES:
            for i, (filters, kernel, stride) in enumerate(convs, start=1):
                x = _conv_leaky(x, filters, kernel, stride, batch_norm, f"{stage}_{i}")
            features.append(x)
            if pool:
                x = layers.MaxPooling2D(2, strides=2, name=f"{stage}_pool")(x)
        return features

    def top(x, classes: int, _activation):
        rows, cols = x.shape[1], x.shape[2]
        if rows is None or cols is None:
            raise ValueError("yolo_v1's fully connected head needs a fixed input size (multiples of 64)")
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(4096, name="fc1")(x)
        x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name="fc1_leaky")(x)
        x = layers.Dropout(dropout, name="fc1_dropout")(x)
        x = layers.Dense(rows * cols * depth, name="fc2")(x)
        return layers.Reshape((rows, cols, depth), name="predictions")(x)

    shape = kwargs.get("input_shape") or (448, 448, 3)
    if kwargs.get("include_top", True) and not kwargs.get("features_only") and any(
            s is not None and s % 64 for s in shape[:2]):
        raise ValueError(f"yolo_v1: input sides must be multiples of 64 (the grid is input / 64), got {tuple(shape)}")
    return build_model(name=kwargs.pop("name", "yolo_v1"), body=body, top=top, classes=classes, classifier_activation=None,
                       default_input_shape=(448, 448, 3), min_input_size=64, **kwargs)


def yolo_detector(
    backbone: str | keras.Model = "squeezenet1_1",
    *,
    input_shape: Sequence[int] = (64, 64, 3),
    classes: int = 3,
    boxes_per_cell: int = 2,
    stage: int = -1,
    head_filters: int = 128,
    bn_momentum: float = 0.9,
    name: str | None = None,
    **backbone_kwargs: Any,
) -> keras.Model:
    """A small YOLO: a convolutional detection head on a registry backbone's feature map.

    Args:
        backbone: a registry name (built with ``features_only=True``) or a ``keras.Model``
            whose outputs are feature maps (a list: ``stage`` picks one).
        input_shape: ``(height, width, channels)`` for a registry backbone.
        classes: ``C``.
        boxes_per_cell: ``B`` (the number of anchors when training with anchors).
        stage: which feature map carries the head; its size is the grid ``S``.
        head_filters: channels of the head's 3x3 conv.
        bn_momentum: momentum of the head's batch norm (0.9: in short trainings Keras' 0.99
            leaves moving statistics that lag the weights, and inference drifts from training).
        name: the model's name (default ``yolo_{backbone}``).
        **backbone_kwargs: passed to :func:`kerascnn.create_model` (``alpha``, ``weights`` ...).

    Returns:
        A ``keras.Model`` from images to ``(batch, S, S, B * 5 + C)`` raw scores.
    """
    if isinstance(backbone, str):
        label = backbone
        backbone = create_model(backbone, input_shape=tuple(input_shape), features_only=True, **backbone_kwargs)
    else:
        label = backbone.name
    features = backbone.outputs[stage] if isinstance(backbone.outputs, (list, tuple)) else backbone.output
    x = conv_bn_act(features, head_filters, 3, bn_momentum=bn_momentum, activation=None, name="yolo_head_1")
    x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name="yolo_head_1_leaky")(x)
    x = layers.Conv2D(boxes_per_cell * 5 + classes, 1, name="yolo_head_predictions")(x)
    return keras.Model(backbone.inputs, x, name=name or f"yolo_{label}")
