"""Fine-tuning pretrained networks: new head, frozen backbone, two-phase schedule.

The recipe of Keras' transfer-learning guide, for registry models, keras.applications models
and saved ``.keras`` models alike:

1. :func:`build_finetune_model`: the pretrained backbone (its classifier cut off), then a new
   head (pooling, dropout, ``Dense(num_classes)``, float32
   softmax);
2. :func:`freeze_backbone` and train the head with a normal learning rate;
3. :func:`unfreeze_top` the top N stages and train on with a lower learning rate, optionally
   lower still for lower stages (:class:`LayerwiseAdam`).

:func:`finetune` runs steps 2 and 3.

Example:
    >>> from kerascnn import transfer
    >>> model = transfer.build_finetune_model("resnet18", num_classes=40, input_shape=(64, 64, 3),
    ...                                       weights="runs/lfw/backbone.weights.h5")
    >>> history = transfer.finetune(model, train_ds, val_ds, head_epochs=5, finetune_epochs=10,
    ...                             unfreeze_stages=2, per_stage_lr_decay=0.5)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
from keras import layers

from kerascnn.errors import UnknownModelError
from kerascnn.models.base import single_nested_model


# --- building -----------------------------------------------------------------------------------
def _cut_at_features(model: keras.Model) -> keras.Model:
    """The model up to its last 4-D output (its classifier cut off)."""
    if len(model.outputs) == 1 and len(model.outputs[0].shape) == 4:
        return model
    last = None
    for layer in model.layers:
        if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == 4:
            last = layer
    if last is None:
        raise ValueError(f"model {model.name!r} has no 4-D feature map to use as a backbone")
    return keras.Model(model.inputs, last.output, name=model.name)


def _make_backbone(backbone: Any, input_shape: Sequence[int] | None, weights: str | None) -> keras.Model:
    if isinstance(backbone, (str, os.PathLike)) and str(backbone).endswith(".keras"):
        if not Path(backbone).is_file():
            raise FileNotFoundError(f"backbone file {os.fspath(backbone)} does not exist")
        backbone = keras.saving.load_model(backbone)
    if isinstance(backbone, str):
        from kerascnn.models.registry import create_model

        return create_model(backbone, include_top=False, weights=weights, input_shape=input_shape)
    if isinstance(backbone, keras.Model):
        if weights == "imagenet":
            raise ValueError("weights='imagenet' needs a registry name or a keras.applications builder, got a built model")
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"weights file {os.fspath(weights)} does not exist")
            backbone.load_weights(weights)
        return _cut_at_features(backbone)
    if callable(backbone):  # a keras.applications builder such as keras.applications.MobileNetV2
        return backbone(include_top=False, weights=weights, input_shape=tuple(input_shape) if input_shape else None)
    raise TypeError(
        "backbone must be a registry model name, a .keras file, a keras.Model or a keras.applications "
        f"builder, got {type(backbone).__name__}"
    )


def build_finetune_model(
    backbone: str | os.PathLike | keras.Model | Callable[..., keras.Model],
    num_classes: int,
    input_shape: Sequence[int] | None = None,
    weights: str | None = None,
    dropout: float = 0.2,
    pooling: str = "avg",
    name: str | None = None,
) -> keras.Model:
    """A pretrained backbone with a new classification head.

    The backbone is kept as one nested model (a layer named after it). Its BatchNormalization
    layers stay in inference mode through :func:`freeze_backbone` and :func:`unfreeze_top`:
    they keep ``trainable=False``, which in Keras 3 makes a BatchNormalization layer normalise
    with its moving statistics and never update them. Updating those statistics from a small
    new dataset destroys what pretraining learned (Keras' transfer-learning advice). Calling the
    backbone with ``training=False`` would not be enough in Keras 3: ``fit``'s ``training=True``
    reaches the layers of nested models (a test shows the statistics moving). The head is ``GlobalAveragePooling2D`` (or max), ``Dropout``, ``Dense`` and a
    float32 softmax (``Activation("softmax", dtype="float32")``, so mixed precision keeps the
    output and the loss in float32).

    Args:
        backbone: a registry name (``"resnet18"``), the path of a saved ``.keras`` model, a
            ``keras.Model`` (a classifier's head is cut off at its last 4-D feature map) or a
            keras.applications builder (``keras.applications.MobileNetV2``).
        num_classes: classes of the new task.
        input_shape: input shape for registry names and builders.
        weights: ``None``, ``"imagenet"`` (registry names and builders) or a weights file.
        dropout: dropout rate before the new ``Dense`` (0 for none).
        pooling: ``"avg"`` or ``"max"``.
        name: model name; default ``<backbone>_finetune``.

    Returns:
        The model; its ``predictions`` layer outputs float32 class probabilities.

    Raises:
        UnknownModelError: an unknown registry name.
        FileNotFoundError: a missing ``.keras`` or weights file.
        WeightsMismatchError: a weights file that does not fit a registry backbone.
        TypeError: ``backbone`` is none of the accepted kinds.
        ValueError: a bad ``pooling``, ``num_classes`` or ``dropout``.
    """
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    base = _make_backbone(backbone, input_shape, weights)
    inputs = keras.Input(base.input_shape[1:], name="input")
    x = base(inputs)
    pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
    x = pool(name="head_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(num_classes, name="head_dense")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name or f"{base.name}_finetune")


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone of a :func:`build_finetune_model` model.

    Raises:
        ValueError: the model has not exactly one nested model.
    """
    return single_nested_model(model, "backbone (a build_finetune_model model)")


# --- freezing -----------------------------------------------------------------------------------
def stage_ends(backbone: keras.Model) -> list[str]:
    """Names of the layers that end each stage of a backbone, from bottom to top.

    Registry models give their ``feature_info`` stage names. For other models (keras.applications,
    saved models) a stage is the run of layers at the same output resolution (reduction 2, 4,
    8 ...), as in ``feature_info``: its end is the last layer at that resolution.

    Args:
        backbone: the backbone model.

    Returns:
        The stage-end layer names.
    """
    from kerascnn.models.registry import model_info

    names = {layer.name for layer in backbone.layers}
    try:
        ends = [stage["name"] for stage in model_info(backbone.name).feature_info]
    except UnknownModelError:
        ends = []
    if ends and all(end in names for end in ends):
        return ends
    size = backbone.input_shape[1]
    last_by_level: dict[int, str] = {}
    for layer in backbone.layers:
        shape = layer.output.shape
        if len(shape) == 4 and shape[1]:
            level = round(math.log2(size / shape[1]))
            if level >= 1:
                last_by_level[level] = layer.name
    return [last_by_level[level] for level in sorted(last_by_level)]


def freeze_backbone(model: keras.Model) -> keras.Model:
    """Freeze the whole backbone (the head stays trainable); recompile afterwards.

    Frozen BatchNormalization layers run in inference mode in Keras 3: their moving statistics
    do not move.

    Returns:
        The same model.
    """
    get_backbone(model).trainable = False
    return model


def unfreeze_top(model: keras.Model, n_stages: int, ends: Sequence[str] | None = None) -> list[list[str]]:
    """Make the top ``n_stages`` stages of the backbone trainable, freeze the rest; recompile after.

    BatchNormalization layers stay frozen, also in the unfrozen stages, so that they keep
    normalising with their fixed moving statistics (inference mode; see
    :func:`build_finetune_model`).

    Args:
        model: a :func:`build_finetune_model` model.
        n_stages: number of stages to unfreeze, counted from the top (0 unfreezes nothing).
        ends: stage-end layer names, bottom to top; default :func:`stage_ends`.

    Returns:
        The names of the layers of each unfrozen stage, from the top stage down.

    Raises:
        ValueError: ``n_stages`` is negative or more than the backbone's number of stages.
    """
    backbone = get_backbone(model)
    ends = list(ends or stage_ends(backbone))
    if not 0 <= n_stages <= len(ends):
        raise ValueError(
            f"n_stages must be between 0 and the backbone's {len(ends)} stages ({', '.join(ends)}), got {n_stages}"
        )
    index = {layer.name: i for i, layer in enumerate(backbone.layers)}
    bounds = [-1] + [index[end] for end in ends]
    bounds[-1] = len(backbone.layers) - 1  # layers after the last stage end belong to the top stage
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    stages = []
    for k in range(len(ends) - n_stages, len(ends)):
        stage = backbone.layers[bounds[k] + 1: bounds[k + 1] + 1]
        for layer in stage:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        stages.append([layer.name for layer in stage])
    return stages[::-1]


# --- layer-wise learning rates ---------------------------------------------------------------
@keras.saving.register_keras_serializable(package="kerascnn")
class LayerwiseAdam(keras.optimizers.Adam):
    """Adam with a learning-rate multiplier per variable (layer-wise learning rates).

    A variable whose ``path`` is in ``lr_multipliers`` is updated with ``learning_rate *
    multiplier``, the others with ``learning_rate``. Scaling the gradients instead would not
    work with Adam, whose update does not depend on the gradient's scale.

    Args:
        learning_rate: the base learning rate (float or schedule).
        lr_multipliers: ``{variable.path: multiplier}``.
        **kwargs: ``keras.optimizers.Adam``'s other arguments.
    """

    def __init__(self, learning_rate=0.001, lr_multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self._factors: list[float] = []

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._factors = [float(self.lr_multipliers.get(v.path, 1.0)) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        return super().update_step(gradient, variable, learning_rate * factor if factor != 1.0 else learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers}


def stage_lr_multipliers(model: keras.Model, stages: Sequence[Sequence[str]], decay: float) -> dict[str, float]:
    """``{variable.path: decay ** k}`` for the variables of stage ``k`` (0 = top stage).

    Args:
        model: a :func:`build_finetune_model` model.
        stages: layer names per stage, top stage first (what :func:`unfreeze_top` returns).
        decay: learning-rate factor from one stage to the one below (``0 < decay <= 1``).

    Returns:
        The multipliers (the head's variables are left at 1).

    Raises:
        ValueError: ``decay`` is not in ``(0, 1]``.
    """
    if not 0 < decay <= 1:
        raise ValueError(f"per_stage_lr_decay must be in (0, 1], got {decay}")
    backbone = get_backbone(model)
    multipliers = {}
    for k, names in enumerate(stages):
        for name in names:
            for variable in backbone.get_layer(name).trainable_weights:
                multipliers[variable.path] = decay ** k
    return multipliers


# --- the two-phase schedule ------------------------------------------------------------------
def finetune(
    model: keras.Model,
    train_ds,
    val_ds=None,
    head_epochs: int = 5,
    finetune_epochs: int = 5,
    head_lr: float = 1e-3,
    finetune_lr: float = 1e-4,
    unfreeze_stages: int = 2,
    per_stage_lr_decay: float | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: str | int = "auto",
) -> dict[str, list[float]]:
    """Two-phase fine-tuning: the head on a frozen backbone, then the top stages too.

    Phase 1 trains the head with Adam at ``head_lr`` for ``head_epochs``. Phase 2 unfreezes
    the top ``unfreeze_stages`` stages and trains everything trainable with a lower
    ``finetune_lr`` for ``finetune_epochs`` more; with ``per_stage_lr_decay=d`` stage ``k``
    below the top learns at ``finetune_lr * d**k`` (:class:`LayerwiseAdam`). Both phases use
    plain ``model.fit`` (epochs numbered on from phase 1).

    Args:
        model: a :func:`build_finetune_model` model.
        train_ds: ``(images, labels)`` batches.
        val_ds: optional validation batches.
        head_epochs: epochs of phase 1.
        finetune_epochs: epochs of phase 2 (0 skips it).
        head_lr: learning rate of phase 1.
        finetune_lr: learning rate of phase 2 (of its top stage and of the head).
        unfreeze_stages: stages unfrozen in phase 2.
        per_stage_lr_decay: optional learning-rate factor per stage going down.
        callbacks: Keras callbacks for both phases.
        verbose: ``model.fit``'s verbosity.

    Returns:
        The history of both phases, ``{metric: [one value per epoch]}``.
    """
    from kerascnn.training import compile_model

    history: dict[str, list[float]] = {}

    def run(initial_epoch: int, epochs: int) -> None:
        result = model.fit(
            train_ds, validation_data=val_ds, initial_epoch=initial_epoch, epochs=epochs,
            callbacks=list(callbacks), verbose=verbose, shuffle=False,
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)

    freeze_backbone(model)
    compile_model(model, optimizer=keras.optimizers.Adam(head_lr))
    run(0, head_epochs)
    if finetune_epochs:
        stages = unfreeze_top(model, unfreeze_stages)
        multipliers = stage_lr_multipliers(model, stages, per_stage_lr_decay) if per_stage_lr_decay else {}
        compile_model(model, optimizer=LayerwiseAdam(finetune_lr, lr_multipliers=multipliers))
        run(head_epochs, head_epochs + finetune_epochs)
    return history
