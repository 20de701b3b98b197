"""Importers for models quantized by onnxruntime: QDQ pairs and the QOperator forms.

Quantized tensors are kept as their real (dequantized) float32 values and each
one's integer grid is remembered in ``ctx.grids``: a QuantizeLinear inside the
model becomes a ``FakeQuant``, a DequantizeLinear of such a tensor an
``Identity``. Integer tensors at the model's boundary hold raw integers and are
converted by ``Dequantize`` / ``Quantize``. QLinearConv, QLinearMatMul,
ConvInteger and MatMulInteger become crossbar operators that carry the model's
own integers (``given_quant``), so the quantize pass keeps them exactly.
"""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers._core import ImportContext, importer, refuse, spatial_window, to_2d
from cimc.ir import QuantGrid, Tensor


def grid_from(ctx: ImportContext, node: onnx.NodeProto, scale_index: int, zero_index: int) -> QuantGrid:
    """The grid named by a node's scale and (optional) zero-point inputs; ONNX defaults to uint8."""
    scale = ctx.const(node.input[scale_index])
    zero_name = node.input[zero_index] if len(node.input) > zero_index else ""
    zero = ctx.const(zero_name) if zero_name else np.zeros((), dtype=np.uint8)
    if scale is None or zero is None:
        raise refuse(node, "a scale or zero point computed at run time", "constant scales and zero points")
    if zero.dtype.kind not in "iu" or zero.dtype.itemsize < 1 or str(zero.dtype) in ("int4", "uint4", "int2", "uint2"):
        raise refuse(node, f"{zero.dtype} quantization", "8, 16 and 32-bit integer types")
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise refuse(node, "a scale that is not a positive finite number", "positive scales")
    return QuantGrid.for_dtype(scale, zero, zero.dtype)


def _axis(ctx: ImportContext, node: onnx.NodeProto, grid: QuantGrid) -> int | None:
    if grid.scale.size == 1:
        return None
    a = ctx.attrs(node)
    if "block_size" in a and a["block_size"]:
        raise refuse(node, "blocked quantization (block_size)", "per-tensor and per-axis quantization")
    return int(a.get("axis", 1)) % len(ctx.shape(node.input[0]))


def _grid_constants(ctx: ImportContext, node: onnx.NodeProto, grid: QuantGrid) -> list[str]:
    return [ctx.add_const(node.name + ":scale", grid.scale.astype(np.float32)),
            ctx.add_const(node.name + ":zero", grid.zero.astype(np.float32))]


def _grid_attrs(ctx: ImportContext, node: onnx.NodeProto, grid: QuantGrid) -> dict:
    return {"axis": _axis(ctx, node, grid), "qmin": grid.qmin, "qmax": grid.qmax}


