"""Fold constant additions that follow a crossbar operator into its bias.

Exporters often write a convolution's bias as a separate ``Add`` (mnist-8 does).
Left alone, that Add is a vector operation on the GPEU with its own latency and
energy; on the chip the bias belongs to the digital periphery that already
scales the crossbar's partial sums, where it is free.
"""

from __future__ import annotations

import numpy as np

from cimc.ir import Graph, Node


def _channel_bias(graph: Graph, xbar: Node, const: np.ndarray) -> np.ndarray | None:
    """The per-output-channel vector equal to ``const`` when broadcast over ``xbar``'s output."""
    out_shape = graph.tensors[xbar.outputs[0]].shape
    if np.broadcast_shapes(const.shape, out_shape) != out_shape:
        return None
    channels = out_shape[1] if xbar.op == "Conv" else out_shape[-1]
    axis = 1 if xbar.op == "Conv" else len(out_shape) - 1
    full = np.broadcast_to(const.reshape((1,) * (len(out_shape) - const.ndim) + const.shape), out_shape)
    moved = np.moveaxis(full, axis, -1).reshape(-1, channels)
    return moved[0].astype(np.float32) if np.all(moved == moved[:1]) else None


def fold_bias_add(graph: Graph) -> int:
    """Rewrite ``Add(crossbar_op(x), c)`` as ``crossbar_op(x)`` with bias ``+ c``; return the count."""
    folded = 0
    for add in [n for n in graph.nodes() if n.op == "Add"]:
        for position in (0, 1):
            x, c = add.inputs[position], add.inputs[1 - position]
            const = graph.constant(c)
            xbar = graph.producer(x)
            if const is None or xbar is None or not xbar.is_crossbar:
                continue
            if len(graph.consumers(x)) != 1 or x in graph.outputs:
                continue
            bias = _channel_bias(graph, xbar, const)
            if bias is None:
                continue
            if len(xbar.inputs) > 2:
                bias = bias + graph.constant(xbar.inputs[2])
                xbar.inputs = xbar.inputs[:2]
            name = f"{xbar.name}:bias"
            while name in graph.tensors:
                name += "'"
            graph.add_constant(name, bias)
            xbar.inputs = xbar.inputs + [name]
            # The crossbar operator takes over the Add's output, so tensor names a user
            # may ask for (graph outputs among them) survive.
            graph.remove_node(add.name)
            graph.set_node_outputs(xbar, [add.outputs[0]])
            folded += 1
            break
    graph.prune()
    return folded
