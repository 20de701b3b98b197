"""ONNX import: validation, shapes, refusals, weights-as-inputs, constant folding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.errors import ModelError, UnsupportedOperatorError
from cimc.frontend import import_onnx, parse_input_shapes
from cimc.importers import IMPORTERS
from cimc.runtime.graph_eval import evaluate

from models import (avgpool_net, conv_net, make_model, mlp, ort_run, residual_net, rng_weights, single_op,
                    transpose_net, vinfo)


def _shapes(graph) -> dict[str, tuple[int, ...]]:
    return {name: t.shape for name, t in graph.tensors.items() if not t.is_constant}


def _assert_matches_ort(model, graph, feeds, rtol=1e-4, atol=1e-5):
    got = evaluate(graph, {k: v[None] for k, v in feeds.items()})
    for name, ref in zip(graph.outputs, ort_run(model, feeds)):
        np.testing.assert_allclose(got[name][0], ref, rtol=rtol, atol=atol)


# -- generated models -------------------------------------------------------------------------

def test_conv_net_ir():
    imported = import_onnx(conv_net())
    g = imported.graph
    assert g.inputs == ["x"] and g.outputs == ["prob"]
    assert [n.op for n in g.nodes()] == ["Conv", "Add", "Relu", "MaxPool", "Reshape", "MatMul", "Softmax"]
    shapes = _shapes(g)
    assert shapes["x"] == (1, 3, 8, 8)
    assert shapes["conv"] == shapes["biased"] == shapes["relu"] == (1, 8, 8, 8)
    assert shapes["pool"] == (1, 8, 4, 4)
    assert shapes["flat"] == (1, 128)
    assert shapes["logits"] == shapes["prob"] == (1, 10)
    conv = g.node("conv")
    assert conv.attrs["kernel"] == (3, 3) and conv.attrs["strides"] == (1, 1)
    assert conv.attrs["pads"] == (1, 1, 1, 1) and conv.attrs["dilations"] == (1, 1) and conv.attrs["group"] == 1
    pool = g.node("pool")
    assert pool.attrs["kernel"] == (2, 2) and pool.attrs["strides"] == (2, 2) and pool.attrs["pads"] == (0,) * 4
    assert g.node("flatten").attrs["shape"] == (1, 128)
    assert g.node("softmax").attrs["axis"] == 1
    # Gemm(transB=1) becomes MatMul with the transposed constant and its C as bias.
    fc = g.node("fc")
    assert fc.op == "MatMul" and fc.is_crossbar
    w = g.constant(fc.inputs[1])
    src = {i.name: onnx.numpy_helper.to_array(i) for i in conv_net().graph.initializer}
    np.testing.assert_array_equal(w, src["G"].T)
    np.testing.assert_array_equal(g.constant(fc.inputs[2]), src["GC"])
    assert [n.name for n in g.crossbar_nodes()] == ["conv", "fc"]
    assert imported.opset == 17 and len(imported.model_hash) == 64


def test_model_hash_is_of_the_bytes():
    a = import_onnx(conv_net(seed=0)).model_hash
    assert a == import_onnx(conv_net(seed=0)).model_hash
    assert a != import_onnx(conv_net(seed=1)).model_hash


@pytest.mark.parametrize("build", [conv_net, mlp, residual_net, avgpool_net, transpose_net])
def test_generated_models_import_and_evaluate_like_onnxruntime(build):
    model = build()
    g = import_onnx(model).graph
    for node in g.nodes():
        for t in node.inputs + node.outputs:
            if t:
                assert all(d > 0 for d in g.tensors[t].shape), (t, g.tensors[t].shape)
    x = np.random.default_rng(0).random(g.tensors["x"].shape).astype(np.float32)
    _assert_matches_ort(model, g, {"x": x})


def test_import_from_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_net(), path)
    imported = import_onnx(path)
    assert imported.source == str(path)
    assert imported.graph.name == "conv_net"
    assert imported.model_hash == import_onnx(str(path)).model_hash


def test_format_dict_and_dot():
    g = import_onnx(conv_net()).graph
    text = g.format()
    assert "xbar" in text and "Conv(%x" in text and "output %prob" in text
    d = g.to_dict()
    assert d["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert [n["op"] for n in d["nodes"]][0] == "Conv" and d["nodes"][0]["crossbar"] is True
    dot = g.to_dot()
    assert dot.startswith('digraph "conv_net"') and '"conv" -> "bias_add"' in dot


def test_identity_is_kept_and_unused_nodes_are_pruned():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["y"], name="id"),
             helper.make_node("Relu", ["x"], ["dead"], name="dead_relu")]
    model = make_model(nodes, [vinfo("x", [1, 4])], ["y"])
    g = import_onnx(model).graph
    assert [n.name for n in g.nodes()] == ["relu", "id"]
    assert "dead" not in g.tensors


# -- refusals ---------------------------------------------------------------------------------

def test_unsupported_operator_cos():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first"),
             helper.make_node("Cos", ["r"], ["y"], name="my_cosine")]
    model = make_model(nodes, [vinfo("x", [1, 4])], ["y"])
    with pytest.raises(UnsupportedOperatorError) as info:
        import_onnx(model)
    msg = str(info.value)
    assert "my_cosine" in msg and "Cos" in msg
    assert "Supported operators" in msg
    listed = msg.split("Supported operators:")[1]
    for op in ("Conv", "MatMul", "Gemm", "Relu", "MaxPool", "AveragePool", "Softmax", "Reshape"):
        assert op in listed
    assert set(IMPORTERS) <= set(x.strip().rstrip(".") for x in listed.split(","))


def test_unsupported_operator_is_a_model_error():
    model = single_op("Hardmax", [[1, 4, 5, 5]])
    with pytest.raises(ModelError, match=r"hardmax_node.*Hardmax.*Supported operators: .*Conv"):
        import_onnx(model)


def test_unnamed_unsupported_node_gets_a_name():
    node = helper.make_node("Sin", ["x"], ["y"])
    model = make_model([node], [vinfo("x", [2])], ["y"])
    with pytest.raises(UnsupportedOperatorError, match=r"'Sin_0'.*Sin"):
        import_onnx(model)


def test_custom_domain_refused():
    node = helper.make_node("Relu", ["x"], ["y"], name="custom", domain="com.example")
    graph = helper.make_graph([node], "g", [vinfo("x", [2])], [vinfo("y", [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    with pytest.raises(UnsupportedOperatorError, match=r"custom.*com\.example"):
        import_onnx(model)


def test_conv_with_runtime_weight_refused():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="dyn_conv")]
    model = make_model(nodes, [vinfo("x", [1, 2, 4, 4]), vinfo("w", [3, 2, 1, 1])], ["y"])
    with pytest.raises(UnsupportedOperatorError, match="dyn_conv"):
        import_onnx(model)


def test_integer_input_refused():
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                       [vinfo("x", [2], TensorProto.INT64)], ["y"])
    with pytest.raises(ModelError, match="'x'.*int64"):
        import_onnx(model)


def _dynamic_model():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])
    graph = helper.make_graph(nodes, "dyn", [x], [y], [onnx.numpy_helper.from_array(rng_weights(rng, (4, 3, 3, 3)), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_dynamic_dim_refused_with_hint():
    with pytest.raises(ModelError) as info:
        import_onnx(_dynamic_model())
    msg = str(info.value)
    assert "--input-shape" in msg and "'x'" in msg
    assert "x=1x3x8x8" in msg                          # the hint is a usable value


def test_dynamic_dim_fixed_by_input_shape():
    model = _dynamic_model()
    g = import_onnx(model, input_shapes=["x=1x3x8x8"]).graph
    assert g.tensors["x"].shape == (1, 3, 8, 8)
    assert g.tensors["y"].shape == (1, 4, 8, 8)
    g2 = import_onnx(model, input_shapes={"x": (2, 3, 8, 8)}).graph
    assert g2.tensors["y"].shape == (2, 4, 8, 8)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    _assert_matches_ort(model, g2, {"x": x})


@pytest.mark.parametrize("spec,match", [
    (["y=1x3x8x8"], "not a model input"),
    (["x=1x3x8"], "rank"),
    (["x=2x4x8x8"], "conflicts"),
    (["x=1xAx8x8"], "not of the form"),
    (["x1x3x8x8"], "not of the form"),
    (["x=0x3x8x8"], "not of the form"),
])
def test_bad_input_shape_specs(spec, match):
    with pytest.raises(ModelError, match=match):
        import_onnx(_dynamic_model(), input_shapes=spec)


def test_parse_input_shapes():
    assert parse_input_shapes(["a=1x2", "b:c=3X4x5"]) == {"a": (1, 2), "b:c": (3, 4, 5)}
    assert parse_input_shapes(None) == {}


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all\n", bytes(range(256)) * 4,
                                     b"\x08\x07\x12\x04abcd"])
def test_non_onnx_bytes_refused(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="bad.onnx"):
        import_onnx(path)


def test_missing_file_refused(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        import_onnx(tmp_path / "nope.onnx")


def test_checker_failure_is_a_model_error():
    model = conv_net()
    model.graph.node[0].input[1] = "no_such_tensor"
    with pytest.raises(ModelError):
        import_onnx(model)


# -- constants ----------------------------------------------------------------------------------

def test_weights_listed_as_graph_inputs_are_constants():
    base = conv_net()
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in base.graph.initializer}
    model = make_model(list(base.graph.node), list(base.graph.input), ["prob"], inits,
                       list_initializers_as_inputs=True)
    assert len(model.graph.input) == 1 + len(inits)
    g = import_onnx(model).graph
    assert g.inputs == ["x"]
    assert g.constant("W") is not None and g.tensors["W"].is_constant
    np.testing.assert_array_equal(g.constant("W"), inits["W"])
    x = np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float32)
    _assert_matches_ort(model, g, {"x": x})


def test_constant_of_shape_weights_are_folded():
    """The light_* zoo models build weights with ConstantOfShape(Constant)."""
    nodes = [
        helper.make_node("Constant", [], ["wshape"], name="shape_const",
                         value=onnx.numpy_helper.from_array(np.array([4, 3, 3, 3], dtype=np.int64))),
        helper.make_node("ConstantOfShape", ["wshape"], ["W"], name="fill",
                         value=onnx.numpy_helper.from_array(np.array([0.25], dtype=np.float32))),
        helper.make_node("Constant", [], ["scale"], name="scale_const",
                         value=onnx.numpy_helper.from_array(np.array(2.0, dtype=np.float32))),
        helper.make_node("Mul", ["W", "scale"], ["W2"], name="scaled"),
        helper.make_node("Conv", ["x", "W2"], ["y"], name="conv", kernel_shape=[3, 3]),
    ]
    model = make_model(nodes, [vinfo("x", [1, 3, 6, 6])], ["y"])
    g = import_onnx(model).graph
    assert [n.op for n in g.nodes()] == ["Conv"]
    w = g.constant(g.node("conv").inputs[1])
    assert w.shape == (4, 3, 3, 3) and np.all(w == 0.5)
    x = np.random.default_rng(0).random((1, 3, 6, 6)).astype(np.float32)
    _assert_matches_ort(model, g, {"x": x})


def test_reshape_shape_from_shape_node_is_folded():
    """PyTorch's flatten: Shape -> Gather(0) -> Unsqueeze -> Concat([n, -1]) -> Reshape."""
    base = conv_net()
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in base.graph.initializer}
    inits.pop("shape")
    inits["zero"] = np.array(0, dtype=np.int64)
    inits["axes0"] = np.array([0], dtype=np.int64)
    inits["minus1"] = np.array([-1], dtype=np.int64)
    nodes = [n for n in base.graph.node if n.op_type not in ("Reshape",)]
    idx = [n.op_type for n in nodes].index("Gemm")
    flatten = [
        helper.make_node("Shape", ["pool"], ["pshape"], name="shape_of_pool"),
        helper.make_node("Gather", ["pshape", "zero"], ["n"], name="gather_n", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsq"),
        helper.make_node("Concat", ["n1", "minus1"], ["newshape"], name="concat", axis=0),
        helper.make_node("Reshape", ["pool", "newshape"], ["flat"], name="flatten"),
    ]
    nodes = nodes[:idx] + flatten + nodes[idx:]
    model = make_model(nodes, list(base.graph.input), ["prob"], inits)
    g = import_onnx(model).graph
    assert [n.op for n in g.nodes()] == ["Conv", "Add", "Relu", "MaxPool", "Reshape", "MatMul", "Softmax"]
    assert g.node("flatten").attrs["shape"] == (1, 128)
    x = np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float32)
    _assert_matches_ort(model, g, {"x": x})


