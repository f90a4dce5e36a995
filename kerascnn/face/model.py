"""The default face embedder shipped with kerascnn, its model card and its calibration.

:func:`load_face_model` loads ``kerascnn/assets/face_model.keras`` (no network): aligned RGB face
crops in (``float32`` 0..255, square, the size of ``model.input_shape[1:3]``, aligned on the
5-point template of :mod:`kerascnn.face.align`; all normalisation is inside the model), 128-d
unit vectors out. The JSON *card* beside a model file (same name, ``.json``) says how it was
trained and scored, and holds its *calibration*: the decision thresholds.

Calibration format (a dict, stored under ``"calibration"`` in the card)::

    {"metric": "cosine",            # or "euclidean" (L2 distance of unit vectors)
     "threshold": 0.41,             # best-accuracy threshold (cosine: match when >=)
     "threshold_far_1e-3": 0.55,    # threshold with a false accept rate of 1e-3 (optional)
     "source": "how it was measured"}

Any other keys (``accuracy``, ``far``, ``pairs``...) are kept as given. The open-set (1:N)
operating points of :func:`kerascnn.face.verify.calibrate_open_set` are stored beside it, under
``"open_set_calibration"`` (:func:`save_open_set_calibration`, :func:`load_open_set_calibration`).

Example:
    >>> import kerascnn
    >>> model = kerascnn.load_face_model()
    >>> model.input_shape, model.output_shape
    ((None, 112, 112, 3), (None, 128))
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import keras

from kerascnn.blocks import conv_bn_act, residual_block
from kerascnn.errors import FaceModelError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = ASSETS / "face_model.keras"
METRICS = ("cosine", "euclidean")


def _model_path(path: str | os.PathLike | None) -> Path:
    return DEFAULT_MODEL if path is None else Path(path)


def card_path(model_path: str | os.PathLike | None = None) -> Path:
    """The card file of a model: the model's path with the suffix ``.json``."""
    return _model_path(model_path).with_suffix(".json")


def load_face_model(path: str | os.PathLike | None = None) -> keras.Model:
    """Load a face embedder (default: the one shipped with kerascnn), offline, in safe mode.

    Args:
        path: a ``.keras`` embedder; ``None`` for the shipped default model.

    Returns:
        A Keras model: ``(batch, size, size, 3)`` float32 RGB 0..255 in, ``(batch, dim)`` unit
        vectors out.

    Raises:
        FaceModelError: the file is missing, is not a Keras model, or does not map images to
            vectors.
    """
    path = _model_path(path)
    if not path.is_file():
        raise FaceModelError(f"face model {path} does not exist (expected a .keras file)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise FaceModelError(f"cannot load face model {path}: {exc}") from exc
    if len(model.input_shape) != 4 or model.input_shape[-1] != 3 or len(model.output_shape) != 2:
        raise FaceModelError(
            f"face model {path} must map (batch, h, w, 3) images to (batch, dim) vectors, "
            f"got {model.input_shape} -> {model.output_shape}"
        )
    return model


def load_face_model_card(path: str | os.PathLike | None = None) -> dict:
    """The JSON card beside a model (default: the shipped model's).

    Args:
        path: the ``.keras`` model whose card to read (``None``: the shipped one).

    Returns:
        The card as a dict.

    Raises:
        FaceModelError: the card is missing or is not a JSON object.
    """
    card = card_path(path)
    if not card.is_file():
        raise FaceModelError(f"model card {card} does not exist (expected the JSON card beside the model)")
    try:
        data = json.loads(card.read_text())
    except (OSError, ValueError) as exc:
        raise FaceModelError(f"cannot read model card {card}: {exc}") from exc
    if not isinstance(data, dict):
        raise FaceModelError(f"model card {card} must hold a JSON object, got {type(data).__name__}")
    return data


def _check_calibration(calibration, where: str) -> dict:
    if not isinstance(calibration, dict):
        raise FaceModelError(f"{where}: calibration must be a dict, got {type(calibration).__name__}")
    metric = calibration.get("metric")
    if metric not in METRICS:
        raise FaceModelError(f"{where}: calibration metric must be one of {METRICS}, got {metric!r}")
    for key in ("threshold", "threshold_far_1e-3"):
        value = calibration.get(key)
        if key == "threshold" or value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise FaceModelError(f"{where}: calibration {key} must be a finite number, got {value!r}")
    return calibration


def load_calibration(model_path: str | os.PathLike | None = None) -> dict:
    """The calibration stored in a model's card (see the module docstring for the format).

    Args:
        model_path: the ``.keras`` model (``None``: the shipped one).

    Returns:
        The calibration dict, with at least ``metric`` and ``threshold``.

    Raises:
        FaceModelError: no card, no calibration in it, or a malformed one.
    """
    card = load_face_model_card(model_path)
    if "calibration" not in card:
        raise FaceModelError(f"model card {card_path(model_path)} has no 'calibration' entry")
    return _check_calibration(card["calibration"], str(card_path(model_path)))


def save_calibration(model_path: str | os.PathLike, calibration: dict) -> Path:
    """Store a calibration in the card beside ``model_path`` (created when missing).

    The rest of an existing card is kept; its ``calibration`` entry is replaced.

    Args:
        model_path: the ``.keras`` model the thresholds belong to.
        calibration: ``{"metric", "threshold", ["threshold_far_1e-3"], ...}``.

    Returns:
        The card's path.

    Raises:
        FaceModelError: a malformed calibration, or an existing card that is not valid JSON.
    """
    card = card_path(model_path)
    _check_calibration(calibration, str(card))
    data = load_face_model_card(model_path) if card.is_file() else {"model": Path(model_path).name}
    data["calibration"] = dict(calibration)
    tmp = card.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, card)
    return card


