"""Float evaluation of an IR graph with the runtime's kernels.

This is the IR's interpreter (as ``torch.fx.Interpreter`` is for fx graphs): it
runs the graph itself, not a compiled program, in float32. Calibration uses it
to observe activation ranges; tests use it to check passes that must not change
what a graph computes.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from cimc.ir import Graph, Node
from cimc.runtime.kernels import VECTOR_KERNELS, conv_float, lift_constant, matmul_float


def _value(graph: Graph, env: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name in env:
        return env[name]
    return lift_constant(graph.tensors[name].data)


def eval_node(graph: Graph, node: Node, env: dict[str, np.ndarray]) -> np.ndarray:
    if node.op == "Conv":
        bias = graph.constant(node.inputs[2]) if len(node.inputs) > 2 else None
        return conv_float(env[node.inputs[0]], graph.constant(node.inputs[1]), bias, node.attrs)
    if node.op == "MatMul":
        bias = graph.constant(node.inputs[2]) if len(node.inputs) > 2 else None
        return matmul_float(env[node.inputs[0]], graph.constant(node.inputs[1]), bias)
    return VECTOR_KERNELS[node.op](node.attrs, *(_value(graph, env, t) for t in node.inputs))


def iter_eval(graph: Graph, feeds: dict[str, np.ndarray]) -> Iterator[tuple[Node, np.ndarray, dict]]:
    """Yield (node, output, environment) in topological order; feeds carry a leading batch axis."""
    env = {k: np.asarray(v, dtype=np.float32) for k, v in feeds.items()}
    for node in graph.nodes():
        out = eval_node(graph, node, env)
        env[node.outputs[0]] = out
        yield node, out, env


def evaluate(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    env: dict[str, np.ndarray] = dict(feeds)
    for _, _, env in iter_eval(graph, feeds):
        pass
    return {name: env[name] for name in graph.outputs}
