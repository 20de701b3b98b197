"""Importers of reductions and arg-extremes."""

from __future__ import annotations

import onnx

from cimc.importers._core import ImportContext, importer, refuse
from cimc.importers._common import _no_integer_arithmetic, _keep_integers, _typed_output, _constant_input


#: Reductions that select a value (raw integers stay integers); the others compute (in float64).
_SELECTING_REDUCTIONS = ("ReduceMax", "ReduceMin")


_REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
               "ReduceSumSquare") + _SELECTING_REDUCTIONS


@importer(*_REDUCTIONS)
def _reduce(ctx: ImportContext, node: onnx.NodeProto) -> None:
    if node.op_type in _SELECTING_REDUCTIONS:
        _keep_integers(ctx, node)
    else:
        _no_integer_arithmetic(ctx, node)
    a = ctx.attrs(node)
    x = ctx.activation(node, 0)
    rank = len(ctx.shape(x))
    given = _constant_input(ctx, node, 1, "axes")              # an input since opset 13 (Sum) or 18
    axes = [int(v) for v in (given.reshape(-1) if given is not None else a.get("axes", []))]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            # A reduction over no axes: the identity, except for the elementwise part of L1, L2,
            # SumSquare and LogSumExp (|x|, |x|, x^2, x), as ONNX's reference and onnxruntime compute.
            if node.op_type in ("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"):
                ctx.emit(node, node.op_type, [x], {"axes": [], "keepdims": 1})
            else:
                ctx.emit(node, "Identity", [x])
            return
        axes = list(range(rank))
    ctx.emit(node, node.op_type, [x], {"axes": sorted({ax % rank for ax in axes}),
                                       "keepdims": int(a.get("keepdims", 1))})


@importer("ArgMax", "ArgMin")
def _arg_extreme(ctx: ImportContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    x = ctx.activation(node, 0)
    rank = len(ctx.shape(x))
    if ctx.shape(x)[int(a.get("axis", 0)) % rank] > 1 << 24:
        raise refuse(node, "an axis longer than 2^24", "indices exact in float32")
    _typed_output(ctx, node.output[0])                          # int64 indices
    ctx.emit(node, node.op_type, [x], {"op": node.op_type, "axis": int(a.get("axis", 0)) % rank,
                                       "keepdims": int(a.get("keepdims", 1)),
                                       "select_last_index": int(a.get("select_last_index", 0))})
