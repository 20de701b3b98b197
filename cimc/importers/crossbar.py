"""Importers of crossbar operators: Conv, Gemm, MatMul with a constant operand.

They come out as ``Conv`` (2-D form, weights ``[Cout, Cin/group, kh, kw]``) and
``MatMul`` (weights ``[K, N]``) with an optional per-channel bias.
"""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers._core import ImportContext, finite, importer, refuse, spatial_window, to_2d
from cimc.importers.quantized import per_channel, qdq_given
from cimc.ir import Tensor


def _finite_parameters(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Weights and bias of a crossbar operator must be finite (NaN cannot be quantized or programmed)."""
    for index, role in ((1, "weight"), (2, "bias")):
        if len(node.input) > index and node.input[index]:
            finite(node, role, node.input[index], ctx.const(node.input[index]))


@importer("Conv")
def _conv(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    w = ctx.const(node.input[1])
    if w is None:
        raise refuse(node, "a weight computed at run time", "constant weights (they are programmed "
                     "into crossbars)")
    _finite_parameters(ctx, node)
    rank = w.ndim - 2
    if rank not in (1, 2):
        raise refuse(node, f"{rank}-D convolution", "1-D and 2-D convolution")
    group = int(ctx.attrs(node).get("group", 1))
    window = to_2d(spatial_window(ctx, node, tuple(w.shape[2:])), tuple(w.shape[2:]))
    weight = w.astype(np.float32).reshape(w.shape[0], w.shape[1], *window["kernel"])
    inputs = [x, ctx.add_const(node.input[1] + ":w2d", weight) if rank == 1 else node.input[1]]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias:
        inputs.append(bias)
    attrs = {**window, "group": group, "rank": rank}
    integers = ctx.integers.get(node.input[1])
    if integers is not None and (integers.scale.size == 1 or integers.axis == 0):
        scale, zero = per_channel(integers.scale, w.shape[0]), per_channel(integers.zero, w.shape[0])
        given = qdq_given(ctx, node, integers.q.reshape(weight.shape), scale, zero, bias)
        if given is not None:
            attrs["given_quant"] = given
    ctx.emit(node, "Conv", inputs, attrs)


@importer("Gemm")
def _gemm(ctx: ImportContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    b = ctx.const(node.input[1])
    if b is None or ctx.const(node.input[0]) is not None:
        raise refuse(node, "Gemm whose B operand is not a constant", "Gemm(activation, constant B)")
    _finite_parameters(ctx, node)
    x = node.input[0]
    if a.get("transA", 0):    # a transpose of this node's own: other Gemms may transpose the same input
        m, k = ctx.shape(x)
        x = ctx.step(node, "Transpose", [x], {"perm": (1, 0)}, (k, m), "transA")
    w = b.T if a.get("transB", 0) else b
    w = (float(a.get("alpha", 1.0)) * w).astype(np.float32)
    inputs = [x, ctx.add_const(node.name + ":W", w)]
    c = ctx.const(node.input[2]) if len(node.input) > 2 else None
    out_shape = ctx.shape(node.output[0])
    beta = float(a.get("beta", 1.0))
    if len(node.input) > 2 and node.input[2] and c is None:
        raise refuse(node, "a bias computed at run time", "constant C")
    if c is not None and np.broadcast_shapes(c.shape, out_shape) == out_shape:
        c = (beta * c).astype(np.float32)
        if c.size == 1 or (c.ndim >= 1 and c.shape[-1] == out_shape[-1] and c.size == out_shape[-1]):
            inputs.append(ctx.add_const(node.name + ":bias",
                                        np.broadcast_to(c.reshape(-1), (out_shape[-1],)).copy()))
        else:  # a full matrix bias is an elementwise add after the product
            product = node.output[0] + ":mm"
            ctx.graph.add_tensor(Tensor(product, out_shape, np.dtype(np.float32)))
            ctx.emit(node, "MatMul", inputs, outputs=[product], suffix=":mm")
            ctx.emit(node, "Add", [product, ctx.add_const(node.name + ":C", c)])
            return
    attrs = {}
    integers = ctx.integers.get(node.input[1])
    trans = bool(a.get("transB", 0))
    if integers is not None and float(a.get("alpha", 1.0)) == 1.0 and beta == 1.0 and not a.get("transA", 0) \
            and (integers.scale.size == 1 or integers.axis == (0 if trans else 1)):
        n = w.shape[1]
        given = qdq_given(ctx, node, integers.q.T if trans else integers.q, per_channel(integers.scale, n),
                          per_channel(integers.zero, n), node.input[2] if c is not None else None)
        if given is not None:
            attrs["given_quant"] = given
    ctx.emit(node, "MatMul", inputs, attrs)


@importer("MatMul")
def _matmul(ctx: ImportContext, node: onnx.NodeProto) -> None:
    w = ctx.const(node.input[1])
    if w is None or ctx.const(node.input[0]) is not None:
        raise refuse(node, "MatMul without a constant second operand",
                     "MatMul(activation, constant matrix or stack of matrices)")
    _finite_parameters(ctx, node)
    if w.ndim == 2 and len(ctx.shape(node.input[0])) >= 2:
        attrs = {}
        integers = ctx.integers.get(node.input[1])
        if integers is not None and (integers.scale.size == 1 or integers.axis == 1):
            n = w.shape[1]
            given = qdq_given(ctx, node, integers.q, per_channel(integers.scale, n),
                              per_channel(integers.zero, n), None)
            if given is not None:
                attrs["given_quant"] = given
        ctx.emit(node, "MatMul", [node.input[0], node.input[1]], attrs)
        return
    _matmul_lowered(ctx, node, node.input[0], w)


def _matmul_lowered(ctx: ImportContext, node: onnx.NodeProto, x: str, w: np.ndarray) -> None:
    """MatMul with a 1-D operand or a stack of constant matrices, on plain crossbar operators.

    A stack shared by one input matrix is one MatMul with the matrices side by
    side; a stack meeting a stack of inputs is a grouped 1x1 convolution (one
    group per matrix). Reshapes and transposes around them are GPEU work.
    """
    out_shape = ctx.shape(node.output[0])
    xs = ctx.shape(x)
    w3 = w.reshape((1,) + w.shape + (1,)) if w.ndim == 1 else w.reshape((-1,) + w.shape[-2:])
    groups, k, n = w3.shape
    if len(xs) == 1:
        x = ctx.step(node, "Reshape", [x], {"shape": (1, k)}, (1, k), "as_matrix")
        xs = (1, k)
    m = xs[-2]
    if groups == 1 or len(xs) == 2:
        wide = w3.transpose(1, 0, 2).reshape(k, groups * n).astype(np.float32)
        rows = int(np.prod(xs[:-1]))
        y = ctx.step(node, "MatMul", [x, ctx.add_const(node.name + ":W", wide)], {},
                     tuple(xs[:-1]) + (groups * n,), "product")
        if groups > 1:
            y = ctx.step(node, "Reshape", [y], {"shape": (rows, groups, n)}, (rows, groups, n), "split")
            y = ctx.step(node, "Transpose", [y], {"perm": (1, 0, 2)}, (groups, rows, n), "stack")
    elif int(np.prod(xs[:-2])) == groups:
        x = ctx.step(node, "Reshape", [x], {"shape": (groups, m, k)}, (groups, m, k), "stack")
        x = ctx.step(node, "Transpose", [x], {"perm": (0, 2, 1)}, (groups, k, m), "channels")
        x = ctx.step(node, "Reshape", [x], {"shape": (1, groups * k, m, 1)}, (1, groups * k, m, 1), "image")
        weight = w3.transpose(0, 2, 1).reshape(groups * n, k, 1, 1).astype(np.float32)
        window = {"kernel": (1, 1), "strides": (1, 1), "dilations": (1, 1), "pads": (0, 0, 0, 0),
                  "group": groups, "rank": 2}
        y = ctx.step(node, "Conv", [x, ctx.add_const(node.name + ":W", weight)], window,
                     (1, groups * n, m, 1), "grouped")
        y = ctx.step(node, "Reshape", [y], {"shape": (groups, n, m)}, (groups, n, m), "unstack")
        y = ctx.step(node, "Transpose", [y], {"perm": (0, 2, 1)}, (groups, m, n), "rows")
    else:
        raise refuse(node, f"broadcasting an input of shape {xs} against {w.shape}",
                     "equal stacks, or one input matrix against a stack")
    ctx.emit(node, "Reshape", [y], {"shape": out_shape})


@importer("ConvTranspose")
def _conv_transpose(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """ConvTranspose as ``ZeroInsert`` (stride-1 zeros between pixels, pads or crops) then a
    stride-1 convolution with the kernel flipped and its channel axes swapped."""
    x = ctx.activation(node, 0)
    w = ctx.const(node.input[1])
    if w is None:
        raise refuse(node, "a weight computed at run time", "constant weights")
    _finite_parameters(ctx, node)
    rank = w.ndim - 2
    if rank not in (1, 2):
        raise refuse(node, f"{rank}-D transposed convolution", "1-D and 2-D transposed convolution")
    a = ctx.attrs(node)
    group = int(a.get("group", 1))
    kernel = tuple(w.shape[2:])
    strides = tuple(a.get("strides", [1] * rank))
    dilations = tuple(a.get("dilations", [1] * rank))
    in_size = ctx.shape(x)[2:]
    out_size = ctx.shape(node.output[0])[2:]
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    out_pad = tuple(a.get("output_padding", [0] * rank))
    begin, end = [], []
    for i in range(rank):
        extent = (kernel[i] - 1) * dilations[i] + 1
        if "output_shape" in a or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = strides[i] * (in_size[i] - 1) + out_pad[i] + extent - out_size[i]
            first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        else:
            first = a.get("pads", [0] * (2 * rank))[i]
        upsampled = (in_size[i] - 1) * strides[i] + 1
        b = extent - 1 - first
        begin.append(b)
        end.append(out_size[i] + extent - 1 - upsampled - b)
    if rank == 1:
        kernel, strides, dilations = (1,) + kernel, (1,) + strides, (1,) + dilations
        begin, end = [0] + begin, [0] + end
    cin, cout_g = w.shape[0], w.shape[1]
    cin_g = cin // group
    flipped = w.reshape(group, cin_g, cout_g, *kernel)[..., ::-1, ::-1]
    weight = flipped.transpose(0, 2, 1, 3, 4).reshape(group * cout_g, cin_g, *kernel).astype(np.float32)
    up_shape = tuple(ctx.shape(x)[:2]) + tuple(
        (in_size[i] - 1) * strides[-rank + i] + 1 + begin[-rank + i] + end[-rank + i] for i in range(rank))
    up = f"{node.output[0]}:zero_inserted"
    ctx.graph.add_tensor(Tensor(up, up_shape, np.dtype(np.float32)))
    ctx.emit(node, "ZeroInsert", [x], {"strides": strides, "pads": tuple(begin + end), "rank": rank},
             outputs=[up], suffix=":zero_insert")
    inputs = [up, ctx.add_const(node.name + ":W", weight)]
    if len(node.input) > 2 and node.input[2]:
        inputs.append(node.input[2])
    ctx.emit(node, "Conv", inputs, {"kernel": kernel, "strides": (1, 1), "dilations": dilations,
                                    "pads": (0, 0, 0, 0), "group": group, "rank": rank})
