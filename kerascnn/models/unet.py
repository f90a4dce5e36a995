"""U-Net (Ronneberger et al. 2015): a contracting path, an expanding path and skip connections.

Each level of the contracting path is two 3x3 convs + ReLU then a 2x2 max pool, doubling the
channels (64, 128, 256, 512, 1024 at the bottom); each level of the expanding path is a 2x2
up-convolution that halves the channels, the concatenation with the contracting path's map at
that level, and two 3x3 convs; a 1x1 conv maps to the classes.

With ``padding="valid"`` (the paper) the convs are unpadded, so the contracting maps are
center-cropped before concatenation and the output is smaller than the input: 572x572 in,
388x388 out. With ``padding="same"`` the output has the input's size (which must then be a
multiple of ``2 ** depth``).

The registry's conventions, for a segmentation network:

- ``include_top=True``: the 1x1 conv ``predictions`` with ``classes`` channels and
  ``classifier_activation`` per pixel (softmax over the classes).
- ``include_top=False``: the last expanding-path map (``base_filters`` channels); with
  ``pooling="avg"``/``"max"`` it is globally pooled into a vector.
- ``features_only=True``: the contracting path's maps, one per level plus the bottom
  (:func:`feature_info`), as an encoder for other heads.

Example:
    >>> from kerascnn.models.unet import unet
    >>> model = unet(input_shape=(64, 64, 3), classes=4, padding="same", base_filters=16)
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from kerascnn import blocks
from kerascnn.errors import InputShapeError
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

PADDINGS = ("valid", "same")


def feature_info(depth: int = 4, base_filters: int = 64) -> tuple[dict, ...]:
    """The contracting path's maps: ``down1_2_relu`` ... ``down{depth}_2_relu``, ``bottom_2_relu``."""
    names = [f"down{i + 1}_2_relu" for i in range(depth)] + ["bottom_2_relu"]
    return tuple(
        {"name": name, "channels": base_filters * 2**i, "reduction": 2**i} for i, name in enumerate(names)
    )


def valid_sizes(depth: int) -> tuple[int, int]:
    """``(first, step)``: with unpadded convs, input sizes ``first + k * step`` (k >= 0) work.

    Every max pool must see an even size, and the output must keep at least one pixel.
    """
    step = 2**depth
    first = next(n for n in range(1, 8 * step * (depth + 4)) if _valid_output_size(n, depth) is not None)
    return first, step


def _valid_output_size(n: int, depth: int) -> int | None:
    """Output size of the unpadded U-Net for input size ``n``, ``None`` if it does not fit."""
    for _ in range(depth):
        n -= 4
        if n <= 0 or n % 2:
            return None
        n //= 2
    n -= 4
    for _ in range(depth):
        n = 2 * n - 4
        if n <= 0:
            return None
    return n if n > 0 else None