def load_open_set_calibration(model_path: str | os.PathLike | None = None) -> dict | None:
    """The open-set (1:N) calibration stored in a model's card, or None when it has none.

    See :func:`kerascnn.face.verify.calibrate_open_set` for the format (stored under
    ``"open_set_calibration"``, beside the 1:1 ``"calibration"``).

    Raises:
        FaceModelError: no card, or a malformed entry.
    """
    card = load_face_model_card(model_path)
    calibration = card.get("open_set_calibration")
    if calibration is None:
        return None
    if not isinstance(calibration, dict) or not isinstance(calibration.get("operating_points"), list):
        raise FaceModelError(f"{card_path(model_path)}: open_set_calibration must be a dict with operating_points")
    _check_calibration({"threshold": 0.0, **calibration}, str(card_path(model_path)))
    return calibration


def save_open_set_calibration(model_path: str | os.PathLike, calibration: dict) -> Path:
    """Store an open-set (1:N) calibration in the card beside ``model_path`` (created when
    missing); the rest of the card, the 1:1 calibration included, is kept.

    Returns:
        The card's path.

    Raises:
        FaceModelError: a malformed calibration, or an existing card that is not valid JSON.
    """
    card = card_path(model_path)
    if not isinstance(calibration.get("operating_points"), list):
        raise FaceModelError(f"{card}: an open-set calibration needs operating_points")
    _check_calibration({"threshold": 0.0, **calibration}, str(card))
    data = load_face_model_card(model_path) if card.is_file() else {"model": Path(model_path).name}
    data["open_set_calibration"] = dict(calibration)
    tmp = card.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, card)
    return card


# --- the architecture ---------------------------------------------------------------------
def build_face_embedder(
    input_size: int = 112,
    embedding_dim: int = 128,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    depths: tuple[int, ...] = (2, 2, 2, 2),
    dropout: float = 0.0,
    name: str = "face_embedder",
) -> keras.Model:
    """A small ResNet face embedder: images 0..255 in, unit vectors out.

    ``Rescaling`` to -1..1, a stride-2 3x3 stem, four stages of basic residual blocks (the
    first stride 1, the others stride 2), then a global depthwise convolution over the final
    grid (MobileFaceNet's GDC, which keeps where each feature is, unlike average pooling),
    ``Dense(embedding_dim)``, batch norm and ``UnitNormalization``. Standard convolutions: they
    are faster than depthwise ones on CPUs.

    Args:
        input_size: side of the square aligned crops.
        embedding_dim: size of the output vectors.
        widths: channels of each stage.
        depths: residual blocks in each stage.
        dropout: dropout rate before the embedding layer.
        name: the model name.

    Returns:
        The embedder ``keras.Model``.

    Raises:
        ValueError: ``widths`` and ``depths`` of different lengths, or an input too small.
    """
    if len(widths) != len(depths):
        raise ValueError(f"widths and depths must have the same length, got {widths} and {depths}")
    grid = input_size // 2 ** len(widths)  # stem and every stage after the first halve the grid
    if grid < 1:
        raise ValueError(f"input_size {input_size} is too small for {len(widths)} stride-2 stages")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = conv_bn_act(x, widths[0], 3, strides=2, name="stem")
    for s, (width, depth) in enumerate(zip(widths, depths)):
        for b in range(depth):
            stride = 2 if b == 0 and s > 0 else 1
            x = residual_block(x, width, strides=stride, name=f"stage{s + 1}_block{b + 1}")
    x = keras.layers.DepthwiseConv2D(x.shape[1], padding="valid", use_bias=False, name="gdc_conv")(x)
    x = keras.layers.BatchNormalization(name="gdc_bn")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(embedding_dim, use_bias=False, name="embedding")(x)
    x = keras.layers.BatchNormalization(name="embedding_bn")(x)
    outputs = keras.layers.UnitNormalization(name="unit")(x)
    return keras.Model(inputs, outputs, name=name)
