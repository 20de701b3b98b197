"""Vector operators (activations, n-ary elementwise, reductions, data movement, resizing) against
onnxruntime: one operator at a time through the IR evaluator, small compiled programs through the
runtime's ``vec`` instructions, and ONNX's own conformance cases for these operators."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.errors import CimcError, UnsupportedOperatorError
from cimc.frontend import import_onnx
from cimc.importers import IMPORTERS, ImportContext
from cimc.ir import Graph, Tensor
from cimc.runtime.graph_eval import evaluate
from cimc.runtime.kernels import VECTOR_KERNELS

from models import make_model, normalized_error, ort_batch, ort_run, ort_session, rng_weights, vinfo

RTOL, ATOL = 1e-5, 1e-5

#: The operators this module covers, and the IR operator each imports as.
OPERATORS = {
    "LeakyRelu": "LeakyRelu", "PRelu": "PRelu", "Clip": "Clip", "Sigmoid": "Sigmoid",
    "HardSigmoid": "HardSigmoid", "HardSwish": "HardSwish", "Tanh": "Tanh", "Elu": "Elu", "Selu": "Selu",
    "Softplus": "Softplus", "Neg": "Neg", "Abs": "Abs", "Exp": "Exp", "Sqrt": "Sqrt", "Pow": "Pow",
    "Erf": "Erf", "Gelu": "Gelu", "Cast": "Identity", "Sum": "Sum", "Max": "Max", "Min": "Min",
    "BatchNormalization": "BatchNormalization", "LRN": "LRN", "GlobalMaxPool": "GlobalMaxPool",
    "ReduceMean": "ReduceMean", "Concat": "Concat", "Squeeze": "Reshape", "Unsqueeze": "Reshape",
    "DepthToSpace": "DepthToSpace", "SpaceToDepth": "SpaceToDepth", "Pad": "Pad", "Resize": "Resize",
    "Upsample": "Resize",
    "ReduceMax": "ReduceMax", "ReduceMin": "ReduceMin", "ReduceSum": "ReduceSum", "ReduceProd": "ReduceProd",
    "ReduceL1": "ReduceL1", "ReduceL2": "ReduceL2", "ReduceLogSumExp": "ReduceLogSumExp",
    "ReduceSumSquare": "ReduceSumSquare", "ArgMax": "ArgMax", "ArgMin": "ArgMin",
    "Log": "Log", "Reciprocal": "Reciprocal", "Floor": "Floor", "Ceil": "Ceil", "Round": "Round", "Sign": "Sign",
    "Softsign": "Softsign", "ThresholdedRelu": "ThresholdedRelu", "Shrink": "Shrink", "Mod": "Mod",
    "Less": "Less", "LessOrEqual": "LessOrEqual", "Greater": "Greater", "GreaterOrEqual": "GreaterOrEqual",
    "Equal": "Equal", "Not": "Not", "And": "And", "Or": "Or", "Xor": "Xor", "Where": "Where", "IsNaN": "IsNaN",
    "IsInf": "IsInf", "CastLike": "Cast", "Split": "Slice", "Slice": "Slice", "Gather": "Gather",
    "Expand": "Expand", "Tile": "Tile",
}


# -- helpers ------------------------------------------------------------------------------------

def op_model(op: str, inputs: list, attrs: dict | None = None, opset: int = 17,
             outputs: int = 1, out_types: tuple[int, ...] = ()) -> onnx.ModelProto:
    """One node ``op``. Each input is a shape (a graph input ``x0, x1, ...``), an array (an
    initializer) or None (an absent optional input); ``out_types`` are the ONNX types of the first
    outputs (FLOAT otherwise)."""
    names, graph_inputs, inits = [], [], {}
    for pos, item in enumerate(inputs):
        if item is None:
            names.append("")
        elif isinstance(item, np.ndarray):
            names.append(f"c{pos}")
            inits[f"c{pos}"] = item
        else:
            names.append(f"x{len(graph_inputs)}")
            graph_inputs.append(vinfo(names[-1], list(item)))
    outs = ["y"] + [f"y{i}" for i in range(1, outputs)]
    node = helper.make_node(op, names, outs, name=f"{op.lower()}_node", **(attrs or {}))
    typed = [vinfo(o, None, t) for o, t in zip(outs, out_types)] + outs[len(out_types):]
    return make_model([node], graph_inputs, typed, inits, opset=opset)


def feeds_for(model: onnx.ModelProto, seed: int = 0, scale: float = 1.0, positive: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        x = (scale * rng.standard_normal(shape)).astype(np.float32)
        feeds[vi.name] = np.abs(x) + np.float32(0.1) if positive else x
    return feeds


def check(model: onnx.ModelProto, seed: int = 0, scale: float = 1.0, positive: bool = False,
          rtol: float = RTOL, atol: float = ATOL, feeds: dict | None = None) -> np.ndarray:
    """The imported graph on one sample (and the same sample twice, as a batch) against onnxruntime.
    Feeds keep their types (integer model inputs get integer arrays)."""
    feeds = feeds or feeds_for(model, seed, scale, positive)
    graph = import_onnx(model).graph
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # kernels must not warn (calibrated compiles fail on it)
        got = evaluate(graph, {k: np.stack([v, v]) for k, v in feeds.items()})
    refs = ort_session(model).run(None, feeds)
    for name, ref in zip(graph.outputs, refs):
        out = got[name]
        assert out.shape == (2,) + ref.shape, (name, out.shape, ref.shape)
        assert out.dtype == np.float32, out.dtype
        np.testing.assert_array_equal(out[0], out[1])
        np.testing.assert_allclose(out[0], ref, rtol=rtol, atol=atol)
    return got[graph.outputs[0]][0]


def ir_ops(model: onnx.ModelProto) -> list[str]:
    return [n.op for n in import_onnx(model).graph.nodes()]


def test_operators_registered():
    assert set(OPERATORS) <= set(IMPORTERS)
    assert set(OPERATORS.values()) <= set(VECTOR_KERNELS)


# -- activations --------------------------------------------------------------------------------

@pytest.mark.parametrize("op,attrs", [
    ("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("Neg", {}), ("Abs", {}), ("Exp", {}),
    ("Softplus", {}), ("Erf", {}),
    ("LeakyRelu", {}), ("LeakyRelu", dict(alpha=0.3)),
    ("HardSigmoid", {}), ("HardSigmoid", dict(alpha=0.5, beta=0.6)),
    ("Elu", {}), ("Elu", dict(alpha=0.7)),
    ("Selu", {}), ("Selu", dict(alpha=2.0, gamma=3.0)),
])
def test_activation(op, attrs):
    y = check(op_model(op, [[2, 3, 4, 5]], attrs), scale=3.0)
    assert np.isfinite(y).all()
    assert ir_ops(op_model(op, [[2, 3]], attrs)) == [op]


def test_activation_attributes_are_explicit():
    node = import_onnx(op_model("Selu", [[3]])).graph.nodes()[0]
    assert node.attrs == {"alpha": pytest.approx(1.6732632), "gamma": pytest.approx(1.0507010)}
    node = import_onnx(op_model("HardSigmoid", [[3]], dict(alpha=0.25))).graph.nodes()[0]
    assert node.attrs == {"alpha": 0.25, "beta": 0.5}


def test_activations_saturate_without_warnings():
    x = np.array([[-1e4, -100.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 100.0, 1e4]], dtype=np.float32)
    for op in ("Sigmoid", "Tanh", "Softplus", "Elu", "Selu", "HardSwish", "HardSigmoid", "Erf"):
        check(op_model(op, [[1, 9]]), feeds={"x0": x}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    check(op_model("Gelu", [[2, 3, 8]], dict(approximate=approximate), opset=20), scale=3.0, atol=1e-6)


def test_sqrt():
    check(op_model("Sqrt", [[2, 3, 4]]), positive=True)


@pytest.mark.parametrize("exponent", [
    np.array(2.0, np.float32), np.array(0.5, np.float32), np.array(3.0, np.float32),
    np.array(-1.0, np.float32), np.array([1.0, 2.0, 3.0, 0.5], np.float32),
    np.array(2, np.int64), np.array([[2], [3], [1]], np.int32),
])
def test_pow_constant_exponent(exponent):
    check(op_model("Pow", [[2, 3, 4], exponent]), positive=True, rtol=1e-5, atol=1e-5)


def test_pow_exponent_broadcast_widens_the_output():
    check(op_model("Pow", [[4], np.array([[1.0], [2.0], [3.0]], np.float32)]), positive=True)


@pytest.mark.parametrize("slope", [
    np.array([0.25], np.float32), np.array(0.1, np.float32),
    np.array([[[0.1]], [[0.2]], [[-0.3]]], np.float32),        # per channel, (C, 1, 1)
    np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32),            # along W (numpy broadcasting)
    np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 4, 5),
])
def test_prelu_constant_slope(slope):
    check(op_model("PRelu", [[2, 3, 4, 5], slope]))


def test_prelu_slope_activation():
    check(op_model("PRelu", [[2, 3, 4], [3, 1]]))


def test_prelu_slope_that_does_not_broadcast_is_refused():
    graph = Graph("g")
    graph.add_tensor(Tensor("x", (2, 3, 4), np.dtype(np.float32)))
    graph.add_constant("s", np.ones(3, np.float32))
    ctx = ImportContext(graph, {"x": ((2, 3, 4), np.dtype(np.float32)), "y": ((2, 3, 4), np.dtype(np.float32))})
    with pytest.raises(UnsupportedOperatorError, match="p.*PRelu.*slope of shape \\[3\\]"):
        IMPORTERS["PRelu"](ctx, helper.make_node("PRelu", ["x", "s"], ["y"], name="p"))


# -- Clip ----------------------------------------------------------------------------------------

F = np.float32


@pytest.mark.parametrize("bounds", [
    (F(0), F(6)), (F(-0.5), F(0.5)), (F(-0.5), None), (None, F(0.3)), (None, None), (F(1), F(-1)),
])
def test_clip(bounds):
    lo, hi = (None if b is None else np.array(b, np.float32) for b in bounds)
    inputs = [[2, 3, 4, 5], lo, hi]
    while inputs[-1] is None and len(inputs) > 1:
        inputs.pop()
    y = check(op_model("Clip", inputs), scale=3.0)
    if bounds == (F(0), F(6)):
        assert y.min() == 0 and y.max() <= 6
    if bounds == (F(1), F(-1)):
        assert (y == -1).all()                           # min > max: everything becomes max


def test_clip_without_bounds_is_identity():
    assert ir_ops(op_model("Clip", [[2, 3]])) == ["Identity"]


def test_clip_opset6_attributes():
    model = op_model("Clip", [[2, 3, 4]], dict(min=-0.5, max=0.25), opset=6)
    assert ir_ops(model) == ["Clip"]
    check(model)


def test_clip_bound_computed_at_run_time_is_refused():
    with pytest.raises(UnsupportedOperatorError, match="clip_node.*min bound computed at run time"):
        import_onnx(op_model("Clip", [[2, 3], []]))


# -- n-ary elementwise ----------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Sum", "Max", "Min"])
@pytest.mark.parametrize("inputs", [
    [[2, 3, 4]],
    [[2, 3, 4], [2, 3, 4]],
    [[2, 3, 4], [4], [3, 1]],
    [[3, 1], [1, 2, 1, 5], [5]],                                  # the result is wider than every input
    [[2, 3, 4], np.linspace(-1, 1, 4, dtype=np.float32), [1, 3, 1]],
    [np.array([[0.5], [-0.5], [0.0]], np.float32), [2, 1, 4]],    # a constant first
])
def test_nary(op, inputs):
    check(op_model(op, inputs))


def test_nary_constants_only_is_refused():
    # The frontend folds a node of constants only, so the importer is called directly.
    graph = Graph("g")
    graph.add_constant("c", np.ones(2, np.float32))
    ctx = ImportContext(graph, {"m": ((2,), np.dtype(np.float32))})
    with pytest.raises(UnsupportedOperatorError, match="constants only"):
        IMPORTERS["Max"](ctx, helper.make_node("Max", ["c", "c"], ["m"], name="m"))


# -- BatchNormalization, LRN ------------------------------------------------------------------

def _bn_params(channels: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(1 + 0.5 * rng.standard_normal(channels)).astype(np.float32),
            rng.standard_normal(channels).astype(np.float32),
            rng.standard_normal(channels).astype(np.float32),
            (0.5 + rng.random(channels)).astype(np.float32)]


@pytest.mark.parametrize("shape", [[2, 3], [2, 3, 5], [1, 3, 4, 5], [1, 3, 2, 2, 2]])
@pytest.mark.parametrize("epsilon", [1e-5, 0.1])
def test_batch_normalization(shape, epsilon):
    check(op_model("BatchNormalization", [shape] + _bn_params(3), dict(epsilon=epsilon)), rtol=1e-5, atol=1e-5)


def test_batch_normalization_opset9():
    check(op_model("BatchNormalization", [[1, 3, 4, 5]] + _bn_params(3), opset=9))


def test_batch_normalization_training_mode_is_refused():
    model = op_model("BatchNormalization", [[2, 3, 4, 5]] + _bn_params(3), dict(training_mode=1), opset=15,
                     outputs=3)
    with pytest.raises(UnsupportedOperatorError, match="batchnormalization_node.*training_mode=1"):
        import_onnx(model)


@pytest.mark.parametrize("attrs", [
    dict(size=3), dict(size=5, alpha=1e-3, beta=0.5, bias=2.0), dict(size=1),
    dict(size=9, alpha=0.5),                                      # a window wider than the channels
])
def test_lrn(attrs):
    check(op_model("LRN", [[2, 6, 4, 5]], attrs), scale=3.0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [2, 4])
def test_lrn_even_size(size):
    """onnxruntime takes odd sizes only; an even window spans floor((size-1)/2) channels before and
    ceil((size-1)/2) after (the ONNX definition), checked against the sum written out."""
    model = op_model("LRN", [[1, 5, 2, 3]], dict(size=size, alpha=0.2, beta=0.6, bias=1.5))
    x = np.random.default_rng(1).standard_normal((1, 1, 5, 2, 3)).astype(np.float32)
    got = evaluate(import_onnx(model).graph, {"x0": x})["y"][0, 0]
    x64 = x[0, 0].astype(np.float64)
    want = np.empty_like(x64)
    for c in range(5):
        lo, hi = max(0, c - (size - 1) // 2), min(5, c + -(-(size - 1) // 2) + 1)
        want[c] = x64[c] / (1.5 + 0.2 / size * (x64[lo:hi] ** 2).sum(axis=0)) ** 0.6
    np.testing.assert_allclose(got, want, rtol=1e-6)


# -- reductions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[2, 5, 4, 3], [1, 4, 7]])
def test_global_max_pool(shape):
    check(op_model("GlobalMaxPool", [shape]))


@pytest.mark.parametrize("attrs", [
    dict(axes=[2, 3]), dict(axes=[1], keepdims=0), dict(axes=[-1, 0]), dict(axes=[0, 1, 2, 3], keepdims=0),
    dict(), dict(keepdims=0), dict(axes=[-3], keepdims=1),
])
def test_reduce_mean_axes_attribute(attrs):
    check(op_model("ReduceMean", [[2, 3, 4, 5]], attrs))


@pytest.mark.parametrize("axes,attrs", [
    ([2, 3], dict()), ([-1], dict(keepdims=0)), (None, dict()), (None, dict(keepdims=0)),
    (None, dict(noop_with_empty_axes=1)), ([], dict(noop_with_empty_axes=1)),
])
def test_reduce_mean_axes_input(axes, attrs):
    inputs = [[2, 3, 4, 5]] + ([] if axes is None else [np.array(axes, np.int64)])
    model = op_model("ReduceMean", inputs, attrs, opset=18)
    check(model)
    if attrs.get("noop_with_empty_axes"):
        assert ir_ops(model) == ["Identity"]


# -- data movement -------------------------------------------------------------------------------

@pytest.mark.parametrize("inputs,axis", [
    ([[2, 3, 4], [2, 5, 4]], 1),
    ([[2, 3, 4], [2, 3, 1], [2, 3, 2]], -1),
    ([[1, 3], [4, 3]], 0),
    ([[2, 3, 4, 5], np.ones((2, 1, 4, 5), np.float32), [2, 2, 4, 5]], 1),
    ([np.arange(6, dtype=np.float32).reshape(1, 2, 3), [1, 2, 3], np.zeros((1, 2, 3), np.float32)], 0),
    ([[3]], 0),
])
def test_concat(inputs, axis):
    check(op_model("Concat", inputs, dict(axis=axis)))


@pytest.mark.parametrize("op,shape,axes", [
    ("Squeeze", [1, 3, 1, 4], [0, 2]), ("Squeeze", [1, 3, 1, 4], None), ("Squeeze", [2, 3, 1], [-1]),
    ("Unsqueeze", [3, 4], [0, 3]), ("Unsqueeze", [3, 4], [-1]),
])
def test_squeeze_unsqueeze(op, shape, axes):
    inputs = [shape] + ([] if axes is None else [np.array(axes, np.int64)])
    model = op_model(op, inputs)
    check(model)
    assert ir_ops(model) == ["Reshape"]


@pytest.mark.parametrize("op,attrs,shape", [
    ("DepthToSpace", dict(blocksize=2), [1, 8, 2, 3]),
    ("DepthToSpace", dict(blocksize=2, mode="CRD"), [2, 8, 2, 3]),
    ("DepthToSpace", dict(blocksize=3, mode="DCR"), [1, 18, 2, 2]),
    ("DepthToSpace", dict(blocksize=3, mode="CRD"), [1, 18, 2, 1]),
    ("SpaceToDepth", dict(blocksize=2), [2, 3, 4, 6]),
    ("SpaceToDepth", dict(blocksize=3), [1, 2, 3, 6]),
])
def test_depth_space(op, attrs, shape):
    check(op_model(op, [shape], attrs))


def test_depth_to_space_undoes_space_to_depth():
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["s"], name="s2d", blocksize=2),
             helper.make_node("DepthToSpace", ["s"], ["y"], name="d2s", blocksize=2, mode="DCR")]
    model = make_model(nodes, [vinfo("x", [1, 3, 4, 6])], ["y"])
    graph = import_onnx(model).graph
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 4, 6)).astype(np.float32)
    np.testing.assert_array_equal(evaluate(graph, {"x": x})["y"], x)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", [
    [0, 0, 1, 2, 0, 0, 2, 1], [1, 0, 0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, -1, 1, 0, 0, 1, -2],                                   # negative pads crop
])
def test_pad(mode, pads):
    inputs = [[2, 3, 4, 5], np.array(pads, np.int64)]
    if mode == "constant":
        inputs.append(np.array(1.5, np.float32))
    check(op_model("Pad", inputs, dict(mode=mode)))


@pytest.mark.parametrize("axes,pads", [([2, 3], [1, 2, 2, 1]), ([-1], [3, 0]), ([1], [1, 1])])
def test_pad_axes_input(axes, pads):
    model = op_model("Pad", [[2, 3, 4, 5], np.array(pads, np.int64), None, np.array(axes, np.int64)],
                     dict(mode="reflect"), opset=18)
    check(model)


def test_pad_default_value_and_zero_pads():
    check(op_model("Pad", [[2, 3], np.array([1, 0, 0, 2], np.int64)]))
    assert ir_ops(op_model("Pad", [[2, 3], np.zeros(4, np.int64)])) == ["Identity"]


def test_pad_wrap_is_refused():
    with pytest.raises(UnsupportedOperatorError, match="pad_node.*mode 'wrap'"):
        import_onnx(op_model("Pad", [[2, 3], np.array([1, 1, 1, 1], np.int64)], dict(mode="wrap"), opset=19))


def test_dropout_mask_named_but_unused_is_accepted():
    """Old exporters name Dropout's mask output even when nothing reads it (light_squeezenet)."""
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),
             helper.make_node("Relu", ["d"], ["y"], name="relu")]
    model = make_model(nodes, [vinfo("x", [2, 3])], ["y"])
    assert ir_ops(model) == ["Identity", "Relu"]
    check(model)
    used = make_model(nodes[:1], [vinfo("x", [2, 3])], ["d", vinfo("mask", [2, 3], TensorProto.BOOL)])
    with pytest.raises(UnsupportedOperatorError, match="drop.*dropout mask output"):
        import_onnx(used)


