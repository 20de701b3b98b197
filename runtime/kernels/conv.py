"""Convolution arithmetic: the channels-last im2col both the float evaluator and the crossbar runtime use, float reference products, and zero insertion for transposed convolutions."""

from __future__ import annotations

import numpy as np

from cimc.runtime.kernels._base import _as_4d, _from_4d, _pad, kernel, windows


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
