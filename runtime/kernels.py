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
        outs.append(patches @ weights_khwc(wg, cin_g, kernel).astype(patches.dtype))
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
    total = _taps(_pool_input(x4, attrs, 0.0), attrs, np.add, np.float64)
    # Count what each window averages over: real inputs, plus explicit pads when
    # count_include_pad, never the ceil_mode overhang.
    ones = np.ones((1, 1) + x4.shape[2:], dtype=np.float64)
    mask = _pool_input(ones, attrs, 0.0, edge=1.0 if attrs.get("count_include_pad") else 0.0)
    count = _taps(mask, attrs, np.add, np.float64)
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


@kernel("FakeQuant")
def fake_quant(attrs: dict, x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """ONNX QuantizeLinear followed by DequantizeLinear, in float32 as onnxruntime computes them.

    The IR keeps quantized tensors as their dequantized float32 values, so a
    quantization point is this round trip (round half to even, saturate).
    """
    rank = x.ndim - 1
    axis = attrs.get("axis")
    if scale.size > 1:                                   # per-axis: align with that axis
        shape = [1] * (rank + 1)
        shape[axis + 1] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    scale = scale.astype(np.float32)
    zero = zero_point.astype(np.float32)
    q = np.clip(np.rint(x / scale) + zero, attrs["qmin"], attrs["qmax"])
    return ((q - zero) * scale).astype(np.float32)
