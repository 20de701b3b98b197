"""The importer registry and the context importers work in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx

from cimc.errors import ModelError, UnsupportedOperatorError
from cimc.ir import Graph, Node, QuantGrid, Tensor


@dataclass(frozen=True)
class QuantizedConstant:
    """A folded DequantizeLinear of constants: the integers and the grid they sit on."""

    q: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    axis: int


@dataclass
class ImportContext:
    graph: Graph
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]]
    integers: dict[str, QuantizedConstant] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    graph_outputs: set[str] = field(default_factory=set)
    #: Integer grid of every tensor that holds (the real value of) a quantized tensor.
    grids: dict[str, QuantGrid] = field(default_factory=dict)

    def is_raw(self, name: str) -> bool:
        """Whether a tensor holds raw integers (an integer model input, or a Quantize output)."""
        tensor = self.graph.tensors.get(name)
        return tensor is not None and np.dtype(tensor.dtype).kind in "iu"

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

    def step(self, node: onnx.NodeProto, op: str, inputs: list[str], attrs: dict,
             shape: tuple[int, ...], tag: str) -> str:
        """One IR node of a lowering that takes several: a fresh float32 tensor ``shape`` out."""
        name = f"{node.output[0]}:{tag}"
        self.graph.add_tensor(Tensor(name, tuple(shape), np.dtype(np.float32)))
        self.emit(node, op, inputs, attrs, outputs=[name], suffix=f":{tag}")
        return name

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


def finite(node: onnx.NodeProto, role: str, name: str, data: np.ndarray | None) -> None:
    """Refuse a parameter with NaN or Inf values: crossbars and folded weights hold finite numbers."""
    if data is None or data.dtype.kind != "f":
        return
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ModelError(f"node {node.name!r} ({node.op_type}): {role} {name!r} holds {bad} NaN or infinite "
                         f"value(s) of {data.size}; cimc needs finite weights and parameters")


def refuse(node: onnx.NodeProto, what: str, supported: str) -> UnsupportedOperatorError:
    return UnsupportedOperatorError(
        f"node {node.name!r} ({node.op_type}): {what} is not supported; supported: {supported}")


def spatial_window(ctx: ImportContext, node: onnx.NodeProto, kernel: tuple[int, ...]) -> dict:
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


def to_2d(window: dict, kernel: tuple[int, ...]) -> dict:
    """1-D windows become 2-D ones of height 1, so kernels exist once."""
    if len(kernel) == 2:
        return {"kernel": kernel, **window}
    p = window["pads"]
    return {"kernel": (1, kernel[0]), "strides": (1, window["strides"][0]),
            "dilations": (1, window["dilations"][0]), "pads": (0, p[0], 0, p[1])}


