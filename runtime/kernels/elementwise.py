"""Elementwise operators: arithmetic (exact wrapping arithmetic for raw integers), activations, comparisons and logic, casts."""

from __future__ import annotations

from typing import Callable

import numpy as np

from cimc.runtime.kernels._base import Kernel, _align, kernel


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
