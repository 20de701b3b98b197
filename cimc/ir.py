"""The graph IR: operator nodes over statically shaped tensors.

Topology lives in a ``networkx.DiGraph`` (node name -> node name, one edge per
tensor that flows between them) so that passes get topological order, producer
and consumer queries and DOT export for free; the typed wrappers below keep pass
code reading as compiler code. After the frontend every tensor has a static shape
and dtype, constants carry their data, and node attributes are normalized (no
``auto_pad``, explicit pads, strides and dilations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

#: Operators lowered to matrix-vector multiplications on crossbars.
CROSSBAR_OPS = frozenset({"Conv", "MatMul"})
#: Attributes passes attach to nodes (not operator semantics): never printed or stored as such.
PASS_ATTRS = frozenset({"quant", "given_quant"})


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def describe(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{np.dtype(self.dtype).name}[{dims}]"


@dataclass(frozen=True)
class QuantGrid:
    """An integer grid of real values: ``real = (q - zero) * scale`` with ``q`` in [qmin, qmax]."""

    scale: np.ndarray          # scalar or per channel, float32
    zero: np.ndarray           # same shape as scale, integer-valued
    qmin: int
    qmax: int

    @classmethod
    def for_dtype(cls, scale, zero, dtype) -> "QuantGrid":
        info = np.iinfo(np.dtype(dtype))
        scale, zero = np.asarray(scale, dtype=np.float32), np.asarray(zero, dtype=np.int64)
        if scale.size == 1 and zero.size == 1:          # per tensor: scalars, whatever the file's shape
            scale, zero = scale.reshape(()), zero.reshape(())
        return cls(scale, zero, int(info.min), int(info.max))


@dataclass
class CrossbarQuant:
    """Integer form of one crossbar operator: what the crossbars and the digital periphery hold.

    Inputs become DAC codes ``q = clip(rint(x / x_scale) + x_zero, lo, hi)``; the
    crossbars sum ``(q - x_zero) @ w_int``; the periphery then either scales to
    float, ``acc * x_scale * w_scale + bias``, or, when ``out`` is given (models
    quantized by onnxruntime), adds the integer ``bias_int`` and requantizes to
    the output grid exactly as onnxruntime's integer kernels do.

    A pre-quantized model's layer also keeps the element type of its weights,
    ``w_type``, and their zero points, ``w_zero`` (``w_int`` is the stored integers
    minus ``w_zero``): which integer kernel a CPU runtime picks depends on them.

    On a bfloat16 chip ``w_type`` is ``"bfloat16"``: ``w_int`` holds the words the
    crossbars are programmed with, each weight's bfloat16 encoding read as an int16
    (so a program stores them as it stores integer weights), inputs are rounded to
    bfloat16 instead of quantized (``x_scale`` and ``w_scale`` are 1, ``x_zero`` 0),
    and ``bias`` is added to the float32 sums.
    """

    x_scale: float
    x_bits: int
    x_signed: bool
    w_int: np.ndarray
    w_scale: np.ndarray
    bias: np.ndarray | None
    x_zero: int = 0
    bias_int: np.ndarray | None = None
    out: QuantGrid | None = None
    w_type: str | None = None
    w_zero: np.ndarray | None = None


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_crossbar(self) -> bool:
        return self.op in CROSSBAR_OPS


class Graph:
    """A DAG of :class:`Node` over :class:`Tensor`, kept consistent by its mutators."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.tensors: dict[str, Tensor] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._nodes: dict[str, Node] = {}
        self._order: dict[str, int] = {}
        self._dag = nx.DiGraph()
        self._producer: dict[str, str] = {}

    # -- construction -------------------------------------------------------------
    def add_tensor(self, tensor: Tensor) -> Tensor:
        self.tensors[tensor.name] = tensor
        return tensor

    def add_constant(self, name: str, data: np.ndarray) -> Tensor:
        data = np.asarray(data)
        if not data.flags.c_contiguous:             # np.ascontiguousarray would make scalars 1-D
            data = data.copy()
        return self.add_tensor(Tensor(name, tuple(data.shape), data.dtype, data))

    def add_node(self, node: Node) -> Node:
        if node.name in self._nodes:
            raise ValueError(f"duplicate node name {node.name}")
        self._nodes[node.name] = node
        self._order[node.name] = len(self._order)
        self._dag.add_node(node.name)
        for out in node.outputs:
            self._producer[out] = node.name
        self._link(node)
        return node

    def remove_node(self, name: str) -> None:
        node = self._nodes.pop(name)
        for out in node.outputs:
            self._producer.pop(out, None)
        self._dag.remove_node(name)

    def set_node_outputs(self, node: Node, outputs: list[str]) -> None:
        for out in node.outputs:
            self._producer.pop(out, None)
        node.outputs = list(outputs)
        for out in outputs:
            self._producer[out] = node.name
        self._link(node)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer of tensor ``old`` (and the graph outputs) read ``new`` instead."""
        for node in self.consumers(old):
            node.inputs = [new if t == old else t for t in node.inputs]
            self._link(node)
        self.outputs = [new if t == old else t for t in self.outputs]

    def _link(self, node: Node) -> None:
        for pred in list(self._dag.predecessors(node.name)):
            self._dag.remove_edge(pred, node.name)
        for t in node.inputs:
            producer = self._producer.get(t)
            if producer is not None:
                self._dag.add_edge(producer, node.name, tensor=t)
        for out in node.outputs:
            for consumer in self._nodes.values():
                if out in consumer.inputs and not self._dag.has_edge(node.name, consumer.name):
                    self._dag.add_edge(node.name, consumer.name, tensor=out)

    def prune(self) -> None:
        """Drop nodes and tensors that no graph output depends on."""
        live_nodes = set()
        for out in self.outputs:
            p = self._producer.get(out)
            if p is not None:
                live_nodes.add(p)
                live_nodes |= nx.ancestors(self._dag, p)
        for name in [n for n in self._nodes if n not in live_nodes]:
            self.remove_node(name)
        used = set(self.inputs) | set(self.outputs)
        for node in self._nodes.values():
            used.update(node.inputs)
            used.update(node.outputs)
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}

    # -- queries ---------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self._nodes[name]

    def nodes(self) -> list[Node]:
        """Nodes in a deterministic topological order (ties broken by insertion order)."""
        order = nx.lexicographical_topological_sort(self._dag, key=self._order.__getitem__)
        return [self._nodes[n] for n in order]

    def crossbar_nodes(self) -> list[Node]:
        return [n for n in self.nodes() if n.is_crossbar]

    def producer(self, tensor: str) -> Node | None:
        name = self._producer.get(tensor)
        return self._nodes[name] if name is not None else None

    def consumers(self, tensor: str) -> list[Node]:
        """Nodes reading ``tensor``, in insertion order (no topological sort: passes call this often)."""
        return [n for n in self._nodes.values() if tensor in n.inputs]

    def constant(self, tensor: str) -> np.ndarray | None:
        t = self.tensors.get(tensor)
        return None if t is None else t.data

    def __len__(self) -> int:
        return len(self._nodes)

    # -- presentation --------------------------------------------------------------
    def format(self) -> str:
        """A readable listing in the spirit of ``torch.fx.Graph.print_tabular``."""
        lines = [f"graph {self.name}"]
        for name in self.inputs:
            lines.append(f"  input  %{name}: {self.tensors[name].describe()}")
        for node in self.nodes():
            args = []
            for t in node.inputs:
                if not t:
                    continue
                tensor = self.tensors[t]
                args.append(f"const {tensor.describe()}" if tensor.is_constant else f"%{t}")
            attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(node.attrs.items())
                              if k not in PASS_ATTRS)
            outs = ", ".join(f"%{o}: {self.tensors[o].describe()}" for o in node.outputs)
            kind = "xbar" if node.is_crossbar else "vec "
            lines.append(f"  {kind}   {outs} = {node.op}({', '.join(args)})"
                         + (f" {{{attrs}}}" if attrs else "") + f"  # {node.name}")
        lines.append(f"  output {', '.join('%' + o for o in self.outputs)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "inputs": [{"name": n, "shape": list(self.tensors[n].shape),
                        "dtype": np.dtype(self.tensors[n].dtype).name} for n in self.inputs],
            "outputs": [{"name": n, "shape": list(self.tensors[n].shape),
                         "dtype": np.dtype(self.tensors[n].dtype).name} for n in self.outputs],
            "nodes": [{"name": n.name, "op": n.op, "inputs": n.inputs, "outputs": n.outputs,
                       "attrs": {k: _json_attr(v) for k, v in n.attrs.items() if k not in PASS_ATTRS},
                       "crossbar": n.is_crossbar} for n in self.nodes()],
        }

    def to_dot(self) -> str:
        lines = [f'digraph "{self.name}" {{', "  rankdir=TB;"]
        for node in self.nodes():
            shape = "box, style=filled, fillcolor=lightblue" if node.is_crossbar else "ellipse"
            out = self.tensors[node.outputs[0]].describe()
            lines.append(f'  "{node.name}" [label="{node.op}\\n{out}", shape={shape}];')
        for a, b, data in self._dag.edges(data=True):
            lines.append(f'  "{a}" -> "{b}" [label="{data["tensor"]}"];')
        lines.append("}")
        return "\n".join(lines)


def _fmt_attr(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(str(x) for x in v) + "]"
    return str(v)


def _json_attr(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if dataclasses.is_dataclass(v):
        return str(v)
    return v

