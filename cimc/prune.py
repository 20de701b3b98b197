"""Unstructured magnitude pruning of an ONNX model's crossbar weights (``cimc prune``).

So that sparse models can be studied (SWS, ADC energy) starting from dense ones:
every float initializer that is a weight operand of a Conv, ConvTranspose, Gemm or
MatMul node (not a bias), directly or through operators that only rearrange it
(Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Identity: mnist-8 reshapes its
fully connected weights), gets its smallest magnitudes set to zero, per tensor,
until ``round(sparsity x size)`` of its entries are zero (weights already zero count
among the smallest; ties are broken by position, so the result is deterministic).
Nothing else in the model changes. There is no retraining: accuracy at high
sparsity is what magnitude pruning alone leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from cimc.errors import CimcError, ModelError

#: Operators whose weight operands are pruned, and which inputs those are.
WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1)}
#: Operators that move a weight's elements without changing them (their input 0 is traced back).
REARRANGING = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class Pruned:
    """One pruned weight tensor."""
    name: str
    size: int
    zeros_before: int
    zeros_after: int


def prune_array(w: np.ndarray, sparsity: float) -> np.ndarray:
    """``w`` with its ``round(sparsity * size)`` smallest magnitudes set to zero."""
    count = int(round(sparsity * w.size))
    out = w.copy()
    if count:
        flat = out.reshape(-1)
        flat[np.argsort(np.abs(flat), kind="stable")[:count]] = 0
    return out


def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:          # also refuses NaN
        raise CimcError(f"sparsity must be in [0, 1) (the fraction of each weight tensor set to zero), "
                        f"got {sparsity}")


def prune_model(model: onnx.ModelProto, sparsity: float) -> tuple[onnx.ModelProto, list[Pruned]]:
    """A copy of ``model`` whose crossbar weights are pruned to ``sparsity``, and what was pruned."""
    check_sparsity(sparsity)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    producer = {o: n for n in out.graph.node if n.op_type in REARRANGING and n.domain in ("", "ai.onnx")
                for o in n.output}
    names = []
    for node in out.graph.node:
        for i in WEIGHT_INPUTS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ():
            name = node.input[i] if i < len(node.input) else ""
            while name in producer and name not in inits:
                name = producer[name].input[0]
            if name in inits and name not in names:
                names.append(name)
    done = []
    for name in names:
        w = numpy_helper.to_array(inits[name])
        if w.dtype.kind != "f" or w.ndim < 2:
            continue                          # integer (pre-quantized) weights and vectors stay
        pruned = prune_array(w, sparsity)
        inits[name].CopyFrom(numpy_helper.from_array(pruned, name))
        done.append(Pruned(name, int(w.size), int(np.count_nonzero(w == 0)), int(np.count_nonzero(pruned == 0))))
    return out, done


def prune_file(src: "str | Path", sparsity: float) -> tuple[onnx.ModelProto, list[Pruned]]:
    check_sparsity(sparsity)
    path = Path(src)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    model, done = prune_model(model, sparsity)
    if not done:
        raise ModelError(f"{path} has no float weight initializer of a Conv, ConvTranspose, Gemm or MatMul "
                         f"to prune")
    return model, done
