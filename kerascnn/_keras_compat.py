"""The only module that touches Keras internals: what Keras 3 offers no public API for.

kerascnn walks functional graphs layer by layer (:mod:`kerascnn.inspect`) and checks that a
model is a simple chain (:mod:`kerascnn.detection.sliding_windows`); Keras 3 exposes neither.
Each helper here is tested in ``tests/test_keras_compat.py``, so a Keras release that changes
one of these internals fails there, in one place, instead of deep inside a feature.
"""

from __future__ import annotations

from typing import Any, Callable


def _graph(model: Any) -> Any:
    """The functional graph of a model: a built ``Sequential`` keeps one in ``_functional``."""
    return getattr(model, "_functional", None) or model


def is_graph_model(model: Any) -> bool:
    """Whether ``model`` is a functional or Sequential model (a graph of layers that can be walked).

    Args:
        model: any object.

    Returns:
        ``True`` for ``keras.Model(inputs, outputs)`` and built ``keras.Sequential`` models.
    """
    return hasattr(_graph(model), "_run_through_graph")


def run_through_graph(model: Any, inputs: Any, call_fn: Callable[..., Any]) -> Any:
    """Walk a graph model from ``inputs``, calling ``call_fn(layer, *args, **kwargs)`` for each layer.

    Args:
        model: a graph model (see :func:`is_graph_model`).
        inputs: tensors (symbolic or real) standing for the model's inputs.
        call_fn: called for every layer in topological order with that layer's inputs; its
            return value becomes the layer's outputs downstream.

    Returns:
        The model's outputs as ``call_fn`` computed them.
    """
    return _graph(model)._run_through_graph(inputs, operation_fn=lambda op: op, call_fn=call_fn)


def call_count(layer: Any) -> int:
    """How many times ``layer`` is called in the graphs it belongs to (its inbound nodes).

    Args:
        layer: a layer of a functional model.

    Returns:
        The number of calls; a layer shared by two branches counts 2.
    """
    return len(layer._inbound_nodes)
