"""The model registry: one table of names to builders that the CLI and the tests share.

Example:
    >>> from kerascnn import list_models, create_model
    >>> list_models("resnet*")[:3]
    ['resnet101', 'resnet101_v2', 'resnet152']
    >>> model = create_model("resnet18", input_shape=(64, 64, 3), classes=10)
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from kerascnn.errors import UnknownModelError

# modules whose import registers models (one per family)
_FAMILY_MODULES = (
    "lenet", "alexnet", "vgg", "googlenet", "inception", "resnet", "densenet", "mobilenet", "unet",
    "dlib_resnet", "squeezenet", "yolo", "inception_resnet",
)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model without building it.

    Attributes:
        name: registry name, e.g. ``"resnet50"``.
        builder: the function that builds it (keras.applications-style keyword arguments).
        default_input_shape: the input shape of the paper / keras.applications.
        min_input_size: the smallest spatial size the network accepts.
        feature_info: one dict per stage of ``features_only=True``: ``name`` (the layer whose
            output is returned), ``channels`` and ``reduction`` (input size / feature size).
        reference: where the architecture comes from (paper, keras.applications class).
        preprocessing: the input normalisation its weights expect, as the ``mode`` of
            ``keras.applications.imagenet_utils.preprocess_input``: ``"caffe"`` (BGR, mean
            subtracted), ``"torch"`` (0-1, ImageNet mean/std), ``"tf"`` (-1 to 1) or ``"none"`` (0..255:
            the model normalises its input itself).
    """

    name: str
    builder: Callable[..., Any]
    default_input_shape: tuple[int, int, int]
    min_input_size: int
    feature_info: tuple[dict, ...] = field(default_factory=tuple)
    reference: str = ""
    preprocessing: str = "tf"


_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def register_model(
    name: str | None = None,
    *,
    default_input_shape: tuple[int, int, int] = (224, 224, 3),
    min_input_size: int = 32,
    feature_info: list[dict] | tuple[dict, ...] = (),
    reference: str = "",
    preprocessing: str = "tf",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that adds a model builder to the registry.

    Args:
        name: registry name; defaults to the function's name.
        default_input_shape: input shape used when the caller gives none.
        min_input_size: smallest height/width the network accepts.
        feature_info: per-stage ``{"name", "channels", "reduction"}`` dicts.
        reference: paper or keras.applications counterpart.
        preprocessing: ``"caffe"``, ``"torch"`` or ``"tf"`` (see :class:`ModelInfo`).

    Returns:
        The decorator; it returns the builder unchanged.
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or fn.__name__
        if key in _REGISTRY and _REGISTRY[key].builder is not fn:
            raise ValueError(f"a model named {key!r} is already registered")
        _REGISTRY[key] = ModelInfo(
            key, fn, tuple(default_input_shape), min_input_size, tuple(feature_info), reference,
            preprocessing,
        )
        return fn

    return decorator


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for module in _FAMILY_MODULES:
            importlib.import_module(f"kerascnn.models.{module}")
        _loaded = True


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered models, sorted.

    Args:
        pattern: optional shell-style wildcard (``"resnet*"``, ``"*_v2"``).

    Returns:
        The matching names.
    """
    _load_families()
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``.

    Raises:
        UnknownModelError: ``name`` is not registered; the message lists close matches.
    """
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model {name!r}.{hint} See kerascnn.list_models() for all "
            f"{len(_REGISTRY)} names."
        )
    return _REGISTRY[name]


def create_model(model_name: str, /, **kwargs: Any):
    """Build a registered model.

    Args:
        model_name: registry name (see :func:`list_models`); positional, so that ``name=``
            can be Keras' model name: ``create_model("resnet18", name="my_model")``.
        **kwargs: the builder's keyword arguments (``include_top``, ``weights``,
            ``input_shape``, ``input_tensor``, ``pooling``, ``classes`` (``0``: no classifier,
            as timm's ``num_classes=0``), ``classifier_activation``, ``features_only``,
            ``out_indices``, ``name`` and family-specific ones).

    Returns:
        A ``keras.Model`` with a ``feature_info`` attribute (the stages of this very model,
        from its actual widths; :func:`model_info` gives the defaults').

    Raises:
        UnknownModelError: ``model_name`` is not registered.
        ImageDataFormatError: Keras' global layout is channels-first.
    """
    return model_info(model_name).builder(**kwargs)
