"""InceptionV3 (Szegedy et al. 2016), layer for layer keras.applications' ``InceptionV3``.

The body is a table of modules over the factorised blocks of :mod:`kerascnn.blocks`
(``inception_a``, ``reduction_a``, ``inception_b``, ``reduction_b``, ``inception_c``). Layers are
created in the same order as keras.applications', so :func:`kerascnn.port_weights` maps its
weights one to one: 23,851,784 parameters with the top, 21,802,784 without (299x299x3).

Example:
    >>> from kerascnn.models.inception import inception_v3
    >>> model = inception_v3(input_shape=(139, 139, 3), classes=10)
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from kerascnn import blocks
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

_CONV = {"bn_scale": False, "bn_epsilon": 1e-3}

# (block, name, keyword arguments): the modules after the stem, as in the paper's table 1
MODULES = (
    (blocks.inception_a, "mixed0", {"pool_proj": 32}),
    (blocks.inception_a, "mixed1", {"pool_proj": 64}),
    (blocks.inception_a, "mixed2", {"pool_proj": 64}),
    (blocks.reduction_a, "mixed3", {}),
    (blocks.inception_b, "mixed4", {"filters_nxn": 128}),
    (blocks.inception_b, "mixed5", {"filters_nxn": 160}),
    (blocks.inception_b, "mixed6", {"filters_nxn": 160}),
    (blocks.inception_b, "mixed7", {"filters_nxn": 192}),
    (blocks.reduction_b, "mixed8", {}),
    (blocks.inception_c, "mixed9", {}),
    (blocks.inception_c, "mixed10", {}),
)

# the multi-scale outputs of features_only (reductions are nominal: valid padding trims a little)
FEATURE_INFO = (
    {"name": "conv3_relu", "channels": 64, "reduction": 2},
    {"name": "conv5_relu", "channels": 192, "reduction": 4},
    {"name": "mixed2", "channels": 288, "reduction": 8},
    {"name": "mixed7", "channels": 768, "reduction": 16},
    {"name": "mixed10", "channels": 2048, "reduction": 32},
)


def _stem(x):
    """Five convs and two max pools: 299x299x3 -> 35x35x192 (``conv1``..``conv5``)."""
    x = blocks.conv_bn_act(x, 32, 3, strides=2, padding="valid", name="conv1", **_CONV)
    x = blocks.conv_bn_act(x, 32, 3, padding="valid", name="conv2", **_CONV)
    c2 = x = blocks.conv_bn_act(x, 64, 3, name="conv3", **_CONV)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = blocks.conv_bn_act(x, 80, 1, padding="valid", name="conv4", **_CONV)
    c4 = x = blocks.conv_bn_act(x, 192, 3, padding="valid", name="conv5", **_CONV)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    return x, [c2, c4]


def _body(img_input) -> list:
    x, stages = _stem(img_input)
    for block, name, kwargs in MODULES:
        x = block(x, name=name, **kwargs)
        if name in ("mixed2", "mixed7", "mixed10"):
            stages.append(x)
    return stages


@register_model(
    default_input_shape=(299, 299, 3),
    min_input_size=75,
    feature_info=FEATURE_INFO,
    reference="Szegedy et al. 2016, Rethinking the Inception Architecture (keras.applications.InceptionV3)",
    preprocessing="tf",
)
def inception_v3(
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    input_shape: Sequence[int] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    name: str = "inception_v3",
) -> keras.Model:
    """InceptionV3, identical to ``keras.applications.InceptionV3``.

    Args:
        include_top: add global average pooling and the ``predictions`` Dense layer.
        weights: ``None``, ``"imagenet"`` (keras.applications' weights) or a weights file.
        input_tensor: optional tensor to build on.
        input_shape: ``(height, width, channels)``, at least 75x75; default 299x299x3.
        pooling: with ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        classes: number of classes.
        classifier_activation: activation of the top (``None`` for logits).
        features_only: return the five feature maps of :data:`FEATURE_INFO`.
        out_indices: with ``features_only``, the stages to return (timm's argument).
        name: the model's name.

    Returns:
        The ``keras.Model``; its inputs expect the ``"tf"`` preprocessing (pixels in -1..1).

    Raises:
        InputShapeError: an input smaller than 75x75, or not 3 channels with ImageNet weights.
        ValueError: bad ``weights``, ``pooling`` or ``classes``.
    """
    return build_model(
        name=name,
        body=_body,
        include_top=include_top,
        weights=weights,
        input_shape=input_shape,
        input_tensor=input_tensor,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        features_only=features_only, out_indices=out_indices,
        default_input_shape=(299, 299, 3),
        min_input_size=75,
        keras_app=keras.applications.InceptionV3,
    )