def test_cast_to_float_is_identity():
    model = op_model("Cast", [[2, 3]], dict(to=TensorProto.FLOAT))
    assert ir_ops(model) == ["Identity"]
    check(model)


@pytest.mark.parametrize("to", [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.UINT32])
def test_cast_to_other_types_is_refused(to):
    node = helper.make_node("Cast", ["x"], ["y"], name="cast_node", to=to)
    model = make_model([node], [vinfo("x", [2, 3])], [vinfo("y", [2, 3], to)])
    with pytest.raises(UnsupportedOperatorError, match=f"cast_node.*a cast to {TensorProto.DataType.Name(to)}"):
        import_onnx(model)


# -- Resize and Upsample ----------------------------------------------------------------------

COORDINATES = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric",
               "tf_half_pixel_for_nn"]
#: Scales or sizes of a (1, 2, 4, 5) input: integer and fractional, up and down.
GEOMETRIES = [("scales", [1, 1, 2, 3]), ("scales", [1, 1, 1.7, 0.6]), ("scales", [1, 1, 0.5, 2.5]),
              ("sizes", [1, 2, 7, 3]), ("sizes", [1, 2, 3, 9]), ("sizes", [1, 2, 1, 1])]


def resize_model(geometry, shape=(1, 2, 4, 5), opset: int = 19, **attrs) -> onnx.ModelProto:
    kind, values = geometry
    inputs = [list(shape), None]
    if kind == "scales":
        inputs.append(np.array(values, np.float32))
    else:
        inputs += [None, np.array(values, np.int64)]
    return op_model("Resize", inputs, attrs, opset=opset)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}{g[1][2:]}")
