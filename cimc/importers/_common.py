"""Helpers the vector importers share: attribute strings, constant inputs, integer typing."""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers._core import ImportContext, refuse
from cimc.ir import Tensor


def _string(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _holds_integers(ctx: ImportContext, name: str) -> bool:
    """Whether activation ``name`` holds raw integers (integer constants are parameters: shapes, axes)."""
    return ctx.const(name) is None and ctx.is_raw(name)


def _no_integer_arithmetic(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Refuse arithmetic on raw integers: ONNX wraps around and truncates where float32 does not."""
    for name in node.input:
        if name and _holds_integers(ctx, name):
            raise refuse(node, f"integer arithmetic (input {name!r} holds "
                         f"{np.dtype(ctx.graph.tensors[name].dtype).name} values)", "float tensors")


def _keep_integers(ctx: ImportContext, node: onnx.NodeProto, outputs: list[str] | None = None) -> None:
    """Operators that only move or select values give raw integers for raw integers (and
    booleans for booleans)."""
    if any(name and ctx.const(name) is None and _exact_kind(ctx, name) for name in node.input):
        for out in outputs or [node.output[0]]:
            _typed_output(ctx, out)


def _exact_kind(ctx: ImportContext, name: str) -> bool:
    tensor = ctx.graph.tensors.get(name)
    return tensor is not None and np.dtype(tensor.dtype).kind in "iub"


def _typed_output(ctx: ImportContext, out: str) -> None:
    """Output ``out`` typed as ONNX types it when that is an integer or bool type (its values are exact
    integers, or 0/1, in float32 at run time), float32 otherwise."""
    dtype = np.dtype(ctx.shapes[out][1])
    ctx.graph.add_tensor(Tensor(out, ctx.shape(out), dtype if dtype.kind in "iub" else np.dtype(np.float32)))


#: Integer types whose arithmetic is exact in float64 and whose values are exact in float32 buffers.
_EXACT_INTEGERS = ("int8", "uint8", "int16", "uint16")


def _integer_arithmetic(ctx: ImportContext, node: onnx.NodeProto) -> dict:
    """Attributes for arithmetic that may see raw integers: ``wrap`` names the ONNX integer type
    results wrap around to (computed exactly, then wrapped); {} for float tensors."""
    if not any(name and _holds_integers(ctx, name) for name in node.input):
        return {}
    dtype = np.dtype(ctx.shapes[node.output[0]][1])
    if dtype.name not in _EXACT_INTEGERS:
        raise refuse(node, f"{dtype.name} arithmetic (cimc holds raw integers in float32, exact to 2^24)",
                     "int8, uint8, int16 and uint16 arithmetic, and float tensors")
    _typed_output(ctx, node.output[0])
    return {"wrap": dtype.name}


def _float_const(ctx: ImportContext, name: str) -> str:
    """Constant ``name`` as float32 (a converted copy when the model stores another type)."""
    data = ctx.const(name)
    if data.dtype == np.float32:
        return name
    return ctx.add_const(name + ":f32", data.astype(np.float32))


def _constant_input(ctx: ImportContext, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
    """Optional input ``index`` (None when absent); it must be a constant."""
    if len(node.input) <= index or not node.input[index]:
        return None
    data = ctx.const(node.input[index])
    if data is None:
        raise refuse(node, f"{what} computed at run time", f"constant {what}")
    return data


def _operands(ctx: ImportContext, node: onnx.NodeProto) -> list[str]:
    """Inputs of an n-ary operator: activations as they are, constants as float32."""
    names = [n for n in node.input if n]
    if all(ctx.const(n) is not None for n in names):
        raise refuse(node, "an operation on constants only", "at least one activation")
    return [_float_const(ctx, n) if ctx.const(n) is not None else n for n in names]


def _choice(node: onnx.NodeProto, a: dict, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _string(a.get(name), default)
    if value not in allowed:
        raise refuse(node, f"{name}={value!r}", ", ".join(allowed))
    return value


def _inputs_as_given(ctx: ImportContext, node: onnx.NodeProto) -> list[str]:
    """Inputs of an operator that compares or selects: constants keep their type (exact integers)."""
    names = [n for n in node.input if n]
    if all(ctx.const(n) is not None for n in names):
        raise refuse(node, "an operation on constants only", "at least one activation")
    return names
