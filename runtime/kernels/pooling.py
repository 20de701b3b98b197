"""Pooling by a loop over kernel taps (each a strided slice), for any number of spatial axes."""

from __future__ import annotations

import itertools

import numpy as np

from cimc.runtime.kernels._base import _as_4d, _from_4d, _pad, kernel


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


@kernel("GlobalMaxPool")
def global_max_pool(attrs: dict, x: np.ndarray) -> np.ndarray:
    return x.max(axis=tuple(range(3, x.ndim)), keepdims=True)


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
