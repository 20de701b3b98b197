"""The kernel registry, the batch-axis convention helpers, and the windowing every spatial kernel shares."""

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
