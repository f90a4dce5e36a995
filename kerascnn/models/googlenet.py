"""GoogLeNet (Szegedy et al. 2014, "Going deeper with convolutions"), from the paper's Table 1.

:data:`INCEPTION_TABLE` holds the nine inception modules with the widths of Table 1 (#1x1,
#3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); max pools sit between the stages. Convs
have biases and ReLU and no batch norm, as in the paper (``batch_norm=True`` adds it); LRN
follows ``pool1`` and ``conv2`` (``lrn=False`` drops it). About 7.0M parameters without the
auxiliary classifiers (the paper rounds its total to 6.8M).

Example:
    >>> from kerascnn.models.googlenet import googlenet
    >>> model = googlenet(input_shape=(96, 96, 3), classes=10)
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from kerascnn import blocks
from kerascnn.errors import ModelArgumentError
from kerascnn.layers import LocalResponseNormalization
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

# name: (filters_1x1, reduce_3x3, filters_3x3, reduce_5x5, filters_5x5, pool_proj); Table 1
INCEPTION_TABLE = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# the stages between the 3x3/2 max pools (pool3 after 3b, pool4 after 4e)
STAGES = (("3a", "3b"), ("4a", "4b", "4c", "4d", "4e"), ("5a", "5b"))
AUX_AFTER = ("4a", "4d")  # the auxiliary classifiers' positions


def _out_channels(module: str) -> int:
    f1, _, f3, _, f5, pool = INCEPTION_TABLE[module]
    return f1 + f3 + f5 + pool


FEATURE_INFO = (
    {"name": "conv1_relu", "channels": 64, "reduction": 2},
    {"name": "conv2_relu", "channels": 192, "reduction": 4},
    {"name": "inception_3b_concat", "channels": _out_channels("3b"), "reduction": 8},
    {"name": "inception_4e_concat", "channels": _out_channels("4e"), "reduction": 16},
    {"name": "inception_5b_concat", "channels": _out_channels("5b"), "reduction": 32},
)


def _module(x, key: str, batch_norm: bool):
    f1, r3, f3, r5, f5, pool = INCEPTION_TABLE[key]
    return blocks.inception_module(
        x, f1, f3, f5, reduce_3x3=r3, reduce_5x5=r5, pool_proj=pool, batch_norm=batch_norm,
        name=f"inception_{key}",
    )


def _aux_classifier(x, classes: int, classifier_activation: str | None, name: str):
    """The paper's auxiliary head: 5x5/3 avg pool, 1x1 conv 128, FC 1024, 70% dropout, linear."""
    x = layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = blocks.conv_bn_act(x, 128, 1, batch_norm=False, name=f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return layers.Dense(classes, activation=classifier_activation, name=f"{name}_predictions")(x)


def _top(x, classes: int, classifier_activation: str | None):
    """Global 7x7 average pool, 40% dropout, linear + softmax (``predictions``)."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(0.4, name="dropout")(x)
    return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


def _make_body(lrn: bool, batch_norm: bool, aux: list | None, classes: int, classifier_activation):
    """The body; with ``aux`` a list, the auxiliary heads' outputs are appended to it."""

    def body(img_input) -> list:
        conv = {"batch_norm": batch_norm}
        c1 = x = blocks.conv_bn_act(img_input, 64, 7, strides=2, name="conv1", **conv)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
        if lrn:
            x = LocalResponseNormalization(name="pool1_norm")(x)
        x = blocks.conv_bn_act(x, 64, 1, name="conv2_reduce", **conv)
        c2 = x = blocks.conv_bn_act(x, 192, 3, name="conv2", **conv)
        if lrn:
            x = LocalResponseNormalization(name="conv2_norm")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
        stages = [c1, c2]
        for i, stage in enumerate(STAGES):
            if i > 0:
                x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{i + 2}")(x)
            for key in stage:
                x = _module(x, key, batch_norm)
                if aux is not None and key in AUX_AFTER:
                    aux.append(_aux_classifier(x, classes, classifier_activation, f"aux{len(aux) + 1}"))
            stages.append(x)
        return stages

    return body


@register_model(
    default_input_shape=(224, 224, 3),
    min_input_size=32,
    feature_info=FEATURE_INFO,
    reference="Szegedy et al. 2014, Going deeper with convolutions (GoogLeNet, Table 1)",
    preprocessing="caffe",
)
def googlenet(
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    input_shape: Sequence[int] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    features_only: bool = False,
    aux_logits: bool = False,
    lrn: bool = True,
    batch_norm: bool = False,
    out_indices: Sequence[int] | None = None,
    name: str = "googlenet",
) -> keras.Model:
    """GoogLeNet (Inception v1).

    Args:
        include_top: add the global average pool, 40% dropout and ``predictions`` Dense layer.
        weights: ``None`` or the path of a weights file (there are no ImageNet weights).
        input_tensor: optional tensor to build on.
        input_shape: ``(height, width, channels)``; default 224x224x3, at least 32x32.
        pooling: with ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        classes: number of classes.
        classifier_activation: activation of the top (``None`` for logits).
        features_only: return the five feature maps of :data:`FEATURE_INFO`.
        out_indices: with ``features_only``, the stages to return (timm's argument).
        name: the model's name.
        aux_logits: add the two auxiliary classifiers (after 4a and 4d); the model then has
            three outputs ``[main, aux1, aux2]``. Needs ``include_top=True`` and an input whose
            4a grid is at least 5x5 (80x80 or more).
        lrn: local response normalisation after ``pool1`` and ``conv2``, as in the paper.
        batch_norm: batch normalisation after every conv (not in the paper; trains faster).

    Returns:
        The ``keras.Model``.

    Raises:
        InputShapeError: an input smaller than 32x32 (80x80 with ``aux_logits``).
        ValueError: bad ``weights``, ``pooling`` or ``classes``; ``aux_logits`` without the top
            or with ``weights``.
        ModelArgumentError: ``aux_logits`` with ``classes=0`` (no classifier to add them to).
    """
    if aux_logits and classes < 1:
        raise ModelArgumentError(f"googlenet: aux_logits=True adds two auxiliary classifiers, so it needs "
                                 f"classes >= 1, got classes={classes} (classes=0 means no classifier)")
    if aux_logits and (not include_top or features_only or weights is not None):
        raise ValueError(
            "googlenet: aux_logits=True needs include_top=True, features_only=False and "
            f"weights=None, got include_top={include_top}, features_only={features_only}, "
            f"weights={weights!r}"
        )
    aux = [] if aux_logits else None
    model = build_model(
        name=name,
        body=_make_body(lrn, batch_norm, aux, classes, classifier_activation),
        include_top=include_top,
        weights=weights,
        input_shape=input_shape,
        input_tensor=input_tensor,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        features_only=features_only, out_indices=out_indices,
        default_input_shape=(224, 224, 3),
        min_input_size=80 if aux_logits else 32,
        top=_top,
    )
    if aux_logits:
        model = keras.Model(model.inputs, [model.outputs[0], *aux], name=name)
    return model
