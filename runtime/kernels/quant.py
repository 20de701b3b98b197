"""Kernels for quantization points, in float32 as onnxruntime computes them.

The IR keeps a quantized tensor as its dequantized float32 value ("real"), so a
QuantizeLinear followed by DequantizeLinear inside a model is one ``FakeQuant``.
Integer tensors at the model's boundary hold raw integer values ("raw"):
``Dequantize`` turns raw into real, ``Quantize`` real into raw.
"""

from __future__ import annotations

import numpy as np

from cimc.runtime.kernels._base import kernel


def _per_axis(values: np.ndarray, attrs: dict, ndim: int) -> np.ndarray:
    """Scale or zero point aligned with the quantization axis (constants arrive lifted)."""
    values = values.reshape(-1)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[attrs["axis"] + 1] = -1
    return values.reshape(shape)


def _quantize(attrs: dict, x: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    scale = _per_axis(scale, attrs, x.ndim).astype(np.float32)
    zero = _per_axis(zero, attrs, x.ndim).astype(np.float32)
    return np.clip(np.rint(x / scale) + zero, attrs["qmin"], attrs["qmax"]).astype(np.float32)


@kernel("Quantize")
def quantize(attrs: dict, x: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Real -> raw: QuantizeLinear (round half to even, saturate)."""
    return _quantize(attrs, x, scale, zero)


@kernel("Dequantize")
def dequantize(attrs: dict, x: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Raw -> real: DequantizeLinear."""
    scale = _per_axis(scale, attrs, x.ndim).astype(np.float32)
    zero = _per_axis(zero, attrs, x.ndim).astype(np.float32)
    return ((x - zero) * scale).astype(np.float32)


@kernel("FakeQuant")
def fake_quant(attrs: dict, x: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Real -> real through the integer grid: QuantizeLinear then DequantizeLinear."""
    q = _quantize(attrs, x, scale, zero)
    return dequantize(attrs, q, scale, zero)
