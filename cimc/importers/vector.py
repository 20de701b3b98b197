"""Importers of vector operators: the ones a tile's GPEU runs."""

from __future__ import annotations

import onnx

from cimc.importers._core import ImportContext, importer, refuse, spatial_window, to_2d


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")


@importer(*_ELEMENTWISE)
def _binary(ctx: ImportContext, node: onnx.NodeProto) -> None:
    if all(ctx.const(i) is not None for i in node.input):
        raise refuse(node, "an operation on constants only", "at least one activation")
    ctx.emit(node, node.op_type, list(node.input), {})


@importer("Relu")
def _relu(ctx: ImportContext, node: onnx.NodeProto) -> None:
    ctx.emit(node, "Relu", [ctx.activation(node, 0)])


@importer("Identity", "Dropout")
def _identity(ctx: ImportContext, node: onnx.NodeProto) -> None:
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        raise refuse(node, "the dropout mask output", "inference-mode Dropout with one output")
    ctx.emit(node, "Identity", [ctx.activation(node, 0)])


@importer("MaxPool", "AveragePool")
def _pool(ctx: ImportContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    kernel = tuple(a["kernel_shape"])
    if len(kernel) not in (1, 2):
        raise refuse(node, f"{len(kernel)}-D pooling", "1-D and 2-D pooling")
    if len(node.output) > 1 and node.output[1]:
        raise refuse(node, "the indices output", "MaxPool with one output")
    window = to_2d(spatial_window(ctx, node, kernel), kernel)
    out_shape = ctx.shape(node.output[0])
    # The frontend has settled ceil_mode (see frontend._settle_ceil_mode); kernels pad
    # up to what the last window reaches, so the output size is all they need.
    out_hw = (1, out_shape[2]) if len(kernel) == 1 else tuple(out_shape[2:])
    attrs = {**window, "output_hw": out_hw, "rank": len(kernel)}
    if node.op_type == "AveragePool":
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)], attrs)


@importer("GlobalAveragePool")
def _global_pool(ctx: ImportContext, node: onnx.NodeProto) -> None:
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)])


@importer("Reshape", "Flatten")
def _reshape(ctx: ImportContext, node: onnx.NodeProto) -> None:
    ctx.emit(node, "Reshape", [ctx.activation(node, 0)], {"shape": ctx.shape(node.output[0])})


@importer("Transpose")
def _transpose(ctx: ImportContext, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    perm = tuple(ctx.attrs(node).get("perm", list(reversed(range(rank)))))
    ctx.emit(node, "Transpose", [ctx.activation(node, 0)], {"perm": perm})


@importer("Softmax")
def _softmax(ctx: ImportContext, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    axis = int(ctx.attrs(node).get("axis", -1)) % rank
    ctx.emit(node, "Softmax", [ctx.activation(node, 0)], {"axis": axis})
