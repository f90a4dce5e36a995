"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) from a table of its five conv layers.

The paper split conv2, conv4 and conv5 over two GPUs, each half seeing only its half of the
channels: ``groups=2`` reproduces that (60,965,224 parameters with 1000 classes), ``groups=1``
is the one-GPU variant (62,378,344). Local response normalisation follows conv1 and conv2.

Example:
    >>> from kerascnn.models.alexnet import alexnet
    >>> model = alexnet(classes=10, input_shape=(227, 227, 3))
"""

from __future__ import annotations

import functools
from typing import Any

import keras
from keras import layers

from kerascnn.blocks import conv_bn_act
from kerascnn.layers import LocalResponseNormalization
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model
from kerascnn.models.vgg import fc_top

# (filters, kernel, stride, split over the two GPUs, LRN after, 3x3/2 max pool after)
CONVS = (
    (96, 11, 4, False, True, True),
    (256, 5, 1, True, True, True),
    (384, 3, 1, False, False, False),
    (384, 3, 1, True, False, False),
    (256, 3, 1, True, False, True),
)
MIN_INPUT_SIZE = 67  # the third max pool needs a 3x3 map


def feature_info() -> list[dict]:
    """The output of each max pool (after conv1, conv2, conv5); nominal reductions 8, 16, 32."""
    info, reduction = [], 1
    for i, (filters, _, stride, _, _, pool) in enumerate(CONVS, 1):
        reduction *= stride
        if pool:
            reduction *= 2
            info.append({"name": f"pool{i}", "channels": filters, "reduction": reduction})
    return info


@register_model(
    "alexnet",
    default_input_shape=(227, 227, 3),
    min_input_size=MIN_INPUT_SIZE,
    feature_info=feature_info(),
    reference="Krizhevsky, Sutskever & Hinton 2012, ImageNet Classification with Deep CNNs",
    preprocessing="caffe",
)
def alexnet(groups: int = 2, lrn: bool = True, dropout: float = 0.5, **kwargs: Any) -> keras.Model:
    """AlexNet: five convs (ReLU, ``valid``/``same`` as in the paper) and three dense layers.

    Args:
        groups: 2 for the paper's two-GPU grouped conv2/conv4/conv5, 1 for full convolutions.
        lrn: add local response normalisation after conv1 and conv2 (k=2, n=5, alpha=1e-4,
            beta=0.75 of the paper).
        dropout: dropout rate after fc6 and fc7.
        **kwargs: :func:`kerascnn.models.base.build_model`'s keras.applications-style arguments
            (``include_top``, ``weights`` (a file; no ImageNet weights), ``input_shape``,
            ``input_tensor``, ``pooling``, ``classes``, ``classifier_activation``,
            ``features_only``).

    Returns:
        The ``keras.Model``.

    Raises:
        ValueError: ``groups`` is not 1 or 2.
        InputShapeError: an input smaller than 67x67.
    """
    if groups not in (1, 2):
        raise ValueError(f"alexnet: groups must be 1 or 2, got {groups!r}")

    def body(x) -> list:
        features = []
        for i, (filters, kernel, stride, split, norm, pool) in enumerate(CONVS, 1):
            x = conv_bn_act(x, filters, kernel, stride, padding="valid" if i == 1 else "same",
                            groups=groups if split else 1, batch_norm=False, name=f"conv{i}")
            if norm and lrn:
                # the paper's alpha multiplies the plain sum; the layer's is divided by the size
                x = LocalResponseNormalization(size=5, alpha=5e-4, beta=0.75, bias=2.0, name=f"norm{i}")(x)
            if pool:
                x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
                features.append(x)
        return features

    top = functools.partial(fc_top, dropout=dropout, first=6)
    return build_model(name=kwargs.pop("name", "alexnet"), body=body, top=top, default_input_shape=(227, 227, 3),
                       min_input_size=MIN_INPUT_SIZE, **kwargs)
