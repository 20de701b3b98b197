"""Random valid ONNX graphs from cimc's supported operators, for differential fuzzing against onnxruntime.

One generator, two drivers. :func:`generate` builds a :class:`FuzzCase` (a checked ONNX model,
calibration data and test inputs) from a ``draw`` object that answers a few questions (an integer
in a range, a choice, a biased coin, a seed):

* :func:`case_strategy` is the hypothesis strategy (``tests/test_fuzz.py``): hypothesis answers the
  questions, so a failing graph shrinks, and every feature that makes a graph harder (groups,
  dilations, zero weights, extreme scales, residual adds, ...) shrinks towards "off";
* :class:`RngDraw` answers them from a numpy generator seeded by a number
  (``benchmarks/fuzz.py``): graph ``k`` of a run is ``generate(RngDraw(k))``, whatever the others do.

:func:`check_case` compiles a case for a target, runs it on the reference runtime and compares the
outputs with onnxruntime's; it returns an :class:`Outcome` (``ok``, ``refused`` with cimc's message,
or a failure: ``crash``, ``run-refused``, ``shape``, ``nonfinite``, ``accuracy``, ``nondeterministic``).

The error bound (:data:`BOUNDS`) and why the generator keeps it meaningful
--------------------------------------------------------------------------
The judge is the normalized max error ``max|cimc - ort| / max|ort|`` per model output, at most
``3e-2`` when the target quantizes to 8 bits and ``1e-3`` at 16 bits (the conformance
requirements). Quantization to ``b`` bits rounds every crossbar input to a step of
``peak / (2^(b-1) - 1)`` (signed) and every weight to a step of its channel's peak over
``2^(b-1) - 1``: a relative error of about ``eps_b = 2^-(b-1)`` per crossbar layer (7.8e-3 at 8
bits, 3.1e-5 at 16). Rounding errors are independent, so over a dot product they add like the
signal does and a layer costs a normalized error of order ``eps_b``; along a path of ``L``
crossbar layers they add in quadrature. The 8-bit bound (3e-2, about 4 eps_8) leaves room for
graphs of two or three crossbar layers, not always for the generator's deepest (at most
:data:`MAX_CROSSBAR_DEPTH` on any path; see below); the 16-bit bound is far from eps_16 and is
reached only by graphs that amplify rounding.

The bound only means something if the graph does not amplify errors, so the generator avoids
the ways a graph can be ill-conditioned:

* scale: weights are drawn ``N(0, 1) * gain / sqrt(fan_in)`` so activations stay of order one
  through depth. *Extreme* scales (a layer's weights times 10^e, inputs times 10^e) are drawn too,
  but the generator tracks every tensor's decimal magnitude and scales biases, BatchNormalization
  statistics, Clip bounds and padding values with it, and brings a tensor back to magnitude 0
  (a scalar Mul) before a saturating function (Sigmoid, Tanh, Softmax, HardSigmoid, Elu,
  Softplus): ``tanh(1e4 x)`` turns a rounding error into a sign flip;
* cancellation: no subtraction of two activations; a residual Add adds a tensor to a function of
  it; BatchNormalization means are small against the tensor's spread (``y - mean`` never cancels);
* dead outputs: the last operator is never a ReLU-like function or a Clip, whose output can be a
  small remainder of a large input; a graph output that is identically zero in onnxruntime is
  judged by exact equality instead (cimc must give zeros);
* clipping: activation scales come from calibration, and the test inputs are part of the
  calibration set, so no test input falls outside a calibrated range (clipping is a property of
  the calibration data, not an error of the compiler);
* outlier weights (one weight 10x its channel's others) coarsen only that channel's grid; the
  error they add stays within the bound at the generator's depth.

What conditioning remains is measured instead of guessed: :func:`ideal_quantizer_error` runs an
*ideal* quantizer of the target's precision on the same graph (onnxruntime on the model rewritten
with weights and crossbar inputs rounded to cimc's grids; no cimc code). :func:`judge` enforces the
bound on graphs whose ideal quantizer stays within ``WELL_CONDITIONED`` (half) of it, and on every
graph requires cimc to stay within ``IDEAL_FACTOR`` x the ideal quantizer's error (plus a floor of
``IDEAL_FLOOR`` x bound for float32 noise): deep graphs at 8 bits reach the bound through
quantization alone (about 0.8 % of the output peak per crossbar layer), and are still judged.
Anything outside these rules is a failure to investigate, not noise.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

#: Normalized max error allowed per output, by the target's activation (= weight) bits.
BOUNDS = {8: 3e-2, 16: 1e-3}
#: Targets the fuzzers draw from (the presets; ``small`` is the fastest).
TARGETS = ("small", "isaac", "hp16", "clsa", "sram")
#: Crossbar layers on the longest path from an input to an output.
MAX_CROSSBAR_DEPTH = 5
#: Largest channel count / feature width the generator produces.
MAX_CHANNELS = 16
#: Calibration samples drawn per case; the first ``TEST_SAMPLES`` are also the test inputs.
CALIBRATION_SAMPLES = 16
TEST_SAMPLES = 4
#: Saturating functions: their input is brought back to magnitude 0 first.
SATURATING = ("Sigmoid", "Tanh", "HardSigmoid", "Elu", "Softplus")
#: Functions never used as a graph's last operator (dead outputs).
NOT_LAST = ("Relu", "LeakyRelu", "Clip", "HardSwish")


# -- the two drivers ----------------------------------------------------------------------------

class RngDraw:
    """Answers the generator's questions from ``numpy.random.default_rng(seed)``."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options):
        options = list(options)
        return options[int(self.rng.integers(len(options)))]

    def coin(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def seed(self) -> int:
        return int(self.rng.integers(0, 2 ** 31))


class HypothesisDraw:
    """Answers them with hypothesis draws: smaller integers, earlier choices and ``False`` shrink best."""

    def __init__(self, draw):
        from hypothesis import strategies as st
        self._draw, self._st = draw, st

    def int(self, lo: int, hi: int) -> int:
        return self._draw(self._st.integers(lo, hi))

    def choice(self, options):
        return self._draw(self._st.sampled_from(list(options)))

    def coin(self, p: float) -> bool:
        return self._draw(self._st.integers(0, 999)) >= 1000 - round(1000 * p)

    def seed(self) -> int:
        return self._draw(self._st.integers(0, 2 ** 31 - 1))


def case_strategy():
    """A hypothesis strategy of :class:`FuzzCase`."""
    from hypothesis import strategies as st

    @st.composite
    def cases(draw):
        return generate(HypothesisDraw(draw))
    return cases()


# -- the case ---------------------------------------------------------------------------------

@dataclass
class FuzzCase:
    model: onnx.ModelProto
    calibration: dict[str, np.ndarray]         # CALIBRATION_SAMPLES samples per input
    inputs: dict[str, np.ndarray]              # the first TEST_SAMPLES of them
    lines: list[str]                           # one line per ONNX node, for reports
    features: set[str] = field(default_factory=set)
    crossbar_depth: int = 0
    #: Output shapes the generator expects (onnxruntime semantics), by output name.
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __repr__(self) -> str:
        ins = ", ".join(f"{k}{list(v.shape[1:])}" for k, v in self.inputs.items())
        return f"FuzzCase({ins}:\n  " + "\n  ".join(self.lines) + "\n)"


@dataclass
class _T:
    """A tensor while the graph is built: name, shape, crossbar depth, decimal magnitude."""
    name: str
    shape: tuple[int, ...]
    depth: int = 0
    mag: int = 0
    op: str = ""


class _Builder:
    def __init__(self, draw):
        self.d = draw
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.lines: list[str] = []
        self.features: set[str] = set()
        self.rng = np.random.default_rng(draw.seed())
        self.count = 0
        self.crossbars = 0          # crossbar estimate on `small` (64x64, 8 outputs per crossbar)
        self.last_op = ""
        self.ceil_dropped = False   # a pool dropped a ceil_mode window (shapes differ from ONNX's inference)

    # -- plumbing
    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.fresh(stem)
        self.inits[name] = np.asarray(value)
        return name

    def node(self, op: str, inputs: list[str], shape: tuple[int, ...], src: _T, *, depth: int | None = None,
             mag: int | None = None, **attrs) -> _T:
        out = self.fresh(op.lower() + "_")
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        shown = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
        self.lines.append(f"{out} = {op}({', '.join(inputs)}{'; ' + shown if shown else ''}) -> {list(shape)}")
        self.last_op = op
        return _T(out, tuple(shape), src.depth if depth is None else depth, src.mag if mag is None else mag, op)

    # -- weights
    def weights(self, shape: tuple[int, ...], fan_in: int, tag: str) -> tuple[np.ndarray, int]:
        """Weights with the drawn pathologies; returns them and the decimal magnitude they add."""
        d = self.d
        w = self.rng.standard_normal(shape) * (1.4 / math.sqrt(max(fan_in, 1)))
        out_axis = 0
        if d.coin(0.15):                                      # exact zeros, scattered
            w[self.rng.random(shape) < d.choice([0.5, 0.9])] = 0.0
            self.features.add("weights:sparse")
        if d.coin(0.1) and shape[out_axis] > 1:               # a whole output channel of zeros
            w[self.rng.integers(shape[out_axis])] = 0.0
            self.features.add("weights:zero-channel")
        if d.coin(0.03):                                      # a layer of zeros
            w[...] = 0.0
            self.features.add("weights:all-zero")
        if d.coin(0.08):                                      # values already on a small integer grid
            w = np.rint(w * 4) / 4
            self.features.add("weights:grid")
        if d.coin(0.1) and w.size > 1:                        # one extreme weight
            idx = tuple(int(self.rng.integers(n)) for n in shape)
            w[idx] = 10.0 * (np.abs(w).max() or 1.0) * (1 if self.rng.random() < 0.5 else -1)
            self.features.add("weights:outlier")
        mag = 0
        if d.coin(0.15):                                      # extreme or tiny scale
            mag = d.choice([-6, -3, 3, 6])
            self.features.add("weights:scale")
        return (w * 10.0 ** mag).astype(np.float32), mag

    def bias(self, n: int, mag: int) -> np.ndarray:
        b = 0.3 * self.rng.standard_normal(n)
        if self.d.coin(0.1):
            b[:] = 0.0
        return (b * 10.0 ** mag).astype(np.float32)


def _conv_out(size: int, k: int, s: int, d: int, pb: int, pe: int) -> int:
    return (size + pb + pe - ((k - 1) * d + 1)) // s + 1


def _pool_out(size: int, k: int, s: int, pb: int, pe: int, ceil: bool) -> int:
    """onnxruntime's pooled size: ceil mode drops a last window that starts in the end padding."""
    span = size + pb + pe - k
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + pb:
        out -= 1
    return out


def _divisors(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


# -- operators --------------------------------------------------------------------------------

def _conv(b: _Builder, x: _T, *, same: bool = False, cout: int | None = None) -> _T | None:
    """Conv over [1, C, *spatial] (1-D or 2-D). ``same``: stride 1, output spatial = input spatial."""
    d = b.d
    c, spatial = x.shape[1], x.shape[2:]
    rank = len(spatial)
    group = 1
    if d.coin(0.3) and c > 1:
        group = d.choice(_divisors(c)[1:])
        b.features.add("conv:depthwise" if group == c else "conv:grouped")
    if cout is None:
        per = d.int(1, max(1, MAX_CHANNELS // group))
        cout = group * per
    elif cout % group:
        group = 1
    kernel = [d.choice([1, 3] if same else [1, 2, 3]) for _ in spatial]
    if rank == 1 and not same and d.coin(0.2):
        kernel = [5]
    strides = [1 if same else d.choice([1, 1, 2]) for _ in spatial]
    dilations = [d.choice([1, 1, 2]) if k > 1 else 1 for k in kernel]
    attrs: dict = {"kernel_shape": kernel}
    reach = [(k - 1) * dd + 1 for k, dd in zip(kernel, dilations)]
    if same:
        pads = [r // 2 for r in reach] + [r - 1 - r // 2 for r in reach]
        mode = "SAME" if d.coin(0.3) and max(dilations) == 1 else "explicit"
        if mode == "SAME":      # onnxruntime refuses auto_pad SAME_* with dilations
            attrs["auto_pad"] = d.choice(["SAME_UPPER", "SAME_LOWER"])
        else:
            attrs["pads"] = pads
    else:
        mode = d.choice(["explicit", "explicit", "none", "SAME_UPPER", "SAME_LOWER", "VALID"])
        if mode.startswith("SAME") and max(dilations) > 1:
            mode = "explicit"
        if mode == "explicit":
            pads = [d.int(0, r - 1) for r in reach] + [d.int(0, r - 1) for r in reach]
            attrs["pads"] = pads
        elif mode in ("SAME_UPPER", "SAME_LOWER"):
            attrs["auto_pad"] = mode
            pads = []
            for i in range(rank):
                out = -(-spatial[i] // strides[i])
                total = max(0, (out - 1) * strides[i] + reach[i] - spatial[i])
                small, large = total // 2, total - total // 2
                pads.append((small, large) if mode == "SAME_UPPER" else (large, small))
            pads = [p[0] for p in pads] + [p[1] for p in pads]
        else:
            if mode == "VALID":
                attrs["auto_pad"] = "VALID"
            pads = [0] * (2 * rank)
    out_sp = [_conv_out(spatial[i], kernel[i], strides[i], dilations[i], pads[i], pads[i + rank])
              for i in range(rank)]
    if min(out_sp) < 1:
        return None
    if any(s > 1 for s in strides):
        attrs["strides"] = strides
        b.features.add("conv:strided")
    if any(dd > 1 for dd in dilations):
        attrs["dilations"] = dilations
        b.features.add("conv:dilated")
    if "pads" in attrs and len(set(attrs["pads"])) > 1:
        b.features.add("conv:asymmetric-pads")
    if "auto_pad" in attrs:
        b.features.add(f"conv:auto_pad={attrs['auto_pad']}")
    if group > 1:
        attrs["group"] = group
    rows = (c // group) * math.prod(kernel)
    b.crossbars += group * math.ceil(rows / 64) * math.ceil((cout // group) / 8)
    w, wmag = b.weights((cout, c // group, *kernel), rows, "conv")
    inputs = [x.name, b.const("W", w)]
    mag = x.mag + wmag
    if d.coin(0.6):
        inputs.append(b.const("B", b.bias(cout, mag)))
    b.features.add(f"conv{rank}d")
    return b.node("Conv", inputs, (1, cout, *out_sp), x, depth=x.depth + 1, mag=mag, **attrs)


def _conv_transpose(b: _Builder, x: _T) -> _T | None:
    d = b.d
    c, spatial = x.shape[1], x.shape[2:]
    rank = len(spatial)
    group = d.choice(_divisors(c)) if d.coin(0.25) else 1
    cout = group * d.int(1, max(1, 8 // group))
    kernel = [d.choice([1, 2, 3]) for _ in spatial]
    strides = [d.choice([1, 2]) for _ in spatial]
    dilations = [d.choice([1, 1, 2]) if k > 1 else 1 for k in kernel]
    reach = [(k - 1) * dd + 1 for k, dd in zip(kernel, dilations)]
    pads = [d.int(0, r - 1) for r in reach] + [d.int(0, r - 1) for r in reach]
    out_pad = [d.int(0, s - 1) if d.coin(0.3) else 0 for s in strides]     # onnxruntime: below the stride
    out_sp = [strides[i] * (spatial[i] - 1) + out_pad[i] + reach[i] - pads[i] - pads[i + rank]
              for i in range(rank)]
    if min(out_sp) < 1 or max(out_sp) > 24:
        return None
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads}
    if any(dd > 1 for dd in dilations):
        attrs["dilations"] = dilations
    if any(out_pad):
        attrs["output_padding"] = out_pad
    if group > 1:
        attrs["group"] = group
    rows = (c // group) * math.prod(kernel)
    b.crossbars += group * math.ceil(rows / 64) * math.ceil((cout // group) / 8)
    w, wmag = b.weights((c, cout // group, *kernel), rows, "convT")
    inputs = [x.name, b.const("W", w)]
    mag = x.mag + wmag
    if d.coin(0.5):
        inputs.append(b.const("B", b.bias(cout, mag)))
    b.features.add(f"convtranspose{rank}d")
    return b.node("ConvTranspose", inputs, (1, cout, *out_sp), x, depth=x.depth + 1, mag=mag, **attrs)


def _dense(b: _Builder, x: _T, n: int | None = None) -> _T:
    """Gemm or MatMul (+ Add bias) over a matrix [M, K], or MatMul over [..., K]."""
    d = b.d
    k = x.shape[-1]
    n = n or d.int(1, 24)
    b.crossbars += math.ceil(k / 64) * math.ceil(n / 8)
    rank2 = len(x.shape) == 2
    if rank2 and d.coin(0.5):
        trans_a = d.coin(0.1)
        if trans_a:                                      # A = x^T: the inner dimension is x's rows
            k = x.shape[0]
            b.crossbars += math.ceil(k / 64) * math.ceil(n / 8)
        w, wmag = b.weights((n, k), k, "gemm")
        trans_b = d.coin(0.5)
        alpha = d.choice([1.0, 1.0, 0.5, 2.0])
        beta = d.choice([1.0, 1.0, 0.25])
        attrs = {}
        if trans_b:
            attrs["transB"] = 1
        else:
            w = np.ascontiguousarray(w.T)
        if trans_a:
            attrs["transA"] = 1
            b.features.add("gemm:transA")
        if alpha != 1.0:
            attrs["alpha"] = alpha
        if beta != 1.0:
            attrs["beta"] = beta
        m = x.shape[1] if trans_a else x.shape[0]
        mag = x.mag + wmag
        inputs = [x.name, b.const("G", w)]
        kind = d.choice(["none", "vector", "row", "matrix"])
        if kind != "none":
            shape = {"vector": (n,), "row": (1, n), "matrix": (m, n)}[kind]
            inputs.append(b.const("C", b.bias(math.prod(shape), mag).reshape(shape)))
            b.features.add(f"gemm:C-{kind}")
        b.features.add("gemm")
        return b.node("Gemm", inputs, (m, n), x, depth=x.depth + 1, mag=mag, **attrs)
    if len(x.shape) == 3 and x.shape[0] > 1 and d.coin(0.5):     # a stack of matrices: grouped 1x1 conv
        g = x.shape[0]
        w, wmag = b.weights((g, k, n), k, "stack")
        b.crossbars += (g - 1) * math.ceil(k / 64) * math.ceil(n / 8)
        b.features.add("matmul:stack")
        y = b.node("MatMul", [x.name, b.const("M", w)], x.shape[:-1] + (n,), x, depth=x.depth + 1,
                   mag=x.mag + wmag)
    else:
        w, wmag = b.weights((n, k), k, "matmul")
        b.features.add(f"matmul:rank{len(x.shape)}")
        y = b.node("MatMul", [x.name, b.const("M", np.ascontiguousarray(w.T))], x.shape[:-1] + (n,), x,
                   depth=x.depth + 1, mag=x.mag + wmag)
    if d.coin(0.6):
        shape = d.choice([(n,), (1, n)]) if len(x.shape) == 2 else (n,)
        y = b.node("Add", [y.name, b.const("B", b.bias(n, y.mag).reshape(shape))], y.shape, y)
    return y


def _unit_magnitude(b: _Builder, x: _T) -> _T:
    """A scalar Mul back to magnitude 0 (before saturating functions)."""
    if x.mag == 0:
        return x
    b.features.add("rescale")
    return b.node("Mul", [x.name, b.const("s", np.array(10.0 ** -x.mag, np.float32))], x.shape, x, mag=0)


def _activation(b: _Builder, x: _T) -> _T:
    d = b.d
    op = d.choice(["Relu", "Relu", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish",
                   "Elu", "Softplus"])
    if op in SATURATING or op == "HardSwish":
        x = _unit_magnitude(b, x)
    b.features.add(f"act:{op}")
    if op == "LeakyRelu":
        return b.node(op, [x.name], x.shape, x, alpha=d.choice([0.01, 0.1, 0.3]))
    if op == "Clip":
        scale = np.float32(10.0 ** x.mag)
        lo = b.const("lo", np.array(d.choice([0.0, -0.5, -1.0]) * scale, np.float32))
        hi = b.const("hi", np.array(d.choice([0.5, 1.0, 6.0]) * scale, np.float32))
        return b.node(op, [x.name, lo, hi], x.shape, x)
    if op == "HardSigmoid":
        return b.node(op, [x.name], x.shape, x, alpha=0.2, beta=0.5)
    return b.node(op, [x.name], x.shape, x)


def _batch_norm(b: _Builder, x: _T) -> _T:
    c = x.shape[1]
    s = 10.0 ** x.mag
    scale = (0.5 + b.rng.random(c)).astype(np.float32)
    bias = (0.2 * b.rng.standard_normal(c) * s).astype(np.float32)
    mean = (0.1 * b.rng.standard_normal(c) * s).astype(np.float32)
    var = ((0.5 + b.rng.random(c)) * s * s).astype(np.float32)
    b.features.add("batchnorm")
    return b.node("BatchNormalization", [x.name] + [b.const(k, v) for k, v in
                                                     (("bn_s", scale), ("bn_b", bias), ("bn_m", mean),
                                                      ("bn_v", var))], x.shape, x,
                  epsilon=float(1e-5 * s * s))


def _channel_affine(b: _Builder, x: _T) -> _T:
    c = x.shape[1]
    shape = (c,) + (1,) * (len(x.shape) - 2)
    if b.d.coin(0.5):
        b.features.add("channel-mul")
        return b.node("Mul", [x.name, b.const("m", (0.5 + b.rng.random(shape)).astype(np.float32))], x.shape, x)
    b.features.add("channel-add")
    return b.node("Add", [x.name, b.const("a", (0.3 * b.rng.standard_normal(shape) * 10.0 ** x.mag)
                                          .astype(np.float32))], x.shape, x)


def _pool(b: _Builder, x: _T) -> _T | None:
    d = b.d
    spatial = x.shape[2:]
    rank = len(spatial)
    kind = d.choice(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"])
    b.features.add(f"pool:{kind}")
    if kind.startswith("Global"):
        return b.node(kind, [x.name], x.shape[:2] + (1,) * rank, x)
    kernel = [d.int(1, min(3, s)) for s in spatial]
    strides = [d.choice([1, 2, 2]) for _ in spatial]
    pads = [d.int(0, kernel[i % rank] - 1) if d.coin(0.4) else 0 for i in range(2 * rank)]
    ceil = d.coin(0.4)
    out_sp = [_pool_out(spatial[i], kernel[i], strides[i], pads[i], pads[i + rank], ceil) for i in range(rank)]
    if min(out_sp) < 1:
        return None
    if ceil and any(-(-(spatial[i] + pads[i] + pads[i + rank] - kernel[i]) // strides[i]) + 1 != out_sp[i]
                    for i in range(rank)):
        # onnxruntime drops a last window that starts in the end padding, ONNX's shape inference keeps
        # it: a weight shaped after this tensor would contradict ONNX (flatten pools globally first).
        b.ceil_dropped = True
        b.features.add("pool:ceil_mode-dropped-window")
    attrs: dict = {"kernel_shape": kernel, "strides": strides}
    if any(pads):
        attrs["pads"] = pads
    if ceil:
        attrs["ceil_mode"] = 1
        b.features.add("pool:ceil_mode")
    if kind == "AveragePool" and any(pads) and d.coin(0.6):
        attrs["count_include_pad"] = 1
        b.features.add("pool:count_include_pad")
    return b.node(kind, [x.name], x.shape[:2] + tuple(out_sp), x, **attrs)


def _pad(b: _Builder, x: _T) -> _T:
    d = b.d
    rank = len(x.shape) - 2
    mode = d.choice(["constant", "edge", "reflect"])
    spatial = x.shape[2:]
    limit = [1 if mode != "reflect" else min(1, s - 1) for s in spatial]
    pads = [0, 0] + [d.int(0, lim) for lim in limit] + [0, 0] + [d.int(0, lim) for lim in limit]
    inputs = [x.name, b.const("pads", np.array(pads, np.int64))]
    if mode == "constant" and d.coin(0.5):
        inputs.append(b.const("pv", np.array(0.5 * 10.0 ** x.mag, np.float32)))
    b.features.add(f"pad:{mode}")
    out = tuple(x.shape[i] + pads[i] + pads[i + len(x.shape)] for i in range(len(x.shape)))
    del rank
    return b.node("Pad", inputs, out, x, mode=mode)


def _resize(b: _Builder, x: _T) -> _T | None:
    if max(x.shape[2:]) > 8:
        return None
    scales = np.array([1.0, 1.0] + [2.0] * (len(x.shape) - 2), np.float32)
    b.features.add("resize:nearest")
    return b.node("Resize", [x.name, "", b.const("scales", scales)],
                  x.shape[:2] + tuple(2 * s for s in x.shape[2:]), x, mode="nearest")


def _residual(b: _Builder, x: _T) -> _T | None:
    """x -> Conv(same) [-> act -> Conv(same)] -> Add(x, .)"""
    if x.depth + 2 > MAX_CROSSBAR_DEPTH:
        return None
    y = _conv(b, x, same=True, cout=x.shape[1])
    if y is None or y.shape != x.shape:
        return None
    if b.d.coin(0.5) and y.depth < MAX_CROSSBAR_DEPTH:
        y = b.node("Relu", [y.name], y.shape, y)
        z = _conv(b, y, same=True, cout=x.shape[1])
        if z is None or z.shape != x.shape:
            return None
        y = z
    b.features.add("residual-add")
    mag = max(x.mag, y.mag)
    return b.node("Add", [y.name, x.name] if b.d.coin(0.5) else [x.name, y.name], x.shape, y,
                  depth=max(x.depth, y.depth), mag=mag)


def _concat(b: _Builder, x: _T) -> _T | None:
    """Concat(x or Conv_a(x), Conv_b(x)) along channels, both branches 'same' convolutions."""
    if x.depth + 1 > MAX_CROSSBAR_DEPTH:
        return None
    keep_x = b.d.coin(0.4)
    first = x if keep_x else _conv(b, x, same=True, cout=b.d.int(1, 8))
    second = _conv(b, x, same=True, cout=b.d.int(1, 8))
    if first is None or second is None or first.shape[2:] != second.shape[2:]:
        return None
    b.features.add("concat" + (":skip" if keep_x else ":branches"))
    if first.mag != second.mag:
        second = b.node("Mul", [second.name, b.const("s", np.array(10.0 ** (first.mag - second.mag), np.float32))],
                        second.shape, second, mag=first.mag)
    shape = (1, first.shape[1] + second.shape[1]) + first.shape[2:]
    return b.node("Concat", [first.name, second.name], shape, first, depth=max(first.depth, second.depth),
                  axis=1)


def _dense_concat(b: _Builder, x: _T) -> _T | None:
    if x.depth + 1 > MAX_CROSSBAR_DEPTH or len(x.shape) != 2:
        return None
    p, q = _dense(b, x, b.d.int(1, 12)), _dense(b, x, b.d.int(1, 12))
    if p.shape[0] != q.shape[0]:
        return None
    if p.mag != q.mag:
        q = b.node("Mul", [q.name, b.const("s", np.array(10.0 ** (p.mag - q.mag), np.float32))], q.shape, q,
                   mag=p.mag)
    b.features.add("concat:dense")
    return b.node("Concat", [p.name, q.name], (p.shape[0], p.shape[1] + q.shape[1]), p,
                  depth=max(p.depth, q.depth), axis=1)


def _dense_residual(b: _Builder, x: _T) -> _T | None:
    if x.depth + 1 > MAX_CROSSBAR_DEPTH or len(x.shape) != 2 or x.shape[1] > 32:
        return None
    y = _dense(b, x, x.shape[1])
    if y.shape != x.shape:
        return None
    b.features.add("residual-add:dense")
    return b.node("Add", [x.name, y.name], x.shape, y, depth=y.depth, mag=max(x.mag, y.mag))


def _flatten(b: _Builder, x: _T) -> _T:
    """[1, C, *spatial] -> [1, C * prod(spatial)]; a GlobalAveragePool first when that would be wide."""
    if math.prod(x.shape[1:]) > 256 or b.ceil_dropped:
        x = b.node("GlobalAveragePool", [x.name], x.shape[:2] + (1,) * (len(x.shape) - 2), x)
        b.features.add("pool:GlobalAveragePool")
    flat = math.prod(x.shape[1:])
    if b.d.coin(0.5):
        b.features.add("flatten")
        return b.node("Flatten", [x.name], (1, flat), x)
    b.features.add("reshape")
    return b.node("Reshape", [x.name, b.const("shape", np.array([1, -1], np.int64))], (1, flat), x)


# -- the graph --------------------------------------------------------------------------------

def _input(b: _Builder) -> tuple[_T, onnx.ValueInfoProto, str]:
    d = b.d
    kind = d.choice(["image", "image", "image", "sequence", "matrix", "tokens"])
    if kind == "image":
        shape = (1, d.int(1, 6), d.int(2, 10), d.int(2, 10))
    elif kind == "sequence":
        shape = (1, d.int(1, 6), d.int(3, 20))
    elif kind == "matrix":
        shape = (d.choice([1, 1, 2, 3]), d.int(1, 40))
    else:
        shape = (d.choice([1, 2]), d.int(1, 6), d.int(1, 16))
    b.features.add(f"input:{kind}")
    dist = d.choice(["signed", "signed", "unsigned"])
    mag = d.choice([-4, 4]) if d.coin(0.1) else 0
    if mag:
        b.features.add("input:extreme-scale")
    return _T("x", shape, 0, mag), helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)), dist


def _spatial_step(b: _Builder, x: _T) -> _T | None:
    d = b.d
    can_cross = x.depth < MAX_CROSSBAR_DEPTH and b.crossbars < 24
    choices = ["act", "act", "bn", "affine", "pool", "pool"]
    if can_cross:
        choices += ["conv", "conv", "conv", "conv", "residual", "concat", "convT"]
    if len(x.shape) == 4:
        choices += ["pad", "resize"]
    else:
        choices += ["pad"]
    op = d.choice(choices)
    if op == "conv":
        return _conv(b, x)
    if op == "convT":
        return _conv_transpose(b, x)
    if op == "residual":
        return _residual(b, x)
    if op == "concat":
        return _concat(b, x)
    if op == "act":
        return _activation(b, x)
    if op == "bn":
        return _batch_norm(b, x)
    if op == "affine":
        return _channel_affine(b, x)
    if op == "pool":
        return _pool(b, x) if max(x.shape[2:]) > 1 else None
    if op == "pad":
        return _pad(b, x)
    return _resize(b, x)


def _dense_step(b: _Builder, x: _T) -> _T | None:
    d = b.d
    can_cross = x.depth < MAX_CROSSBAR_DEPTH and b.crossbars < 24
    choices = ["act", "act"]
    if can_cross:
        choices += ["dense", "dense", "dense"]
        if len(x.shape) == 2:
            choices += ["dense_concat", "dense_residual"]
    op = d.choice(choices)
    if op == "act":
        return _activation(b, x)
    if op == "dense":
        return _dense(b, x)
    if op == "dense_concat":
        return _dense_concat(b, x)
    return _dense_residual(b, x)


def generate(draw) -> FuzzCase:
    """A random valid model of up to eight steps (a step may add a few nodes), with its data."""
    b = _Builder(draw)
    x, vi, dist = _input(b)
    cur = x
    spatial = len(x.shape) >= 3 and "input:tokens" not in b.features
    produced: list[_T] = []
    for _ in range(draw.int(1, 8)):
        if spatial and cur.depth > 0 and draw.coin(0.12):
            cur = _flatten(b, cur)
            spatial = False
        nxt = _spatial_step(b, cur) if spatial else _dense_step(b, cur)
        if nxt is not None:
            produced.append(nxt)
            cur = nxt
    if cur.depth == 0 or b.last_op in NOT_LAST:
        # Every graph has a crossbar operator, and ends on something that cannot hide its input.
        nxt = None
        if cur.depth < MAX_CROSSBAR_DEPTH:
            for _ in range(4):
                nxt = _conv(b, cur) if spatial else _dense(b, cur)
                if nxt is not None:
                    break
            if nxt is None:
                nxt = _dense(b, _flatten(b, cur))
        else:
            nxt = b.node("Sigmoid", [_unit_magnitude(b, cur).name], cur.shape, cur, mag=0)
        produced.append(nxt)
        cur = nxt
    if len(cur.shape) == 2 and cur.shape[1] > 1 and cur.mag == 0 and draw.coin(0.1):
        cur = b.node("Softmax", [cur.name], cur.shape, cur, axis=-1)
        b.features.add("softmax")
    outputs = [cur]
    extra = [t for t in produced[:-1] if t.name != cur.name and t.depth > 0 and t.op not in NOT_LAST]
    if extra and draw.coin(0.15):
        outputs.insert(0, draw.choice(extra))
        b.features.add("two-outputs")
    graph = helper.make_graph(b.nodes, "fuzz", [vi],
                              [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape)) for t in outputs],
                              [numpy_helper.from_array(v, k) for k, v in b.inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    rng = np.random.default_rng(b.rng.integers(2 ** 31))
    samples = rng.random((CALIBRATION_SAMPLES,) + x.shape)
    if dist == "signed":
        samples = 2 * samples - 1
    calib = {"x": (samples * 10.0 ** x.mag).astype(np.float32)}
    return FuzzCase(model=model, calibration=calib, inputs={"x": calib["x"][:TEST_SAMPLES]}, lines=b.lines,
                    features=b.features, crossbar_depth=max(t.depth for t in outputs),
                    shapes={t.name: t.shape for t in outputs})


# -- judging ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    status: str          # ok | refused | crash | run-refused | shape | nonfinite | accuracy | nondeterministic | ...
    target: str
    detail: str = ""
    errors: dict[str, float] = field(default_factory=dict)
    bound: float = 0.0
    ideal: float = math.nan             # the ideal quantizer's normalized error at the target's precision
    conditioned: bool = True            # ideal <= WELL_CONDITIONED * bound: the bound applies

    @property
    def failed(self) -> bool:
        return self.status not in ("ok", "refused")

    @property
    def error(self) -> float:
        return max(self.errors.values()) if self.errors else math.nan


def onnxruntime_reference(model: onnx.ModelProto, inputs: dict[str, np.ndarray],
                          optimized: bool = False) -> dict[str, np.ndarray]:
    """Every output of ``model`` for each sample of ``inputs`` (leading sample axis), stacked.

    With graph optimizations disabled (``optimized=False``), onnxruntime executes the operators as
    the ONNX specification defines them: its optimizer can change results. onnxruntime 1.31.1's
    PadFusion folds a ``Pad`` of zeros into a following ``MaxPool``'s pads, which pad with -inf:
    ``MaxPool(Pad(x, 0))`` of negative values loses the zeros (``tests/test_fuzz.py``,
    ``test_zero_pad_then_maxpool_keeps_the_zeros``; found by fuzz graph 2871).
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    count = len(next(iter(inputs.values())))
    runs = [session.run(None, {k: v[i] for k, v in inputs.items()}) for i in range(count)]
    return {n: np.stack([r[j] for r in runs]) for j, n in enumerate(names)}


def normalized_errors(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for name, r in ref.items():
        g, r = np.asarray(got[name], np.float64), np.asarray(r, np.float64)
        peak = np.abs(r).max(initial=0.0)
        diff = np.abs(g - r).max(initial=0.0)
        out[name] = float(diff / peak) if peak > 0 else (0.0 if diff == 0 else math.inf)
    return out


CROSSBAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _channel_peaks(op: str, w: np.ndarray, attrs: dict) -> np.ndarray:
    """Per-output-channel peak |w|, broadcastable against ``w`` (cimc's symmetric per-channel grid)."""
    a = np.abs(w.astype(np.float64))
    if op == "Conv":
        return a.max(axis=tuple(range(1, w.ndim)), keepdims=True)
    if op == "ConvTranspose":                    # [Cin, Cout/g, k...]: channel (group, output of group)
        g = int(attrs.get("group", 1))
        grouped = a.reshape((g, w.shape[0] // g) + w.shape[1:])
        peak = grouped.max(axis=(1,) + tuple(range(3, grouped.ndim)), keepdims=True)
        return np.broadcast_to(peak, grouped.shape).reshape(w.shape)
    if op == "Gemm":
        return a.max(axis=1 if attrs.get("transB", 0) else 0, keepdims=True)
    if w.ndim == 1:                              # MatMul by a vector: one output
        return a.max(keepdims=True)
    return a.max(axis=-2, keepdims=True)         # MatMul [.., K, N]: per (matrix, column)


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            have.add(name)
    return m


def ideal_quantizer_error(case: FuzzCase, bits: int, reference: dict[str, np.ndarray]) -> float:
    """The normalized max error of an *ideal* ``bits``-bit quantizer on ``case``, computed without cimc.

    The model is rewritten with onnx.helper: every crossbar operator's weights rounded to
    cimc's grid (symmetric, per output channel, ``2^(bits-1) - 1`` steps per side), and its
    input rounded to a grid of ``peak / (2^(bits-1) - 1)`` (``2^bits - 1`` when calibration saw
    no negative value), the peak measured by onnxruntime on the calibration data. onnxruntime
    runs the rewritten model on the test inputs. This is what quantization alone costs on this
    graph; a graph where it is near the bound is ill-conditioned at that precision.

    NaN when onnxruntime cannot run the rewritten models: with a tensor after a ceil_mode window
    that onnxruntime drops (and ONNX's shape inference keeps) made a graph output, its buffer
    planner fails ("Shape mismatch attempting to re-use buffer"); the judge then applies the bound.
    """
    try:
        return _ideal_quantizer_error(case, bits, reference)
    except Exception:  # noqa: BLE001 - onnxruntime's own failures on the rewritten model
        return math.nan


def _ideal_quantizer_error(case: FuzzCase, bits: int, reference: dict[str, np.ndarray]) -> float:
    model = case.model
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    xs = sorted({n.input[0] for n in model.graph.node if n.op_type in CROSSBAR_OPS and n.input[1] in inits})
    calib = onnxruntime_reference(_with_outputs(model, xs), case.calibration)
    nodes, new_inits = [], dict(inits)
    for node in model.graph.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        if node.op_type in CROSSBAR_OPS and node.input[1] in inits:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            w = inits[node.input[1]].astype(np.float64)
            qmax = (1 << (bits - 1)) - 1
            peak = _channel_peaks(node.op_type, w, attrs)
            step = np.where(peak > 0, peak / qmax, 1.0)
            new_inits[node.input[1] + ":q"] = (np.clip(np.rint(w / step), -qmax, qmax) * step).astype(np.float32)
            values = calib[node.input[0]]
            lo, hi = float(values.min()), float(values.max())
            peak_x = max(abs(lo), abs(hi))
            xq = (1 << (bits - 1)) - 1 if lo < 0 else (1 << bits) - 1
            scale = np.array(peak_x / xq if peak_x > 0 else 1.0, np.float32)
            stem = node.name + ":fq"
            new_inits[stem + ":s"] = scale
            nodes += [helper.make_node("Div", [node.input[0], stem + ":s"], [stem + ":d"]),
                      helper.make_node("Round", [stem + ":d"], [stem + ":r"]),
                      helper.make_node("Mul", [stem + ":r", stem + ":s"], [stem])]
            node.input[0] = stem
            node.input[1] = node.input[1] + ":q"
        nodes.append(node)
    graph = helper.make_graph(nodes, "ideal", list(model.graph.input), list(model.graph.output),
                              [numpy_helper.from_array(v, k) for k, v in new_inits.items()])
    fq = helper.make_model(graph, opset_imports=list(model.opset_import))
    fq.ir_version = model.ir_version
    got = onnxruntime_reference(fq, case.inputs)
    return max(normalized_errors(got, reference).values())


def bound_for(target) -> float:
    bits = max(target.precision.activation_bits, target.precision.weight_bits)
    return BOUNDS[8] if bits <= 8 else BOUNDS[16]


def bits_of(target) -> int:
    return max(target.precision.activation_bits, target.precision.weight_bits)


#: A graph is judged by the bound at a precision when the ideal quantizer stays within this fraction of it.
WELL_CONDITIONED = 0.5
#: Every graph, conditioned or not: cimc's error may exceed the ideal quantizer's by this factor plus
#: IDEAL_FLOOR x bound (one rounding decided the other way propagates like a rounding error).
IDEAL_FACTOR = 3.0
IDEAL_FLOOR = 0.1


def judge(errors: dict[str, float], ideal: float, bound: float) -> str | None:
    """Why outputs with these normalized errors are wrong, or None."""
    worst = max(errors.values())
    if math.isnan(ideal):
        return f"normalized error {worst:.3g} > bound {bound:g} (no ideal quantizer)" if worst > bound else None
    if worst > bound and ideal <= WELL_CONDITIONED * bound:
        return (f"normalized error {worst:.3g} > bound {bound:g} on a well-conditioned graph (an ideal "
                f"quantizer gets {ideal:.3g})")
    if worst > IDEAL_FACTOR * ideal + IDEAL_FLOOR * bound:
        return (f"normalized error {worst:.3g} > {IDEAL_FACTOR:g} x the ideal quantizer's {ideal:.3g} "
                f"+ {IDEAL_FLOOR * bound:.3g}")
    return None


def check_case(case: FuzzCase, target, *, reference: dict[str, np.ndarray] | None = None,
               allow_reprogramming: bool = False, determinism: bool = False,
               crossbar_level: bool = False) -> Outcome:
    """Compile ``case`` for ``target`` (preset name or Target), run it, compare with onnxruntime.

    Never raises for cimc's faults: an exception that is not a ``CimcError`` is a ``crash``, a
    ``CimcError`` at compile time a refusal (``refused``), at run time of a program cimc itself
    compiled a failure (``run-refused``). ``determinism``: also compile a second time (same bytes)
    and run the program reloaded from them (same outputs). ``crossbar_level``: also run at level
    ``crossbar``; when no conversion clipped, its outputs must equal the ``ideal`` level's.
    """
    import cimc
    from cimc.errors import CimcError
    from cimc.targets import load_target

    t = load_target(target)
    name = t.name + ("+reprogramming" if allow_reprogramming else "")
    bound = bound_for(t)
    try:
        program = cimc.compile(case.model, t, calibration=case.calibration, allow_reprogramming=allow_reprogramming)
    except CimcError as exc:
        return Outcome("refused", name, str(exc), bound=bound)
    except Exception as exc:  # noqa: BLE001 - the fuzzer's whole point
        return Outcome("crash", name, f"compile: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                       bound=bound)
    try:
        result = cimc.run(program, case.inputs)
    except CimcError as exc:
        return Outcome("run-refused", name, f"run: {exc}", bound=bound)
    except Exception as exc:  # noqa: BLE001
        return Outcome("crash", name, f"run: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", bound=bound)
    ref = reference if reference is not None else onnxruntime_reference(case.model, case.inputs)
    for out, r in ref.items():
        g = result.outputs.get(out)
        if g is None or g.shape != r.shape:
            return Outcome("shape", name, f"output {out}: cimc {None if g is None else g.shape}, "
                                          f"onnxruntime {r.shape}", bound=bound)
        if np.isfinite(r).all() and not np.isfinite(g).all():
            return Outcome("nonfinite", name, f"output {out} has NaN or Inf", bound=bound)
    errors = normalized_errors(result.outputs, ref)
    ideal = ideal_quantizer_error(case, bits_of(t), ref)
    outcome = Outcome("ok", name, "", errors, bound, ideal, not ideal > WELL_CONDITIONED * bound)
    wrong = judge(errors, ideal, bound)
    if wrong:
        outcome.status, outcome.detail = "accuracy", wrong
        return outcome
    if determinism:
        try:
            again = cimc.compile(case.model, t, calibration=case.calibration,
                                 allow_reprogramming=allow_reprogramming).to_bytes()
            data = program.to_bytes()
            if again != data:
                outcome.status, outcome.detail = "nondeterministic", "two compiles gave different .cimp bytes"
                return outcome
            reloaded = cimc.run(cimc.Program.from_bytes(data), case.inputs)
            for out, g in result.outputs.items():
                if not np.array_equal(g, reloaded.outputs[out]):
                    outcome.status, outcome.detail = "nondeterministic", f"reloaded program: output {out} differs"
                    return outcome
        except Exception as exc:  # noqa: BLE001
            outcome.status = "crash"
            outcome.detail = f"determinism: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            return outcome
    if crossbar_level:
        try:
            analog = cimc.run(program, case.inputs, level="crossbar")
        except Exception as exc:  # noqa: BLE001
            outcome.status = "crash"
            outcome.detail = f"crossbar level: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            return outcome
        if analog.stats["clipped_fraction"] == 0:
            for out, g in result.outputs.items():
                if not np.array_equal(g, analog.outputs[out]):
                    diff = float(np.abs(np.asarray(g, np.float64) - analog.outputs[out]).max())
                    outcome.status = "crossbar-level"
                    outcome.detail = (f"output {out}: no ADC clipped, yet the crossbar level differs from "
                                      f"ideal by {diff:.3g}")
                    return outcome
    return outcome
