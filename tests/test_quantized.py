"""Models quantized by onnxruntime keep their numbers, and the lowerings that reach the crossbars.

The exact references are independent of cimc: integer arithmetic written out in
numpy, onnxruntime with graph optimizations disabled (it then executes the QDQ
operators as the ONNX specification defines them), and ONNX's own reference
evaluator. onnxruntime's fused u8s8 kernels are *not* exact on x86 CPUs without
VNNI (pairwise products saturate at int16), so they are compared only loosely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, version_converter
from onnx.reference import ReferenceEvaluator

import cimc
from cimc.errors import UnsupportedOperatorError
from cimc.frontend import import_onnx
from cimc.passes.fuse import fold_batch_norm, fold_channel_affine
from cimc.runtime.graph_eval import evaluate

from corpus import corpus_root
from models import make_model, ort_batch, top1, vinfo

RNG = np.random.default_rng(7)


def _qdq_conv(w: np.ndarray, x_scale: float, y_scale: float, bias: np.ndarray | None = None) -> onnx.ModelProto:
    """Q(x) -> DQ -> Conv(DQ(w int8), DQ(b int32)) -> Q(y) -> DQ, as quantize_static writes it."""
    n = w.shape[0]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"] + (["bd"] if bias is not None else []), ["y"],
                              pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["out"])]
    sw = (np.abs(w).reshape(n, -1).max(1) / 127 * 0.01 + 0.001).astype(np.float32)
    inits = {"sx": np.float32(x_scale), "zx": np.uint8(0), "w": w, "sw": sw, "zw": np.zeros(n, np.int8),
             "sy": np.float32(y_scale), "zy": np.uint8(0)}
    if bias is not None:
        nodes.insert(3, helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bd"], axis=0))
        inits.update(b=bias, sb=(np.float32(x_scale) * sw).astype(np.float32), zb=np.zeros(n, np.int32))
    return make_model(nodes, [vinfo("x", [1, w.shape[1], 6, 6])], ["out"], inits)


def _exact_qdq_conv(x: np.ndarray, w: np.ndarray, sw: np.ndarray, sx: float, sy: float,
                    bias: np.ndarray | None) -> np.ndarray:
    """The ONNX definition in integers: QuantizeLinear, integer convolution, requantization."""
    xq = np.clip(np.rint(x / np.float32(sx)), 0, 255).astype(np.int64)
    xp = np.pad(xq, ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((x.shape[0], w.shape[0], 6, 6), dtype=np.int64)
    for i in range(3):                       # kernel taps, not pixels
        for j in range(3):
            acc += np.einsum("bchw,oc->bohw", xp[:, :, i:i + 6, j:j + 6], w[:, :, i, j].astype(np.int64))
    real = acc * (np.float32(sx) * sw.astype(np.float32)).reshape(1, -1, 1, 1).astype(np.float64)
    if bias is not None:
        real = real + (bias * np.float32(sx) * sw).reshape(1, -1, 1, 1)
    yq = np.clip(np.rint(real.astype(np.float32) / np.float32(sy)), 0, 255)
    return (yq * np.float32(sy)).astype(np.float32)


@pytest.mark.parametrize("with_bias", [False, True])
def test_qdq_conv_keeps_the_model_integers(with_bias):
    w = RNG.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    bias = RNG.integers(-2000, 2000, 4).astype(np.int32) if with_bias else None
    model = _qdq_conv(w, 1.0, 0.5, bias)
    program = cimc.compile(model, "isaac")                 # no calibration: the model fixes it all
    layer = next(n for n in program.nodes if "quant" in n)
    assert layer["quant"]["out"] == {"scale": 0.5, "zero": 0, "qmin": 0, "qmax": 255}
    stored = np.concatenate([program.arrays[f"xbar/{x['id']}"] for x in program.crossbars])
    assert np.array_equal(np.sort(stored.ravel()), np.sort(w.reshape(4, -1).T.ravel()))
    x = RNG.integers(0, 256, (16, 1, 3, 6, 6)).astype(np.float32)
    got = cimc.run(program, {"x": x}).outputs["out"]
    sw = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "sw"))
    exact = _exact_qdq_conv(x[:, 0], w, sw, 1.0, 0.5, bias)[:, None]
    # The requantization rounds float32(acc) * float32(sx*sw/sy): a tie may round differently
    # from the float64 reference above, by one step at most.
    assert np.abs(got - exact).max() <= 0.5 + 1e-6
    assert (got == exact).mean() > 0.99
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options)
    reference = np.stack([session.run(None, {"x": xi})[0] for xi in x])
    assert np.array_equal(got, reference)


def test_qdq_weights_wider_than_the_target_are_refused():
    w = RNG.integers(-127, 128, (2, 3, 3, 3)).astype(np.int8)
    model = _qdq_conv(w, 1.0, 0.5)
    narrow = {**__import__("tomllib").loads(cimc.targets.preset_text("small")), "name": "six"}
    narrow["precision"] = {"weight_bits": 6, "activation_bits": 8}
    with pytest.raises(cimc.errors.CapacityError, match="8-bit weights.*6-bit weights.*hp16"):
        cimc.compile(model, cimc.targets.target_from_dict(narrow))


def test_quantize_linear_graph_output_is_raw_integers():
    model = make_model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
                       [vinfo("x", [2, 5])], [vinfo("y", None, TensorProto.UINT8)],
                       {"s": np.float32(0.1), "z": np.uint8(128)})
    x = RNG.normal(size=(3, 2, 5)).astype(np.float32) * 10
    got = cimc.run(cimc.compile(model, "small"), {"x": x}).outputs["y"]
    assert got.dtype == np.uint8
    assert np.array_equal(got, ort_batch(model, "x", x))


def test_float_quantize_input_refused_on_integer_tensor():
    model = make_model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
                       [vinfo("x", [4], TensorProto.UINT8)], [vinfo("y", None, TensorProto.UINT8)],
                       {"s": np.float32(0.1), "z": np.uint8(0)})
    with pytest.raises(UnsupportedOperatorError, match="quantizing an integer tensor"):
        import_onnx(model)


# -- lowerings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("attrs,cin,cout,group", [
    (dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), 4, 6, 1),
    (dict(strides=[3, 2], dilations=[2, 1], pads=[0, 2, 1, 0]), 4, 4, 2),
    (dict(strides=[2, 2], auto_pad="SAME_UPPER"), 2, 3, 1),
])
def test_conv_transpose_matches_onnxruntime(attrs, cin, cout, group):
    w = RNG.normal(size=(cin, cout // group, 3, 3)).astype(np.float32)
    b = RNG.normal(size=cout).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], group=group, **attrs)
    model = make_model([node], [vinfo("x", [1, cin, 5, 4])], ["y"], {"w": w, "b": b})
    x = RNG.normal(size=(4, 1, cin, 5, 4)).astype(np.float32)
    program = cimc.compile(model, "hp16", calibration={"x": x})
    got = cimc.run(program, {"x": x}).outputs["y"]
    ref = ort_batch(model, "x", x)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3


def test_batch_norm_and_channel_scale_fold_into_the_convolution():
    c = 5
    w = RNG.normal(size=(c, 3, 3, 3)).astype(np.float32)
    params = {"w": w, "g": RNG.uniform(0.5, 2, c).astype(np.float32), "be": RNG.normal(size=c).astype(np.float32),
              "mu": RNG.normal(size=c).astype(np.float32), "var": RNG.uniform(0.5, 2, c).astype(np.float32),
              "s": RNG.uniform(0.5, 2, (c, 1, 1)).astype(np.float32), "t": RNG.normal(size=(c, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["a", "g", "be", "mu", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Mul", ["bn", "s"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["y"])]
    model = make_model(nodes, [vinfo("x", [1, 3, 6, 6])], ["y"], params)
    graph = import_onnx(model).graph
    x = RNG.normal(size=(3, 1, 3, 6, 6)).astype(np.float32)
    before = evaluate(graph, {"x": x})["y"]
    assert fold_batch_norm(graph) == 1 and fold_channel_affine(graph) == 2
    assert [n.op for n in graph.nodes()] == ["Conv"] and graph.outputs == ["y"]
    after = evaluate(graph, {"x": x})["y"]
    assert np.abs(after - before).max() < 1e-4 * np.abs(before).max()
    assert np.abs(after - ort_batch(model, "x", x)).max() < 1e-4 * np.abs(before).max()


@pytest.mark.parametrize("x_shape,w_shape", [((2, 3, 4), (2, 4, 5)), ((3, 4), (2, 4, 5)),
                                             ((1, 2, 3, 4), (4,)), ((4,), (4, 6))])
def test_matmul_with_stacked_or_vector_constants(x_shape, w_shape):
    w = RNG.normal(size=w_shape).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vinfo("x", list(x_shape))], ["y"],
                       {"w": w})
    x = RNG.normal(size=(3,) + x_shape).astype(np.float32)
    got = cimc.run(cimc.compile(model, "hp16", calibration={"x": x}), {"x": x}).outputs["y"]
    ref = ort_batch(model, "x", x)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3


# -- the corpus's int8 models ------------------------------------------------------------------

def _reference_evaluator(path: Path) -> ReferenceEvaluator:
    """ONNX's reference evaluator on the model (its quantization operators need opset 21)."""
    model = onnx.load(path)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 8)
    return ReferenceEvaluator(version_converter.convert_version(model, 21))


