"""Cut a layer larger than the whole chip into parts by output channels, so that segments hold it.

A model larger than the chip runs in segments of whole layers (:mod:`cimc.passes.mapping`);
a layer whose crossbars alone outnumber the chip's fits no segment. Cut by output
channels, each part is an ordinary crossbar layer: the same input, a slice of the
weights, of the periphery's per-channel scales and of the bias, and a Concat over the
channel axis on the GPEU joins the parts' outputs into the layer's own output tensor.
Every output channel is computed from the same integers, input scale and channel
scale as before, so the result does not change by a bit.

Why outputs and not input rows: parts cut by rows would each leave 32-bit partial
sums to be kept in the buffers across segment writes and added on the GPEU before
the periphery's scaling; parts cut by outputs finish their channels and only move
them, once. Each part takes whole column blocks (``outputs_per_crossbar`` outputs)
and the parts are as even as the chip allows, so no crossbar is wasted and the
layers after the last part may share its segment.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cimc.ir import CrossbarQuant, Graph, Node, QuantGrid
from cimc.passes.mapping import blocks
from cimc.targets import Target


def split_oversized(graph: Graph, target: Target) -> dict[str, list[str]]:
    """Cut every quantized crossbar layer that needs more crossbars than ``target`` has into parts
    that each fit it; return ``{layer: [its parts]}``. A layer that cannot be cut (grouped, or
    larger than the chip even one column block wide) is left for the mapping to refuse."""
    total, per = target.total_crossbars, target.outputs_per_crossbar
    split = {}
    for node in graph.crossbar_nodes():
        if node.attrs.get("group", 1) != 1 or len(blocks(node, target)) <= total:
            continue
        k, n = node.attrs["quant"].w_int.shape
        row_blocks, column_blocks = math.ceil(k / target.crossbar.rows), math.ceil(n / per)
        if row_blocks > total:
            continue
        parts = math.ceil(column_blocks / (total // row_blocks))
        width = math.ceil(column_blocks / parts) * per
        split[node.name] = _cut(graph, node, [(c, min(c + width, n)) for c in range(0, n, width)])
    return split


def _cut(graph: Graph, node: Node, spans: list[tuple[int, int]]) -> list[str]:
    """Replace ``node`` by one node per channel span and a Concat of their outputs."""
    out = graph.tensors[node.outputs[0]]
    axis = 1 if node.op == "Conv" else len(out.shape) - 1
    weight, bias = node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None
    w, b = graph.constant(weight), None if bias is None else graph.constant(bias)
    graph.remove_node(node.name)
    names, outputs = [], []
    for j, (c0, c1) in enumerate(spans):
        name = f"{node.name}/part{j}"
        shape = out.shape[:axis] + (c1 - c0,) + out.shape[axis + 1:]
        outputs.append(graph.add_tensor(dataclasses.replace(out, name=f"{out.name}/part{j}", shape=shape)).name)
        inputs = [node.inputs[0], graph.add_constant(f"{weight}/part{j}",
                                                     w[c0:c1] if node.op == "Conv" else w[:, c0:c1]).name]
        if bias is not None:
            inputs.append(graph.add_constant(f"{bias}/part{j}", b[c0:c1]).name)
        attrs = {k: v for k, v in node.attrs.items() if k not in ("quant", "given_quant")}
        attrs["quant"] = _channels(node.attrs["quant"], c0, c1)
        graph.add_node(Node(name, node.op, inputs, [outputs[-1]], attrs))
        names.append(name)
    graph.add_node(Node(node.name, "Concat", outputs, [out.name], {"axis": axis}))
    for tensor in (weight, bias):
        if tensor is not None and not graph.consumers(tensor):
            del graph.tensors[tensor]
    return names


def _channels(quant: CrossbarQuant, c0: int, c1: int) -> CrossbarQuant:
    """The integer form of output channels [c0, c1) of a layer: every per-channel field sliced."""
    def cut(values):
        return values if values is None or values.ndim == 0 or values.size == 1 else values[..., c0:c1]

    out = quant.out
    if out is not None:
        out = QuantGrid(cut(out.scale), cut(out.zero), out.qmin, out.qmax)
    return dataclasses.replace(quant, w_int=np.ascontiguousarray(quant.w_int[:, c0:c1]), w_scale=cut(quant.w_scale),
                               bias=cut(quant.bias), bias_int=cut(quant.bias_int), w_zero=cut(quant.w_zero), out=out)
