"""Importers of elementwise operators: arithmetic, activations, comparisons and logic, casts."""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers._core import ImportContext, finite, importer, refuse
from cimc.importers._common import (_string, _no_integer_arithmetic, _keep_integers, _typed_output, _EXACT_INTEGERS,
                                     _integer_arithmetic, _float_const, _constant_input, _operands, _inputs_as_given)
from cimc.ir import Tensor


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")


@importer(*_ELEMENTWISE)
def _binary(ctx: ImportContext, node: onnx.NodeProto) -> None:
    if all(ctx.const(i) is not None for i in node.input):
        raise refuse(node, "an operation on constants only", "at least one activation")
    if node.op_type != "Div":        # a constant after a crossbar operator may be folded into its weights
        for name, other in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            producer = ctx.graph.producer(other) if ctx.const(other) is None else None
            if producer is not None and producer.is_crossbar:
                finite(node, "constant", name, ctx.const(name))
    ctx.emit(node, node.op_type, list(node.input), _integer_arithmetic(ctx, node))


@importer("Relu")
def _relu(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    _keep_integers(ctx, node)
    ctx.emit(node, "Relu", [x])


_UNARY = ("Sigmoid", "Tanh", "HardSwish", "Exp", "Sqrt", "Softplus", "Erf", "Log", "Reciprocal", "Floor",
          "Ceil", "Round", "Softsign")


@importer(*_UNARY)
def _unary(ctx: ImportContext, node: onnx.NodeProto) -> None:
    _no_integer_arithmetic(ctx, node)
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)])


@importer("Neg", "Abs")
def _neg_abs(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    ctx.emit(node, node.op_type, [x], _integer_arithmetic(ctx, node))


@importer("Sign")
def _sign(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    _keep_integers(ctx, node)                   # -1, 0 and 1 fit every integer type
    ctx.emit(node, "Sign", [x])


#: Activations with float attributes, and the defaults ONNX gives them.
_ACTIVATION_ATTRS = {
    "LeakyRelu": {"alpha": 0.01},
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
    "Elu": {"alpha": 1.0},
    "Selu": {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
    "ThresholdedRelu": {"alpha": 1.0},
    "Shrink": {"lambd": 0.5, "bias": 0.0},
}


@importer(*_ACTIVATION_ATTRS)
def _activation(ctx: ImportContext, node: onnx.NodeProto) -> None:
    _no_integer_arithmetic(ctx, node)
    a = ctx.attrs(node)
    attrs = {k: float(np.float32(a.get(k, default))) for k, default in _ACTIVATION_ATTRS[node.op_type].items()}
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)], attrs)


@importer("Gelu")
def _gelu(ctx: ImportContext, node: onnx.NodeProto) -> None:
    _no_integer_arithmetic(ctx, node)
    approximate = _string(ctx.attrs(node).get("approximate"), "none")
    if approximate not in ("none", "tanh"):
        raise refuse(node, f"approximate={approximate!r}", "approximate none and tanh")
    ctx.emit(node, "Gelu", [ctx.activation(node, 0)], {"approximate": approximate})


@importer("PRelu")
def _prelu(ctx: ImportContext, node: onnx.NodeProto) -> None:
    _no_integer_arithmetic(ctx, node)
    x = ctx.activation(node, 0)
    slope = node.input[1]
    x_shape, slope_shape = ctx.shape(x), ctx.shape(slope)
    try:
        fits = np.broadcast_shapes(slope_shape, x_shape) == tuple(x_shape)
    except ValueError:
        fits = False
    if not fits:       # e.g. a per-channel slope of an opset-6 model, which conversion left as it was
        raise refuse(node, f"a slope of shape {list(slope_shape)} for an input of shape {list(x_shape)}",
                     "slopes that broadcast to the input (numpy rules, trailing axes aligned)")
    ctx.emit(node, "PRelu", [x, _float_const(ctx, slope) if ctx.const(slope) is not None else slope])


