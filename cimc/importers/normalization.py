"""Importers of normalizations: Softmax, BatchNormalization, LRN."""

from __future__ import annotations

import numpy as np
import onnx

from cimc.errors import ModelError
from cimc.importers._core import ImportContext, finite, importer, refuse
from cimc.importers._common import _no_integer_arithmetic, _float_const


@importer("Softmax")
def _softmax(ctx: ImportContext, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    axis = int(ctx.attrs(node).get("axis", -1)) % rank
    ctx.emit(node, "Softmax", [ctx.activation(node, 0)], {"axis": axis})


@importer("BatchNormalization")
def _batch_norm(ctx: ImportContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    if a.get("training_mode", 0) or any(node.output[1:]):
        raise refuse(node, "training_mode=1 (batch statistics, running mean and variance outputs)",
                     "inference-mode BatchNormalization")
    _no_integer_arithmetic(ctx, node)
    x = ctx.activation(node, 0)
    rank = len(ctx.shape(x))
    if rank < 2:
        raise refuse(node, f"a rank-{rank} input", "inputs (N, C, ...)")
    if any(ctx.const(n) is None for n in node.input[1:5]):
        raise refuse(node, "scale, bias, mean or variance computed at run time", "constant parameters")
    for role, name in zip(("scale", "bias", "mean", "variance"), node.input[1:5]):
        finite(node, role, name, ctx.const(name))
    if (ctx.const(node.input[4]).astype(np.float64) + float(a.get("epsilon", 1e-5)) <= 0).any():
        raise ModelError(f"node {node.name!r} (BatchNormalization): variance {node.input[4]!r} plus epsilon is "
                         f"not positive for some channel (its output would be NaN)")
    # ONNX's inputs as they are, as float32: passes.fuse folds one that follows a convolution into it.
    ctx.emit(node, "BatchNormalization", [x] + [_float_const(ctx, n) for n in node.input[1:5]],
             {"epsilon": float(a.get("epsilon", 1e-5))})


@importer("LRN")
def _lrn(ctx: ImportContext, node: onnx.NodeProto) -> None:
    _no_integer_arithmetic(ctx, node)
    a = ctx.attrs(node)
    x = ctx.activation(node, 0)
    if len(ctx.shape(x)) < 2:
        raise refuse(node, f"a rank-{len(ctx.shape(x))} input", "inputs (N, C, ...)")
    attrs = {"size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)), "beta": float(a.get("beta", 0.75)),
             "bias": float(a.get("bias", 1.0))}
    ctx.emit(node, "LRN", [x], attrs)