@pytest.mark.parametrize("coordinates", COORDINATES)
@pytest.mark.parametrize("nearest", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_resize_nearest(geometry, coordinates, nearest):
    check(resize_model(geometry, mode="nearest", coordinate_transformation_mode=coordinates,
                       nearest_mode=nearest))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}{g[1][2:]}")
@pytest.mark.parametrize("coordinates", COORDINATES[:5])
def test_resize_linear(geometry, coordinates):
    check(resize_model(geometry, mode="linear", coordinate_transformation_mode=coordinates))


def test_resize_exact_half_pixel_ties():
    """Coordinates that land exactly between two pixels (scale 1/3 in float32 makes some) round by the
    nearest mode as onnxruntime computes them in float32."""
    for nearest in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        for coordinates in ("half_pixel", "asymmetric", "tf_half_pixel_for_nn"):
            check(resize_model(("scales", [1, 1, 1 / 3, 0.5]), shape=(1, 1, 9, 8), mode="nearest",
                               nearest_mode=nearest, coordinate_transformation_mode=coordinates))


def test_resize_uses_index_arrays_and_normalized_attributes():
    model = resize_model(("sizes", [1, 2, 8, 10]), mode="linear")
    node = import_onnx(model).graph.nodes()[0]
    assert node.attrs == {"mode": "linear", "coordinate_transformation_mode": "half_pixel", "axes": [2, 3],
                          "scales": [2.0, 2.0], "sizes": [8, 10]}


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("sizes", [[7, 6], [3, 9]])
def test_resize_keep_aspect_ratio(policy, mode, sizes):
    model = op_model("Resize", [[1, 2, 4, 5], None, None, np.array(sizes, np.int64)],
                     dict(mode=mode, keep_aspect_ratio_policy=policy, axes=[2, 3]), opset=19)
    check(model)


def test_resize_keep_aspect_ratio_over_all_axes_resizes_channels():
    """Without ``axes`` the policy's common scale applies to N and C too: refused."""
    model = resize_model(("sizes", [1, 2, 7, 6]), mode="nearest", keep_aspect_ratio_policy="not_smaller")
    with pytest.raises(UnsupportedOperatorError, match="resizing axis 0"):
        import_onnx(model)


@pytest.mark.parametrize("axes,values", [([2, 3], [3, 2]), ([3, 2], [2, 3]), ([-1], [2])])
def test_resize_axes_attribute(axes, values):
    shape = [1, 2, 4, 5]
    check(op_model("Resize", [shape, None, np.array(values, np.float32)], dict(axes=axes, mode="nearest"),
                   opset=19))


def test_resize_1d_and_3d():
    check(resize_model(("scales", [1, 1, 2.5]), shape=(1, 2, 5), mode="nearest"))
    check(resize_model(("scales", [1, 1, 2, 0.5, 1.5]), shape=(1, 2, 3, 4, 4), mode="linear"))


def test_resize_identity_scales():
    assert ir_ops(resize_model(("scales", [1, 1, 1, 1]), mode="linear")) == ["Identity"]


@pytest.mark.parametrize("attrs,match", [
    (dict(mode="area"), "mode='area'"),
    (dict(mode="nearest", antialias=1), "antialias=1 with mode='nearest'"),
    (dict(mode="nearest", coordinate_transformation_mode="tf_crop_and_resize"), "tf_crop_and_resize without a roi"),
    (dict(mode="linear", exclude_outside=1), "exclude_outside=1 without cubic"),
])
def test_resize_refusals(attrs, match):
    with pytest.raises(UnsupportedOperatorError, match="resize_node.*" + match):
        import_onnx(resize_model(("scales", [1, 1, 2, 2]), **attrs))


def test_resize_of_channels_is_refused():
    with pytest.raises(UnsupportedOperatorError, match=r"resize_node.*resizing axis 1 \(batch or channels\)"):
        import_onnx(resize_model(("scales", [1, 2, 2, 2]), mode="nearest"))


def _opset9_upsample(mode: str, scales: list[float]) -> onnx.ModelProto:
    node = helper.make_node("Upsample", ["x", "s"], ["y"], name="up", mode=mode)
    return make_model([node], [vinfo("x", [1, 2, 3, 4])], ["y"], {"s": np.array(scales, np.float32)}, opset=9)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_opset9_importer(mode):
    """The Upsample importer (asymmetric coordinates, floor) on an opset-9 node, against onnxruntime
    on the opset-9 model. (The frontend converts such models to Resize first: see the test below.)"""
    model = _opset9_upsample(mode, [1, 1, 2, 3])
    shapes = {"x": ((1, 2, 3, 4), np.dtype(np.float32)), "y": ((1, 2, 6, 12), np.dtype(np.float32))}
    graph = Graph("g")
    graph.add_tensor(Tensor("x", (1, 2, 3, 4), np.dtype(np.float32)))
    graph.add_constant("s", np.array([1, 1, 2, 3], np.float32))
    graph.inputs, graph.outputs = ["x"], ["y"]
    IMPORTERS["Upsample"](ImportContext(graph, shapes), model.graph.node[0])
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    got = evaluate(graph, {"x": x[None]})["y"][0]
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_upsample_opset9_nearest_through_the_frontend():
    model = _opset9_upsample("nearest", [1, 1, 2, 3])
    check(model)


