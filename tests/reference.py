"""An independent oracle for the runtime: the program's own quantized numerics, evaluated on the graph.

It reads what a compiled :class:`cimc.Program` stores (crossbar contents, activation
scales, weight scales, biases, vector operators) and evaluates the operator graph
directly: every crossbar operator as ``float32(codes(x) @ w_int * float32(x_scale * w_scale)) + bias``
(the exact integer sum times one float32 factor per channel, rounded once, then the
float32 bias: the periphery's arithmetic, so the two agree to the last bit) with
``codes(x) = clip(rint(x / x_scale) + x_zero) - x_zero`` (QuantizeLinear's arithmetic),
or, for pre-quantized models, requantized to the output grid as onnxruntime does; exact
sums in float64, convolutions through the float kernel (which is checked against
onnxruntime in test_kernels). No instruction
streams, tiles, messages or schedules are involved, so a runtime that moves data
wrongly, mixes convolution groups or drops partial sums disagrees with it far beyond
float rounding, while quantization error (which this oracle shares) cannot hide a bug.
"""

from __future__ import annotations

import numpy as np

from cimc.program import Program
from cimc.runtime.kernels import VECTOR_KERNELS, conv_float, lift_constant


def integer_weights(program: Program, layer: str) -> np.ndarray:
    """The layer's (K, N) integer matrix, reassembled from its crossbars (through the row and output
    indices of sorted blocks). Natural mappings cover every entry once; SWS leaves out rows that
    are zero for all outputs of a crossbar, so there every entry is covered at most once."""
    q = program.node(layer)["quant"]
    w = np.zeros((q["k"], q["n"]), dtype=np.float64)
    seen = np.zeros(w.shape, dtype=np.int64)
    for x in program.crossbars:
        if x["layer"] == layer:
            where = np.ix_(program.block_rows(x), program.block_cols(x))
            w[where] = program.arrays[f"xbar/{x['id']}"]
            seen[where] += 1
    sorted_blocks = program.manifest["options"].get("sws") is not None
    assert np.all(seen <= 1) and (sorted_blocks or np.all(seen == 1)), \
        f"crossbars of {layer} do not cover its matrix exactly once"
    return w


def codes(x: np.ndarray, q: dict) -> np.ndarray:
    lo, hi = (-(1 << (q["x_bits"] - 1)), (1 << (q["x_bits"] - 1)) - 1) if q["x_signed"] \
        else (0, (1 << q["x_bits"]) - 1)
    z = q.get("x_zero", 0)
    return np.clip(np.rint(x.astype(np.float32) / np.float32(q["x_scale"])) + z, lo, hi).astype(np.float64) - z


def requantize(acc: np.ndarray, q: dict, w_scale: np.ndarray, bias_int, channels: tuple) -> np.ndarray:
    """onnxruntime's integer-kernel output: float32(acc + bias) * float32(sx * sw / sy), rounded, saturated."""
    out = q["out"]
    total = acc if bias_int is None else acc + bias_int.astype(np.float64).reshape(channels)
    factor = (np.float32(q["x_scale"]) * w_scale.astype(np.float32)) / np.float32(out["scale"])
    y = np.rint(total.astype(np.float32) * factor.reshape(channels))
    y = np.clip(y, out["qmin"] - out["zero"], out["qmax"] - out["zero"])
    return y.astype(np.float64) * np.float32(out["scale"])


def evaluate_program(program: Program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs for ``inputs`` (arrays with a leading batch axis), computed from the graph."""
    env = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    consts = {k[len("const/"):]: v for k, v in program.arrays.items() if k.startswith("const/")}
    for node in program.nodes:
        op, attrs = node["op"], node["attrs"]
        if "quant" in node:
            q = node["quant"]
            name = node["name"]
            w = integer_weights(program, name)
            w_scale = program.arrays[f"layer/{name}/w_scale"]
            scale = q["x_scale"] * w_scale.astype(np.float64)
            bias = program.arrays.get(f"layer/{name}/bias")
            bias_int = program.arrays.get(f"layer/{name}/bias_int")
            xq = codes(env[node["inputs"][0]], q)
            if op == "Conv":
                kh, kw = attrs["kernel"]
                cin_g = q["k"] // (kh * kw)
                weight = w.T.reshape(q["n"], cin_g, kh, kw)
                acc = conv_float(xq, weight, None, attrs).astype(np.float64)   # exact integer sums
                channels = (1, 1, -1) + (1,) * (acc.ndim - 3)          # (B, N, C, [H,] W)
            else:
                acc = xq @ w
                channels = (-1,)
            if q.get("out") is not None:
                y = requantize(acc, q, w_scale, bias_int, channels)
            else:
                # The periphery's arithmetic: one float32 factor per channel (the exact sum times
                # it, rounded once to float32), then the float32 bias.
                y = (acc * scale.astype(np.float32).astype(np.float64).reshape(channels)).astype(np.float32)
                if bias is not None:
                    y = y + bias.astype(np.float32).reshape(channels)
            env[node["outputs"][0]] = y.astype(np.float32)
        else:
            args = [lift_constant(consts[t]) if t in consts else env[t] for t in node["inputs"]]
            env[node["outputs"][0]] = VECTOR_KERNELS[op](attrs, *args)
    return {name: env[name] for name in program.outputs}
