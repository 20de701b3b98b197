"""Quantize float crossbar operators to the target's integer widths.

Weights: symmetric, per output channel, ``weight_bits`` wide (sign included), so
a zero weight is an exact zero cell and the differential mapping stays balanced.
Activations at crossbar inputs: one scale per tensor, from the largest magnitude
seen on calibration data; unsigned when calibration never saw a negative value
(post-ReLU tensors, raw pixels), which doubles their resolution. Everything
after a crossbar's digital periphery (scale, bias) stays in float32, as on a
GPEU.

A bfloat16 chip (``precision.format = "bf16"``) needs no quantization: each
weight is rounded to bfloat16 (nearest, ties to even) and the crossbars hold its
16-bit encoding; activations are rounded to bfloat16 by the runtime at the
crossbar input, and the periphery adds the float32 bias to the float32 sums
(scales are 1). No calibration data is read.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from cimc.errors import CapacityError, InputError, ModelError
from cimc.ir import CrossbarQuant, Graph, Node, QuantGrid
from cimc.runtime.graph_eval import iter_eval
from cimc.runtime.multipliers import bf16_bits
from cimc.targets import Target

#: Memory one calibration batch may take in the evaluator's largest unfolding.
CALIBRATION_BYTES = 256 << 20
#: Samples drawn when the user gives no calibration data.
SYNTHETIC_SAMPLES = 16


class CalibrationWarning(UserWarning):
    """Activation scales were not calibrated on real data."""


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def merge(self, other: "Range") -> "Range":
        return Range(min(self.low, other.low), max(self.high, other.high))


def weight_matrix(graph: Graph, node: Node) -> np.ndarray:
    """The (K, N) matrix a crossbar operator multiplies by; K ordered (cin, kh, kw) for convolutions."""
    w = graph.constant(node.inputs[1])
    if node.op == "Conv":
        return w.reshape(w.shape[0], -1).T
    return w


def quantize_weights(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    qmax = (1 << (bits - 1)) - 1
    peak = np.abs(w).max(axis=0)
    scale = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int32)
    return q, scale


def activation_quant(r: Range, bits: int) -> tuple[float, bool]:
    signed = r.low < 0
    peak = max(abs(r.low), abs(r.high))
    qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return (float(peak) / qmax if peak > 0 else 1.0), signed


def observe_ranges(graph: Graph, data: dict[str, np.ndarray]) -> dict[str, Range]:
    """Range of every crossbar-input tensor over ``data`` (arrays with a leading sample axis)."""
    wanted = {n.inputs[0] for n in graph.crossbar_nodes()}
    ranges: dict[str, Range] = {}
    count = len(next(iter(data.values())))
    unfold = max((graph.tensors[n.outputs[0]].size // graph.tensors[n.outputs[0]].shape[1]
                  * graph.constant(n.inputs[1])[0].size * 4 for n in graph.crossbar_nodes()
                  if n.op == "Conv"), default=1)
    chunk = max(1, min(256, CALIBRATION_BYTES // unfold))

    def note(name: str, value: np.ndarray) -> None:
        if not np.isfinite(value).all():
            raise InputError(f"on the calibration data the model computes NaN or infinite values in tensor "
                             f"{name!r}, the input of a crossbar operator, whose scale comes from its range; "
                             f"give calibration inputs on which the model computes finite values")
        r = Range(float(value.min()), float(value.max()))
        ranges[name] = ranges[name].merge(r) if name in ranges else r

    for start in range(0, count, chunk):
        feeds = {k: v[start:start + chunk] for k, v in data.items()}
        for name in wanted & set(feeds):
            note(name, feeds[name])
        for node, out, _ in iter_eval(graph, feeds):
            if node.outputs[0] in wanted:
                note(node.outputs[0], out)
    return ranges


def synthetic_data(graph: Graph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: rng.standard_normal((SYNTHETIC_SAMPLES,) + graph.tensors[name].shape).astype(np.float32)
            for name in graph.inputs}


def _given(node: Node, graph: Graph, target: Target) -> CrossbarQuant:
    """The quantization a pre-quantized model (QDQ or QOperator) fixed; checked against the target."""
    g = node.attrs["given_quant"]
    x: QuantGrid = g["x"]
    w_q = np.asarray(g["w_q"]).astype(np.int64)
    w_zero = np.asarray(g["w_zero"], dtype=np.int64)
    w_int = (w_q.reshape(w_q.shape[0], -1).T if node.op == "Conv" else w_q) - w_zero
    x_bits = int(np.ceil(np.log2(x.qmax - x.qmin + 1)))
    # The crossbars hold the model's own integers; zero points are corrected digitally
    # (sum(x * (w - zw)) = sum(x * w) - zw * sum(x)), so the stored type decides the width.
    w_bits = 8 * np.dtype(g["w_q"].dtype).itemsize
    if w_bits > target.precision.weight_bits or x_bits > target.precision.activation_bits:
        raise CapacityError(
            f"layer {node.name} is quantized to {w_bits}-bit weights and {x_bits}-bit activations; target "
            f"{target.name} holds {target.precision.weight_bits}-bit weights and "
            f"{target.precision.activation_bits}-bit activations. Choose a wider target (e.g. hp16)")
    w_scale = np.broadcast_to(np.asarray(g["w_scale"], dtype=np.float32), (w_int.shape[1],)).copy()
    bias_int = None if g.get("bias_int") is None else np.asarray(g["bias_int"], dtype=np.int64)
    return CrossbarQuant(x_scale=float(x.scale), x_bits=x_bits, x_signed=x.qmin < 0, w_int=w_int,
                         w_scale=w_scale, bias=None, x_zero=int(x.zero), bias_int=bias_int, out=g.get("out"),
                         w_type=str(np.dtype(g["w_q"].dtype)), w_zero=np.broadcast_to(w_zero, (w_int.shape[1],)).copy())


def bf16_encodings(w: np.ndarray) -> np.ndarray:
    """The bfloat16 encodings of ``w`` as int16 words (int64 array), -0 stored as +0 (the same
    weight): what a bfloat16 crossbar is programmed with. Raises ValueError if a weight rounds to
    infinity."""
    words = bf16_bits(w).view(np.int16).astype(np.int64)
    return np.where(words == -(1 << 15), 0, words)


def bf16_layer(graph: Graph, node: Node, target: Target) -> CrossbarQuant:
    """A crossbar operator on a bfloat16 chip: its weights' encodings, unit scales, float32 bias."""
    if "given_quant" in node.attrs:
        raise CapacityError(f"layer {node.name} is quantized to integers by the model (QDQ or QOperator form); "
                            f"target {target.name} computes in bfloat16 and holds no integer weights. Compile "
                            f"the float model for it, or choose an integer target such as sram")
    w = weight_matrix(graph, node).astype(np.float32)
    try:
        words = bf16_encodings(w)
    except ValueError:
        raise ModelError(f"layer {node.name} has weights up to {float(np.abs(w).max()):g}, which round to "
                         f"infinity in bfloat16 (largest finite: 3.39e+38); they cannot be stored") from None
    bias = graph.constant(node.inputs[2]) if len(node.inputs) > 2 else None
    return CrossbarQuant(x_scale=1.0, x_bits=16, x_signed=True, w_int=words,
                         w_scale=np.ones(w.shape[1], dtype=np.float32),
                         bias=None if bias is None else np.asarray(bias, dtype=np.float32), w_type="bfloat16")