def test_upsample_opset9_linear_through_the_frontend():
    check(_opset9_upsample("linear", [1, 1, 2, 3]))


# -- raw integer tensors --------------------------------------------------------------------------

def _integer_context(dtype=np.int8) -> ImportContext:
    graph = Graph("g")
    graph.add_tensor(Tensor("x", (2, 3), np.dtype(dtype)))
    graph.add_constant("lo", np.array(-3, dtype))
    shapes = {"x": ((2, 3), np.dtype(dtype)), "y": ((2, 3), np.dtype(dtype))}
    return ImportContext(graph, shapes)


@pytest.mark.parametrize("op", ["Sigmoid", "Sum", "ReduceMean", "Elu"])
def test_integer_arithmetic_is_refused(op):
    ctx = _integer_context()
    with pytest.raises(UnsupportedOperatorError, match="integer arithmetic"):
        IMPORTERS[op](ctx, helper.make_node(op, ["x", "x"] if op in ("Sum", "Add") else ["x"], ["y"], name="n"))


def test_selection_keeps_integers():
    ctx = _integer_context()
    IMPORTERS["Clip"](ctx, helper.make_node("Clip", ["x", "lo"], ["y"], name="n"))
    assert ctx.graph.tensors["y"].dtype == np.int8 and ctx.graph.node("n").attrs == {"min": -3.0}


# -- more reductions -----------------------------------------------------------------------------

REDUCTIONS = ["ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
              "ReduceSumSquare", "ReduceMean"]


@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize("axes,attrs", [
    ([1], dict()), ([-1, 1], dict(keepdims=0)), (None, dict()), (None, dict(keepdims=0)),
    ([], dict(noop_with_empty_axes=1)), ([0, 2], dict(keepdims=1)),
])
def test_reductions_axes_input(op, axes, attrs):
    inputs = [[2, 3, 4]] + ([] if axes is None else [np.array(axes, np.int64)])
    model = op_model(op, inputs, attrs, opset=18)
    check(model, scale=0.8)
    if attrs.get("noop_with_empty_axes"):          # over no axes: the elementwise part remains
        elementwise = op in ("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp")
        assert ir_ops(model) == [op if elementwise else "Identity"]


@pytest.mark.parametrize("op", [op for op in REDUCTIONS if op != "ReduceSum"])
def test_reductions_axes_attribute(op):
    """Before opset 18 (13 for ReduceSum) the axes are an attribute."""
    check(op_model(op, [[2, 3, 4, 5]], dict(axes=[1, 3]), opset=13), scale=0.8)
    check(op_model(op, [[2, 3, 4, 5]], dict(axes=[-2], keepdims=0), opset=11), scale=0.8)


def test_reduce_sum_axes_input_opset13():
    check(op_model("ReduceSum", [[2, 3, 4], np.array([0, 2], np.int64)], dict(keepdims=0), opset=13))


def test_reduce_log_sum_exp_of_large_values():
    x = np.array([[1000.0, 999.0, -np.inf], [-1e4, -1e4, -1e4]], np.float32)
    check(op_model("ReduceLogSumExp", [[2, 3], np.array([1], np.int64)], opset=18), feeds={"x0": x})


def test_reduce_max_keeps_integers():
    model = op_model("ReduceMax", [[2, 5]], dict(axes=[1]), opset=13)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT8
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT8
    x = np.random.default_rng(0).integers(-128, 128, (2, 5)).astype(np.int8)
    check(model, feeds={"x0": x})
    assert import_onnx(model).graph.tensors["y"].dtype == np.int8


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("attrs", [dict(), dict(axis=1, keepdims=0), dict(axis=-1, select_last_index=1),
                                   dict(axis=0, select_last_index=1, keepdims=0)])
def test_arg_extremes(op, attrs):
    # Small integers make ties, where select_last_index matters.
    x = np.random.default_rng(3).integers(-2, 3, (3, 4, 5)).astype(np.float32)
    model = op_model(op, [[3, 4, 5]], attrs, out_types=(TensorProto.INT64,))
    check(model, feeds={"x0": x})
    assert import_onnx(model).graph.tensors["y"].dtype == np.int64


# -- more elementwise operators ------------------------------------------------------------------

@pytest.mark.parametrize("op,attrs,positive", [
    ("Log", {}, True), ("Reciprocal", {}, True), ("Floor", {}, False), ("Ceil", {}, False), ("Round", {}, False),
    ("Sign", {}, False), ("Softsign", {}, False), ("ThresholdedRelu", {}, False),
    ("ThresholdedRelu", dict(alpha=0.3), False), ("Shrink", {}, False), ("Shrink", dict(lambd=1.2, bias=0.4), False),
])
def test_more_unary(op, attrs, positive):
    check(op_model(op, [[2, 3, 4]], attrs), scale=2.5, positive=positive)


def test_round_halves_to_even_and_special_values():
    x = np.array([[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.0, 3.7]], np.float32)
    check(op_model("Round", [[1, 8]]), feeds={"x0": x})
    x = np.array([[0.0, -1.0, 1e-30, np.inf, 2.0, 0.5, 1e30, 7.0]], np.float32)
    check(op_model("Log", [[1, 8]]), feeds={"x0": x})          # log(0) and log(-1): -inf and nan, no warning
    check(op_model("Reciprocal", [[1, 8]]), feeds={"x0": x})


@pytest.mark.parametrize("op", ["Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"])
@pytest.mark.parametrize("inputs", [
    [[2, 3, 4], [2, 3, 4]], [[2, 3, 4], [4]], [[3, 1], np.array([[-0.5, 0.0, 1.0]], np.float32)],
    [np.array(0.0, np.float32), [2, 3]],
])
def test_comparisons(op, inputs):
    model = op_model(op, inputs, out_types=(TensorProto.BOOL,))
    feeds = {k: np.rint(v * 2) / 2 for k, v in feeds_for(model, seed=5).items()}     # ties for Equal & co.
    check(model, feeds=feeds)
    assert import_onnx(model).graph.tensors["y"].dtype == np.bool_


def _logic_model() -> onnx.ModelProto:
    zero, third = np.array(0.0, np.float32), np.array(0.3, np.float32)
    nodes = [helper.make_node("Less", ["x", "zero"], ["a"], name="less"),
             helper.make_node("Greater", ["z", "third"], ["b"], name="greater"),
             helper.make_node("And", ["a", "b"], ["and"], name="and"),
             helper.make_node("Or", ["a", "b"], ["or"], name="or"),
             helper.make_node("Xor", ["a", "b"], ["xor"], name="xor"),
             helper.make_node("Not", ["a"], ["not"], name="not"),
             helper.make_node("Where", ["xor", "x", "z"], ["where"], name="where"),
             helper.make_node("Where", ["b", "third", "x"], ["where_const"], name="where_const")]
    outputs = [vinfo(o, None, TensorProto.BOOL) for o in ("and", "or", "xor", "not")] + ["where", "where_const"]
    return make_model(nodes, [vinfo("x", [2, 3, 4]), vinfo("z", [3, 1])], outputs, {"zero": zero, "third": third})


def test_logic_and_where():
    model = _logic_model()
    check(model, seed=2)
    graph = import_onnx(model).graph
    assert [graph.tensors[o].dtype for o in graph.outputs] == [np.bool_] * 4 + [np.float32] * 2


def test_is_nan_is_inf():
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -1.0, 3.0]], np.float32)
    check(op_model("IsNaN", [[1, 6]], out_types=(TensorProto.BOOL,)), feeds={"x0": x})
    for attrs in (dict(), dict(detect_negative=0), dict(detect_positive=0)):
        check(op_model("IsInf", [[1, 6]], attrs, out_types=(TensorProto.BOOL,)), feeds={"x0": x})


@pytest.mark.parametrize("second", [[2, 3, 4], np.array([1.5, -2.0, 0.7, -0.3], np.float32)])
def test_mod_fmod_floats(second):
    check(op_model("Mod", [[2, 3, 4], second], dict(fmod=1)), scale=3.0)


def test_mod_fmod0_on_floats_is_refused():
    with pytest.raises(UnsupportedOperatorError, match="mod_node.*fmod=0 on floats"):
        import_onnx(op_model("Mod", [[2, 3], [2, 3]]))


# -- casts -----------------------------------------------------------------------------------------

CAST_VALUES = np.array([[-300.7, -200.5, -129.9, -128.5, -1.5, -0.5, 0.0, 0.5, 1.7, 127.9, 128.2, 200.7,
                         255.5, 300.2, 70000.3, -70000.6]], np.float32)


@pytest.mark.parametrize("to", [TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
                                TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL])
def test_cast_float_to_integers_and_bool(to):
    """Truncation toward zero; out of range (undefined in ONNX) as onnxruntime gives it on x86."""
    node = helper.make_node("Cast", ["x"], ["y"], name="cast", to=to)
    model = make_model([node], [vinfo("x", [1, 16])], [vinfo("y", [1, 16], to)])
    check(model, feeds={"x": CAST_VALUES})
    assert import_onnx(model).graph.tensors["y"].dtype == helper.tensor_dtype_to_np_dtype(to)