@importer("QuantizeLinear")
def _quantize_linear(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    grid = grid_from(ctx, node, 1, 2)
    if ctx.is_raw(x):
        raise refuse(node, "quantizing an integer tensor", "float inputs")
    inputs = [x, *_grid_constants(ctx, node, grid)]
    out = node.output[0]
    if out in ctx.graph_outputs:                       # the model hands out raw integers
        ctx.graph.add_tensor(Tensor(out, ctx.shape(out), np.dtype(ctx.shapes[out][1])))
        ctx.emit(node, "Quantize", inputs, _grid_attrs(ctx, node, grid))
        return
    ctx.emit(node, "FakeQuant", inputs, _grid_attrs(ctx, node, grid))
    ctx.grids[out] = grid


@importer("DequantizeLinear")
def _dequantize_linear(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)          # constant ones were folded (their integers are kept)
    grid = grid_from(ctx, node, 1, 2)
    if ctx.is_raw(x):
        ctx.emit(node, "Dequantize", [x, *_grid_constants(ctx, node, grid)], _grid_attrs(ctx, node, grid))
    else:
        ctx.emit(node, "Identity", [x])
    ctx.grids[node.output[0]] = grid


def real_input(ctx: ImportContext, node: onnx.NodeProto, index: int, grid: QuantGrid) -> str:
    """An activation as real values on ``grid``: raw integers get a Dequantize in front."""
    x = ctx.activation(node, index)
    if not ctx.is_raw(x):
        return x
    real = f"{x}:real:{node.name}"
    ctx.graph.add_tensor(Tensor(real, ctx.shape(x), np.dtype(np.float32)))
    scale = ctx.add_const(real + ":scale", grid.scale.astype(np.float32))
    zero = ctx.add_const(real + ":zero", grid.zero.astype(np.float32))
    ctx.emit(node, "Dequantize", [x, scale, zero], {"axis": None, "qmin": grid.qmin, "qmax": grid.qmax},
             outputs=[real], suffix=":dequantize")
    return real


def _emit_crossbar(ctx: ImportContext, node: onnx.NodeProto, op: str, x: str, weight: np.ndarray,
                   attrs: dict, given: dict, out_dtype: np.dtype) -> None:
    """The crossbar node; a raw integer graph output gets a Quantize (or a cast) behind it."""
    out = node.output[0]
    inputs = [x, ctx.add_const(node.name + ":W", weight.astype(np.float32))]
    attrs = {**attrs, "given_quant": given}
    grid = given.get("out")
    if out not in ctx.graph_outputs:
        ctx.emit(node, op, inputs, attrs)
        if grid is not None:
            ctx.grids[out] = grid
        return
    real = out + ":real"
    ctx.graph.add_tensor(Tensor(real, ctx.shape(out), np.dtype(np.float32)))
    ctx.emit(node, op, inputs, attrs, outputs=[real], suffix=":mvm")
    ctx.graph.add_tensor(Tensor(out, ctx.shape(out), np.dtype(out_dtype)))
    if grid is None:                                  # ConvInteger/MatMulInteger: already integers
        ctx.emit(node, "Identity", [real])
        return
    consts = [ctx.add_const(node.name + ":y_scale", grid.scale.astype(np.float32)),
              ctx.add_const(node.name + ":y_zero", grid.zero.astype(np.float32))]
    ctx.emit(node, "Quantize", [real, *consts], {"axis": None, "qmin": grid.qmin, "qmax": grid.qmax})


def qdq_given(ctx: ImportContext, node: onnx.NodeProto, w_q: np.ndarray, w_scale: np.ndarray,
              w_zero: np.ndarray, bias_name: str | None) -> dict | None:
    """The model's own integers for a float Conv/Gemm/MatMul wrapped in QDQ pairs, if it is.

    It is when its weight is a DequantizeLinear of integers and its input carries
    a grid; its output grid is that of the one QuantizeLinear reading it, if any.
    """
    x_grid = ctx.grids.get(node.input[0])
    if x_grid is None or x_grid.scale.size != 1:
        return None
    readers = ctx.consumers.get(node.output[0], [])
    out = None
    if len(readers) == 1 and readers[0].op_type == "QuantizeLinear" \
            and node.output[0] not in ctx.graph_outputs:
        out = grid_from(ctx, readers[0], 1, 2)
        if out.scale.size != 1:
            out = None
    bias = ctx.integers.get(bias_name) if bias_name else None
    if bias_name and (bias is None or out is None):
        return None                 # a float bias: keep the float form rather than guess its grid
    return {"x": x_grid, "w_q": w_q, "w_zero": w_zero, "w_scale": w_scale,
            "bias_int": None if bias is None else bias.q.astype(np.int64).reshape(-1), "out": out}


def _conv_geometry(ctx: ImportContext, node: onnx.NodeProto, w: np.ndarray) -> tuple[dict, int]:
    rank = w.ndim - 2
    if rank not in (1, 2):
        raise refuse(node, f"{rank}-D convolution", "1-D and 2-D convolution")
    window = to_2d(spatial_window(ctx, node, tuple(w.shape[2:])), tuple(w.shape[2:]))
    group = int(ctx.attrs(node).get("group", 1))
    return {**window, "group": group, "rank": rank}, rank


def _integer_weight(ctx: ImportContext, node: onnx.NodeProto, index: int) -> np.ndarray:
    w = ctx.const(node.input[index])
    if w is None or w.dtype.kind not in "iu":
        raise refuse(node, "a weight that is not a constant integer tensor", "constant integer weights")
    return w


def per_channel(values: np.ndarray, channels: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values).reshape(-1), (channels,)).copy() \
        if np.asarray(values).size in (1, channels) else None


