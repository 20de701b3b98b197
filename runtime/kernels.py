"""Numpy kernels for the IR's operators, batch-vectorized.

Convention: every activation carries one extra leading axis ``B`` (the batch of
independent inferences) in front of the model's own static shape, and every
constant is lifted to a leading axis of 1 by :func:`lift_constant`, so
operators broadcast over that axis without special cases. Attributes are the
normalized ones the importers produce (2-D windows, explicit pads).

Vector operators are registered in :data:`VECTOR_KERNELS` (one function per
operator, as in ONNX's reference evaluator); :func:`patches_nhwc` is the im2col
both the float evaluator and the crossbar runtime use.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Kernel = Callable[..., np.ndarray]
VECTOR_KERNELS: dict[str, Kernel] = {}


def kernel(*ops: str) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        for op in ops:
            VECTOR_KERNELS[op] = fn
        return fn
    return register


def lift_constant(data: np.ndarray) -> np.ndarray:
    return data[None]


def _align(x: np.ndarray, rank: int) -> np.ndarray:
    """Insert unit axes after the batch axis so ``x`` has ``rank`` static dimensions."""
    missing = rank - (x.ndim - 1)
    return x.reshape(x.shape[:1] + (1,) * missing + x.shape[1:]) if missing > 0 else x


def _as_4d(x: np.ndarray, rank: int) -> np.ndarray:
    """(B, N, C, L) -> (B*N, C, 1, L); (B, N, C, H, W) -> (B*N, C, H, W)."""
    if rank == 1:
        return x.reshape(x.shape[0] * x.shape[1], x.shape[2], 1, x.shape[3])
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _from_4d(y: np.ndarray, batch: int, rank: int) -> np.ndarray:
    if rank == 1:
        return y.reshape(batch, -1, y.shape[1], y.shape[3])
    return y.reshape(batch, -1, *y.shape[1:])


def windows(x4: np.ndarray, attrs: dict, pad_value: float, rows: tuple[int, int] | None = None) -> np.ndarray:
    """Sliding windows (N, C, R, Wo, kh, kw) of a padded (N, C, H, W) array, for output rows ``rows``.

    Only the input rows the requested output rows need are padded and viewed, so
    a set of one output row costs one row of work.
    """
    kh, kw = attrs["kernel"]
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    pt, pl, pb, pr = attrs["pads"]
    n, c, h, w = x4.shape
    ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    r0, r1 = rows if rows is not None else (0, ho)
    top = r0 * sh - pt                                  # first input row needed (may be < 0)
    bottom = (r1 - 1) * sh - pt + (kh - 1) * dh + 1     # one past the last input row needed
    src = x4[:, :, max(top, 0):min(bottom, h)]
    padded = _pad(src, (max(0, -top), max(0, bottom - h)), (pl, pr), pad_value)
    view = sliding_window_view(padded, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def _pad(src: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], value: float) -> np.ndarray:
    """Pad the last two axes; a preallocated copy, several times faster than ``np.pad``."""
    if rows == (0, 0) and cols == (0, 0):
        return src
    n, c, h, w = src.shape
    out = np.empty((n, c, h + rows[0] + rows[1], w + cols[0] + cols[1]), dtype=src.dtype)
    out[...] = value
    out[:, :, rows[0]:rows[0] + h, cols[0]:cols[0] + w] = src
    return out


def to_nhwc(x: np.ndarray, rank: int) -> np.ndarray:
    """(B, N, C, [H,] W) activations -> (B*N, H, W, C), the layout the unfolding wants."""
    return _as_4d(x, rank).transpose(0, 2, 3, 1)


def patches_nhwc(x: np.ndarray, attrs: dict, rows: tuple[int, int] | None = None) -> np.ndarray:
    """im2col of channels-last data: (N, H, W, C) -> (N, R, Wo, kh*kw*C), K ordered (kh, kw, c).

    Channels innermost make every copied run a whole channel vector, which is
    what makes the unfolding cheap; weights are reordered to match by
    :func:`weights_khwc`.
    """
    v = windows(x.transpose(0, 3, 1, 2), attrs, 0.0, rows)       # (N, C, R, Wo, kh, kw) view
    n, c, r, wo, kh, kw = v.shape
    return v.transpose(0, 2, 3, 4, 5, 1).reshape(n, r, wo, kh * kw * c)


def weights_khwc(w: np.ndarray, channels: int, kernel: tuple[int, int]) -> np.ndarray:
    """Reorder the rows of a (C*kh*kw, N) matrix from (c, kh, kw) to (kh, kw, c)."""
    kh, kw = kernel
    return w.reshape(channels, kh, kw, -1).transpose(1, 2, 0, 3).reshape(channels * kh * kw, -1)


def conv_float(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, attrs: dict) -> np.ndarray:
    """Float convolution of any group count, used for calibration and as a reference."""
    rank = attrs.get("rank", 2)
    batch = x.shape[0]
    group = attrs["group"]
    cout, cin_g = weight.shape[0], weight.shape[1]
    kernel = tuple(attrs["kernel"])
    xs = to_nhwc(x, rank)
    outs = []
    for g in range(group):                                   # groups, not pixels
        patches = patches_nhwc(xs[..., g * cin_g:(g + 1) * cin_g], attrs)
        wg = weight[g * cout // group:(g + 1) * cout // group].reshape(cout // group, -1).T
        rows = patches.reshape(-1, patches.shape[-1])   # one large GEMM, not one per image row
        product = rows @ weights_khwc(wg, cin_g, kernel).astype(patches.dtype)
        outs.append(product.reshape(patches.shape[:-1] + (-1,)))
    y = np.concatenate(outs, axis=-1) if group > 1 else outs[0]
    if bias is not None:
        y = y + bias
    y = y.transpose(0, 3, 1, 2)                               # (BN, Cout, Ho, Wo)
    return np.ascontiguousarray(_from_4d(y, batch, rank)).astype(np.float32)


def matmul_float(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    y = x @ weight
    return (y + bias if bias is not None else y).astype(np.float32)


# -- vector operators -------------------------------------------------------------------------

@kernel("Identity")
def identity(attrs: dict, x: np.ndarray) -> np.ndarray:
    return x


@kernel("Relu")
def relu(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def wrap_integers(values: np.ndarray, dtype: str) -> np.ndarray:
    """Exact integers (float64) wrapped to integer type ``dtype``, as two's complement does."""
    info = np.iinfo(np.dtype(dtype))
    if info.bits == 64:                  # float64 cannot wrap modulo 2^64; callers keep such values in range
        return values
    span = float(info.max) - float(info.min) + 1
    return np.mod(values - float(info.min), span) + float(info.min)