@pytest.mark.parametrize("source,to,op", [
    (TensorProto.INT16, TensorProto.INT8, "Cast"), (TensorProto.INT16, TensorProto.UINT8, "Cast"),
    (TensorProto.INT8, TensorProto.INT16, "Identity"), (TensorProto.UINT8, TensorProto.INT32, "Identity"),
    (TensorProto.INT8, TensorProto.UINT16, "Cast"), (TensorProto.INT16, TensorProto.FLOAT, "Identity"),
    (TensorProto.UINT16, TensorProto.BOOL, "Cast"),
])
def test_cast_between_integers_wraps(source, to, op):
    node = helper.make_node("Cast", ["x"], ["y"], name="cast", to=to)
    model = make_model([node], [vinfo("x", [1, 9], source)], [vinfo("y", [1, 9], to)])
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(source))
    x = np.array([[info.min, info.min + 1, -1 if info.min else 1, 0, 1, 127, 128, 200, info.max]])
    check(model, feeds={"x": x.astype(helper.tensor_dtype_to_np_dtype(source))})
    assert ir_ops(model) == [op]


def test_cast_like_of_constants_and_activations():
    """The expanded ONNX functions cast their constants like the input: the result is a constant."""
    nodes = [helper.make_node("CastLike", ["alpha", "x"], ["alpha_cast"], name="castlike_const"),
             helper.make_node("Mul", ["x", "alpha_cast"], ["m"], name="mul"),
             helper.make_node("CastLike", ["m", "like"], ["y"], name="castlike")]
    model = make_model(nodes, [vinfo("x", [2, 3])], [vinfo("y", [2, 3], TensorProto.INT16)],
                       {"alpha": np.array(2.5, np.float64), "like": np.zeros(1, np.int16)}, opset=19)
    check(model, scale=100.0)
    assert ir_ops(model) == ["Mul", "Cast"]


# -- integer arithmetic ----------------------------------------------------------------------------

INTEGER_TYPES = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT16: np.int16,
                 TensorProto.UINT16: np.uint16}


def _integer_feeds(model, dtype, seed: int = 0, nonzero: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    feeds = {}
    for vi in model.graph.input:
        shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        x = rng.integers(int(info.min), int(info.max) + 1, shape)
        x.reshape(-1)[:2] = [info.min, info.max]          # the extremes, where wrapping shows
        if nonzero:
            x[x == 0] = 1
        feeds[vi.name] = x.astype(dtype)
    return feeds


@pytest.mark.parametrize("elem", list(INTEGER_TYPES), ids=lambda e: INTEGER_TYPES[e].__name__)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_integer_arithmetic_wraps(op, elem):
    node = helper.make_node(op, ["a", "b"], ["y"], name="n")
    model = make_model([node], [vinfo("a", [3, 4], elem), vinfo("b", [4], elem)], [vinfo("y", [3, 4], elem)])
    check(model, feeds=_integer_feeds(model, INTEGER_TYPES[elem], nonzero=op == "Div"))
    assert import_onnx(model).graph.nodes()[0].attrs == {"wrap": INTEGER_TYPES[elem].__name__}


@pytest.mark.parametrize("op,elem", [("Neg", TensorProto.INT8), ("Abs", TensorProto.INT16),
                                     ("Sign", TensorProto.INT8), ("Mod", TensorProto.INT16),
                                     ("Max", TensorProto.UINT8)])
def test_integer_unary_and_mod(op, elem):
    inputs = ["a", "b"] if op in ("Mod", "Max") else ["a"]
    node = helper.make_node(op, inputs, ["y"], name="n")
    model = make_model([node], [vinfo(n, [2, 5], elem) for n in inputs], [vinfo("y", [2, 5], elem)])
    check(model, feeds=_integer_feeds(model, INTEGER_TYPES[elem], nonzero=op == "Mod"))
    if op == "Mod":
        for fmod in (0, 1):
            node = helper.make_node("Mod", inputs, ["y"], name="n", fmod=fmod)
            model = make_model([node], [vinfo(n, [2, 5], elem) for n in inputs], [vinfo("y", [2, 5], elem)])
            check(model, feeds=_integer_feeds(model, INTEGER_TYPES[elem], seed=fmod, nonzero=True))


def test_integer_arithmetic_with_a_constant():
    node = helper.make_node("Add", ["a", "c"], ["y"], name="n")
    model = make_model([node], [vinfo("a", [2, 3], TensorProto.UINT8)], [vinfo("y", [2, 3], TensorProto.UINT8)],
                       {"c": np.array([1, 100, 255], np.uint8)})
    check(model, feeds={"a": np.array([[255, 200, 3], [0, 156, 1]], np.uint8)})


def test_int32_arithmetic_is_refused():
    node = helper.make_node("Add", ["a", "b"], ["y"], name="add32")
    model = make_model([node], [vinfo("a", [2], TensorProto.INT32), vinfo("b", [2], TensorProto.INT32)],
                       [vinfo("y", [2], TensorProto.INT32)])
    with pytest.raises(UnsupportedOperatorError, match="add32.*int32 arithmetic"):
        import_onnx(model)


def test_clip_expanded_on_int8():
    """ONNX's expanded Clip on int8: Less and Where keep the integers."""
    nodes = [helper.make_node("Less", ["hi", "x"], ["above"], name="less"),
             helper.make_node("Where", ["above", "hi", "x"], ["y"], name="where")]
    model = make_model(nodes, [vinfo("x", [3, 5], TensorProto.INT8)], [vinfo("y", [3, 5], TensorProto.INT8)],
                       {"hi": np.array(40, np.int8)})
    check(model, feeds=_integer_feeds(model, np.int8))
    assert import_onnx(model).graph.tensors["y"].dtype == np.int8


# -- more data movement ----------------------------------------------------------------------------

BIG = np.iinfo(np.int64).max


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [3], [1], None), ([0, 1], [2, -1], None, None), ([-3], [BIG], [-1], None),
    ([4], [-BIG], [2], [-1]), ([3, 10], [0, -10], [1, 2], [-2, -3]), ([0], [5], [2], [2]),
    ([-100], [100], [0], [1]), ([2], [2], [1], None), ([10], [0], [3], [-1]),
])
def test_slice(starts, ends, axes, steps):
    inputs = [[2, 4, 5, 6], np.array(starts, np.int64), np.array(ends, np.int64)]
    if axes is not None or steps is not None:
        inputs.append(np.array(axes if axes is not None else list(range(len(starts))), np.int64))
    if steps is not None:
        inputs.append(np.array(steps, np.int64))
    check(op_model("Slice", inputs))


@pytest.mark.parametrize("split,attrs,opset,outputs", [
    (None, dict(axis=1), 13, 3), ([1, 3, 2], dict(axis=1), 13, 3), ([2, 4], dict(axis=-1), 13, 2),
    (None, dict(axis=2, num_outputs=3), 18, 3), (None, dict(axis=0, num_outputs=2), 18, 2),
    ([5], dict(axis=2), 13, 1),
])
def test_split(split, attrs, opset, outputs):
    shape = [2, 6, 5] if attrs["axis"] not in (-1,) else [2, 3, 6]
    inputs = [shape] + ([] if split is None else [np.array(split, np.int64)])
    model = op_model("Split", inputs, attrs, opset=opset, outputs=outputs)
    check(model)
    assert ir_ops(model) == ["Slice"] * outputs


def test_split_opset11_attribute():
    check(op_model("Split", [[2, 6]], dict(axis=1, split=[2, 4]), opset=11, outputs=2))


@pytest.mark.parametrize("indices,axis", [
    (np.array([2, 0, 2], np.int64), 1), (np.array(-1, np.int64), 2), (np.array([[0, 1], [-1, 0]], np.int32), 0),
    (np.array([3, 1], np.int64), -1), (np.array(0, np.int64), 0),
])
def test_gather_constant_indices(indices, axis):
    check(op_model("Gather", [[2, 3, 4], indices], dict(axis=axis)))


def test_gather_of_a_constant_table_is_refused():
    node = helper.make_node("Gather", ["table", "i"], ["y"], name="gather_node")
    model = make_model([node], [vinfo("i", [2], TensorProto.INT32)], ["y"], {"table": np.ones((5, 3), np.float32)})
    with pytest.raises(UnsupportedOperatorError, match="gather_node.*input 0 is a constant"):
        import_onnx(model)


@pytest.mark.parametrize("shape,target", [([3, 1], [2, 3, 4]), ([1, 4], [3, 1]), ([2, 3], [2, 3]), ([3], [2, 1, 3])])
def test_expand(shape, target):
    check(op_model("Expand", [shape, np.array(target, np.int64)]))


@pytest.mark.parametrize("repeats", [[1, 2, 3], [2, 1, 1], [1, 1, 1]])
def test_tile(repeats):
    check(op_model("Tile", [[2, 3, 2], np.array(repeats, np.int64)]))


# -- 3-D pooling, MaxPool indices -------------------------------------------------------------------

