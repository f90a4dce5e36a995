"""What every model builder shares: inputs, the classifier top, pooling, feature maps, weights.

A family module (``resnet.py``, ``vgg.py`` ...) writes only its body: a function from the input
tensor to the list of its stage outputs. :func:`build_model` does the rest the same way for
every family, following keras.applications' conventions.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import keras
from keras import layers

from kerascnn._keras_compat import run_through_graph
from kerascnn.errors import ImageDataFormatError, InputShapeError, ModelArgumentError

POOLINGS = (None, "avg", "max")


def classifier_top(x, classes: int, classifier_activation: str | None, name_prefix: str = ""):
    """Global average pooling then ``Dense(classes)`` named ``predictions`` (keras.applications).

    Args:
        x: the last feature map.
        classes: number of classes.
        classifier_activation: activation of the last layer (``"softmax"``, ``None`` for logits).
        name_prefix: optional prefix of the layer names.

    Returns:
        The class scores tensor.
    """
    x = layers.GlobalAveragePooling2D(name=name_prefix + "avg_pool")(x)
    return layers.Dense(classes, activation=classifier_activation, name=name_prefix + "predictions")(x)


def resolve_input(
    input_shape: Sequence[int | None] | None,
    input_tensor,
    default_input_shape: Sequence[int],
    min_input_size: int,
    weights: str | None,
    model_name: str,
):
    """Make the input layer and check that the network can take it.

    Returns:
        ``(inputs, img_input)``: the model inputs (``keras.Input`` or the source inputs of
        ``input_tensor``) and the tensor to feed the body.

    Raises:
        InputShapeError: the input is smaller than ``min_input_size``, is not 3-dimensional, or
            has other than 3 channels with ImageNet weights.
    """
    if input_shape is None:
        if input_tensor is not None and input_tensor.shape is not None:
            input_shape = tuple(input_tensor.shape[1:])
        else:
            input_shape = tuple(default_input_shape)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise InputShapeError(
            f"{model_name}: input_shape must be (height, width, channels), got {input_shape}"
        )
    height, width, channels = input_shape
    for size in (height, width):
        if size is not None and size < min_input_size:
            raise InputShapeError(
                f"{model_name}: input {height}x{width} is too small; its downsampling needs at "
                f"least {min_input_size}x{min_input_size}"
            )
    if weights == "imagenet" and channels != 3:
        raise InputShapeError(
            f"{model_name}: ImageNet weights need 3 input channels, got {channels}; use "
            "weights=None or convert grey images to RGB"
        )
    if input_tensor is None:
        img_input = layers.Input(shape=input_shape, name="input")
        return img_input, img_input
    if not keras.backend.is_keras_tensor(input_tensor):
        img_input = layers.Input(tensor=input_tensor, shape=input_shape, name="input")
        return img_input, img_input
    return keras.utils.get_source_inputs(input_tensor), input_tensor


def check_image_data_format(model_name: str) -> None:
    """Refuse to build while Keras' global layout is channels-first.

    keras.applications builds its models as ``(channels, height, width)`` then; kerascnn's models
    are channels-last only (their blocks, custom layers and weight ports assume it), so they refuse
    rather than build silently wrong.

    Raises:
        ImageDataFormatError: ``keras.config.image_data_format()`` is ``"channels_first"``.
    """
    layout = keras.config.image_data_format()
    if layout != "channels_last":
        raise ImageDataFormatError(
            f"{model_name}: kerascnn builds channels-last models only (inputs (height, width, channels)), "
            f"but keras.config.image_data_format() is {layout!r}; call "
            "keras.config.set_image_data_format('channels_last') before building"
        )


def stage_reductions(model: keras.Model) -> list[int]:
    """The nominal reduction of each output of ``model``: the product of the strides on the way
    from the input (the largest over branches), divided by the upsamplings.

    Args:
        model: a functional model of 2-D convolutions, pools, upsamplings and elementwise layers.

    Returns:
        One integer per output (``input size / output size`` with ``same`` padding).
    """

    def reduction(layer, *args, **kwargs):
        seen = [v for v in keras.tree.flatten((args, kwargs)) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        r = max(seen, default=1)
        if isinstance(layer, (layers.UpSampling2D, layers.Conv2DTranspose)):
            return r / (layer.size if isinstance(layer, layers.UpSampling2D) else layer.strides)[0]
        return r * getattr(layer, "strides", (1,))[0]

    outputs = run_through_graph(model, [1] * len(model.inputs), reduction)
    return [int(round(r)) for r in keras.tree.flatten(outputs)]


def check_weights_argument(weights: str | None, include_top: bool, classes: int, model_name: str) -> None:
    """Validate ``weights`` before building (keras.applications' rules).

    Raises:
        ValueError: ``weights`` is neither None, ``"imagenet"`` nor an existing file, or
            ImageNet weights are asked for with a top of other than 1000 classes.
    """
    if not (weights in (None, "imagenet") or os.path.exists(str(weights))):
        raise ValueError(
            f"{model_name}: weights must be None, 'imagenet' or the path of a weights file; "
            f"{weights!r} is none of these (no such file)"
        )
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            f"{model_name}: ImageNet weights with include_top=True need classes=1000, got {classes}"
        )


def build_model(
    *,
    name: str,
    body: Callable[[Any], list],
    include_top: bool = True,
    weights: str | None = None,
    input_shape: Sequence[int] | None = None,
    input_tensor=None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    default_input_shape: Sequence[int] = (224, 224, 3),
    min_input_size: int = 32,
    top: Callable[..., Any] | None = None,
    keras_app: Callable[..., keras.Model] | None = None,
) -> keras.Model:
    """Assemble a model from its body, following keras.applications' conventions.

    Args:
        name: the model's name.
        body: ``body(img_input) -> [stage outputs]``; the last is the final feature map.
        include_top: add the classifier (``top``) on the final feature map.
        weights: ``None``, ``"imagenet"`` (keras.applications' weights through
            :func:`kerascnn.port_weights`) or the path of a weights file.
        input_shape: ``(height, width, channels)``; the paper's when omitted.
        input_tensor: optional tensor to build on.
        pooling: with ``include_top=False``: ``None`` (4-D feature map), ``"avg"`` or ``"max"``.
        classes: number of classes of the top. ``0`` means no classifier, as timm's
            ``num_classes=0``: the pooled features (``pooling="avg"`` unless given; where
            keras.applications has no such value, ``include_top=False`` keeps its 4-D map).
        classifier_activation: activation of the top's last layer (``None`` gives logits).
        features_only: return one output per stage (multi-scale feature maps) instead.
        out_indices: with ``features_only``, the stages to return (timm's argument; negative
            indices count from the end); all when omitted.
        default_input_shape: the paper's input shape.
        min_input_size: the smallest height/width the body accepts.
        top: ``top(x, classes, classifier_activation) -> tensor``; default
            :func:`classifier_top`.
        keras_app: builds the keras.applications counterpart (same keyword arguments) for
            ``weights="imagenet"``.

    Returns:
        The ``keras.Model``, with a ``feature_info`` attribute: one ``{"name", "channels",
        "reduction"}`` dict per stage output (per returned stage with ``features_only``),
        computed from the built layers (so it follows width multipliers such as ``alpha``).

    Raises:
        ImageDataFormatError: Keras' global layout is channels-first.
        InputShapeError: the input cannot go through the network.
        ModelArgumentError: ``classes`` below 0, or ``out_indices`` that name no stage (or come
            without ``features_only``).
        ValueError: bad ``weights`` or ``pooling``.
        WeightsMismatchError: a weights file that does not fit.
    """
    check_image_data_format(name)
    if classes < 0:
        raise ModelArgumentError(f"{name}: classes must be >= 0 (0: no classifier), got {classes}")
    if classes == 0 and include_top and not features_only:
        include_top, pooling = False, pooling or "avg"
    if out_indices is not None and not features_only:
        raise ModelArgumentError(f"{name}: out_indices selects stages of features_only=True; features_only is False")
    check_weights_argument(weights, include_top and not features_only, classes, name)
    if pooling not in POOLINGS:
        raise ValueError(f"{name}: pooling must be one of {POOLINGS}, got {pooling!r}")
    if weights == "imagenet" and keras_app is None:
        raise ValueError(f"{name}: no ImageNet weights exist for this model; use weights=None or a file")
    inputs, img_input = resolve_input(
        input_shape, input_tensor, default_input_shape, min_input_size, weights, name
    )
    stages = list(body(img_input))
    if out_indices is not None:
        bad = [i for i in out_indices if not -len(stages) <= i < len(stages)]
        if bad or not out_indices:
            raise ModelArgumentError(
                f"{name}: out_indices must be indices of its {len(stages)} stages "
                f"(-{len(stages)}..{len(stages) - 1}), got {tuple(out_indices)}"
            )
        stages = [stages[i] for i in out_indices]
    features = keras.Model(inputs, stages, name=name)
    feature_info = tuple(
        {"name": layer_name, "channels": int(out.shape[-1]), "reduction": reduction}
        for layer_name, out, reduction in zip(features.output_names, stages, stage_reductions(features))
    )
    if features_only:
        model = features
    else:
        x = stages[-1]
        if include_top:
            x = (top or classifier_top)(x, classes, classifier_activation)
        elif pooling == "avg":
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = layers.GlobalMaxPooling2D(name="max_pool")(x)
        model = keras.Model(inputs, x, name=name)
    model.feature_info = feature_info
    if weights is not None:
        from kerascnn.models.weights import load_model_weights

        load_model_weights(
            model, weights, keras_app=keras_app, include_top=include_top and not features_only,
            input_shape=tuple(model.inputs[0].shape[1:]),
        )
    return model


def single_nested_model(model: keras.Model, what: str) -> keras.Model:
    """The one nested ``keras.Model`` of ``model`` (a tower, a backbone).

    Args:
        model: a functional model that wraps exactly one sub-model.
        what: what the nested model is, for the error message.

    Raises:
        ValueError: ``model`` has no nested model, or more than one.
    """
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(
            f"expected exactly one nested {what} in {model.name!r}, found {len(nested)}: "
            f"{[m.name for m in nested]}"
        )
    return nested[0]
