"""MobileNet (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018), each from a table.

``mobilenet(alpha, depth_multiplier)`` is keras.applications ``MobileNet`` and
``mobilenet_v2(alpha)`` is ``MobileNetV2``, layer for layer (same names, same counts).

Example:
    >>> from kerascnn.models.mobilenet import mobilenet_v2
    >>> model = mobilenet_v2(alpha=0.5, input_shape=(96, 96, 3), classes=10)
"""

from __future__ import annotations

import functools
import math
from typing import Any

import keras
from keras import layers

from kerascnn.blocks import inverted_residual, separable_conv
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

# MobileNet: (pointwise filters, stride) of the 13 depthwise separable blocks; the stem is a
# 3x3/2 conv with 32 filters.
V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
V1_STEM = 32

# MobileNetV2: (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper.
V2_STAGES = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
V2_STEM = 32
V2_LAST = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90% of it (MobileNetV2's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# --- MobileNet -----------------------------------------------------------------------------------


def _v1_feature_info(alpha: float = 1.0) -> list[dict]:
    """Outputs of the last block at each resolution (the stem at /2), from ``V1_BLOCKS``."""
    info, reduction = [], 2
    for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
        if stride != 1:  # the previous block ends a resolution
            info.append({"name": f"conv_pw_{i - 1}_relu", "channels": int(V1_BLOCKS[i - 2][0] * alpha),
                         "reduction": reduction})
            reduction *= stride
    info.append({"name": f"conv_pw_{len(V1_BLOCKS)}_relu", "channels": int(V1_BLOCKS[-1][0] * alpha),
                 "reduction": reduction})
    return info


def _v1_top(x, classes: int, classifier_activation: str | None, dropout: float = 1e-3):
    """keras MobileNet's top: average pool, dropout, 1x1 conv to the classes, softmax."""
    x = layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Conv2D(classes, 1, padding="same", name="conv_preds")(x)
    x = layers.Reshape((classes,), name="reshape_2")(x)
    return layers.Activation(classifier_activation, name="predictions")(x)


@register_model(
    "mobilenet",
    feature_info=_v1_feature_info(),
    reference="Howard et al. 2017, MobileNets; keras.applications.MobileNet",
    preprocessing="tf",
)
def mobilenet(alpha: float = 1.0, depth_multiplier: int = 1, dropout: float = 1e-3, **kwargs: Any) -> keras.Model:
    """MobileNet, keras.applications.MobileNet layer for layer.

    Args:
        alpha: width multiplier of every layer's filters.
        depth_multiplier: resolution of the depthwise convs (outputs per input channel).
        dropout: dropout rate of the top.
        **kwargs: :func:`kerascnn.models.base.build_model`'s keras.applications-style arguments:
            ``include_top``, ``weights`` (``None``, ``"imagenet"`` or a file), ``input_shape``,
            ``input_tensor``, ``pooling``, ``classes``, ``classifier_activation``,
            ``features_only``.

    Returns:
        The ``keras.Model``.

    Raises:
        InputShapeError: an input smaller than 32x32, or not 3 channels with ImageNet weights.
    """
    info = _v1_feature_info(alpha)
    taps = {entry["name"] for entry in info}

    def body(x) -> list:
        x = layers.Conv2D(int(V1_STEM * alpha), 3, strides=2, padding="same", use_bias=False, name="conv1")(x)
        x = layers.ReLU(6.0, name="conv1_relu")(layers.BatchNormalization(axis=-1, name="conv1_bn")(x))
        features = []
        for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
            x = separable_conv(x, int(filters * alpha), stride, depth_multiplier, name="conv", block_id=i)
            if f"conv_pw_{i}_relu" in taps:
                features.append(x)
        return features

    keras_app = functools.partial(keras.applications.MobileNet, alpha=alpha, depth_multiplier=depth_multiplier)
    return build_model(
        name=kwargs.pop("name", "mobilenet"), body=body, keras_app=keras_app,
        top=functools.partial(_v1_top, dropout=dropout), **kwargs,
    )


# --- MobileNetV2 ---------------------------------------------------------------------------------


def _v2_plan(alpha: float = 1.0) -> list[tuple[str, int, int, int]]:
    """``(block name, expansion, filters, stride)`` of each inverted residual, from ``V2_STAGES``."""
    plan = []
    for t, c, n, s in V2_STAGES:
        for r in range(n):
            block_id = len(plan)
            name = f"block_{block_id}" if block_id else "expanded_conv"
            plan.append((name, t, make_divisible(c * alpha), s if r == 0 else 1))
    return plan


def _v2_taps(plan: list) -> list[int]:
    """Indices of the blocks that end a resolution (the next block has stride 2)."""
    return [i for i in range(len(plan) - 1) if plan[i + 1][3] != 1]


def _v2_feature_info(alpha: float = 1.0) -> list[dict]:
    """Outputs of the last block at each resolution (/2 ... /16), then ``out_relu`` at /32."""
    plan = _v2_plan(alpha)
    channels_in = [make_divisible(V2_STEM * alpha)] + [filters for _, _, filters, _ in plan[:-1]]
    info = []
    for i in _v2_taps(plan):
        name, _, filters, stride = plan[i]
        residual = stride == 1 and channels_in[i] == filters  # as inverted_residual decides
        reduction = 2 * math.prod(s for *_, s in plan[: i + 1])
        info.append({"name": f"{name}_add" if residual else f"{name}_project_BN", "channels": filters,
                     "reduction": reduction})
    last = make_divisible(V2_LAST * alpha) if alpha > 1.0 else V2_LAST
    info.append({"name": "out_relu", "channels": last, "reduction": 2 * math.prod(s for *_, s in plan)})
    return info


@register_model(
    "mobilenet_v2",
    feature_info=_v2_feature_info(),
    reference="Sandler et al. 2018, MobileNetV2; keras.applications.MobileNetV2",
    preprocessing="tf",
)
def mobilenet_v2(alpha: float = 1.0, **kwargs: Any) -> keras.Model:
    """MobileNetV2, keras.applications.MobileNetV2 layer for layer.

    Args:
        alpha: width multiplier (channels rounded to multiples of 8).
        **kwargs: :func:`kerascnn.models.base.build_model`'s keras.applications-style arguments:
            ``include_top``, ``weights`` (``None``, ``"imagenet"`` or a file), ``input_shape``,
            ``input_tensor``, ``pooling``, ``classes``, ``classifier_activation``,
            ``features_only``.

    Returns:
        The ``keras.Model``.

    Raises:
        InputShapeError: an input smaller than 32x32, or not 3 channels with ImageNet weights.
    """
    info = _v2_feature_info(alpha)
    bn = {"axis": -1, "epsilon": 1e-3, "momentum": 0.999}

    def body(x) -> list:
        x = layers.Conv2D(make_divisible(V2_STEM * alpha), 3, strides=2, padding="same", use_bias=False,
                          name="Conv1")(x)
        x = layers.ReLU(6.0, name="Conv1_relu")(layers.BatchNormalization(**bn, name="bn_Conv1")(x))
        features = []
        plan = _v2_plan(alpha)
        taps = set(_v2_taps(plan))
        for i, (name, expansion, filters, stride) in enumerate(plan):
            x = inverted_residual(x, filters, expansion, stride, name=name)
            if i in taps:
                features.append(x)
        x = layers.Conv2D(info[-1]["channels"], 1, use_bias=False, name="Conv_1")(x)
        x = layers.ReLU(6.0, name="out_relu")(layers.BatchNormalization(**bn, name="Conv_1_bn")(x))
        return features + [x]

    keras_app = functools.partial(keras.applications.MobileNetV2, alpha=alpha)
    return build_model(name=kwargs.pop("name", "mobilenet_v2"), body=body, keras_app=keras_app, **kwargs)