@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[2, 2, 2]), dict(kernel_shape=[3, 3, 3], strides=[2, 2, 2], pads=[1, 1, 1, 1, 1, 1]),
    dict(kernel_shape=[2, 3, 2], dilations=[2, 1, 2], ceil_mode=1, strides=[2, 2, 2]),
    dict(kernel_shape=[3, 2, 3], pads=[1, 0, 1, 1, 1, 0], count_include_pad=1),
    dict(kernel_shape=[2, 2, 3], strides=[3, 2, 2], auto_pad="SAME_UPPER"),
])
def test_pool_3d(op, attrs):
    if op == "MaxPool":
        attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
    check(op_model(op, [[1, 2, 5, 6, 7]], attrs, opset=19))


@pytest.mark.parametrize("attrs,shape", [
    (dict(kernel_shape=[2, 2]), [2, 3, 4, 5]),
    (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), [1, 2, 5, 5]),
    (dict(kernel_shape=[3, 2], storage_order=1, dilations=[1, 2]), [1, 2, 5, 6]),
    (dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), [1, 1, 5, 5]),
    (dict(kernel_shape=[3], strides=[2], pads=[1, 1]), [2, 2, 7]),
])
def test_max_pool_indices(attrs, shape):
    model = op_model("MaxPool", [shape], attrs, outputs=2, out_types=(TensorProto.FLOAT, TensorProto.INT64))
    x = np.random.default_rng(0).integers(-3, 4, shape).astype(np.float32)       # ties: the first wins
    check(model, feeds={"x0": x})
    assert import_onnx(model).graph.tensors["y1"].dtype == np.int64


# -- cubic, antialiased and tf_crop_and_resize resizing ------------------------------------------

@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}{g[1][2:]}")
@pytest.mark.parametrize("coordinates", ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])
def test_resize_cubic(geometry, coordinates):
    check(resize_model(geometry, mode="cubic", coordinate_transformation_mode=coordinates), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attrs", [dict(cubic_coeff_a=-0.5), dict(exclude_outside=1),
                                   dict(cubic_coeff_a=-0.5, exclude_outside=1)])
def test_resize_cubic_attributes(attrs):
    for geometry in (("scales", [1, 1, 2, 3]), ("scales", [1, 1, 0.6, 0.8])):
        check(resize_model(geometry, mode="cubic", **attrs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("geometry", [("scales", [1, 1, 0.6, 0.8]), ("sizes", [1, 2, 3, 2]),
                                      ("scales", [1, 1, 0.25, 1.5]), ("sizes", [1, 2, 6, 7])])
def test_resize_antialias(mode, geometry):
    check(resize_model(geometry, shape=(1, 2, 8, 9), mode=mode, antialias=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("roi,axes,sizes", [
    ([0, 0, 0.4, 0.6, 1, 1, 0.6, 0.8], None, [1, 2, 3, 3]),
    ([0, 0, -0.2, 0.1, 1, 1, 1.3, 0.9], None, [1, 2, 5, 4]),          # beyond the input: extrapolation
    ([0.2, 0.4, 0.8, 0.6], [2, 3], [3, 3]), ([0.2, 0.8], [3], [1]),
])
def test_resize_tf_crop_and_resize(mode, roi, axes, sizes):
    attrs = dict(mode=mode, coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-2.0)
    if axes:
        attrs["axes"] = axes
    model = op_model("Resize", [[1, 2, 4, 5], np.array(roi, np.float32), None, np.array(sizes, np.int64)], attrs,
                     opset=19)
    check(model, rtol=1e-4, atol=1e-5)


# -- frontend: legacy resizing, constant outputs -------------------------------------------------

@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 0.5, 0.6], [1, 1, 1.5, 2.5]])
def test_resize_opset10(mode, scales):
    """Resize-10: asymmetric coordinates; onnxruntime truncates nearest coordinates when upsampling and
    takes their ceiling when downsampling."""
    node = helper.make_node("Resize", ["x", "s"], ["y"], name="resize10", mode=mode)
    check(make_model([node], [vinfo("x", [1, 2, 5, 7])], ["y"], {"s": np.array(scales, np.float32)}, opset=10))


def test_upsample_opset7_attribute_scales():
    node = helper.make_node("Upsample", ["x"], ["y"], name="up7", mode="nearest", scales=[1.0, 1.0, 2.0, 1.5])
    check(make_model([node], [vinfo("x", [1, 2, 3, 4])], ["y"], opset=7))


def test_resize_opset10_nearest_up_and_down_is_refused():
    node = helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")
    model = make_model([node], [vinfo("x", [1, 2, 5, 7])], ["y"], {"s": np.array([1, 1, 2, 0.5], np.float32)},
                       opset=10)
    with pytest.raises(UnsupportedOperatorError, match="upsamples some axes and downsamples others"):
        import_onnx(model)


def _constant_output_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Identity", ["c"], ["k"], name="alias"),
             helper.make_node("Add", ["r", "k"], ["y"], name="add"),
             helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Identity", ["s"], ["scalar"], name="scalar")]
    return make_model(nodes, [vinfo("x", [2, 3])], ["y", "k", vinfo("shape", None, TensorProto.INT64), "scalar"],
                      {"c": np.array([0.5, -1.0, 2.0], np.float32), "s": np.array(-2.5, np.float32)})


def test_constant_graph_outputs():
    """Outputs that fold to constants (an Identity of a constant, a Shape) are repeated over the batch."""
    model = _constant_output_model()
    check(model)
    graph = import_onnx(model).graph
    assert [graph.producer(o).op for o in graph.outputs] == ["Add"] + ["BatchConstant"] * 3
    assert graph.tensors["shape"].dtype == np.int64 and graph.tensors["scalar"].shape == ()
    program = cimc.compile(model, "small")
    xs = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    got = cimc.run(program, {"x": xs}).outputs
    for b in range(3):
        for out, ref in zip(program.outputs, ort_session(model).run(None, {"x": xs[b]})):
            np.testing.assert_allclose(got[out][b], ref, rtol=1e-6, atol=1e-6)
            assert got[out].shape == (3,) + ref.shape and got[out].dtype == ref.dtype


def test_constant_output_without_inputs_is_refused():
    node = helper.make_node("Identity", ["c"], ["k"], name="alias")
    model = make_model([node], [], ["k"], {"c": np.ones(3, np.float32)})
    with pytest.raises(CimcError, match="graph output 'k' is a constant and the model has no input"):
        import_onnx(model)


# -- compiled programs of the operators above: integer and bool outputs, constant outputs -----------

def _typed_outputs_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
             helper.make_node("Mul", ["sum", "b"], ["prod"], name="mul"),
             helper.make_node("Less", ["a", "b"], ["less"], name="less"),
             helper.make_node("Where", ["less", "prod", "a"], ["where"], name="where"),
             helper.make_node("ReduceMax", ["where"], ["peak"], name="peak", axes=[1], keepdims=0),
             helper.make_node("Cast", ["sum"], ["f"], name="to_float", to=TensorProto.FLOAT),
             helper.make_node("Cast", ["f"], ["u8"], name="to_uint8", to=TensorProto.UINT8),
             helper.make_node("Identity", ["c"], ["const"], name="alias")]
    i8 = TensorProto.INT8
    return make_model(nodes, [vinfo("a", [3, 4], i8), vinfo("b", [3, 4], i8)],
                      [vinfo("prod", [3, 4], i8), vinfo("less", [3, 4], TensorProto.BOOL), vinfo("peak", [3], i8),
                       vinfo("u8", [3, 4], TensorProto.UINT8), vinfo("const", [2], TensorProto.INT16)],
                      {"c": np.array([-7, 300], np.int16)}, opset=14)


def test_compiled_integer_and_bool_outputs():
    model = _typed_outputs_model()
    program = cimc.compile(model, "small")
    assert program.dtypes["less"] == "bool" and program.dtypes["prod"] == "int8"
    feeds = _integer_feeds(model, np.int8, seed=4)
    batch = {k: np.stack([v, _integer_feeds(model, np.int8, seed=5)[k]]) for k, v in feeds.items()}
    got = cimc.run(program, batch).outputs
    for b in range(2):
        refs = ort_session(model).run(None, {k: v[b] for k, v in batch.items()})
        for out, ref in zip(program.outputs, refs):
            np.testing.assert_array_equal(got[out][b], ref)
            if ref.dtype != np.bool_:
                assert got[out].dtype == ref.dtype, (out, got[out].dtype)


def test_compiled_bool_output_is_bool():
    program = cimc.compile(_typed_outputs_model(), "small")
    feeds = _integer_feeds(_typed_outputs_model(), np.int8)
    assert cimc.run(program, feeds).outputs["less"].dtype == np.bool_


# -- compiled programs ---------------------------------------------------------------------------

def _conv(name, x, w, y, **attrs):
    return helper.make_node("Conv", [x, w], [y], name=name, **attrs)