def _check_size(size: int | None, depth: int, padding: str) -> None:
    if padding == "same":
        if size is not None and size % 2**depth:
            raise InputShapeError(
                f"unet: with padding='same' and depth={depth} the input size must be a multiple "
                f"of {2 ** depth}, got {size}"
            )
        return
    if size is None:
        raise InputShapeError("unet: padding='valid' needs a fixed input height and width, got None")
    if _valid_output_size(size, depth) is None:
        first, step = valid_sizes(depth)
        below = first + max(0, (size - first) // step) * step
        hint = f"{below} or {below + step}" if below < size else f"{below}"
        raise InputShapeError(
            f"unet: with padding='valid' and depth={depth} the input size must be {first} + "
            f"{step}k (every max pool needs an even size), got {size}; try {hint}"
        )


def _double_conv(x, filters: int, padding: str, batch_norm: bool, name: str):
    for i in (1, 2):
        x = blocks.conv_bn_act(x, filters, 3, padding=padding, batch_norm=batch_norm, name=f"{name}_{i}")
    return x


def _center_crop_to(skip, target, name: str):
    """Crop ``skip`` around its center to ``target``'s height and width (static sizes)."""
    dh = skip.shape[1] - target.shape[1]
    dw = skip.shape[2] - target.shape[2]
    if dh == 0 and dw == 0:
        return skip
    return layers.Cropping2D(((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), name=name)(skip)


def _make_body(depth: int, base_filters: int, padding: str, batch_norm: bool, features_only: bool):
    def body(img_input) -> list:
        for size in img_input.shape[1:3]:
            _check_size(size, depth, padding)
        skips = []
        x = img_input
        for i in range(1, depth + 1):
            x = _double_conv(x, base_filters * 2 ** (i - 1), padding, batch_norm, f"down{i}")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"down{i}_pool")(x)
        x = _double_conv(x, base_filters * 2**depth, padding, batch_norm, "bottom")
        if features_only:
            return skips + [x]
        for i in range(depth, 0, -1):
            filters = base_filters * 2 ** (i - 1)
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{i}_upconv")(x)
            skip = _center_crop_to(skips[i - 1], x, f"up{i}_crop") if padding == "valid" else skips[i - 1]
            x = layers.Concatenate(axis=-1, name=f"up{i}_concat")([skip, x])
            x = _double_conv(x, filters, padding, batch_norm, f"up{i}")
        return [x]

    return body


def _head(x, classes: int, classifier_activation: str | None):
    """1x1 conv to ``classes`` channels, per-pixel activation (``predictions``)."""
    return layers.Conv2D(classes, 1, activation=classifier_activation, name="predictions")(x)


@register_model(
    default_input_shape=(572, 572, 1),
    min_input_size=valid_sizes(4)[0],
    feature_info=feature_info(),
    reference="Ronneberger et al. 2015, U-Net: Convolutional Networks for Biomedical Image Segmentation",
    preprocessing="tf",
)
def unet(
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    input_shape: Sequence[int] | None = None,
    pooling: str | None = None,
    classes: int = 2,
    classifier_activation: str | None = "softmax",
    features_only: bool = False,
    depth: int = 4,
    base_filters: int = 64,
    padding: str = "valid",
    batch_norm: bool = False,
    out_indices: Sequence[int] | None = None,
    name: str = "unet",
) -> keras.Model:
    """U-Net for per-pixel classification (segmentation).

    Args:
        include_top: end with the 1x1 conv ``predictions`` (``classes`` channels per pixel);
            otherwise the last expanding-path map (``base_filters`` channels).
        weights: ``None`` or the path of a weights file (there are no ImageNet weights).
        input_tensor: optional tensor to build on.
        input_shape: ``(height, width, channels)``; default 572x572x1 (the paper's).
        pooling: with ``include_top=False``: ``None`` (the map), ``"avg"`` or ``"max"``.
        classes: output channels (the paper: 2, cell and background).
        classifier_activation: per-pixel activation of the head (``None`` for logits).
        features_only: return the contracting path's maps (``depth + 1`` of them).
        out_indices: with ``features_only``, the stages to return (timm's argument).
        name: the model's name.
        depth: number of 2x2 max pools (4 in the paper).
        base_filters: channels of the first level (64 in the paper), doubled at each level.
        padding: ``"valid"`` (the paper: output smaller than input, crop-and-concatenate) or
            ``"same"`` (output of the input's size).
        batch_norm: batch normalisation after every 3x3 conv (not in the paper).

    Returns:
        The ``keras.Model``.

    Raises:
        InputShapeError: a size the network cannot take (``valid``: not ``first + k * 2**depth``,
            see :func:`valid_sizes`; ``same``: not a multiple of ``2**depth``).
        ValueError: bad ``padding``, ``depth``, ``weights`` or ``pooling``.
    """
    if padding not in PADDINGS:
        raise ValueError(f"unet: padding must be one of {PADDINGS}, got {padding!r}")
    if depth < 1 or base_filters < 1:
        raise ValueError(f"unet: depth and base_filters must be >= 1, got {depth} and {base_filters}")
    return build_model(
        name=name,
        body=_make_body(depth, base_filters, padding, batch_norm, features_only),
        include_top=include_top,
        weights=weights,
        input_shape=input_shape,
        input_tensor=input_tensor,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        features_only=features_only, out_indices=out_indices,
        default_input_shape=(572, 572, 1),
        min_input_size=1,
        top=_head,
    )
