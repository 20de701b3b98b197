"""Resize and Upsample: nearest, linear and cubic interpolation applied one axis at a time through index and weight arrays."""

from __future__ import annotations

import numpy as np

from cimc.runtime.kernels._base import kernel


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