@pytest.mark.parametrize("name", ["mnist-8_int8_qdq.onnx", "mnist-8_int8_qop_std.onnx"])
def test_mnist_int8_models_equal_the_onnx_reference_evaluator(name):
    corpus = corpus_root()
    x = np.load(corpus / "data" / "mnist_test.npz")["x"][:60, None, None].astype(np.float32)
    program = cimc.compile(corpus / "models" / name, "isaac")
    out = next(iter(program.outputs))
    got = cimc.run(program, {"Input3": x}).outputs[out]
    evaluator = _reference_evaluator(corpus / "models" / name)
    ref = np.stack([evaluator.run(None, {"Input3": xi})[0] for xi in x])
    assert np.array_equal(got, ref)


def test_resnet8_qdq_matches_onnxruntime_executing_the_specification():
    corpus = corpus_root()
    path = corpus / "models" / "resnet8_int8_qdq.onnx"
    x = np.load(corpus / "data" / "cifar10_test.npz")["x"][:300].transpose(0, 3, 1, 2)[:, None].astype(np.float32)
    got = cimc.run(cimc.compile(path, "isaac"), {"input_1": x}).outputs["Identity"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options)
    ref = np.stack([session.run(None, {"input_1": xi})[0] for xi in x])
    step = 1 / 256                                           # the softmax output's grid
    assert (top1(got) == top1(ref)).mean() >= 0.995
    assert (np.abs(got - ref) <= step * 1.01).mean() >= 0.99
