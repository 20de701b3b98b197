"""Importers of vector operators: the ones a tile's GPEU runs."""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers._core import ImportContext, importer, refuse, spatial_window, to_2d
from cimc.ir import Tensor


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")


@importer(*_ELEMENTWISE)
def _binary(ctx: ImportContext, node: onnx.NodeProto) -> None:
    if all(ctx.const(i) is not None for i in node.input):
        raise refuse(node, "an operation on constants only", "at least one activation")
    ctx.emit(node, node.op_type, list(node.input), _integer_arithmetic(ctx, node))


@importer("Relu")
def _relu(ctx: ImportContext, node: onnx.NodeProto) -> None:
    x = ctx.activation(node, 0)
    _keep_integers(ctx, node)
    ctx.emit(node, "Relu", [x])


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


@importer("Softmax")
def _softmax(ctx: ImportContext, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    axis = int(ctx.attrs(node).get("axis", -1)) % rank
    ctx.emit(node, "Softmax", [ctx.activation(node, 0)], {"axis": axis})


# -- helpers of the importers below ------------------------------------------------------------

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


# -- elementwise -------------------------------------------------------------------------------

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


# -- reductions --------------------------------------------------------------------------------

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


# -- data movement -----------------------------------------------------------------------------

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


_COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                     "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _choice(node: onnx.NodeProto, a: dict, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _string(a.get(name), default)
    if value not in allowed:
        raise refuse(node, f"{name}={value!r}", ", ".join(allowed))
    return value


@importer("Resize", "Upsample")
def _resize(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Nearest, (multi)linear and cubic resizing of the axes after (N, C), one scale per axis.

    Scales are kept as float32 values, as the coordinate transforms of onnxruntime
    use them; with ``sizes`` they are the size ratios (a common one under a
    keep_aspect_ratio_policy). Output sizes come from the inferred output shape.
    Cubic, antialiased and tf_crop_and_resize resizing carry their extra attributes
    (``cubic_coeff_a``, ``exclude_outside``, ``antialias``, per-axis ``roi``,
    ``extrapolation_value``).
    """
    a = ctx.attrs(node)
    x = ctx.activation(node, 0)
    in_shape, out_shape = ctx.shape(x), ctx.shape(node.output[0])
    rank = len(in_shape)
    mode = _choice(node, a, "mode", "nearest", ("nearest", "linear", "cubic"))
    scales: list[np.float32] = [np.float32(1.0)] * rank
    roi: list[tuple[float, float]] = [(0.0, 1.0)] * rank
    extra: dict = {}
    if node.op_type == "Upsample":              # opsets 7 and 9 (later models were converted)
        coordinates, nearest = "asymmetric", "floor"
        given = a.get("scales") or _constant_input(ctx, node, 1, "scales")
        scales = [np.float32(s) for s in np.asarray(given, dtype=np.float32).reshape(-1)]
        if min(scales) < 1:
            raise refuse(node, "scales below 1", "upsampling (scales >= 1)")
    else:
        antialias = int(a.get("antialias", 0))
        exclude_outside = int(a.get("exclude_outside", 0))
        if antialias and mode == "nearest":
            raise refuse(node, "antialias=1 with mode='nearest'", "antialias with linear and cubic modes")
        if exclude_outside and mode != "cubic" and not antialias:
            raise refuse(node, "exclude_outside=1 without cubic mode or antialias",
                         "exclude_outside with cubic, or antialiased linear, resizing")
        coordinates = _choice(node, a, "coordinate_transformation_mode", "half_pixel", _COORDINATE_MODES)
        nearest = _choice(node, a, "nearest_mode", "round_prefer_floor", _NEAREST_MODES)
        policy = _choice(node, a, "keep_aspect_ratio_policy", "stretch", _ASPECT_POLICIES)
        axes = [int(ax) % rank for ax in a.get("axes", range(rank))]
        if mode == "cubic":
            extra["cubic_coeff_a"] = float(np.float32(a.get("cubic_coeff_a", -0.75)))
        if mode == "cubic" or antialias:
            extra.update(exclude_outside=exclude_outside, antialias=antialias)
        if coordinates == "tf_crop_and_resize":
            given_roi = _constant_input(ctx, node, 1, "roi")
            if given_roi is None or given_roi.size != 2 * len(axes):
                raise refuse(node, "tf_crop_and_resize without a roi of two values per axis", "a constant roi")
            given_roi = [float(np.float32(v)) for v in given_roi.reshape(-1)]
            for i, ax in enumerate(axes):
                roi[ax] = (given_roi[i], given_roi[len(axes) + i])
            extra["extrapolation_value"] = float(np.float32(a.get("extrapolation_value", 0.0)))
        given_scales = _constant_input(ctx, node, 2, "scales")
        given_sizes = _constant_input(ctx, node, 3, "sizes")
        if given_scales is not None and given_scales.size:
            for ax, s in zip(axes, given_scales.astype(np.float32).reshape(-1)):
                scales[ax] = np.float32(s)
        elif given_sizes is not None and given_sizes.size:
            ratios = {ax: np.float32(s) / np.float32(in_shape[ax]) for ax, s in zip(axes, given_sizes.reshape(-1))}
            if policy != "stretch":
                common = (min if policy == "not_larger" else max)(ratios.values())
                ratios = dict.fromkeys(ratios, common)
            for ax, s in ratios.items():
                scales[ax] = np.float32(s)
        else:
            raise refuse(node, "Resize without scales or sizes", "constant scales or sizes")
    resized = [ax for ax in range(rank)
               if scales[ax] != 1 or out_shape[ax] != in_shape[ax] or roi[ax] != (0.0, 1.0)]
    if any(ax < 2 for ax in resized):
        raise refuse(node, f"resizing axis {min(resized)} (batch or channels)", "resizing the axes after (N, C)")
    if mode != "nearest":
        _no_integer_arithmetic(ctx, node)
    else:
        _keep_integers(ctx, node)
    if not resized:
        ctx.emit(node, "Identity", [x])
        return
    attrs = {"mode": mode, "coordinate_transformation_mode": coordinates, "axes": resized,
             "scales": [float(scales[ax]) for ax in resized], "sizes": [out_shape[ax] for ax in resized]}
    if mode == "nearest":
        attrs["nearest_mode"] = nearest
    if coordinates == "tf_crop_and_resize":
        extra["roi"] = [list(roi[ax]) for ax in resized]
    attrs.update(extra)
    ctx.emit(node, "Resize", [x], attrs)


# -- comparisons, logic, selection ---------------------------------------------------------------

def _inputs_as_given(ctx: ImportContext, node: onnx.NodeProto) -> list[str]:
    """Inputs of an operator that compares or selects: constants keep their type (exact integers)."""
    names = [n for n in node.input if n]
    if all(ctx.const(n) is not None for n in names):
        raise refuse(node, "an operation on constants only", "at least one activation")
    return names


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


# -- more data movement ------------------------------------------------------------------------

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
