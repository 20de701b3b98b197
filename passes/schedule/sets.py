"""Sets (units of work) and the rows of activation tensors they read and write.

A set is a range of output rows of one operator: one output row of a 2-D
convolution by default, the whole output for operators without a row structure.
Rows are counted on axis 2 of rank-4 (N, C, H, W) tensors; any other tensor is
one row. The scheduler and code generator take dependencies from here; the
validator recomputes them on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir import Graph, Node


def tensor_rows(shape: tuple[int, ...]) -> int:
    return shape[2] if len(shape) == 4 else 1


def row_span(graph: Graph, tensor: str) -> tuple[int, int]:
    return 0, tensor_rows(graph.tensors[tensor].shape)


def conv_input_rows(attrs: dict, in_rows: int, out: tuple[int, int]) -> tuple[int, int]:
    """Input rows [a, b) that output rows ``out`` of a 2-D window operator read."""
    kh = attrs["kernel"][0]
    sh, dh, pt = attrs["strides"][0], attrs["dilations"][0], attrs["pads"][0]
    a = out[0] * sh - pt
    b = (out[1] - 1) * sh - pt + (kh - 1) * dh + 1
    return max(a, 0), min(b, in_rows)


@dataclass(frozen=True)
class SetSpec:
    node: str
    index: int
    out_rows: tuple[int, int]
    pixels: int
    reads: tuple[tuple[str, int, int], ...]   # (tensor, first row, end row) of activations read


def node_sets(graph: Graph, node: Node, rows_per_set: int = 1) -> list[SetSpec]:
    """The sets of a node; only crossbar operators are split, vector operators are one set."""
    out_shape = graph.tensors[node.outputs[0]].shape
    activations = [t for t in node.inputs if t and not graph.tensors[t].is_constant]
    if not node.is_crossbar or tensor_rows(out_shape) == 1 or node.op != "Conv":
        pixels = 1
        if node.is_crossbar:
            pixels = max(1, graph.tensors[node.outputs[0]].size // out_shape[1 if node.op == "Conv" else -1])
        reads = tuple((t, *row_span(graph, t)) for t in activations)
        return [SetSpec(node.name, 0, (0, tensor_rows(out_shape)), pixels, reads)]
    x = node.inputs[0]
    in_rows = tensor_rows(graph.tensors[x].shape)
    height, width = out_shape[2], out_shape[3]
    sets = []
    for i, r0 in enumerate(range(0, height, rows_per_set)):
        r1 = min(r0 + rows_per_set, height)
        a, b = conv_input_rows(node.attrs, in_rows, (r0, r1))
        sets.append(SetSpec(node.name, i, (r0, r1), (r1 - r0) * width * out_shape[0], ((x, a, b),)))
    return sets