def _binary(op: str) -> Kernel:
    fn = _BINARY[op]

    def apply(attrs: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        rank = max(a.ndim, b.ndim) - 1
        a, b = _align(a, rank), _align(b, rank)
        if "wrap" not in attrs:
            return fn(a, b).astype(np.float32)
        # Raw integers (8 and 16 bits): exact in float64, then wrapped to the ONNX type; integer
        # division truncates toward zero. Division by zero is undefined in ONNX (gives 0 here).
        with np.errstate(all="ignore"):
            y = fn(a.astype(np.float64), b.astype(np.float64))
            if op == "Div":
                y = np.where(np.isfinite(y), np.trunc(y), 0.0)
        return wrap_integers(y, attrs["wrap"]).astype(np.float32)
    apply.__name__ = op.lower()
    return apply


for _op in _BINARY:
    kernel(_op)(_binary(_op))


def _pool_input(x4: np.ndarray, attrs: dict, value: float, edge: float | None = None) -> np.ndarray:
    """Pad for pooling: explicit pads with ``edge`` (default ``value``), then up to what the last
    window reaches (ceil_mode) with ``value``."""
    kh, kw = attrs["kernel"]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    pt, pl, pb, pr = attrs["pads"]
    ho, wo = attrs["output_hw"]
    n, c, h, w = x4.shape
    reach_h = (ho - 1) * sh + (kh - 1) * dh + 1
    reach_w = (wo - 1) * sw + (kw - 1) * dw + 1
    padded = _pad(x4, (pt, pb), (pl, pr), value if edge is None else edge)
    return _pad(padded, (0, max(0, reach_h - padded.shape[2])), (0, max(0, reach_w - padded.shape[3])), value)


def _taps(padded: np.ndarray, attrs: dict, combine: np.ufunc, dtype: type) -> np.ndarray:
    """Reduce the kernel's taps with ``combine``: a loop over kh*kw taps, each a strided slice."""
    kh, kw = attrs["kernel"]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    ho, wo = attrs["output_hw"]
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = padded[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
            out = tap.astype(dtype) if out is None else combine(out, tap, out=out)
    return out


@kernel("MaxPool")
def max_pool(attrs: dict, x: np.ndarray) -> np.ndarray:
    rank = attrs.get("rank", 2)
    if rank > 2:
        return _pool_nd(x, attrs, "max")
    padded = _pool_input(_as_4d(x, rank), attrs, -np.inf)
    return _from_4d(_taps(padded, attrs, np.maximum, x.dtype), x.shape[0], rank)


@kernel("MaxPoolIndices")
def max_pool_indices(attrs: dict, x: np.ndarray) -> np.ndarray:
    """MaxPool's second output: the flat index (over the model's N, C, H, W; row-major, or H fastest
    with storage_order=1) of each window's first maximum, in window order as onnxruntime scans."""
    rank = attrs.get("rank", 2)
    x4 = _as_4d(x, rank)
    n, c, h, w = x4.shape
    padded = _pool_input(x4, attrs, -np.inf)
    kh, kw = attrs["kernel"]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    ho, wo = attrs["output_hw"]
    rows = (np.arange(ho) * sh - attrs["pads"][0])[:, None]
    cols = (np.arange(wo) * sw - attrs["pads"][1])[None, :]
    best = at_row = at_col = None
    for i in range(kh):
        for j in range(kw):
            tap = padded[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
            if best is None:
                best, at_row, at_col = tap.copy(), np.broadcast_to(rows, tap.shape), np.broadcast_to(cols, tap.shape)
                continue
            better = tap > best
            best = np.where(better, tap, best)
            at_row, at_col = np.where(better, rows + i * dh, at_row), np.where(better, cols + j * dw, at_col)
    flat = at_row * w + at_col if not attrs["storage_order"] else at_row + at_col * h
    planes = (np.arange(n) % x.shape[1])[:, None] * c + np.arange(c)[None, :]     # model (n, c)
    return _from_4d((flat + planes[:, :, None, None] * (h * w)).astype(np.float32), x.shape[0], rank)


@kernel("AveragePool")
def average_pool(attrs: dict, x: np.ndarray) -> np.ndarray:
    rank = attrs.get("rank", 2)
    if rank > 2:
        return _pool_nd(x, attrs, "average")
    x4 = _as_4d(x, rank)
    # float32 sums in window order, as onnxruntime's pooling computes them: quantized
    # models requantize the result, and a different rounding flips quantization steps.
    total = _taps(_pool_input(x4, attrs, 0.0), attrs, np.add, np.float32)
    # Count what each window averages over: real inputs, plus explicit pads when
    # count_include_pad, never the ceil_mode overhang.
    ones = np.ones((1, 1) + x4.shape[2:], dtype=np.float64)
    mask = _pool_input(ones, attrs, 0.0, edge=1.0 if attrs.get("count_include_pad") else 0.0)
    count = _taps(mask, attrs, np.add, np.float32)
    return _from_4d((total / count).astype(np.float32), x.shape[0], rank)


@kernel("GlobalAveragePool")
def global_average_pool(attrs: dict, x: np.ndarray) -> np.ndarray:
    axes = tuple(range(3, x.ndim))
    return x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)


@kernel("Reshape")
def reshape(attrs: dict, x: np.ndarray) -> np.ndarray:
    return x.reshape((x.shape[0],) + tuple(attrs["shape"]))


@kernel("Transpose")
def transpose(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose((0,) + tuple(p + 1 for p in attrs["perm"])))


@kernel("Softmax")
def softmax(attrs: dict, x: np.ndarray) -> np.ndarray:
    axis = attrs["axis"] + 1
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


# -- activations (float32 in, float32 out; the arithmetic onnxruntime does) ----------------------

@kernel("LeakyRelu")
def leaky_relu(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, x * np.float32(attrs["alpha"]))


@kernel("PRelu")
def prelu(attrs: dict, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    rank = max(x.ndim, slope.ndim) - 1
    x, slope = _align(x, rank), _align(slope, rank)
    return np.where(x < 0, x * slope, x).astype(np.float32, copy=False)


@kernel("Clip")
def clip(attrs: dict, x: np.ndarray) -> np.ndarray:
    """min(max(x, min), max): with min > max every value becomes max, as ONNX specifies."""
    if "min" in attrs:
        x = np.maximum(x, np.float32(attrs["min"]))
    if "max" in attrs:
        x = np.minimum(x, np.float32(attrs["max"]))
    return x


@kernel("Sigmoid")
def sigmoid(attrs: dict, x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))                      # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@kernel("HardSigmoid")
def hard_sigmoid(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.clip(x * np.float32(attrs["alpha"]) + np.float32(attrs["beta"]), 0, 1)


@kernel("HardSwish")
def hard_swish(attrs: dict, x: np.ndarray) -> np.ndarray:
    return x * np.clip(x * np.float32(1 / 6) + np.float32(0.5), 0, 1)


@kernel("Tanh")
def tanh(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


@kernel("Elu")
def elu(attrs: dict, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(x >= 0, x, np.float32(attrs["alpha"]) * (np.exp(x) - 1))


@kernel("Selu")
def selu(attrs: dict, x: np.ndarray) -> np.ndarray:
    alpha, gamma = np.float32(attrs["alpha"]), np.float32(attrs["gamma"])
    with np.errstate(over="ignore"):
        return np.where(x > 0, gamma * x, gamma * (alpha * np.exp(x) - alpha))


@kernel("Softplus")
def softplus(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.logaddexp(np.float32(0), x)


@kernel("Neg")
def neg(attrs: dict, x: np.ndarray) -> np.ndarray:
    if "wrap" in attrs:                             # raw integers: -(-128) is -128 in int8
        return wrap_integers(-x.astype(np.float64), attrs["wrap"]).astype(np.float32)
    return -x


@kernel("Abs")
def abs_(attrs: dict, x: np.ndarray) -> np.ndarray:
    if "wrap" in attrs:
        return wrap_integers(np.abs(x.astype(np.float64)), attrs["wrap"]).astype(np.float32)
    return np.abs(x)


@kernel("Exp")
def exp(attrs: dict, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(x)


@kernel("Sqrt")
def sqrt(attrs: dict, x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.sqrt(x)


@kernel("Pow")
def power(attrs: dict, x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    rank = max(x.ndim, exponent.ndim) - 1
    with np.errstate(all="ignore"):
        return np.power(_align(x, rank), _align(exponent, rank)).astype(np.float32, copy=False)


#: erf(x) = x * P(x^2) / Q(x^2) on [-4, 4] (Eigen's float approximation; erf is +-1 beyond in
#: float32). Evaluated in float64 it is within 1e-7 of the true value.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def _erf(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, -4, 4).astype(np.float64)
    x2 = x * x
    return x * np.polyval(_ERF_P, x2) / np.polyval(_ERF_Q, x2)


@kernel("Erf")
def erf(attrs: dict, x: np.ndarray) -> np.ndarray:
    return _erf(x).astype(np.float32)


@kernel("Gelu")
def gelu(attrs: dict, x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    if attrs["approximate"] == "tanh":
        inner = np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3))
    else:
        inner = _erf(x64 * np.sqrt(0.5))
    return (0.5 * x64 * (1 + inner)).astype(np.float32)


@kernel("BatchNormalization")
def batch_normalization(attrs: dict, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                        var: np.ndarray) -> np.ndarray:
    """Inference form: the per-channel affine ``x * m + (bias - mean * m)``, ``m = scale / sqrt(var + eps)``.

    Parameters are per channel (axis 1 of the model's shape); the affine is
    derived in float64 and applied in float32.
    """
    channels = (1, 1, -1) + (1,) * (x.ndim - 3)          # (B, N, C, ...)
    m = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + attrs["epsilon"])
    shift = bias.astype(np.float64) - mean.astype(np.float64) * m
    y = x * m.astype(np.float32).reshape(channels)
    y += shift.astype(np.float32).reshape(channels)
    return y


@kernel("LRN")
def lrn(attrs: dict, x: np.ndarray) -> np.ndarray:
    """x / (bias + alpha / size * sum of squares over a window of ``size`` channels) ** beta.

    The window sums are differences of one cumulative sum over the (zero-padded)
    channel axis, in float64 so the differences do not cancel.
    """
    size = attrs["size"]
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    channels = x.shape[2]
    widths = [(0, 0)] * x.ndim
    widths[2] = (before + 1, after)                # one more leading zero: sums start at 0
    csum = np.cumsum(np.pad(np.square(x, dtype=np.float64), widths), axis=2)
    window = csum[:, :, size:size + channels] - csum[:, :, :channels]
    base = attrs["bias"] + attrs["alpha"] / size * window
    return (x / base ** attrs["beta"]).astype(np.float32)


# -- n-ary elementwise -------------------------------------------------------------------------

def _fold(fn: np.ufunc, xs: tuple[np.ndarray, ...]) -> np.ndarray:
    rank = max(x.ndim for x in xs) - 1
    out = _align(xs[0], rank)
    for x in xs[1:]:
        out = fn(out, _align(x, rank))
    return out


@kernel("Sum")
def sum_(attrs: dict, *xs: np.ndarray) -> np.ndarray:
    return _fold(np.add, xs)


@kernel("Max")
def max_(attrs: dict, *xs: np.ndarray) -> np.ndarray:
    return _fold(np.maximum, xs)


@kernel("Min")
def min_(attrs: dict, *xs: np.ndarray) -> np.ndarray:
    return _fold(np.minimum, xs)


# -- reductions --------------------------------------------------------------------------------

@kernel("GlobalMaxPool")
def global_max_pool(attrs: dict, x: np.ndarray) -> np.ndarray:
    return x.max(axis=tuple(range(3, x.ndim)), keepdims=True)


@kernel("ReduceMean")
def reduce_mean(attrs: dict, x: np.ndarray) -> np.ndarray:
    axes = tuple(a + 1 for a in attrs["axes"])
    return x.mean(axis=axes, keepdims=bool(attrs["keepdims"]), dtype=np.float64).astype(np.float32)


# -- data movement -----------------------------------------------------------------------------

@kernel("Concat")
def concat(attrs: dict, *xs: np.ndarray) -> np.ndarray:
    batch = max(x.shape[0] for x in xs)                  # constants come with a batch of 1
    parts = [np.broadcast_to(x, (batch,) + x.shape[1:]) for x in xs]
    return np.concatenate(parts, axis=attrs["axis"] + 1)


@kernel("DepthToSpace")
def depth_to_space(attrs: dict, x: np.ndarray) -> np.ndarray:
    b = attrs["blocksize"]
    batch, n, c, h, w = x.shape
    if attrs["mode"] == "DCR":           # channels ordered (row offset, column offset, depth)
        y = x.reshape(batch * n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:                                # CRD: (depth, row offset, column offset)
        y = x.reshape(batch * n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(batch, n, c // (b * b), h * b, w * b)


@kernel("SpaceToDepth")
def space_to_depth(attrs: dict, x: np.ndarray) -> np.ndarray:
    b = attrs["blocksize"]
    batch, n, c, h, w = x.shape
    y = x.reshape(batch * n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(batch, n, c * b * b, h // b, w // b)


@kernel("Pad")
def pad(attrs: dict, x: np.ndarray) -> np.ndarray:
    """Negative pads crop first; the rest is padded (constant, reflect or edge) around what is left."""
    pads = attrs["pads"]
    rank = len(pads) // 2
    crop = tuple(slice(max(-pads[i], 0), x.shape[i + 1] - max(-pads[rank + i], 0)) for i in range(rank))
    widths = [(0, 0)] + [(max(pads[i], 0), max(pads[rank + i], 0)) for i in range(rank)]
    x = x[(slice(None),) + crop]
    if attrs["mode"] == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.float32(attrs["value"]))
    return np.pad(x, widths, mode=attrs["mode"])


def _source_coordinates(mode: str, out: int, size: int, scale: float) -> np.ndarray:
    """Where output positions 0..out-1 of a resized axis fall in the input axis (of ``size``).

    Computed in float32 in onnxruntime's order of operations, so positions that
    land exactly between two pixels round the same way.
    """
    y = np.arange(out, dtype=np.float32)
    s, half = np.float32(scale), np.float32(0.5)
    if mode == "asymmetric":
        return y / s
    if mode == "tf_half_pixel_for_nn":
        return (y + half) / s
    if mode == "align_corners":
        return np.zeros_like(y) if out == 1 else y * np.float32(size - 1) / np.float32(out - 1)
    if mode == "pytorch_half_pixel" and out == 1:
        return np.zeros_like(y)
    if mode == "half_pixel_symmetric":            # the offset in float32, the rest in float64
        adjustment = np.float32(out) / (s * np.float32(size))
        offset = np.float32(size) / np.float32(2) * (np.float32(1) - adjustment)
        return (np.float64(offset) + (y.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(np.float32)
    return (y + half) / s - half                            # half_pixel, pytorch_half_pixel


def _nearest_index(x: np.ndarray, mode: str, size: int) -> np.ndarray:
    if mode == "ceil":
        index = np.ceil(x)
    else:
        floor = np.floor(x)
        frac = x - floor                                    # exact in float arithmetic
        if mode == "round_prefer_floor":
            index = floor + (frac > 0.5)
        elif mode == "round_prefer_ceil":
            index = floor + (frac >= 0.5)
        else:
            index = floor
    return np.clip(index, 0, size - 1).astype(np.intp)


@kernel("Resize")
def resize(attrs: dict, x: np.ndarray) -> np.ndarray:
    """Nearest or linear resizing, one axis at a time (both are separable): gathers by index arrays.
    Cubic, antialiased and tf_crop_and_resize resizing take :func:`_resize_by_matrices`."""
    if attrs["mode"] == "cubic" or attrs.get("antialias") or "roi" in attrs:
        return _resize_by_matrices(attrs, x)
    for axis, scale, out in zip(attrs["axes"], attrs["scales"], attrs["sizes"]):
        size = x.shape[axis + 1]
        coords = _source_coordinates(attrs["coordinate_transformation_mode"], out, size, scale)
        if attrs["mode"] == "nearest":
            x = np.take(x, _nearest_index(coords, attrs["nearest_mode"], size), axis=axis + 1)
            continue
        coords = np.clip(coords, 0, size - 1)                 # beyond the edges: the edge pixel
        low = coords.astype(np.intp)
        high = np.minimum(low + 1, size - 1)
        w = (coords - low.astype(np.float32)).reshape((-1,) + (1,) * (x.ndim - axis - 2))
        x = np.take(x, low, axis=axis + 1) * (1 - w) + np.take(x, high, axis=axis + 1) * w
    return x


def _crop_coordinates(out: int, size: int, roi: tuple[float, float]) -> np.ndarray:
    """tf_crop_and_resize: output positions spread over [start, end] of the input (as onnxruntime)."""
    start, end = (np.float32(v) for v in roi)
    if out == 1:
        return np.full(1, 0.5 * (float(start) + float(end)) * (size - 1), dtype=np.float32)
    y = np.arange(out, dtype=np.float32)
    return start * np.float32(size - 1) + (y * (end - start) * np.float32(size - 1)) / np.float32(out - 1)


def _cubic_weights(distance: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at ``distance`` (zero from 2 on)."""
    d = np.abs(distance)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _interpolation_matrix(attrs: dict, coords: np.ndarray, size: int, scale: float) -> np.ndarray:
    """(out, size) weights of one axis, as ONNX's reference interpolates: the taps around each
    coordinate ``x`` sit at ``base + i`` with ``x - base`` in (0, 1], edge taps repeat the edge pixel
    (or are dropped and the rest renormalized, with exclude_outside). Antialiasing stretches the
    kernel by 1 / scale when downsampling."""
    x = coords.astype(np.float64)
    ratio = x - np.floor(x)
    ratio = np.where(ratio == 0, 1.0, ratio)
    base = np.rint(x - ratio).astype(np.int64)
    stretch = min(scale, 1.0) if attrs.get("antialias") else 1.0
    if attrs["mode"] == "cubic":
        first = int(np.floor(-2 / stretch) + 1)
        taps = np.arange(first, 2 - first)
        weights = _cubic_weights(stretch * (taps[None, :] - ratio[:, None]), attrs["cubic_coeff_a"])
    else:
        first = int(np.floor(-1 / stretch) + 1)
        taps = np.arange(first, 2 - first)
        weights = np.clip(1 - np.abs((taps[None, :] - ratio[:, None]) * stretch), 0, 1)
    index = base[:, None] + taps[None, :]
    if attrs.get("exclude_outside"):
        weights = np.where((index < 0) | (index >= size), 0.0, weights)
    if attrs.get("antialias") or attrs.get("exclude_outside"):
        weights = weights / weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((len(x), size))
    np.add.at(matrix, (np.arange(len(x))[:, None], np.clip(index, 0, size - 1)), weights)
    return matrix


def _resize_by_matrices(attrs: dict, x: np.ndarray) -> np.ndarray:
    """Resizing as one (out, in) matrix per axis (float64), then tf_crop_and_resize's extrapolation."""
    y = x.astype(np.float64)
    outside = []
    for i, (axis, scale, out) in enumerate(zip(attrs["axes"], attrs["scales"], attrs["sizes"])):
        size = x.shape[axis + 1]
        if "roi" in attrs:
            coords = _crop_coordinates(out, size, attrs["roi"][i])
            outside.append((axis, (coords < 0) | (coords > size - 1)))
        else:
            coords = _source_coordinates(attrs["coordinate_transformation_mode"], out, size, scale)
        if attrs["mode"] == "nearest":
            matrix = np.zeros((out, size))
            matrix[np.arange(out), _nearest_index(coords, attrs["nearest_mode"], size)] = 1
        elif attrs["mode"] == "linear" and not attrs.get("antialias"):
            c = np.clip(coords, 0, size - 1).astype(np.float64)
            low = np.floor(c).astype(np.intp)
            high = np.minimum(low + 1, size - 1)
            matrix = np.zeros((out, size))
            np.add.at(matrix, (np.arange(out), low), 1 - (c - low))
            np.add.at(matrix, (np.arange(out), high), c - low)
        else:
            matrix = _interpolation_matrix(attrs, coords, size, scale)
        y = np.moveaxis(np.tensordot(y, matrix, axes=([axis + 1], [1])), -1, axis + 1)
    for axis, mask in outside:
        index = [slice(None)] * y.ndim
        index[axis + 1] = mask
        y[tuple(index)] = attrs["extrapolation_value"]
    return y.astype(np.float32)


@kernel("ZeroInsert")
def zero_insert(attrs: dict, x: np.ndarray) -> np.ndarray:
    """Stride-1 zeros between pixels, then pads (positive) or crops (negative) on each side.

    With it a transposed convolution is an ordinary stride-1 convolution of the
    result, which is how ConvTranspose reaches the crossbars.
    """
    rank = attrs.get("rank", 2)
    x4 = _as_4d(x, rank)
    (sh, sw), (bt, bl, bb, br) = attrs["strides"], attrs["pads"]
    n, c, h, w = x4.shape
    spread = np.zeros((n, c, (h - 1) * sh + 1, (w - 1) * sw + 1), dtype=x4.dtype)
    spread[:, :, ::sh, ::sw] = x4
    cropped = spread[:, :, max(0, -bt):spread.shape[2] - max(0, -bb), max(0, -bl):spread.shape[3] - max(0, -br)]
    return _from_4d(_pad(cropped, (max(0, bt), max(0, bb)), (max(0, bl), max(0, br)), 0.0), x.shape[0], rank)


# -- N-D pooling (3-D windows; 1-D and 2-D ones take the 4-D path above) ---------------------------

def _pool_padded_nd(x: np.ndarray, attrs: dict, value: float, edge: float) -> np.ndarray:
    """(..., *spatial) padded with ``edge`` by the explicit pads, then with ``value`` up to what the
    last window reaches (ceil_mode)."""
    rank = attrs["rank"]
    pads, spatial = attrs["pads"], x.shape[-rank:]
    reach = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in
             zip(attrs["output_hw"], attrs["strides"], attrs["kernel"], attrs["dilations"])]
    full = [pads[i] + spatial[i] + pads[rank + i] for i in range(rank)]
    out = np.full(x.shape[:-rank] + tuple(max(f, r) for f, r in zip(full, reach)), value, dtype=x.dtype)
    out[(Ellipsis,) + tuple(slice(0, f) for f in full)] = edge
    out[(Ellipsis,) + tuple(slice(pads[i], pads[i] + spatial[i]) for i in range(rank))] = x
    return out


def _taps_nd(padded: np.ndarray, attrs: dict, combine: np.ufunc, dtype: type) -> np.ndarray:
    """Reduce the window's taps (in row-major kernel order) with ``combine``, each a strided slice."""
    out = None
    geometry = list(zip(attrs["dilations"], attrs["output_hw"], attrs["strides"]))
    for index in itertools.product(*(range(k) for k in attrs["kernel"])):
        view = (Ellipsis,) + tuple(slice(i * d, i * d + (o - 1) * s + 1, s) for i, (d, o, s) in zip(index, geometry))
        tap = padded[view]
        out = tap.astype(dtype) if out is None else combine(out, tap, out=out)
    return out


def _pool_nd(x: np.ndarray, attrs: dict, mode: str) -> np.ndarray:
    if mode == "max":
        return _taps_nd(_pool_padded_nd(x, attrs, -np.inf, -np.inf), attrs, np.maximum, x.dtype)
    total = _taps_nd(_pool_padded_nd(x, attrs, 0.0, 0.0), attrs, np.add, np.float32)
    ones = np.ones((1,) * (x.ndim - attrs["rank"]) + x.shape[-attrs["rank"]:], dtype=np.float32)
    count = _taps_nd(_pool_padded_nd(ones, attrs, 0.0, 1.0 if attrs.get("count_include_pad") else 0.0),
                     attrs, np.add, np.float32)
    return (total / count).astype(np.float32)


# -- more elementwise operators ----------------------------------------------------------------
#
# Booleans are float32 0/1 (the tensors are typed bool in the graph); raw integers are exact
# float32 integers, as everywhere in the runtime.

def _unary(op: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    def apply(attrs: dict, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):               # log(0), 1/0, asin(2): inf and nan, as ONNX has them
            return np.asarray(fn(x), dtype=np.float32)
    apply.__name__ = op.lower()
    kernel(op)(apply)


for _op, _fn in {
    "Log": np.log, "Reciprocal": np.reciprocal, "Floor": np.floor, "Ceil": np.ceil,
    "Round": np.rint,                                  # halves to even, as ONNX specifies
    "Sign": np.sign, "Softsign": lambda x: x / (1 + np.abs(x)),
    "Not": lambda x: x == 0, "IsNaN": np.isnan,
}.items():
    _unary(_op, _fn)


@kernel("IsInf")
def is_inf(attrs: dict, x: np.ndarray) -> np.ndarray:
    hit = np.zeros(x.shape, dtype=bool)
    if attrs["detect_positive"]:
        hit |= np.isposinf(x)
    if attrs["detect_negative"]:
        hit |= np.isneginf(x)
    return np.asarray(hit, dtype=np.float32)


@kernel("ThresholdedRelu")
def thresholded_relu(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.where(x > np.float32(attrs["alpha"]), x, np.float32(0)).astype(np.float32)


@kernel("Shrink")
def shrink(attrs: dict, x: np.ndarray) -> np.ndarray:
    lambd, bias = np.float32(attrs["lambd"]), np.float32(attrs["bias"])
    return np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, np.float32(0))).astype(np.float32)


_COMPARE = {"Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater,
            "GreaterOrEqual": np.greater_equal, "Equal": np.equal,
            "And": lambda a, b: (a != 0) & (b != 0), "Or": lambda a, b: (a != 0) | (b != 0),
            "Xor": lambda a, b: (a != 0) ^ (b != 0)}


def _compare(op: str) -> Kernel:
    fn = _COMPARE[op]

    def apply(attrs: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        rank = max(a.ndim, b.ndim) - 1
        return fn(_align(a, rank), _align(b, rank)).astype(np.float32)
    apply.__name__ = op.lower()
    return apply


for _op in _COMPARE:
    kernel(_op)(_compare(_op))


@kernel("Where")
def where(attrs: dict, condition: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rank = max(condition.ndim, a.ndim, b.ndim) - 1
    return np.where(_align(condition, rank) != 0, _align(a, rank), _align(b, rank)).astype(np.float32)


@kernel("Mod")
def mod(attrs: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """fmod=1: the sign of the dividend (C fmod); fmod=0 (integers only): the sign of the divisor.
    Integers are exact in float64; a zero divisor (undefined in ONNX) gives nan here."""
    rank = max(a.ndim, b.ndim) - 1
    a, b = _align(a, rank).astype(np.float64), _align(b, rank).astype(np.float64)
    with np.errstate(all="ignore"):
        y = np.fmod(a, b) if attrs["fmod"] else np.mod(a, b)
    return y.astype(np.float32)


#: Range of a C cast from float to a 32-bit or 64-bit integer on x86 (what onnxruntime does when a
#: float is out of range, which ONNX leaves undefined): anything outside gives the lowest value.
_CAST_LIMITS = {4: 2.0 ** 31, 8: 2.0 ** 63}


@kernel("Cast")
def cast(attrs: dict, x: np.ndarray) -> np.ndarray:
    """Cast to bool (nonzero, nan included, is true) or to an integer type: truncation toward zero,
    then the low bits (integers to a narrower type wrap, as ONNX specifies; out-of-range floats,
    undefined in ONNX, become what onnxruntime gives on x86)."""
    to = np.dtype(attrs["to"])
    if to.kind == "b":
        return (x != 0).astype(np.float32)
    limit = _CAST_LIMITS[max(to.itemsize, 4)]
    with np.errstate(invalid="ignore"):
        y = np.trunc(x.astype(np.float64))
        y = np.where(np.isfinite(y) & (y >= -limit) & (y < limit), y, -limit)
    return wrap_integers(y, to.name).astype(np.float32)


# -- more reductions ---------------------------------------------------------------------------

def _reduce_axes(attrs: dict) -> tuple[int, ...]:
    return tuple(a + 1 for a in attrs["axes"])


_REDUCE = {
    "ReduceMax": lambda x, axes: x.max(axis=axes),
    "ReduceMin": lambda x, axes: x.min(axis=axes),
    "ReduceSum": lambda x, axes: x.sum(axis=axes, dtype=np.float64),
    "ReduceProd": lambda x, axes: x.astype(np.float64).prod(axis=axes),
    "ReduceL1": lambda x, axes: np.abs(x).sum(axis=axes, dtype=np.float64),
    "ReduceL2": lambda x, axes: np.sqrt(np.square(x, dtype=np.float64).sum(axis=axes)),
    "ReduceSumSquare": lambda x, axes: np.square(x, dtype=np.float64).sum(axis=axes),
    "ReduceLogSumExp": lambda x, axes: _log_sum_exp(x.astype(np.float64), axes),
}


def _log_sum_exp(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    peak = x.max(axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)        # all -inf (or an inf): no shift
    return np.log(np.exp(x - peak).sum(axis=axes)) + peak.squeeze(axis=axes)


def _reduce(op: str) -> Kernel:
    fn = _REDUCE[op]

    def apply(attrs: dict, x: np.ndarray) -> np.ndarray:
        axes = _reduce_axes(attrs)
        with np.errstate(all="ignore"):
            y = np.asarray(fn(x, axes))
        if attrs["keepdims"]:
            y = np.expand_dims(y, axes)
        return y.astype(np.float32)
    apply.__name__ = op.lower()
    return apply


for _op in _REDUCE:
    kernel(_op)(_reduce(_op))


@kernel("ArgMax", "ArgMin")
def arg_extreme(attrs: dict, x: np.ndarray) -> np.ndarray:
    """Indices (float32, exact below 2^24) of the first extreme, or the last with select_last_index."""
    axis = attrs["axis"] + 1
    find = np.argmax if attrs["op"] == "ArgMax" else np.argmin
    if attrs["select_last_index"]:
        index = x.shape[axis] - 1 - find(np.flip(x, axis=axis), axis=axis)
    else:
        index = find(x, axis=axis)
    if attrs["keepdims"]:
        index = np.expand_dims(index, axis)
    return index.astype(np.float32)


# -- more data movement ------------------------------------------------------------------------

@kernel("Slice")
def slice_(attrs: dict, x: np.ndarray) -> np.ndarray:
    """``slices``: (axis, start, stop or None, step) with python semantics, all indices explicit."""
    index = [slice(None)] * x.ndim
    for axis, start, stop, step in attrs["slices"]:
        index[axis + 1] = slice(start, stop, step)
    return x[tuple(index)]


@kernel("Gather")
def gather(attrs: dict, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Constant, non-negative ``indices`` (of shape ``indices_shape``) along ``axis``."""
    return np.take(x, indices.reshape(attrs["indices_shape"]).astype(np.intp), axis=attrs["axis"] + 1)


@kernel("Expand")
def expand(attrs: dict, x: np.ndarray) -> np.ndarray:
    shape = tuple(attrs["shape"])
    return np.broadcast_to(_align(x, len(shape)), x.shape[:1] + shape)


@kernel("Tile")
def tile(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.tile(x, (1,) + tuple(attrs["repeats"]))


@kernel("BatchConstant")
def batch_constant(attrs: dict, like: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Constant ``value`` (lifted; of model shape ``shape``) repeated over the batch of ``like``: a graph
    output that is a constant."""
    shape = tuple(attrs["shape"])
    return np.broadcast_to(value.astype(np.float32).reshape(shape), like.shape[:1] + shape)