def bn_clip_concat_resize_net(seed: int = 0) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Clip(0, 6) and Conv -> LeakyRelu, Concat with a constant ->
    Resize (nearest) -> Conv -> BatchNormalization (of a Resize: not folded) -> Resize (linear) -> Conv."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng_weights(rng, (6, 3, 3, 3)), "W1": rng_weights(rng, (4, 3, 1, 1)),
             "W2": rng_weights(rng, (6, 12, 3, 3)), "W3": rng_weights(rng, (5, 6, 1, 1)),
             "C": (0.5 * rng.random((1, 2, 6, 6))).astype(np.float32),
             "up": np.array([1, 1, 2, 2], np.float32), "size": np.array([1, 6, 9, 9], np.int64)}
    for tag, channels in (("a", 6), ("b", 6)):
        for name, value in zip(("scale", "bias", "mean", "var"), _bn_params(channels, seed + len(tag))):
            inits[f"{tag}_{name}"] = value
    nodes = [
        _conv("conv0", "x", "W0", "c0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c0", "a_scale", "a_bias", "a_mean", "a_var"], ["b0"], name="bn0"),
        helper.make_node("Clip", ["b0", "zero", "six"], ["r0"], name="relu6"),
        _conv("conv1", "x", "W1", "c1", kernel_shape=[1, 1]),
        helper.make_node("LeakyRelu", ["c1"], ["l1"], name="leaky", alpha=0.2),
        helper.make_node("Concat", ["r0", "C", "l1"], ["cat"], name="concat", axis=1),
        helper.make_node("Resize", ["cat", "", "up"], ["u0"], name="up_nearest", mode="nearest"),
        _conv("conv2", "u0", "W2", "c2", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c2", "", "", "size"], ["u1"], name="up_linear", mode="linear"),
        helper.make_node("BatchNormalization", ["u1", "b_scale", "b_bias", "b_mean", "b_var"], ["b1"], name="bn1"),
        _conv("conv3", "b1", "W3", "y", kernel_shape=[1, 1]),
    ]
    inits["zero"], inits["six"] = np.array(0, np.float32), np.array(6, np.float32)
    return make_model(nodes, [vinfo("x", [1, 3, 6, 6])], ["y"], inits, name="bn_clip_concat_resize_net")


