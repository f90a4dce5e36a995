"""Layer tables: output shape, parameters, FLOPs, receptive field and stride of every layer.

:func:`layer_table` walks a Keras functional model's graph (nested models included) with
symbolic shapes and computes, per layer call, the textbook quantities of the CNN literature:

- output size ``floor((n + 2p - d(f - 1) - 1) / s) + 1`` (:func:`conv_output_size`),
- parameters ``(f^2 c_in + 1) c_out`` for a conv (:func:`conv_params`; Keras' count),
- FLOPs, counting a multiply-add as **2 FLOPs** (the convention of TensorFlow's profiler):

  ========================  ==================================================================
  Conv1D/2D/3D              ``2 * prod(kernel) * c_in / groups * c_out * prod(output spatial)``
  DepthwiseConv2D           ``2 * kh * kw * c_in * multiplier * h_out * w_out``
  SeparableConv2D           depthwise + pointwise (1x1 conv)
  Conv2DTranspose           ``2 * kh * kw * c_in * c_out * h_in * w_in``
  Dense                     ``2 * n_in * n_out`` per position
  bias                      ``+1`` per output element (convs and Dense with a bias)
  BatchNormalization        ``2`` per element (inference: one scale and one shift)
  Max/AveragePooling        ``prod(pool)`` per output element
  Global pooling            ``1`` per input element
  Add, Subtract, Multiply,  ``(inputs - 1)`` per output element
  Maximum, Minimum, Average
  everything else           ``0`` (activations, concatenation, reshapes, dropout, padding ...)
  ========================  ==================================================================

- receptive field (in input pixels, per axis) and cumulative stride ("jump"):
  ``rf_out = rf_in + (d (f - 1)) * jump_in`` and ``jump_out = jump_in * s`` for convs and
  pools; a layer with several inputs takes the maximum over its branches; global pooling,
  flattening and dense layers see the whole input (``None``, printed ``all``).

Example:
    >>> import keras
    >>> from kerascnn.inspect import layer_table
    >>> table = layer_table(keras.applications.ResNet50(weights=None))
    >>> print(table.to_text())
    >>> table.total_flops, table.rows[1].receptive_field
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from kerascnn._keras_compat import is_graph_model, run_through_graph
from kerascnn.errors import InputShapeError

__all__ = ["LayerRow", "LayerTable", "conv_output_size", "conv_params", "layer_table", "summary"]


def conv_output_size(n: int, f: int, p: int, s: int, d: int = 1) -> int:
    """Output size of a convolution or pooling along one axis: ``floor((n + 2p - d(f-1) - 1) / s) + 1``.

    With ``d = 1`` this is the textbook ``floor((n + 2p - f) / s) + 1``.

    Args:
        n: input size.
        f: kernel size.
        p: zero padding on each side.
        s: stride.
        d: dilation.

    Returns:
        The output size.

    Raises:
        InputShapeError: the padded input is smaller than the (dilated) kernel.
    """
    effective = d * (f - 1) + 1
    if n + 2 * p < effective:
        raise InputShapeError(
            f"conv_output_size: input {n} with padding {p} is smaller than the kernel's extent "
            f"{effective} (kernel {f}, dilation {d})"
        )
    return (n + 2 * p - effective) // s + 1


def conv_params(f: int | Sequence[int], c_in: int, c_out: int, bias: bool = True) -> int:
    """Parameters of a convolution: ``(f^2 c_in + 1) c_out`` (without the ``+ 1`` if no bias).

    Args:
        f: kernel size (an int for a square kernel, or one size per axis).
        c_in: input channels.
        c_out: output channels (filters).
        bias: the conv has a bias per filter.

    Returns:
        The number of parameters.
    """
    area = f * f if isinstance(f, int) else math.prod(f)
    return (area * c_in + int(bias)) * c_out


@dataclass(frozen=True)
class LayerRow:
    """One layer call of a model.

    Attributes:
        name: layer name (``outer/inner`` inside a nested model).
        type: layer class name.
        output_shape: shape of the (first) output, batch dimension ``None``.
        params: the layer's parameters (Keras' count: BN moving statistics included).
        flops: floating-point operations for one sample (a multiply-add counts 2).
        receptive_field: input pixels seen per spatial axis, ``None`` for the whole input.
        jump: cumulative stride per spatial axis (input pixels between neighbouring outputs),
            ``None`` where there is no spatial grid any more.
    """

    name: str
    type: str
    output_shape: tuple
    params: int
    flops: int
    receptive_field: tuple[int, ...] | None
    jump: tuple[float, ...] | None


@dataclass
class LayerTable:
    """The rows of :func:`layer_table` and their totals."""

    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0

    @property
    def total_flops(self) -> int:
        """FLOPs of one forward pass of one sample."""
        return sum(row.flops for row in self.rows)

    def to_text(self) -> str:
        """The table as aligned text, one line per layer, then the totals."""
        header = ("layer", "type", "output shape", "params", "FLOPs", "RF", "jump")
        lines = [header] + [
            (
                row.name,
                row.type,
                str(row.output_shape),
                f"{row.params:,}",
                _human(row.flops),
                _axes(row.receptive_field),
                _axes(row.jump),
            )
            for row in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        right = {3, 4, 5, 6}
        text = [
            "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in lines
        ]
        rule = "-" * len(text[0])
        return "\n".join(
            [text[0], rule, *text[1:], rule,
             f"total params: {self.total_params:,}   total FLOPs: {self.total_flops:,} ({_human(self.total_flops)})"]
        )


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _axes(values: tuple | None) -> str:
    if values is None:
        return "all"
    values = tuple(f"{v:g}" for v in values)
    return values[0] if len(set(values)) == 1 else "x".join(values)


def _tuple(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape[1:] if d is not None)


def _layer_cost(layer, in_shapes: list[tuple], out_shape: tuple) -> int:
    """FLOPs of one call for one sample (conventions in the module docstring)."""
    from keras import layers

    kind = type(layer)
    out_elements = _elements(out_shape)
    bias = out_elements if getattr(layer, "use_bias", False) else 0
    spatial_out = math.prod(int(d) for d in out_shape[1:-1])
    c_in = int(in_shapes[0][-1]) if in_shapes and in_shapes[0] else 0
    if issubclass(kind, layers.DepthwiseConv2D):
        k = math.prod(_tuple(layer.kernel_size, 2))
        return 2 * k * c_in * layer.depth_multiplier * spatial_out + bias
    if issubclass(kind, layers.SeparableConv2D):
        k = math.prod(_tuple(layer.kernel_size, 2))
        mid = c_in * layer.depth_multiplier
        return 2 * k * mid * spatial_out + 2 * mid * layer.filters * spatial_out + bias
    if issubclass(kind, (layers.Conv2DTranspose, layers.Conv1DTranspose, layers.Conv3DTranspose)):
        k = math.prod(_tuple(layer.kernel_size, len(out_shape) - 2))
        spatial_in = math.prod(int(d) for d in in_shapes[0][1:-1])
        return 2 * k * c_in * layer.filters * spatial_in + bias
    if issubclass(kind, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        k = math.prod(_tuple(layer.kernel_size, len(out_shape) - 2))
        return 2 * k * c_in // layer.groups * layer.filters * spatial_out + bias
    if issubclass(kind, layers.Dense):
        positions = math.prod(int(d) for d in out_shape[1:-1])
        return 2 * c_in * layer.units * positions + bias
    if issubclass(kind, layers.BatchNormalization):
        return 2 * out_elements
    if issubclass(kind, (layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
                         layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D)):
        return math.prod(_tuple(layer.pool_size, len(out_shape) - 2)) * out_elements
    if kind.__name__.startswith("Global") and "Pooling" in kind.__name__:
        return _elements(in_shapes[0])
    if issubclass(kind, (layers.Add, layers.Subtract, layers.Multiply, layers.Maximum,
                         layers.Minimum, layers.Average)):
        return (len(in_shapes) - 1) * out_elements
    return 0


def _receptive(layer, inputs: list[tuple | None], out_rank: int):
    """``(receptive_field, jump)`` of the layer's output from its inputs' (see module docstring)."""
    from keras import layers

    known = [x for x in inputs if x is not None]
    if len(known) < len(inputs) or not known or out_rank < 3:
        return None, None  # whole input seen, or no grid left
    axes = len(known[0][0])
    rf = tuple(max(x[0][a] for x in known) for a in range(axes))
    jump = tuple(max(x[1][a] for x in known) for a in range(axes))
    kind = type(layer)
    if kind.__name__.startswith("Global") or issubclass(kind, (layers.Flatten, layers.Dense)):
        return None, None
    if hasattr(layer, "kernel_size") or hasattr(layer, "pool_size"):
        kernel = _tuple(getattr(layer, "kernel_size", None) or layer.pool_size, axes)
        strides = _tuple(layer.strides or kernel, axes)
        dilation = _tuple(getattr(layer, "dilation_rate", 1), axes)
        if "Transpose" in kind.__name__:
            jump = tuple(j / s for j, s in zip(jump, strides))
            rf = tuple(r + (math.ceil(k / s) - 1) * j * s for r, k, s, j in zip(rf, kernel, strides, jump))
            return rf, jump
        rf = tuple(r + d * (k - 1) * j for r, k, d, j in zip(rf, kernel, dilation, jump))
        return rf, tuple(j * s for j, s in zip(jump, strides))
    if issubclass(kind, (layers.UpSampling1D, layers.UpSampling2D, layers.UpSampling3D)):
        return rf, tuple(j / s for j, s in zip(jump, _tuple(layer.size, axes)))
    return rf, jump


def layer_table(model, input_shape: Sequence[int | None] | None = None) -> LayerTable:
    """Per-layer output shape, parameters, FLOPs, receptive field and jump of a Keras model.

    Args:
        model: a functional (or built Sequential) ``keras.Model``; nested models are expanded.
        input_shape: ``(height, width, channels)`` to evaluate at, for a model built with
            unknown sizes (or to see another size); default: the model's own input shape.

    Returns:
        The :class:`LayerTable` (rows in execution order).

    Raises:
        InputShapeError: the shapes are unknown (``None`` height/width) and no ``input_shape``
            is given, or the model has several inputs and ``input_shape`` is given.
        TypeError: ``model`` is not a functional model (e.g. a subclassed one).
    """
    import keras

    if not is_graph_model(model):
        raise TypeError(f"layer_table needs a functional or Sequential keras.Model, got {type(model).__name__}")
    if input_shape is not None:
        if len(model.inputs) != 1:
            raise InputShapeError(f"layer_table: input_shape applies to single-input models; this one has {len(model.inputs)} inputs")
        shapes = [(None, *input_shape)]
    else:
        shapes = [tuple(x.shape) for x in model.inputs]
    for shape in shapes:
        if any(d is None for d in shape[1:]):
            raise InputShapeError(
                f"layer_table: the model's input shape {shape} has unknown sizes; pass "
                "input_shape=(height, width, channels)"
            )
    inputs = [keras.KerasTensor(shape, dtype=x.dtype) for shape, x in zip(shapes, model.inputs)]
    # receptive field and jump per symbolic tensor; the inputs see one pixel, stride 1
    geometry = {id(x): (tuple(1 for _ in s[1:-1]), tuple(1 for _ in s[1:-1])) for x, s in zip(inputs, shapes)}
    table = LayerTable()
    seen: set[int] = set()
    _walk(model, inputs, geometry, table, seen, prefix="")
    table.total_params = sum(layer.count_params() for layer in _unique_layers(model) if layer.built)
    return table


def _unique_layers(model):
    for layer in model.layers:
        if is_graph_model(layer):
            yield from _unique_layers(layer)
        else:
            yield layer


def _walk(model, inputs, geometry: dict, table: LayerTable, seen: set, prefix: str):
    from keras import tree

    def call(layer, *args, **kwargs):
        tensors = [x for x in tree.flatten((args, kwargs)) if hasattr(x, "shape") and id(x) in geometry]
        if is_graph_model(layer):  # nested model: expand it
            return _walk(layer, args[0], geometry, table, seen, prefix=f"{prefix}{layer.name}/")
        outputs = layer.compute_output_spec(*args, **kwargs)
        flat = tree.flatten(outputs)
        out_shape = tuple(flat[0].shape)
        in_shapes = [tuple(x.shape) for x in tensors]
        rf, jump = _receptive(layer, [geometry[id(x)] if geometry[id(x)][0] is not None else None for x in tensors], len(out_shape))
        for y in flat:
            geometry[id(y)] = (rf, jump)
        params = layer.count_params() if layer.built and id(layer) not in seen else 0
        seen.add(id(layer))
        table.rows.append(
            LayerRow(prefix + layer.name, type(layer).__name__, out_shape, params,
                     int(_layer_cost(layer, in_shapes, out_shape)), rf, jump)
        )
        return outputs

    return run_through_graph(model, inputs, call)


def summary(model, input_shape: Sequence[int | None] | None = None, print_fn=print) -> LayerTable:
    """Print :func:`layer_table`'s text (like ``model.summary()``, with FLOPs and receptive fields).

    Args:
        model: the model.
        input_shape: see :func:`layer_table`.
        print_fn: where the text goes.

    Returns:
        The :class:`LayerTable`, for further use.
    """
    table = layer_table(model, input_shape)
    print_fn(table.to_text())
    return table
