"""A reader of dlib's DNN serialization, in NumPy (dlib itself is not needed).

dlib writes a network as nested wrappers: the loss layer, then each wrapper's version number
from the output side inwards (layers, tags and skips alike), then the input layer, then each
layer's own details from the input side outwards. Tags and skips leave nothing but a version
number, so the topology cannot be read from the file: it comes from the network's C++ type, and
:func:`read_dlib_network` returns the layers in input-to-output order for a caller that knows
it (:mod:`kerascnn.models.dlib_resnet` checks every layer against its table of stages).

The encoding (``dlib/serialize.h``, ``dlib/dnn/*.h``): an integer is one control byte (its byte
count, ``0x80`` when negative) then little-endian bytes; a bool is the character ``'0'`` or
``'1'``; a string is its length then its bytes; a float is a mantissa and a base-2 exponent,
two such integers; a tensor is a version (2), four int64 dimensions ``(n, k, rows, cols)`` and
raw little-endian float32 values.

Example:
    >>> net = read_dlib_network("dlib_face_recognition_resnet_model_v1.dat")   # doctest: +SKIP
    >>> [layer.kind for layer in net.layers][:4]                              # doctest: +SKIP
    ['con', 'affine', 'relu', 'max_pool']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerascnn.errors import DlibFormatError

_INF, _NINF, _NAN = 32000, 32001, 32002  # dlib's float_details exponents for special values


@dataclass
class DlibLayer:
    """One computational layer of a dlib network.

    Attributes:
        kind: ``"con"``, ``"affine"``, ``"relu"``, ``"max_pool"``, ``"avg_pool"``, ``"add_prev"``
            or ``"fc"``.
        version: the version string dlib wrote (``"con_4"``, ``"affine_"`` ...).
        config: integer settings (``num_filters``, ``nr``, ``nc``, ``stride_y``, ``padding_y`` ...).
        arrays: the weights as NumPy arrays in dlib's layout: ``filters`` ``(filters, channels,
            rows, cols)`` and ``biases`` for ``con``; ``gamma`` and ``beta`` for ``affine``;
            ``weights`` ``(inputs, outputs)`` (and ``biases``) for ``fc``.
        offset: byte offset of the layer's details in the file (for error messages).
    """

    kind: str
    version: str
    config: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    offset: int = 0


@dataclass
class DlibNetwork:
    """A dlib network as read from its file.

    Attributes:
        loss: the loss layer's version string and settings (``{"kind": "loss_metric_2",
            "margin": 0.04, "distance_threshold": 0.6}``).
        wrapper_versions: every wrapper's version number, output side first (2 or 3 for a
            layer, 1 for a tag or a skip).
        input: the input layer's kind and settings (``avg_red``, ``avg_green``, ``avg_blue``,
            ``rows``, ``cols`` for ``input_rgb_image_sized``).
        layers: the computational layers, input side first.
    """

    loss: dict
    wrapper_versions: list[int]
    input: dict
    layers: list[DlibLayer]


class _Reader:
    """Sequential decoding of dlib's primitive types from bytes, with clear errors."""

    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = data, 0, source

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.source}: {what} at byte {self.pos} of {len(self.data)}")

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > len(self.data):
            raise self.fail(f"the file is truncated: {count} bytes of {what} needed")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def int(self, what: str = "an integer") -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            self.pos -= 1
            raise self.fail(f"not dlib data: byte 0x{control:02x} cannot start {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def float(self, what: str = "a float") -> float:
        mantissa, exponent = self.int(what), self.int(what)
        if exponent in (_INF, _NINF, _NAN):
            return {_INF: float("inf"), _NINF: float("-inf"), _NAN: float("nan")}[exponent]
        return float(np.ldexp(float(mantissa), exponent))

    def string(self, what: str = "a name") -> str:
        size = self.int(what)
        if size < 0 or size > 1 << 20:
            raise self.fail(f"not dlib data: a string of {size} bytes for {what}")
        raw = self.take(size, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"not dlib data: {what} is not text") from None

    def bool(self, what: str = "a bool") -> bool:
        char = self.take(1, what)
        if char not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"not dlib data: {char!r} is not a bool ('0' or '1') for {what}")
        return char == b"1"

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        version = self.int(what)
        if version != 2:
            raise self.fail(f"unexpected tensor version {version} in {what}")
        shape = tuple(self.int(what) for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative tensor dimensions {shape} in {what}")
        count = int(np.prod(shape, dtype=np.int64))
        values = np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias(self, what: str) -> tuple[int, ...]:
        version = self.int(what)
        if version != 1:
            raise self.fail(f"unexpected alias_tensor version {version} in {what}")
        return tuple(self.int(what) for _ in range(4))


def _pool(r: _Reader, version: str) -> dict:
    keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return {k: r.int(f"{version} {k}") for k in keys}


def _read_details(r: _Reader) -> DlibLayer:
    offset = r.pos
    version = r.string("a layer name")
    if version in ("con_4", "con_5", "con_6"):
        params = r.tensor("con_ params")
        config = {"num_filters": r.int("num_filters")}
        for key in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            config[key] = r.int(f"con_ {key}")
        filters_shape, bias_shape = r.alias("con_ filters"), r.alias("con_ biases")
        for key in ("lr", "wd", "bias_lr", "bias_wd"):
            r.float(f"con_ {key} multiplier")
        config["use_bias"] = r.bool("use_bias") if version in ("con_5", "con_6") else True
        if version == "con_6":
            r.bool("use_relu")
        n_filters = int(np.prod(filters_shape))
        flat = params.reshape(-1)
        if flat.size != n_filters + (int(np.prod(bias_shape)) if config["use_bias"] else 0):
            raise r.fail(f"con_ params hold {flat.size} values, not filters {filters_shape} + biases {bias_shape}")
        arrays = {"filters": flat[:n_filters].reshape(filters_shape)}
        if config["use_bias"]:
            arrays["biases"] = flat[n_filters:].copy()
        return DlibLayer("con", version, config, arrays, offset)
    if version in ("affine_", "affine_2"):
        params = r.tensor("affine_ params").reshape(-1)
        gamma_shape, beta_shape = r.alias("affine_ gamma"), r.alias("affine_ beta")
        config = {"mode": r.int("affine_ mode")}
        if version == "affine_2":
            config["disabled"] = r.bool("affine_ disabled")
        n = int(np.prod(gamma_shape))
        if params.size != n + int(np.prod(beta_shape)):
            raise r.fail(f"affine_ params hold {params.size} values, not gamma {gamma_shape} + beta {beta_shape}")
        return DlibLayer("affine", version, config, {"gamma": params[:n].copy(), "beta": params[n:].copy()}, offset)
    if version in ("relu_", "relu_2"):
        config = {"disabled": r.bool("relu_ disabled")} if version == "relu_2" else {}
        return DlibLayer("relu", version, config, {}, offset)
    if version == "max_pool_2":
        return DlibLayer("max_pool", version, _pool(r, version), {}, offset)
    if version == "avg_pool_2":
        return DlibLayer("avg_pool", version, _pool(r, version), {}, offset)
    if version == "add_prev_":
        return DlibLayer("add_prev", version, {}, {}, offset)
    if version in ("fc_2", "fc_3"):
        config = {"num_outputs": r.int("fc_ num_outputs"), "num_inputs": r.int("fc_ num_inputs")}
        params = r.tensor("fc_ params").reshape(-1)
        weights_shape = r.alias("fc_ weights")
        r.alias("fc_ biases")
        config["bias_mode"] = r.int("fc_ bias mode")
        for key in ("lr", "wd", "bias_lr", "bias_wd"):
            r.float(f"fc_ {key} multiplier")
        config["use_bias"] = (r.bool("fc_ use_bias") if version == "fc_3" else True) and config["bias_mode"] == 0
        n = config["num_inputs"] * config["num_outputs"]
        if int(np.prod(weights_shape)) != n or params.size < n + (config["num_outputs"] if config["use_bias"] else 0):
            raise r.fail(f"fc_ params hold {params.size} values, not a {config['num_inputs']}x{config['num_outputs']} "
                         f"matrix (weights {weights_shape})")
        arrays = {"weights": params[:n].reshape(config["num_inputs"], config["num_outputs"])}
        if config["use_bias"]:
            arrays["biases"] = params[n:n + config["num_outputs"]].copy()
        return DlibLayer("fc", version, config, arrays, offset)
    r.pos = offset
    raise r.fail(f"unsupported dlib layer {version!r}")


def _skip_wrapper_state(r: _Reader, version: int, innermost: bool) -> None:
    """The training state each ``add_layer`` writes after its layer: three bools, gradients."""
    for what in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        r.bool(what)
    r.tensor("x_grad")
    r.tensor("cached_output")
    if innermost:
        r.tensor("grad_final")
        if version >= 3:
            r.int("sample_expansion_factor")
    elif version == 2:
        r.tensor("params_grad")


def read_dlib_network(path: str | os.PathLike) -> DlibNetwork:
    """Read a dlib network file (``net_type`` serialized by ``dlib::serialize``).

    Args:
        path: the ``.dat`` file, e.g. ``dlib_face_recognition_resnet_model_v1.dat``.

    Returns:
        The :class:`DlibNetwork`: loss, wrapper versions, input layer, layers (input side first).

    Raises:
        FileNotFoundError: no such file.
        DlibFormatError: not a dlib network, a truncated file, or a layer this reader does not
            know; the message gives the byte offset.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dlib network file {path} does not exist")
    r = _Reader(path.read_bytes(), str(path))
    if r.int("the loss layer's version") != 1:
        raise r.fail("not dlib data: the file does not start with a dlib network's loss layer")
    kind = r.string("the loss layer's name")
    if kind == "loss_metric_2":
        loss = {"kind": kind, "margin": r.float("margin"), "distance_threshold": r.float("distance threshold")}
    elif kind == "loss_metric_":
        loss = {"kind": kind, "margin": 0.1, "distance_threshold": 0.75}
    else:
        raise r.fail(f"not a dlib metric-learning network: its loss layer is {kind!r}")
    # wrapper versions are 1..3; the input layer's name then starts with its length (> 3)
    versions = []
    while True:
        start = r.pos
        value = r.int("a wrapper version")
        if value > 3:
            r.pos = start
            break
        versions.append(value)
    if not versions or versions[-1] not in (2, 3):
        raise r.fail("not a dlib network: no layer wraps the input layer")
    input_kind = r.string("the input layer's name")
    if input_kind != "input_rgb_image_sized":
        raise r.fail(f"unsupported dlib input layer {input_kind!r} (expected input_rgb_image_sized)")
    net_input = {"kind": input_kind, "avg_red": r.float("avg_red"), "avg_green": r.float("avg_green"),
                 "avg_blue": r.float("avg_blue"), "rows": r.int("rows"), "cols": r.int("cols")}
    layer_versions = [v for v in reversed(versions) if v != 1]  # tags and skips hold nothing more
    layers = []
    for i, version in enumerate(layer_versions):
        layers.append(_read_details(r))
        _skip_wrapper_state(r, version, innermost=i == 0)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the last layer")
    return DlibNetwork(loss, versions, net_input, layers)
