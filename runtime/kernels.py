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


def _binary(op: str) -> Kernel:
    fn = _BINARY[op]

    def apply(attrs: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        rank = max(a.ndim, b.ndim) - 1
        return fn(_align(a, rank), _align(b, rank)).astype(np.float32)
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
    padded = _pool_input(_as_4d(x, rank), attrs, -np.inf)
    return _from_4d(_taps(padded, attrs, np.maximum, x.dtype), x.shape[0], rank)


@kernel("AveragePool")
def average_pool(attrs: dict, x: np.ndarray) -> np.ndarray:
    rank = attrs.get("rank", 2)
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
    return -x


@kernel("Abs")
def abs_(attrs: dict, x: np.ndarray) -> np.ndarray:
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
    """Nearest or linear resizing, one axis at a time (both are separable): gathers by index arrays."""
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