def activations_net(seed: int = 0) -> onnx.ModelProto:
    """Conv -> PRelu -> Pad (reflect) -> Conv -> HardSwish -> DepthToSpace -> LRN -> Conv -> Elu ->
    Sigmoid / Tanh / HardSigmoid / Selu / Softplus branches, Sum / Max / Min -> SpaceToDepth -> Conv ->
    GlobalMaxPool -> Squeeze -> Unsqueeze -> Neg -> Abs -> Add(1) -> Sqrt."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng_weights(rng, (8, 2, 3, 3)), "slope": (0.25 * rng.random((8, 1, 1))).astype(np.float32),
             "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "W1": rng_weights(rng, (16, 8, 3, 3)),
             "W2": rng_weights(rng, (6, 4, 3, 3)), "W3": rng_weights(rng, (8, 24, 1, 1)),
             "axes": np.array([2, 3], np.int64), "ax0": np.array([0], np.int64), "one": np.array(1, np.float32),
             "m": (0.3 * rng.standard_normal((6, 1, 1))).astype(np.float32)}
    nodes = [
        _conv("conv0", "x", "W0", "c0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c0", "slope"], ["p0"], name="prelu"),
        helper.make_node("Pad", ["p0", "pads"], ["pad0"], name="pad", mode="reflect"),
        _conv("conv1", "pad0", "W1", "c1", kernel_shape=[3, 3]),
        helper.make_node("HardSwish", ["c1"], ["h1"], name="hswish"),
        helper.make_node("DepthToSpace", ["h1"], ["d1"], name="d2s", blocksize=2, mode="CRD"),
        helper.make_node("LRN", ["d1"], ["n1"], name="lrn", size=3, alpha=0.01, beta=0.75, bias=1.0),
        _conv("conv2", "n1", "W2", "c2", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Elu", ["c2"], ["e2"], name="elu"),
        helper.make_node("Sigmoid", ["e2"], ["s2"], name="sigmoid"),
        helper.make_node("Tanh", ["e2"], ["t2"], name="tanh"),
        helper.make_node("HardSigmoid", ["e2"], ["hs2"], name="hsigmoid", alpha=0.3),
        helper.make_node("Selu", ["e2"], ["se2"], name="selu"),
        helper.make_node("Softplus", ["e2"], ["sp2"], name="softplus"),
        helper.make_node("Sum", ["s2", "t2", "m"], ["sum"], name="sum"),
        helper.make_node("Max", ["hs2", "se2"], ["max"], name="max"),
        helper.make_node("Min", ["sp2", "max", "m"], ["min"], name="min"),
        helper.make_node("Concat", ["sum", "max", "min", "e2"], ["cat"], name="concat", axis=1),
        helper.make_node("SpaceToDepth", ["cat"], ["sd"], name="s2d", blocksize=1),
        _conv("conv3", "sd", "W3", "c3", kernel_shape=[1, 1]),
        helper.make_node("GlobalMaxPool", ["c3"], ["g3"], name="gmax"),
        helper.make_node("Squeeze", ["g3", "axes"], ["sq"], name="squeeze"),
        helper.make_node("Unsqueeze", ["sq", "ax0"], ["un"], name="unsqueeze"),
        helper.make_node("Neg", ["un"], ["ng"], name="neg"),
        helper.make_node("Abs", ["ng"], ["ab"], name="abs"),
        helper.make_node("Add", ["ab", "one"], ["ab1"], name="add_one"),
        helper.make_node("Sqrt", ["ab1"], ["y"], name="sqrt"),
    ]
    return make_model(nodes, [vinfo("x", [1, 2, 6, 6])], ["y"], inits, name="activations_net")


def reduce_pow_net(seed: int = 0) -> onnx.ModelProto:
    """Conv -> Pow(2) -> ReduceMean over channels -> Sqrt -> Exp(-x) -> Mul back into the features ->
    Resize (asymmetric, linear) -> Conv -> Erf -> ReduceMean (spatial, keepdims 0) -> Gemm -> Cast."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng_weights(rng, (8, 3, 3, 3)), "two": np.array(2.0, np.float32),
             "scales": np.array([1, 1, 1.5, 1.5], np.float32), "W1": rng_weights(rng, (6, 8, 3, 3)),
             "G": rng_weights(rng, (6, 4))}
    nodes = [
        _conv("conv0", "x", "W0", "c0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Pow", ["c0", "two"], ["sq"], name="pow"),
        helper.make_node("ReduceMean", ["sq"], ["ms"], name="mean_channels", axes=[1]),
        helper.make_node("Sqrt", ["ms"], ["rms"], name="sqrt"),
        helper.make_node("Neg", ["rms"], ["nr"], name="neg"),
        helper.make_node("Exp", ["nr"], ["gate"], name="exp"),
        helper.make_node("Mul", ["c0", "gate"], ["gated"], name="mul"),
        helper.make_node("Resize", ["gated", "", "scales"], ["up"], name="resize", mode="linear",
                         coordinate_transformation_mode="asymmetric"),
        _conv("conv1", "up", "W1", "c1", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Erf", ["c1"], ["e1"], name="erf"),
        helper.make_node("ReduceMean", ["e1"], ["pooled"], name="mean_space", axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["pooled", "G"], ["fc"], name="fc"),
        helper.make_node("Cast", ["fc"], ["y"], name="cast", to=TensorProto.FLOAT),
    ]
    return make_model(nodes, [vinfo("x", [1, 3, 8, 8])], ["y"], inits, name="reduce_pow_net")


def softmax_split_pool3d_net(seed: int = 0) -> onnx.ModelProto:
    """Conv -> softmax over channels written out (ReduceMax, Sub, Exp, ReduceSum, Div) -> Split; one part
    -> Where (condition from the input: Slice, Greater) -> Unsqueeze -> 3-D AveragePool -> Squeeze; the
    other -> Gather of channels -> MaxPool; Concat -> Conv -> ReduceL2 -> Expand -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng_weights(rng, (8, 3, 3, 3)), "W1": rng_weights(rng, (5, 6, 3, 3)), "G": rng_weights(rng, (5, 4)),
             "axis1": np.array([1], np.int64), "split": np.array([3, 5], np.int64),
             "s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "half": np.array(0.5, np.float32),
             "pick": np.array([4, 0, 2], np.int64), "rows": np.array([3, 5], np.int64)}
    nodes = [
        _conv("conv0", "x", "W0", "c0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMax", ["c0"], ["m"], name="max", axes=[1]),
        helper.make_node("Sub", ["c0", "m"], ["d"], name="sub"),
        helper.make_node("Exp", ["d"], ["e"], name="exp"),
        helper.make_node("ReduceSum", ["e", "axis1"], ["s"], name="sum"),
        helper.make_node("Div", ["e", "s"], ["sm"], name="div"),
        helper.make_node("Split", ["sm", "split"], ["p", "q"], name="split", axis=1),
        helper.make_node("Slice", ["x", "s0", "s1", "axis1"], ["x0"], name="slice"),
        helper.make_node("Greater", ["x0", "half"], ["bright"], name="greater"),
        helper.make_node("Neg", ["p"], ["np"], name="neg"),
        helper.make_node("Where", ["bright", "p", "np"], ["w"], name="where"),
        helper.make_node("Unsqueeze", ["w", "axis1"], ["w5"], name="unsqueeze"),
        helper.make_node("AveragePool", ["w5"], ["a5"], name="pool3d", kernel_shape=[3, 2, 2], strides=[1, 2, 2],
                         pads=[1, 0, 0, 1, 0, 0]),
        helper.make_node("Squeeze", ["a5", "axis1"], ["a"], name="squeeze"),
        helper.make_node("Gather", ["q", "pick"], ["g"], name="gather", axis=1),
        helper.make_node("MaxPool", ["g"], ["gp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["a", "gp"], ["cat"], name="concat", axis=1),
        _conv("conv1", "cat", "W1", "c1", kernel_shape=[3, 3]),
        helper.make_node("ReduceL2", ["c1"], ["l2"], name="l2", axes=[2, 3], keepdims=0),
        helper.make_node("Expand", ["l2", "rows"], ["ex"], name="expand"),
        helper.make_node("Gemm", ["ex", "G"], ["y"], name="fc"),
    ]
    return make_model(nodes, [vinfo("x", [1, 3, 8, 8])], ["y"], inits, name="softmax_split_pool3d_net", opset=13)


NETS = {"bn_clip_concat_resize": bn_clip_concat_resize_net, "activations": activations_net,
        "reduce_pow": reduce_pow_net, "softmax_split_pool3d": softmax_split_pool3d_net}


def _input_shape(model) -> tuple[int, ...]:
    return tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)


def _samples(model, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count,) + _input_shape(model)).astype(np.float32)


#: Targets, and the normalized error allowed against onnxruntime at their widths.
TARGETS = {"small": 3e-2, "hp16": 1e-3}


@pytest.fixture(scope="module")
def programs():
    """``programs(net, target) -> (model, program, test inputs)``, compiled once. Calibration sees the
    test inputs too, so no test value lies outside the calibrated ranges: what remains is rounding."""
    cache = {}

    def get(name, target="small"):
        if (name, target) not in cache:
            model = NETS[name]()
            xs = _samples(model, 12, 77)
            calib = np.concatenate([_samples(model, 116, 1234), xs])
            with warnings.catch_warnings():
                warnings.simplefilter("error")        # calibrated compiles must not warn
                cache[name, target] = (model, cimc.compile(model, target, calibration={"x": calib}), xs)
        return cache[name, target]
    return get


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name", list(NETS))
def test_compiled_program_matches_onnxruntime(programs, name, target):
    model, program, xs = programs(name, target)
    vector_ops = {n["op"] for n in program.nodes} - {"Conv", "MatMul"}
    assert len(vector_ops) >= 4, vector_ops
    result = cimc.run(program, {"x": xs})
    (out,) = program.outputs
    got, ref = result.outputs[out], ort_batch(model, "x", xs)
    assert got.shape == ref.shape and got.dtype == np.float32
    err = normalized_error(got, ref)
    assert err < TARGETS[target], f"normalized error {err:.2e}"
    assert not np.array_equal(got[0], got[1])
    assert result.stats["vector_energy_pj"] > 0


@pytest.mark.parametrize("name", list(NETS))
def test_compiled_program_matches_quantized_reference(programs, name):
    """The runtime's vec instructions compute what the graph of the program computes (tests/reference.py)."""
    from reference import evaluate_program
    model, program, xs = programs(name)
    got = cimc.run(program, {"x": xs}).outputs
    ref = evaluate_program(program, {"x": xs})
    for out in program.outputs:
        assert normalized_error(got[out], ref[out]) < 1e-5


@pytest.mark.parametrize("name", list(NETS))
def test_compiled_program_round_trips(programs, name):
    """Vector attributes are plain JSON: the program file gives the same program and outputs."""
    from cimc.program import Program
    model, program, xs = programs(name)
    loaded = Program.from_bytes(program.to_bytes())
    assert loaded.nodes == program.nodes
    (out,) = program.outputs
    again, before = cimc.run(loaded, {"x": xs}).outputs[out], cimc.run(program, {"x": xs}).outputs[out]
    np.testing.assert_array_equal(again, before)


def test_batch_norm_after_conv_is_folded_and_elsewhere_kept(programs):
    _, program, _ = programs("bn_clip_concat_resize")
    ops = [n["op"] for n in program.nodes]
    assert ops.count("BatchNormalization") == 1           # bn0 folds into conv0; bn1 follows a Resize
    assert {"Clip", "Concat", "LeakyRelu", "Resize"} <= set(ops)


# -- ONNX conformance cases -----------------------------------------------------------------------

from corpus import DEFAULT_CORPUS, corpus_path
#: Corpus case prefixes of the operators above.
CASE_PREFIXES = ("test_batchnorm", "test_clip", "test_concat", "test_globalmaxpool", "test_hardsigmoid",
                 "test_hardswish", "test_leakyrelu", "test_prelu", "test_resize", "test_sigmoid", "test_upsample",
                 "test_softmax", "test_add", "test_maxpool_3d", "test_averagepool_3d", "test_maxpool_with_argmax")
#: Operators whose inputs are all data (the other cases' inputs after the first are parameters).
DATA_COMBINING = {"Add", "Sub", "Mul", "Div", "Concat", "Sum", "Max", "Min", "Mean", "Pow"}
#: Cases refused on purpose, with what the refusal names.
REFUSED = {
    "training_mode": "training_mode=1",
    "PReLU_1d_multiparam": "slope of shape", "PReLU_2d_multiparam": "slope of shape",   # opset-6 slopes
    "PReLU_3d_multiparam": "slope of shape",
    "test_operator_pow": "exponent computed at run time",
}
#: Cases whose expected outputs onnxruntime does not reproduce either (cimc follows onnxruntime).
ORT_DISAGREES = {
    "test_resize_downsample_scales_linear_align_corners":
        "align_corners with a fractional output size: the reference uses scale * size, onnxruntime the size",
    "test_resize_downsample_scales_cubic_align_corners":
        "align_corners with a fractional output size: the reference uses scale * size, onnxruntime the size",
}


def _pytorch_cases() -> list[Path]:
    data = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"
    found = []
    for suite in ("pytorch-converted", "pytorch-operator"):
        folder = data / suite
        for case in sorted(folder.iterdir()) if folder.is_dir() else []:
            if (case / "model.onnx").is_file():
                ops = {n.op_type for n in onnx.load(str(case / "model.onnx"), load_external_data=False).graph.node}
                if ops & set(OPERATORS) and ops <= set(IMPORTERS) | {"Constant"}:
                    found.append(case)
    return found


def _cases() -> list:
    cases = []
    corpus = corpus_path()
    if corpus is not None:
        node = corpus / "onnx-node-tests"
        cases += [pytest.param(c, id=c.name) for c in sorted(node.iterdir()) if c.name.startswith(CASE_PREFIXES)]
    else:
        cases.append(pytest.param(None, id="corpus-absent",
                                  marks=pytest.mark.skip(reason=f"test corpus absent ({DEFAULT_CORPUS})")))
    cases += [pytest.param(c, id=f"{c.parent.name}/{c.name}") for c in _pytorch_cases()]
    return cases


def _read_pb(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def _frozen_case(folder: Path) -> tuple[onnx.ModelProto, dict, list]:
    """The case's model with parameter inputs turned into initializers, its data inputs, its outputs."""
    model = onnx.load(str(folder / "model.onnx"))
    data = folder / "test_data_set_0"
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    inputs = {n: _read_pb(data / f"input_{k}.pb") for k, n in enumerate(names)
              if (data / f"input_{k}.pb").is_file()}
    expected = [_read_pb(data / f"output_{k}.pb") for k in range(len(model.graph.output))]
    ops = {n.op_type for n in model.graph.node} - {"Constant"}
    keep = set(names) if ops <= DATA_COMBINING else set(names[:1])
    frozen = [n for n in names if n not in keep and n in inputs]
    kept = [i for i in model.graph.input if i.name not in frozen]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(inputs[n]), n) for n in frozen)
    model.ir_version = max(model.ir_version, 4)
    return model, {k: v for k, v in inputs.items() if k in keep}, expected


@pytest.mark.parametrize("folder", _cases())
def test_conformance(folder):
    model, inputs, expected = _frozen_case(folder)
    if not {n.op_type for n in model.graph.node} <= set(IMPORTERS) | {"Constant"}:
        pytest.skip("uses operators outside cimc's (an _expanded function body)")
    refusal = next((why for key, why in REFUSED.items() if key in folder.name), None)
    if refusal is not None:
        with pytest.raises(CimcError, match=refusal.replace("(", r"\(").replace(")", r"\)")):
            import_onnx(model)
        return
    try:
        graph = import_onnx(model).graph
    except CimcError as exc:
        if "model input" in str(exc) and any(v.dtype.kind != "f" for v in inputs.values()):
            pytest.skip(f"integer model inputs: {exc}")
        raise
    if set(graph.outputs) - {o for n in graph.nodes() for o in n.outputs}:
        pytest.xfail("a graph output that folds to a constant is not evaluated (frontend, graph_eval)")
    got = evaluate(graph, {k: np.asarray(v, np.float32)[None] for k, v in inputs.items()})
    if folder.name in ORT_DISAGREES:
        pytest.xfail(ORT_DISAGREES[folder.name])
    for name, want in zip(graph.outputs, expected):
        assert got[name].shape == (1,) + want.shape
        np.testing.assert_allclose(got[name][0], want, rtol=1e-3, atol=1e-7)
