"""One importer per ONNX operator: normalize attributes and emit IR nodes.

Importers see a node whose constant inputs are already folded and whose tensors
all have static shapes. They resolve every ONNX convenience (``auto_pad``,
``ceil_mode``, Gemm's ``alpha``/``beta``/transposes, Flatten's axis, negative
axes) into explicit attributes, so passes and the runtime implement each
operator's semantics once. Crossbar operators come out as ``Conv`` (2-D form,
weights ``[Cout, Cin/group, kh, kw]``) and ``MatMul`` (weights ``[K, N]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from cimc.errors import UnsupportedOperatorError
from cimc.ir import Graph, Node, Tensor


@dataclass
class ImportContext:
    graph: Graph
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]]

    def attrs(self, node: onnx.NodeProto) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name: str) -> np.ndarray | None:
        return self.graph.constant(name) if name else None

    def shape(self, name: str) -> tuple[int, ...]:
        tensor = self.graph.tensors.get(name)
        return tensor.shape if tensor is not None else self.shapes[name][0]

    def activation(self, node: onnx.NodeProto, index: int) -> str:
        name = node.input[index]
        if self.const(name) is not None:
            raise UnsupportedOperatorError(
                f"node {node.name!r} ({node.op_type}): input {index} is a constant where cimc "
                f"expects an activation")
        return name

    def emit(self, node: onnx.NodeProto, op: str, inputs: list[str], attrs: dict | None = None,
             outputs: list[str] | None = None, suffix: str = "") -> Node:
        outputs = outputs or [node.output[0]]
        for out in outputs:
            if out not in self.graph.tensors:
                shape, _ = self.shapes[out]
                self.graph.add_tensor(Tensor(out, shape, np.dtype(np.float32)))
        return self.graph.add_node(Node(node.name + suffix, op, inputs, outputs, attrs or {}))

    def add_const(self, base: str, data: np.ndarray) -> str:
        name = base
        while name in self.graph.tensors:
            name += "'"
        self.graph.add_constant(name, data)
        return name


Importer = Callable[[ImportContext, onnx.NodeProto], None]
IMPORTERS: dict[str, Importer] = {}


def importer(*ops: str) -> Callable[[Importer], Importer]:
    def register(fn: Importer) -> Importer:
        for op in ops:
            IMPORTERS[op] = fn
        return fn
    return register


def refuse(node: onnx.NodeProto, what: str, supported: str) -> UnsupportedOperatorError:
    return UnsupportedOperatorError(
        f"node {node.name!r} ({node.op_type}): {what} is not supported; supported: {supported}")


def _spatial_window(ctx: ImportContext, node: onnx.NodeProto, kernel: tuple[int, ...]) -> dict:
    """Explicit strides, dilations and (begin..., end...) pads for a convolution or pooling window."""
    a = ctx.attrs(node)
    rank = len(kernel)
    in_shape = ctx.shape(node.input[0])[2:]
    strides = tuple(a.get("strides", [1] * rank))
    dilations = tuple(a.get("dilations", [1] * rank))
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads_begin, pads_end = [], []
        for i in range(rank):
            out = math.ceil(in_shape[i] / strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_shape[i])
            small, large = total // 2, total - total // 2
            pads_begin.append(small if auto_pad == "SAME_UPPER" else large)
            pads_end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = tuple(pads_begin + pads_end)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * rank)
    else:
        pads = tuple(a.get("pads", [0] * (2 * rank)))
    return {"strides": strides, "dilations": dilations, "pads": pads}


def _to_2d(window: dict, kernel: tuple[int, ...]) -> dict:
    """1-D windows become 2-D ones of height 1, so kernels exist once."""
    if len(kernel) == 2:
        return {"kernel": kernel, **window}
    p = window["pads"]
    return {"kernel": (1, kernel[0]), "strides": (1, window["strides"][0]),
            "dilations": (1, window["dilations"][0]), "pads": (0, p[0], 0, p[1])}


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
    window = _to_2d(_spatial_window(ctx, node, tuple(w.shape[2:])), tuple(w.shape[2:]))
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


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")


@importer(*_ELEMENTWISE)
def _binary(ctx: ImportContext, node: onnx.NodeProto) -> None:
    if all(ctx.const(i) is not None for i in node.input):
        raise refuse(node, "an operation on constants only", "at least one activation")
    ctx.emit(node, node.op_type, list(node.input), {})


@importer("Relu")
def _relu(ctx: ImportContext, node: onnx.NodeProto) -> None:
    ctx.emit(node, "Relu", [ctx.activation(node, 0)])


@importer("Identity", "Dropout")
def _identity(ctx: ImportContext, node: onnx.NodeProto) -> None:
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        raise refuse(node, "the dropout mask output", "inference-mode Dropout with one output")
    ctx.emit(node, "Identity", [ctx.activation(node, 0)])


@importer("MaxPool", "AveragePool")
def _pool(ctx: ImportContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    kernel = tuple(a["kernel_shape"])
    if len(kernel) not in (1, 2):
        raise refuse(node, f"{len(kernel)}-D pooling", "1-D and 2-D pooling")
    if len(node.output) > 1 and node.output[1]:
        raise refuse(node, "the indices output", "MaxPool with one output")
    window = _to_2d(_spatial_window(ctx, node, kernel), kernel)
    out_shape = ctx.shape(node.output[0])
    # The frontend has settled ceil_mode (see frontend._settle_ceil_mode); kernels pad
    # up to what the last window reaches, so the output size is all they need.
    out_hw = (1, out_shape[2]) if len(kernel) == 1 else tuple(out_shape[2:])
    attrs = {**window, "output_hw": out_hw, "rank": len(kernel)}
    if node.op_type == "AveragePool":
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)], attrs)


@importer("GlobalAveragePool")
def _global_pool(ctx: ImportContext, node: onnx.NodeProto) -> None:
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)])


@importer("Reshape", "Flatten")
def _reshape(ctx: ImportContext, node: onnx.NodeProto) -> None:
    ctx.emit(node, "Reshape", [ctx.activation(node, 0)], {"shape": ctx.shape(node.output[0])})


@importer("Transpose")
def _transpose(ctx: ImportContext, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    perm = tuple(ctx.attrs(node).get("perm", list(reversed(range(rank)))))
    ctx.emit(node, "Transpose", [ctx.activation(node, 0)], {"perm": perm})


@importer("Softmax")
def _softmax(ctx: ImportContext, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    axis = int(ctx.attrs(node).get("axis", -1)) % rank
    ctx.emit(node, "Softmax", [ctx.activation(node, 0)], {"axis": axis})