def quantize(graph: Graph, target: Target, calibration: dict[str, np.ndarray] | None) -> dict[str, Range]:
    """Attach a :class:`CrossbarQuant` to every crossbar node; return the observed ranges.

    Operators a pre-quantized model already fixed keep the model's own numbers;
    the others are calibrated. On a bfloat16 chip every operator is :func:`bf16_layer`
    and nothing is calibrated.
    """
    if target.bf16:
        for node in graph.crossbar_nodes():
            node.attrs["quant"] = bf16_layer(graph, node, target)
        return {}
    free = [n for n in graph.crossbar_nodes() if "given_quant" not in n.attrs]
    for node in graph.crossbar_nodes():
        if "given_quant" in node.attrs:
            node.attrs["quant"] = _given(node, graph, target)
    if not free:
        return {}
    if calibration is None:
        warnings.warn("no calibration data given: activation scales are estimated from "
                      f"{SYNTHETIC_SAMPLES} standard-normal inputs and may cost accuracy; pass "
                      "--calibration DATA.npz with samples of every model input",
                      CalibrationWarning, stacklevel=2)
        calibration = synthetic_data(graph, np.random.default_rng(0))
    ranges = observe_ranges(graph, calibration)
    wb, ab = target.precision.weight_bits, target.precision.activation_bits
    for node in free:
        x = node.inputs[0]
        if x not in ranges:
            raise InputError(f"calibration data gave no values for tensor {x!r}")
        x_scale, x_signed = activation_quant(ranges[x], ab)
        w_int, w_scale = quantize_weights(weight_matrix(graph, node).astype(np.float64), wb)
        bias = graph.constant(node.inputs[2]) if len(node.inputs) > 2 else None
        node.attrs["quant"] = CrossbarQuant(
            x_scale=x_scale, x_bits=ab, x_signed=x_signed, w_int=w_int, w_scale=w_scale,
            bias=None if bias is None else np.asarray(bias, dtype=np.float32))
    return ranges