@importer("QLinearConv")
def _qlinear_conv(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x_grid = grid_from(ctx, node, 1, 2)
    w_q = _integer_weight(ctx, node, 3)
    w_grid = grid_from(ctx, node, 4, 5)
    y_grid = grid_from(ctx, node, 6, 7)
    cout = w_q.shape[0]
    w_scale, w_zero = per_channel(w_grid.scale, cout), per_channel(w_grid.zero, cout)
    if w_scale is None or w_zero is None or x_grid.scale.size != 1 or y_grid.scale.size != 1:
        raise refuse(node, "per-channel activation scales", "per-tensor x and y, per-tensor or per-output-"
                     "channel weights")
    attrs, rank = _conv_geometry(ctx, node, w_q)
    bias = ctx.const(node.input[8]) if len(node.input) > 8 and node.input[8] else None
    x = real_input(ctx, node, 0, x_grid)
    weight = ((w_q.astype(np.float64) - w_zero.reshape((-1,) + (1,) * (w_q.ndim - 1)))
              * w_scale.reshape((-1,) + (1,) * (w_q.ndim - 1)))
    weight = weight.reshape(cout, w_q.shape[1], *attrs["kernel"])
    given = {"x": x_grid, "w_q": w_q.reshape(weight.shape), "w_zero": w_zero, "w_scale": w_scale,
             "bias_int": bias, "out": y_grid}
    _emit_crossbar(ctx, node, "Conv", x, weight, attrs, given, y_grid.zero.dtype)


@importer("QLinearMatMul")
def _qlinear_matmul(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x_grid = grid_from(ctx, node, 1, 2)
    w_q = _integer_weight(ctx, node, 3)
    if w_q.ndim != 2:
        raise refuse(node, "a weight of rank other than 2", "a constant [K, N] weight")
    w_grid = grid_from(ctx, node, 4, 5)
    y_grid = grid_from(ctx, node, 6, 7)
    n = w_q.shape[1]
    w_scale, w_zero = per_channel(w_grid.scale, n), per_channel(w_grid.zero, n)
    if w_scale is None or w_zero is None or x_grid.scale.size != 1 or y_grid.scale.size != 1:
        raise refuse(node, "per-channel activation scales", "per-tensor a and y, per-tensor or per-column b")
    x = real_input(ctx, node, 0, x_grid)
    weight = (w_q.astype(np.float64) - w_zero) * w_scale
    given = {"x": x_grid, "w_q": w_q, "w_zero": w_zero, "w_scale": w_scale, "bias_int": None, "out": y_grid}
    _emit_crossbar(ctx, node, "MatMul", x, weight, {}, given, y_grid.zero.dtype)


def _integer_grid(ctx: ImportContext, node: onnx.NodeProto, index: int, x: str) -> QuantGrid:
    zero = ctx.const(node.input[index]) if len(node.input) > index and node.input[index] else None
    dtype = ctx.graph.tensors[x].dtype if ctx.is_raw(x) else np.dtype(np.uint8)
    if zero is not None and zero.size != 1:
        raise refuse(node, "a per-channel input zero point", "a per-tensor input zero point")
    return QuantGrid.for_dtype(np.float32(1.0), 0 if zero is None else zero.reshape(()), dtype)


@importer("ConvInteger", "MatMulInteger")
def _integer_product(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x_grid = _integer_grid(ctx, node, 2, node.input[0])
    w_q = _integer_weight(ctx, node, 1)
    w_zero_c = ctx.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.zeros(())
    channels = w_q.shape[0] if node.op_type == "ConvInteger" else w_q.shape[-1]
    w_zero = per_channel(w_zero_c, channels)
    if w_zero is None:
        raise refuse(node, "a weight zero point of another shape", "per-tensor or per-output zero points")
    x = real_input(ctx, node, 0, x_grid)
    ones = np.ones(channels, dtype=np.float32)
    if node.op_type == "ConvInteger":
        attrs, _ = _conv_geometry(ctx, node, w_q)
        weight = (w_q.astype(np.float64) - w_zero.reshape((-1,) + (1,) * (w_q.ndim - 1)))
        weight = weight.reshape(channels, w_q.shape[1], *attrs["kernel"])
        w_q = w_q.reshape(weight.shape)
        op = "Conv"
    else:
        if w_q.ndim != 2:
            raise refuse(node, "a weight of rank other than 2", "a constant [K, N] weight")
        attrs, weight, op = {}, w_q.astype(np.float64) - w_zero, "MatMul"
    given = {"x": x_grid, "w_q": w_q, "w_zero": w_zero, "w_scale": ones, "bias_int": None, "out": None}
    _emit_crossbar(ctx, node, op, x, weight, attrs, given, np.dtype(np.int32))
