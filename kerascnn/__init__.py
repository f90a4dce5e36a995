"""kerascnn: CNN building blocks, classic architectures and face verification for Keras 3.

Importing ``kerascnn`` is cheap: the public names below are loaded on first use, so the
command line starts fast and ``import kerascnn`` does not pull in TensorFlow until needed.
Keras picks the backend as usual (``KERAS_BACKEND``, else ``~/.keras/keras.json``, else
TensorFlow); see :mod:`kerascnn.backends` for what runs where.

Example:
    >>> import kerascnn
    >>> model = kerascnn.create_model("resnet18", input_shape=(64, 64, 3), classes=10)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "list_models": "kerascnn.models.registry",
    "create_model": "kerascnn.models.registry",
    "register_model": "kerascnn.models.registry",
    "model_info": "kerascnn.models.registry",
    "port_weights": "kerascnn.models.weights",
    "layer_table": "kerascnn.inspect",
    "load_face_model": "kerascnn.face.model",
    "finetune_face_model": "kerascnn.facetrain.finetune",
    "build_embedding_model": "kerascnn.siamese", "TripletLoss": "kerascnn.losses", "evaluate_pairs": "kerascnn.evaluation",
}

_SUBMODULES = {
    "backends", "blocks", "layers", "models", "inspect", "data", "losses", "siamese", "evaluation",
    "training", "transfer", "face", "facetrain", "visualize", "errors", "detection", "style", "adversarial",
}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"kerascnn.{name}")
    raise AttributeError(f"module 'kerascnn' has no attribute {name!r}")


def __dir__():
    return __all__
