"""Reductions over axes and arg-extremes."""

from __future__ import annotations

import numpy as np

from cimc.runtime.kernels._base import Kernel, kernel


@kernel("ReduceMean")
def reduce_mean(attrs: dict, x: np.ndarray) -> np.ndarray:
    axes = tuple(a + 1 for a in attrs["axes"])
    return x.mean(axis=axes, keepdims=bool(attrs["keepdims"]), dtype=np.float64).astype(np.float32)


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
