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
    _no_integer_arithmetic(ctx, node)
    ctx.emit(node, node.op_type, list(node.input), {})


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
    x = ctx.activation(node, 0)
    _keep_integers(ctx, node)
    ctx.emit(node, "Identity", [x])


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
    else:
        _keep_integers(ctx, node)
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)], attrs)


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


def _keep_integers(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Operators that only move or select values give raw integers for raw integers."""
    if any(name and _holds_integers(ctx, name) for name in node.input):
        out = node.output[0]
        ctx.graph.add_tensor(Tensor(out, ctx.shape(out), np.dtype(ctx.shapes[out][1])))


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

_UNARY = ("Sigmoid", "Tanh", "HardSwish", "Neg", "Abs", "Exp", "Sqrt", "Softplus", "Erf")


@importer(*_UNARY)
def _unary(ctx: ImportContext, node: onnx.NodeProto) -> None:
    _no_integer_arithmetic(ctx, node)
    ctx.emit(node, node.op_type, [ctx.activation(node, 0)])


#: Activations with float attributes, and the defaults ONNX gives them.
_ACTIVATION_ATTRS = {
    "LeakyRelu": {"alpha": 0.01},
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
    "Elu": {"alpha": 1.0},
    "Selu": {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
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


@importer("Cast")
def _cast(ctx: ImportContext, node: onnx.NodeProto) -> None:
    to = int(ctx.attrs(node)["to"])
    if to != onnx.TensorProto.FLOAT:
        raise refuse(node, f"a cast to {onnx.TensorProto.DataType.Name(to)}",
                     "casts to FLOAT (cimc computes in float32)")
    # Float tensors are float32 already, and raw integers are float32 numbers at run time.
    ctx.emit(node, "Identity", [ctx.activation(node, 0)])


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

@importer("ReduceMean")
def _reduce_mean(ctx: ImportContext, node: onnx.NodeProto) -> None:
    _no_integer_arithmetic(ctx, node)
    a = ctx.attrs(node)
    x = ctx.activation(node, 0)
    rank = len(ctx.shape(x))
    given = _constant_input(ctx, node, 1, "axes")              # an input since opset 18
    axes = [int(v) for v in (given.reshape(-1) if given is not None else a.get("axes", []))]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            ctx.emit(node, "Identity", [x])
            return
        axes = list(range(rank))
    ctx.emit(node, "ReduceMean", [x], {"axes": sorted({ax % rank for ax in axes}),
                                       "keepdims": int(a.get("keepdims", 1))})


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
                     "asymmetric", "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _choice(node: onnx.NodeProto, a: dict, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _string(a.get(name), default)
    if value not in allowed:
        raise refuse(node, f"{name}={value!r}", ", ".join(allowed))
    return value


@importer("Resize", "Upsample")
def _resize(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Nearest and (multi)linear resizing of the axes after (N, C), one scale per axis.

    Scales are kept as float32 values, as the coordinate transforms of onnxruntime
    use them; with ``sizes`` they are the size ratios (a common one under a
    keep_aspect_ratio_policy). Output sizes come from the inferred output shape.
    """
    a = ctx.attrs(node)
    x = ctx.activation(node, 0)
    in_shape, out_shape = ctx.shape(x), ctx.shape(node.output[0])
    rank = len(in_shape)
    mode = _choice(node, a, "mode", "nearest", ("nearest", "linear"))
    scales: list[np.float32] = [np.float32(1.0)] * rank
    if node.op_type == "Upsample":              # opsets 7 and 9 (later models were converted)
        coordinates, nearest = "asymmetric", "floor"
        given = a.get("scales") or _constant_input(ctx, node, 1, "scales")
        scales = [np.float32(s) for s in np.asarray(given, dtype=np.float32).reshape(-1)]
        if min(scales) < 1:
            raise refuse(node, "scales below 1", "upsampling (scales >= 1)")
    else:
        if a.get("antialias", 0):
            raise refuse(node, "antialias=1", "antialias=0")
        if a.get("exclude_outside", 0):
            raise refuse(node, "exclude_outside=1", "exclude_outside=0 (it only concerns cubic)")
        coordinates = _choice(node, a, "coordinate_transformation_mode", "half_pixel", _COORDINATE_MODES)
        nearest = _choice(node, a, "nearest_mode", "round_prefer_floor", _NEAREST_MODES)
        policy = _choice(node, a, "keep_aspect_ratio_policy", "stretch", _ASPECT_POLICIES)
        axes = [int(ax) % rank for ax in a.get("axes", range(rank))]
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
    resized = [ax for ax in range(rank) if scales[ax] != 1 or out_shape[ax] != in_shape[ax]]
    if any(ax < 2 for ax in resized):
        raise refuse(node, f"resizing axis {min(resized)} (batch or channels)", "resizing the axes after (N, C)")
    if mode == "linear":
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
    ctx.emit(node, "Resize", [x], attrs)
