"""Vector operators (activations, n-ary elementwise, reductions, data movement, resizing) against
onnxruntime: one operator at a time through the IR evaluator, small compiled programs through the
runtime's ``vec`` instructions, and ONNX's own conformance cases for these operators."""

from __future__ import annotations

import os
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

from models import make_model, normalized_error, ort_batch, ort_run, rng_weights, vinfo

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
}


# -- helpers ------------------------------------------------------------------------------------

def op_model(op: str, inputs: list, attrs: dict | None = None, opset: int = 17,
             outputs: int = 1) -> onnx.ModelProto:
    """One node ``op``. Each input is a shape (a graph input ``x0, x1, ...``), an array (an
    initializer) or None (an absent optional input)."""
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
    return make_model([node], graph_inputs, outs, inits, opset=opset)


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
    """The imported graph on one sample (and the same sample twice, as a batch) against onnxruntime."""
    feeds = feeds or feeds_for(model, seed, scale, positive)
    graph = import_onnx(model).graph
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # kernels must not warn (calibrated compiles fail on it)
        got = evaluate(graph, {k: np.stack([v, v]) for k, v in feeds.items()})
    refs = ort_run(model, feeds)
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


@pytest.mark.parametrize("to", [TensorProto.FLOAT16, TensorProto.INT64, TensorProto.DOUBLE])
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
    (dict(mode="cubic"), "mode='cubic'"),
    (dict(mode="linear", antialias=1), "antialias=1"),
    (dict(mode="nearest", coordinate_transformation_mode="tf_crop_and_resize"), "tf_crop_and_resize"),
    (dict(mode="cubic", exclude_outside=1), "exclude_outside=1|mode='cubic'"),
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


@pytest.mark.xfail(strict=True, reason="onnx's version converter turns Upsample-9 (and Resize-10) into Resize-11+ "
                   "without coordinate_transformation_mode='asymmetric', so linear upsampling changes meaning; "
                   "a frontend fix")
def test_upsample_opset9_linear_through_the_frontend():
    check(_opset9_upsample("linear", [1, 1, 2, 3]))


# -- raw integer tensors --------------------------------------------------------------------------

def _integer_context(dtype=np.int8) -> ImportContext:
    graph = Graph("g")
    graph.add_tensor(Tensor("x", (2, 3), np.dtype(dtype)))
    graph.add_constant("lo", np.array(-3, dtype))
    shapes = {"x": ((2, 3), np.dtype(dtype)), "y": ((2, 3), np.dtype(dtype))}
    return ImportContext(graph, shapes)


@pytest.mark.parametrize("op", ["Sigmoid", "Neg", "Sum", "Add", "ReduceMean", "Elu"])
def test_integer_arithmetic_is_refused(op):
    ctx = _integer_context()
    with pytest.raises(UnsupportedOperatorError, match="integer arithmetic"):
        IMPORTERS[op](ctx, helper.make_node(op, ["x", "x"] if op in ("Sum", "Add") else ["x"], ["y"], name="n"))


def test_selection_keeps_integers():
    ctx = _integer_context()
    IMPORTERS["Clip"](ctx, helper.make_node("Clip", ["x", "lo"], ["y"], name="n"))
    assert ctx.graph.tensors["y"].dtype == np.int8 and ctx.graph.node("n").attrs == {"min": -3.0}


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


NETS = {"bn_clip_concat_resize": bn_clip_concat_resize_net, "activations": activations_net,
        "reduce_pow": reduce_pow_net}


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

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
#: Corpus case prefixes of the operators above.
CASE_PREFIXES = ("test_batchnorm", "test_clip", "test_concat", "test_globalmaxpool", "test_hardsigmoid",
                 "test_hardswish", "test_leakyrelu", "test_prelu", "test_resize", "test_sigmoid", "test_upsample")
#: Operators whose inputs are all data (the other cases' inputs after the first are parameters).
DATA_COMBINING = {"Add", "Sub", "Mul", "Div", "Concat", "Sum", "Max", "Min", "Mean", "Pow"}
#: Cases refused on purpose, with what the refusal names.
REFUSED = {
    "cubic": "mode='cubic'", "antialias": "antialias=1", "tf_crop_and_resize": "tf_crop_and_resize",
    "training_mode": "training_mode=1",
    "PReLU_1d_multiparam": "slope of shape", "PReLU_2d_multiparam": "slope of shape",   # opset-6 slopes
    "PReLU_3d_multiparam": "slope of shape",
    "test_operator_pow": "exponent computed at run time",
}
#: Cases whose expected outputs onnxruntime does not reproduce either (cimc follows onnxruntime).
ORT_DISAGREES = {
    "test_resize_downsample_scales_linear_align_corners":
        "align_corners with a fractional output size: the reference uses scale * size, onnxruntime the size",
}


def _corpus() -> Path | None:
    configured = os.environ.get("CIMC_CORPUS")
    root = Path(configured) if configured else DEFAULT_CORPUS
    return root if root.is_dir() else None


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
    corpus = _corpus()
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
