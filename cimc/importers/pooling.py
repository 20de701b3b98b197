"""Importers of pooling operators."""

from __future__ import annotations

import onnx

from cimc.importers._core import ImportContext, importer, refuse, spatial_window, to_2d
from cimc.importers._common import _keep_integers, _typed_output


@importer("MaxPool", "AveragePool")
def _pool(ctx: ImportContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    kernel = tuple(a["kernel_shape"])
    if len(kernel) not in (1, 2, 3):
        raise refuse(node, f"{len(kernel)}-D pooling", "1-D, 2-D and 3-D pooling")
    indices = node.output[1] if len(node.output) > 1 else ""
    if indices and len(kernel) == 3:
        raise refuse(node, "the indices output of 3-D pooling", "indices of 1-D and 2-D MaxPool")
    window = spatial_window(ctx, node, kernel)
    window = {"kernel": kernel, **window} if len(kernel) == 3 else to_2d(window, kernel)
    out_shape = ctx.shape(node.output[0])
    # The frontend has settled ceil_mode (see frontend._settle_ceil_mode); kernels pad
    # up to what the last window reaches, so the output size is all they need.
    out_hw = (1, out_shape[2]) if len(kernel) == 1 else tuple(out_shape[2:])
    attrs = {**window, "output_hw": out_hw, "rank": len(kernel)}
    if node.op_type == "AveragePool":
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
    else:
        _keep_integers(ctx, node)
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)], attrs)
    if indices:        # a node of its own: the runtime's nodes have one output each
        _typed_output(ctx, indices)
        ctx.emit(node, "MaxPoolIndices", [node.input[0]],
                 {**attrs, "storage_order": int(a.get("storage_order", 0))}, outputs=[indices], suffix=":indices")


@importer("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: ImportContext, node: onnx.NodeProto) -> None:
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)])
