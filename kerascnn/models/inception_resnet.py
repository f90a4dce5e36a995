"""Inception-ResNet-v1 (Szegedy et al. 2016) as David Sandberg's FaceNet trains it.

The body is TF-slim's ``inception_resnet_v1`` (davidsandberg/facenet,
``src/models/inception_resnet_v1.py``): a stem of seven convs and a max pool, 5 x block35 (residual
scale 0.17), reduction A, 10 x block17 (0.10), reduction B, 5 x block8 (0.20) and a last block8
with scale 1 and no activation, over the blocks of :mod:`kerascnn.blocks`. The top is FaceNet's:
global average pool, dropout, the 512-d ``bottleneck`` (Dense without bias + batch norm: the face
embedding before L2 normalisation), then the ``predictions`` classifier Sandberg trains through.
Convs are conv + BN (no scale, epsilon 1e-3, TF-slim's); ``folded_bn=True`` gives convs with
biases and no BN, as in the frozen graph FaceNet ships (:mod:`kerascnn.models.facenet_graph`).
The input is standardised per image inside the model (:class:`kerascnn.layers.PerImageStandardization`,
FaceNet's ``prewhiten``), so it takes RGB 0..255.

Example:
    >>> from kerascnn.models.inception_resnet import inception_resnet_v1
    >>> model = inception_resnet_v1(input_shape=(160, 160, 3), classes=10)
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from kerascnn import blocks
from kerascnn.layers import PerImageStandardization
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

# (name, filters, kernel, stride, padding); "pool" is a 3x3/2 max pool without padding
STEM = (
    ("conv2d_1a", 32, 3, 2, "valid"),
    ("conv2d_2a", 32, 3, 1, "valid"),
    ("conv2d_2b", 64, 3, 1, "same"),
    ("maxpool_3a", None, 3, 2, "valid"),
    ("conv2d_3b", 80, 1, 1, "valid"),
    ("conv2d_4a", 192, 3, 1, "valid"),
    ("conv2d_4b", 256, 3, 2, "valid"),
)
# after the stem: (kind, repeats, residual scale) of the Inception-ResNet modules, or
# ("reduction", name, branch widths)
MODULES = (
    ("block35", 5, 0.17),
    ("reduction", "mixed_6a", ((384,), (192, 192, 256))),
    ("block17", 10, 0.10),
    ("reduction", "mixed_7a", ((256, 384), (256, 256), (256, 256, 256))),
    ("block8", 5, 0.20),
)
LAST_BLOCK = "block8_6"  # block8 with scale 1.0 and no activation (TF-slim's "Block8")

FEATURE_INFO = (
    {"name": "conv2d_2b_relu", "channels": 64, "reduction": 2},
    {"name": "conv2d_4a_relu", "channels": 192, "reduction": 4},
    {"name": "block35_5_out", "channels": 256, "reduction": 8},
    {"name": "block17_10_out", "channels": 896, "reduction": 16},
    {"name": f"{LAST_BLOCK}_out", "channels": 1792, "reduction": 32},
)
_STAGE_ENDS = {f["name"] for f in FEATURE_INFO}


def _make_body(folded_bn: bool, prewhiten: bool):
    conv = {"batch_norm": False} if folded_bn else dict(blocks.INCEPTION_RESNET_CONV)

    def body(img_input) -> list:
        x = PerImageStandardization(name="prewhiten")(img_input) if prewhiten else img_input
        stages = []
        for name, filters, kernel, stride, padding in STEM:
            if filters is None:
                x = layers.MaxPooling2D(kernel, strides=stride, padding=padding, name=name)(x)
                continue
            x = blocks.conv_bn_act(x, filters, kernel, strides=stride, padding=padding, name=name, **conv)
            if f"{name}_relu" in _STAGE_ENDS:
                stages.append(x)
        for kind, arg, spec in MODULES:
            if kind == "reduction":
                x = blocks.reduction_block(x, spec, name=arg, **conv)
                continue
            for i in range(1, arg + 1):
                x = blocks.inception_resnet_block(x, kind, spec, name=f"{kind}_{i}", **conv)
            if f"{kind}_{arg}_out" in _STAGE_ENDS:
                stages.append(x)
        x = blocks.inception_resnet_block(x, "block8", 1.0, activation=None, name=LAST_BLOCK, **conv)
        return [*stages, x]

    return body


def _make_top(bottleneck: int | None, dropout: float):
    """Global average pool, dropout, the bottleneck (Dense without bias + BN), ``predictions``."""

    def top(x, classes: int, classifier_activation: str | None):
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        if bottleneck:
            x = layers.Dense(bottleneck, use_bias=False, name="bottleneck")(x)
            x = layers.BatchNormalization(epsilon=1e-3, scale=False, name="bottleneck_bn")(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)

    return top


@register_model(
    default_input_shape=(160, 160, 3),
    min_input_size=75,
    feature_info=FEATURE_INFO,
    reference="Szegedy et al. 2016, Inception-v4, Inception-ResNet (Inception-ResNet-v1 as FaceNet's "
              "davidsandberg/facenet src/models/inception_resnet_v1.py)",
    preprocessing="none",
)
def inception_resnet_v1(
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    input_shape: Sequence[int] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    bottleneck: int | None = 512,
    dropout: float = 0.2,
    folded_bn: bool = False,
    prewhiten: bool = True,
    name: str = "inception_resnet_v1",
) -> keras.Model:
    """Inception-ResNet-v1, FaceNet's layout (David Sandberg's TF-slim model).

    Args:
        include_top: add the global average pool, dropout, bottleneck and ``predictions``.
        weights: ``None`` or the path of a Keras weights file (FaceNet's frozen graph is read
            by :func:`kerascnn.models.facenet_graph.load_facenet_graph`).
        input_tensor: optional tensor to build on.
        input_shape: ``(height, width, channels)``, at least 75x75; default FaceNet's 160x160x3.
        pooling: with ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        classes: number of classes of ``predictions``.
        classifier_activation: activation of the top (``None`` for logits).
        features_only: return the five feature maps of :data:`FEATURE_INFO`.
        out_indices: with ``features_only``, the stages to return (timm's argument).
        bottleneck: width of the face embedding before the classifier (``bottleneck`` Dense
            without bias + ``bottleneck_bn``); ``None``: the classifier follows the pool.
        dropout: dropout rate after the pool (FaceNet's keep probability 0.8).
        folded_bn: convs with biases and no batch norm (BN folded into them, as in FaceNet's
            frozen graph) instead of conv + BN.
        prewhiten: standardise each image first (:class:`kerascnn.layers.PerImageStandardization`,
            FaceNet's ``prewhiten``); ``False`` takes already standardised images.
        name: the model's name.

    Returns:
        The ``keras.Model``; with ``prewhiten`` its inputs are RGB 0..255 (any range works).

    Raises:
        InputShapeError: an input smaller than 75x75.
        ValueError: bad ``weights``, ``pooling`` or ``classes``.
    """
    return build_model(
        name=name,
        body=_make_body(folded_bn, prewhiten),
        include_top=include_top,
        weights=weights,
        input_shape=input_shape,
        input_tensor=input_tensor,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        features_only=features_only, out_indices=out_indices,
        default_input_shape=(160, 160, 3),
        min_input_size=75,
        top=_make_top(bottleneck, dropout),
    )
