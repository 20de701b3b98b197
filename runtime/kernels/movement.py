"""Operators that move values without computing new ones: reshapes, transposes, concatenation, padding, slicing, gathering."""

from __future__ import annotations

import numpy as np

from cimc.runtime.kernels._base import _align, kernel


@kernel("Reshape")
def reshape(attrs: dict, x: np.ndarray) -> np.ndarray:
    return x.reshape((x.shape[0],) + tuple(attrs["shape"]))


@kernel("Transpose")
def transpose(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose((0,) + tuple(p + 1 for p in attrs["perm"])))


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


@kernel("Slice")
def slice_(attrs: dict, x: np.ndarray) -> np.ndarray:
    """``slices``: (axis, start, stop or None, step) with python semantics, all indices explicit."""
    index = [slice(None)] * x.ndim
    for axis, start, stop, step in attrs["slices"]:
        index[axis + 1] = slice(start, stop, step)
    return x[tuple(index)]


@kernel("Gather")
def gather(attrs: dict, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Constant, non-negative ``indices`` (of shape ``indices_shape``) along ``axis``."""
    return np.take(x, indices.reshape(attrs["indices_shape"]).astype(np.intp), axis=attrs["axis"] + 1)


@kernel("Expand")
def expand(attrs: dict, x: np.ndarray) -> np.ndarray:
    shape = tuple(attrs["shape"])
    return np.broadcast_to(_align(x, len(shape)), x.shape[:1] + shape)


@kernel("Tile")
def tile(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.tile(x, (1,) + tuple(attrs["repeats"]))


@kernel("BatchConstant")
def batch_constant(attrs: dict, like: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Constant ``value`` (lifted; of model shape ``shape``) repeated over the batch of ``like``: a graph
    output that is a constant."""
    shape = tuple(attrs["shape"])
    return np.broadcast_to(value.astype(np.float32).reshape(shape), like.shape[:1] + shape)
