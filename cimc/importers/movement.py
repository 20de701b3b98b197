"""Importers of operators that move values: reshapes, transposes, concatenation, padding, slicing, gathering."""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers._core import ImportContext, importer, refuse
from cimc.importers._common import _string, _keep_integers, _constant_input, _operands


@importer("Identity", "Dropout")
def _identity(ctx: ImportContext, node: onnx.NodeProto) -> None:
    mask = node.output[1] if node.op_type == "Dropout" and len(node.output) > 1 else ""
    if mask and (ctx.consumers.get(mask) or mask in ctx.graph_outputs):   # old exporters name it unused
        raise refuse(node, "the dropout mask output", "inference-mode Dropout with one output")
    if ctx.const(node.input[0]) is not None:     # frontend does not fold Identity: an alias of the constant
        ctx.graph.add_constant(node.output[0], ctx.const(node.input[0]))
        return
    x = ctx.activation(node, 0)
    _keep_integers(ctx, node)
    ctx.emit(node, "Identity", [x])


@importer("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(ctx: ImportContext, node: onnx.NodeProto) -> None:
    # Squeeze and Unsqueeze only move unit axes: the inferred output shape is all they mean.
    x = ctx.activation(node, 0)
    _keep_integers(ctx, node)
    ctx.emit(node, "Reshape", [x], {"shape": ctx.shape(node.output[0])})


@importer("Transpose")
def _transpose(ctx: ImportContext, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    perm = tuple(ctx.attrs(node).get("perm", list(reversed(range(rank)))))
    x = ctx.activation(node, 0)
    _keep_integers(ctx, node)
    ctx.emit(node, "Transpose", [x], {"perm": perm})


@importer("Concat")
def _concat(ctx: ImportContext, node: onnx.NodeProto) -> None:
    inputs = _operands(ctx, node)
    rank = len(ctx.shape(node.output[0]))
    _keep_integers(ctx, node)
    ctx.emit(node, "Concat", inputs, {"axis": int(ctx.attrs(node)["axis"]) % rank})


@importer("DepthToSpace", "SpaceToDepth")
def _depth_space(ctx: ImportContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    x = ctx.activation(node, 0)
    rank = len(ctx.shape(x))
    if rank != 4:
        raise refuse(node, f"a rank-{rank} input", "(N, C, H, W) inputs")
    attrs = {"blocksize": int(a["blocksize"])}
    if node.op_type == "DepthToSpace":
        mode = _string(a.get("mode"), "DCR")
        if mode not in ("DCR", "CRD"):
            raise refuse(node, f"mode {mode!r}", "DCR, CRD")
        attrs["mode"] = mode
    _keep_integers(ctx, node)
    ctx.emit(node, node.op_type, [x], attrs)


_PAD_MODES = ("constant", "reflect", "edge")


@importer("Pad")
def _pad(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    rank = len(ctx.shape(x))
    mode = _string(ctx.attrs(node).get("mode"), "constant")
    if mode not in _PAD_MODES:
        raise refuse(node, f"mode {mode!r}", ", ".join(_PAD_MODES))
    pads = _constant_input(ctx, node, 1, "pads")
    value = _constant_input(ctx, node, 2, "constant_value")
    given_axes = _constant_input(ctx, node, 3, "axes")        # an input since opset 18
    axes = [int(v) % rank for v in given_axes.reshape(-1)] if given_axes is not None else list(range(rank))
    pads = [int(v) for v in pads.reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise refuse(node, f"{len(pads)} pads for {len(axes)} axes", "two pads per axis")
    # Explicit (begin..., end...) over every axis, as ONNX orders them; negative pads crop.
    full = [0] * (2 * rank)
    for i, ax in enumerate(axes):
        full[ax], full[rank + ax] = pads[i], pads[len(axes) + i]
    _keep_integers(ctx, node)
    if not any(full):
        ctx.emit(node, "Identity", [x])
        return
    attrs = {"pads": full, "mode": mode}
    if mode == "constant":
        attrs["value"] = float(value.reshape(-1)[0]) if value is not None and value.size else 0.0
    ctx.emit(node, "Pad", [x], attrs)


def _slice_of(dim: int, start: int, end: int, step: int) -> list:
    """ONNX's clamped (start, end) of one axis as explicit python slice bounds [start, stop, step]."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return [start, None if end < 0 else end, step]


@importer("Slice")
def _slice(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    shape = ctx.shape(x)
    rank = len(shape)
    starts = _constant_input(ctx, node, 1, "starts")
    ends = _constant_input(ctx, node, 2, "ends")
    if starts is None or ends is None:
        raise refuse(node, "Slice without starts or ends", "constant starts and ends")
    axes = _constant_input(ctx, node, 3, "axes")
    steps = _constant_input(ctx, node, 4, "steps")
    starts, ends = [int(v) for v in starts.reshape(-1)], [int(v) for v in ends.reshape(-1)]
    axes = [int(v) % rank for v in axes.reshape(-1)] if axes is not None else list(range(len(starts)))
    steps = [int(v) for v in steps.reshape(-1)] if steps is not None else [1] * len(starts)
    if 0 in steps:
        raise refuse(node, "a step of 0", "nonzero steps")
    slices = [[ax] + _slice_of(shape[ax], st, en, sp) for st, en, ax, sp in zip(starts, ends, axes, steps)]
    _keep_integers(ctx, node)
    ctx.emit(node, "Slice", [x], {"slices": slices})


@importer("Split")
def _split(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """One Slice node per output (the runtime's nodes have one output each); sizes come from the
    inferred output shapes, which shape inference derived from the constant split or num_outputs."""
    x = ctx.activation(node, 0)
    shape = ctx.shape(x)
    axis = int(ctx.attrs(node).get("axis", 0)) % len(shape)
    _constant_input(ctx, node, 1, "split sizes")                # refuses sizes computed at run time
    _keep_integers(ctx, node, outputs=[o for o in node.output if o])
    start = 0
    for index, out in enumerate(node.output):
        if out not in ctx.shapes:
            raise refuse(node, f"output {out!r} without an inferred shape", "splits of static sizes")
        size = ctx.shape(out)[axis]
        ctx.emit(node, "Slice", [x], {"slices": [[axis, start, start + size, 1]]}, outputs=[out],
                 suffix=f":{index}")
        start += size
    if start > shape[axis]:
        raise refuse(node, f"splits of {start} elements along an axis of {shape[axis]}", "consistent splits")


@importer("Gather")
def _gather(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    shape = ctx.shape(x)
    axis = int(ctx.attrs(node).get("axis", 0)) % len(shape)
    indices = _constant_input(ctx, node, 1, "indices")
    indices = np.asarray(indices, dtype=np.int64)
    if len(ctx.shape(node.output[0])) == len(shape) - 1:         # a scalar index (the graph keeps it 1-D)
        indices = indices.reshape(())
    dim = shape[axis]
    if indices.size and (indices.min() < -dim or indices.max() >= dim):
        raise refuse(node, f"indices outside [-{dim}, {dim - 1}]", "indices within the axis")
    index = ctx.add_const(node.input[1] + ":index", np.where(indices < 0, indices + dim, indices))
    _keep_integers(ctx, node)
    # The index shape is an attribute: graph constants are at least 1-D, a scalar index is not.
    ctx.emit(node, "Gather", [x, index], {"axis": axis, "indices_shape": list(indices.shape)})


@importer("Expand")
def _expand(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    _constant_input(ctx, node, 1, "shape")
    _keep_integers(ctx, node)
    ctx.emit(node, "Expand", [x], {"shape": list(ctx.shape(node.output[0]))})


@importer("Tile")
def _tile(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    repeats = _constant_input(ctx, node, 1, "repeats")
    _keep_integers(ctx, node)
    ctx.emit(node, "Tile", [x], {"repeats": [int(r) for r in repeats.reshape(-1)]})
