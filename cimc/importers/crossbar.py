"""Importers of crossbar operators: Conv, Gemm, MatMul with a constant operand.

They come out as ``Conv`` (2-D form, weights ``[Cout, Cin/group, kh, kw]``) and
``MatMul`` (weights ``[K, N]``) with an optional per-channel bias.
"""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers._core import ImportContext, importer, refuse, spatial_window, to_2d
from cimc.ir import Node, Tensor


@importer("Conv")
def _conv(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    w = ctx.const(node.input[1])
    if w is None:
        raise refuse(node, "a weight computed at run time", "constant weights (they are programmed "
                     "into crossbars)")
    rank = w.ndim - 2
    if rank not in (1, 2):
        raise refuse(node, f"{rank}-D convolution", "1-D and 2-D convolution")
    group = int(ctx.attrs(node).get("group", 1))
    window = to_2d(spatial_window(ctx, node, tuple(w.shape[2:])), tuple(w.shape[2:]))
    weight = w.astype(np.float32).reshape(w.shape[0], w.shape[1], *window["kernel"])
    inputs = [x, ctx.add_const(node.input[1] + ":w2d", weight) if rank == 1 else node.input[1]]
    if len(node.input) > 2 and node.input[2]:
        inputs.append(node.input[2])
    ctx.emit(node, "Conv", inputs, {**window, "group": group, "rank": rank})


@importer("Gemm")
def _gemm(ctx: ImportContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    b = ctx.const(node.input[1])
    if b is None or ctx.const(node.input[0]) is not None:
        raise refuse(node, "Gemm whose B operand is not a constant", "Gemm(activation, constant B)")
    x = node.input[0]
    if a.get("transA", 0):
        m, k = ctx.shape(x)
        ctx.graph.add_tensor(Tensor(x + ":T", (k, m), np.dtype(np.float32)))
        ctx.graph.add_node(Node(node.name + ":transA", "Transpose", [x], [x + ":T"], {"perm": (1, 0)}))
        x = x + ":T"
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
    ctx.emit(node, "MatMul", inputs, {})


@importer("MatMul")
def _matmul(ctx: ImportContext, node: onnx.NodeProto) -> None:
    w = ctx.const(node.input[1])
    if w is None or ctx.const(node.input[0]) is not None or w.ndim != 2:
        raise refuse(node, "MatMul without a constant 2-D second operand",
                     "MatMul(activation, constant [K, N] matrix)")
    if len(ctx.shape(node.input[0])) < 2:
        raise refuse(node, "a 1-D activation operand", "activations of rank 2 or more")
    ctx.emit(node, "MatMul", [node.input[0], node.input[1]], {})