@importer("Clip")
def _clip(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    attrs = {}
    for index, key in ((1, "min"), (2, "max")):
        bound = _constant_input(ctx, node, index, f"{key} bound")
        if bound is not None:
            if bound.size != 1:
                raise refuse(node, f"a {key} bound of shape {list(bound.shape)}", "scalar bounds")
            attrs[key] = float(np.float32(bound.reshape(())))
    _keep_integers(ctx, node)
    ctx.emit(node, "Clip" if attrs else "Identity", [x], attrs)


@importer("Sum", "Max", "Min")
def _nary(ctx: ImportContext, node: onnx.NodeProto) -> None:
    if node.op_type == "Sum":
        _no_integer_arithmetic(ctx, node)
    else:
        _keep_integers(ctx, node)
    ctx.emit(node, node.op_type, _operands(ctx, node))


@importer("Pow")
def _pow(ctx: ImportContext, node: onnx.NodeProto) -> None:
    _no_integer_arithmetic(ctx, node)
    x = ctx.activation(node, 0)
    if ctx.const(node.input[1]) is None:
        raise refuse(node, "an exponent computed at run time", "a constant exponent")
    ctx.emit(node, "Pow", [x, _float_const(ctx, node.input[1])])


#: Cast targets besides FLOAT: their values are exact in float32 buffers (64-bit integers up to 2^24).
_CAST_TARGETS = {onnx.TensorProto.BOOL, onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
                 onnx.TensorProto.UINT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64}


@importer("Cast", "CastLike")
def _cast(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Casts to float32 (identity: cimc computes in float32), bool and 8 to 64-bit integers.

    Float to integer truncates toward zero; integers to a narrower type wrap around (ONNX's
    rule); the kernel documents the out-of-range floats ONNX leaves undefined. CastLike of a
    constant (the expanded ONNX functions cast their constants like the input) is a constant.
    """
    if node.op_type == "Cast":
        to = int(ctx.attrs(node)["to"])
    else:
        like = ctx.const(node.input[1])
        to = onnx.helper.np_dtype_to_tensor_dtype(like.dtype if like is not None
                                                  else np.dtype(ctx.shapes[node.input[1]][1]))
    if to != onnx.TensorProto.FLOAT and to not in _CAST_TARGETS:
        raise refuse(node, f"a cast to {onnx.TensorProto.DataType.Name(to)}",
                     "casts to FLOAT, BOOL, INT8, UINT8, INT16, UINT16, INT32 and INT64 (cimc computes in float32)")
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))
    data = ctx.const(node.input[0])
    if data is not None:                       # CastLike(constant, activation): numpy casts as ONNX does
        with np.errstate(invalid="ignore"):
            ctx.graph.add_constant(node.output[0], data.astype(dtype))
        return
    x = ctx.activation(node, 0)
    source = np.dtype(ctx.graph.tensors[x].dtype)
    if dtype.kind != "f":
        ctx.graph.add_tensor(Tensor(node.output[0], ctx.shape(node.output[0]), dtype))
    # Float tensors are float32 already, and raw integers are float32 numbers at run time: a cast
    # that cannot change a value (to float, or to a type that holds every source value) is Identity.
    fits = dtype.kind == "f" or source.kind == "b" or (
        dtype.kind != "b" and source.kind in "iu" and np.can_cast(source, dtype, casting="safe"))
    if fits:
        ctx.emit(node, "Identity", [x])
    else:
        ctx.emit(node, "Cast", [x], {"to": dtype.name})


_COMPARISONS = ("Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal", "And", "Or", "Xor")


@importer(*_COMPARISONS)
def _compare(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Comparisons (exact on float32 values and raw integers) and logic: bool tensors, 0/1 at run time."""
    inputs = _inputs_as_given(ctx, node)
    _typed_output(ctx, node.output[0])
    ctx.emit(node, node.op_type, inputs)


@importer("Not", "IsNaN", "IsInf")
def _predicate(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    _typed_output(ctx, node.output[0])
    attrs = {}
    if node.op_type == "IsInf":
        a = ctx.attrs(node)
        attrs = {"detect_positive": int(a.get("detect_positive", 1)),
                 "detect_negative": int(a.get("detect_negative", 1))}
    ctx.emit(node, node.op_type, [x], attrs)


@importer("Where")
def _where(ctx: ImportContext, node: onnx.NodeProto) -> None:
    inputs = _inputs_as_given(ctx, node)
    _typed_output(ctx, node.output[0])          # selects values: integers and bools stay what they are
    ctx.emit(node, "Where", inputs)


@importer("Mod")
def _mod(ctx: ImportContext, node: onnx.NodeProto) -> None:
    inputs = _inputs_as_given(ctx, node)
    fmod = int(ctx.attrs(node).get("fmod", 0))
    dtype = np.dtype(ctx.shapes[node.output[0]][1])
    if dtype.kind == "f" and not fmod:
        raise refuse(node, "fmod=0 on floats (ONNX requires fmod=1 for them)", "fmod=1, or integer tensors")
    if dtype.kind in "iu" and dtype.name not in _EXACT_INTEGERS:
        raise refuse(node, f"{dtype.name} arithmetic (cimc holds raw integers in float32, exact to 2^24)",
                     "int8, uint8, int16 and uint16 arithmetic, and float tensors")
    _typed_output(ctx, node.output[0])          # |a mod b| <= |b|: never leaves the type
    ctx.emit(node, "Mod", inputs, {"fmod": fmod})
