"""Fold per-channel affine operators into the crossbar operator before them.

A bias, a batch normalization or a per-channel scale after a convolution is a
vector operation on the GPEU with its own latency and energy; folded into the
weights and the bias held by the digital periphery that already scales the
crossbar's partial sums, it is free.
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


def fold_channel_affine(graph: Graph) -> int:
    """Fold ``Add``, ``Sub`` and ``Mul`` by per-channel constants after a crossbar operator into its
    weights and bias; return the count.

    Exporters write a convolution's bias as a separate Add (mnist-8) and Caffe2
    models follow batch normalization with Mul/Add scale layers (the light_*
    zoo). Left alone each is a GPEU pass; folded, it costs nothing. Operators
    with a pre-quantized model's own integers are left as they are.
    """
    folded = 0
    changed = True
    while changed:
        changed = False
        for op in [n for n in graph.nodes() if n.op in ("Add", "Sub", "Mul")]:
            for position in ((0, 1) if op.op != "Sub" else (0,)):
                x, c = op.inputs[position], op.inputs[1 - position]
                const = graph.constant(c)
                xbar = graph.producer(x)
                if const is None or xbar is None or not xbar.is_crossbar or "given_quant" in xbar.attrs:
                    continue
                if len(graph.consumers(x)) != 1 or x in graph.outputs:
                    continue
                vector = _channel_bias(graph, xbar, const)
                if vector is None:
                    continue
                _apply(graph, xbar, op.op, vector.astype(np.float64))
                # The crossbar operator takes over the output, so tensor names a user
                # may ask for (graph outputs among them) survive.
                graph.remove_node(op.name)
                graph.set_node_outputs(xbar, [op.outputs[0]])
                folded += 1
                changed = True
                break
    graph.prune()
    return folded


def _apply(graph: Graph, xbar: Node, op: str, vector: np.ndarray) -> None:
    """Rewrite ``xbar``'s weight and bias constants for ``y op vector``."""
    bias = graph.constant(xbar.inputs[2]).astype(np.float64) if len(xbar.inputs) > 2 \
        else np.zeros(vector.shape)
    weight = graph.constant(xbar.inputs[1]).astype(np.float64)
    if op == "Mul":
        axis_shape = (-1, 1, 1, 1) if xbar.op == "Conv" else (1, -1)
        weight, bias = weight * vector.reshape(axis_shape), bias * vector
        xbar.inputs[1] = _constant(graph, f"{xbar.name}:weight", weight.astype(np.float32))
    else:
        bias = bias + vector if op == "Add" else bias - vector
    xbar.inputs = xbar.inputs[:2] + [_constant(graph, f"{xbar.name}:bias", bias.astype(np.float32))]


def _constant(graph: Graph, base: str, data: np.ndarray) -> str:
    name = base
    while name in graph.tensors:
        name += "'"
    graph.add_constant(name, data)
    return name


def fold_batch_norm(graph: Graph) -> int:
    """Fold ``BatchNormalization(Conv(x))`` into the convolution's weights and bias; return the count.

    Inference-mode batch normalization is a per-channel affine map, so it folds
    exactly into the preceding convolution when nothing else reads the
    convolution's output. One that does not follow a convolution stays a vector
    operator.
    """
    folded = 0
    for bn in [n for n in graph.nodes() if n.op == "BatchNormalization"]:
        x = bn.inputs[0]
        conv = graph.producer(x)
        params = [graph.constant(t) for t in bn.inputs[1:5]]
        if conv is None or conv.op != "Conv" or any(p is None for p in params) \
                or len(graph.consumers(x)) != 1 or x in graph.outputs or "given_quant" in conv.attrs:
            continue
        scale, shift, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
        factor = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        weight = graph.constant(conv.inputs[1]).astype(np.float64)
        bias = graph.constant(conv.inputs[2]).astype(np.float64) if len(conv.inputs) > 2 else 0.0
        conv.inputs = [conv.inputs[0],
                       _constant(graph, f"{conv.name}:weight", (weight * factor.reshape(-1, 1, 1, 1)).astype(np.float32)),
                       _constant(graph, f"{conv.name}:bias", ((bias - mean) * factor + shift).astype(np.float32))]
        graph.remove_node(bn.name)
        graph.set_node_outputs(conv, [bn.outputs[0]])
        folded += 1
    graph.prune()
    return folded
