"""Sets (units of work) and the rows of activation tensors they read and write.

A set is a range of output rows of one operator: ``rows_per_set`` output rows
(one by default) of a 2-D convolution, of a 2-D max or average pool, and of a
*row-wise* vector operator (elementwise arithmetic and activations, batch
normalization, LRN, softmax or concatenation over channels: output row r needs
row r of each input, or the whole of an input broadcast over rows); the whole
output for every other operator. Rows are counted on axis 2 of rank-4 (N, C, H,
W) tensors; any other tensor is one row.

Row granularity through the vector operators is what lets a layer start on the
first rows of its input while its producer is still working: a convolution
behind a ReLU behind a pool can start two rows after the pool's input does.
The scheduler, code generator and runtime take the rows a set reads from
:func:`input_rows`; the validator recomputes them on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir import Graph, Node

#: Vector operators whose output row r depends on row r of each input only (given the
#: conditions of :func:`row_granular`).
ROW_WISE = frozenset({
    "Identity", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
    "Selu", "Softplus", "Neg", "Abs", "Exp", "Sqrt", "Pow", "Erf", "Gelu", "Log", "Reciprocal", "Floor",
    "Ceil", "Round", "Sign", "Softsign", "Not", "IsNaN", "IsInf", "ThresholdedRelu", "Shrink", "Cast",
    "Add", "Sub", "Mul", "Div", "Mod", "Sum", "Max", "Min", "Where", "Less", "LessOrEqual", "Greater",
    "GreaterOrEqual", "Equal", "And", "Or", "Xor", "BatchNormalization", "LRN", "Softmax", "Concat",
    "Quantize", "Dequantize", "FakeQuant",
})
#: Window operators: output row r reads the input rows under its window.
WINDOWED = frozenset({"MaxPool", "AveragePool"})
#: Operators whose attribute ``axis`` must not be the row axis for them to be row-wise.
_AXIS_OPS = frozenset({"Softmax", "Concat", "Quantize", "Dequantize", "FakeQuant"})
_PER_CHANNEL = frozenset({"BatchNormalization", "Quantize", "Dequantize", "FakeQuant"})


def tensor_rows(shape: tuple[int, ...]) -> int:
    return shape[2] if len(shape) == 4 else 1


def _broadcast_rows(shape: tuple[int, ...]) -> int:
    """Rows of a tensor numpy-broadcast against a rank-4 tensor (right-aligned)."""
    return shape[-2] if len(shape) >= 2 else 1


def row_granular(graph: Graph, node: Node) -> str | None:
    """``"conv"``, ``"window"`` or ``"rows"``: how a node's sets are cut; None for a one-set node."""
    out = graph.tensors[node.outputs[0]].shape
    if len(out) != 4 or len(node.outputs) != 1:
        return None
    if node.is_crossbar:
        return "conv" if node.op == "Conv" else None
    if node.op in WINDOWED:
        return "window" if node.attrs.get("rank", 2) == 2 else None
    if node.op not in ROW_WISE or (node.op in _AXIS_OPS and node.attrs.get("axis") == 2):
        return None
    for t in node.inputs:
        if not t:
            continue
        shape = graph.tensors[t].shape
        if graph.tensors[t].is_constant:
            if node.op not in _PER_CHANNEL and _broadcast_rows(shape) != 1:
                return None
        elif not (len(shape) == 4 and shape[2] == out[2]) and _broadcast_rows(shape) != 1:
            return None
    return "rows"


def window_input_rows(attrs: dict, in_rows: int, out: tuple[int, int]) -> tuple[int, int]:
    """Input rows [a, b) that output rows ``out`` of a 2-D window operator read."""
    kh = attrs["kernel"][0]
    sh, dh, pt = attrs["strides"][0], attrs["dilations"][0], attrs["pads"][0]
    a = out[0] * sh - pt
    b = (out[1] - 1) * sh - pt + (kh - 1) * dh + 1
    return max(a, 0), min(b, in_rows)


def input_rows(graph: Graph, node: Node, tensor: str, out: tuple[int, int]) -> tuple[int, int]:
    """Rows [a, b) of input ``tensor`` that output rows ``out`` of ``node`` need."""
    rows = tensor_rows(graph.tensors[tensor].shape)
    kind = row_granular(graph, node)
    if kind in ("conv", "window") and tensor == node.inputs[0]:
        return window_input_rows(node.attrs, rows, out)
    if kind == "rows" and len(graph.tensors[tensor].shape) == 4 and rows > 1:
        return out
    return 0, rows


@dataclass(frozen=True)
class SetSpec:
    node: str
    index: int
    out_rows: tuple[int, int]
    pixels: int
    reads: tuple[tuple[str, int, int], ...]   # (tensor, first row, end row) of activations read


def node_sets(graph: Graph, node: Node, rows_per_set: int = 1) -> list[SetSpec]:
    """The sets of a node, ``rows_per_set`` output rows each where the node is row-granular."""
    out_shape = graph.tensors[node.outputs[0]].shape
    activations = [t for t in node.inputs if t and not graph.tensors[t].is_constant]
    height = tensor_rows(out_shape)
    step = height if row_granular(graph, node) is None else rows_per_set
    per_row = graph.tensors[node.outputs[0]].size // height
    if node.is_crossbar:
        per_row //= out_shape[1 if node.op == "Conv" else -1]       # output pixels, not values
    sets = []
    for i, r0 in enumerate(range(0, height, step)):
        r1 = min(r0 + step, height)
        reads = tuple((t, *input_rows(graph, node, t, (r0, r1))) for t in activations)
        sets.append(SetSpec(node.name, i, (r0, r1), max(1, (r1 - r0) * per_row), reads))
    return sets
