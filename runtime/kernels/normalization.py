"""Normalizations: batch normalization, local response normalization, softmax."""

from __future__ import annotations

import numpy as np

from cimc.runtime.kernels._base import kernel


@kernel("Softmax")
def softmax(attrs: dict, x: np.ndarray) -> np.ndarray:
    axis = attrs["axis"] + 1
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


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