def test_shape_with_start_attribute_is_folded():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape", start=1),
        helper.make_node("ReduceProd", ["s"], ["p"], name="prod", keepdims=1),
        helper.make_node("Concat", ["one", "p"], ["newshape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["y"], name="reshape"),
    ]
    model = make_model(nodes, [vinfo("x", [1, 2, 3, 4])], ["y"], {"one": np.array([1], dtype=np.int64)})
    g = import_onnx(model).graph
    assert [n.op for n in g.nodes()] == ["Reshape"]
    assert g.tensors["y"].shape == (1, 24)


def test_old_opset_is_converted():
    base = conv_net()
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in base.graph.initializer}
    nodes = [n for n in base.graph.node]
    for n in nodes:
        if n.op_type == "Softmax":
            del n.attribute[:]
            n.attribute.extend([helper.make_attribute("axis", 1)])
    model = make_model(nodes, list(base.graph.input), ["prob"], inits, opset=11)
    imported = import_onnx(model)
    assert imported.opset == 13
    x = np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float32)
    _assert_matches_ort(model, imported.graph, {"x": x})


def test_constant_only_binary_refused_or_folded():
    """An Add of two constants is folded away, never imported as a vector op on constants."""
    nodes = [helper.make_node("Add", ["a", "b"], ["c"], name="const_add"),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    model = make_model(nodes, [vinfo("x", [3])], ["y"],
                       {"a": np.ones(3, np.float32), "b": np.full(3, 2, np.float32)})
    g = import_onnx(model).graph
    assert [n.name for n in g.nodes()] == ["add"]
    np.testing.assert_array_equal(g.constant(g.node("add").inputs[1]), np.full(3, 3, np.float32))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_ceil_mode_shape_propagates_to_consumers(op):
    """With ceil_mode, a last window that would start in the end padding is dropped (onnxruntime; onnx's
    own shape inference keeps it). Every tensor after the pool must have the shape onnxruntime computes."""
    w = rng_weights(np.random.default_rng(0), (3, 2, 1, 1))
    nodes = [helper.make_node(op, ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1),
             helper.make_node("Relu", ["p"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W"], ["y"], name="conv", kernel_shape=[1, 1])]
    model = make_model(nodes, [vinfo("x", [1, 2, 7, 8])], ["y"], {"W": w})
    x = np.random.default_rng(1).random((1, 2, 7, 8)).astype(np.float32)
    ref = ort_run(model, {"x": x})[0]
    assert ref.shape == (1, 3, 4, 5)
    g = import_onnx(model).graph
    shapes = _shapes(g)
    assert (shapes["p"], shapes["r"], shapes["y"]) == ((1, 2, 4, 5), (1, 2, 4, 5), (1, 3, 4, 5))
    _assert_matches_ort(model, g, {"x": x})


# -- issue 3's bad input: cycles, inconsistent shapes, quantization cimc cannot keep --------------

def test_cycle_is_refused():
    nodes = [helper.make_node("Relu", ["x2"], ["x1"], name="a"), helper.make_node("Relu", ["x1"], ["x2"], name="b"),
             helper.make_node("Add", ["x", "x2"], ["y"], name="c")]
    graph = helper.make_graph(nodes, "g", [vinfo("x", [2])], [vinfo("y", [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(ModelError, match="checker|cycle|topolog"):
        import_onnx(model)


def test_shape_inconsistent_with_data_is_refused():
    w = np.ones((4, 3), dtype=np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [vinfo("x", [1, 5])], [vinfo("y", [1, 3])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(ModelError, match="shape inference"):
        import_onnx(model)


def test_per_channel_activation_scale_is_refused_by_name():
    w = np.ones((2, 3, 1, 1), dtype=np.int8)
    inits = {"xs": np.full(3, 0.1, np.float32), "xz": np.zeros(3, np.uint8), "w": w,
             "ws": np.float32(0.1), "wz": np.int8(0), "ys": np.float32(0.2), "yz": np.uint8(0)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="qconv")
    model = make_model([node], [vinfo("x", [1, 3, 4, 4], TensorProto.UINT8)],
                       [vinfo("y", None, TensorProto.UINT8)], inits)
    with pytest.raises(UnsupportedOperatorError, match="'qconv'.*per-channel activation scales"):
        import_onnx(model)


def test_float8_quantization_is_refused_by_name():
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="q8")
    zero = helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0])
    graph = helper.make_graph([node], "g", [vinfo("x", [4])], [vinfo("y", [4], TensorProto.FLOAT8E4M3FN)],
                              [numpy_helper.from_array(np.float32(0.5), "s"), zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    with pytest.raises(UnsupportedOperatorError, match="'q8'.*float8"):
        import_onnx(model)
