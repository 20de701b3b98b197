"""Small ONNX models generated with onnx.helper, and helpers to run them in onnxruntime.

Every builder is deterministic: weights come from a numpy RNG seeded by the
``seed`` argument, so a failing test reproduces exactly. Graph inputs are named
``x`` unless stated otherwise.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


# -- construction helpers ---------------------------------------------------------------------

def vinfo(name: str, shape, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(nodes, inputs, outputs, initializers: dict | None = None, *, opset: int = OPSET,
               name: str = "g", list_initializers_as_inputs: bool = False) -> onnx.ModelProto:
    """A checked model; outputs given as names (or shapeless value infos) get inferred shapes."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    outs = [vinfo(o, None) if isinstance(o, str) else o for o in outputs]
    ins = list(inputs)
    if list_initializers_as_inputs:
        ins += [vinfo(i.name, list(i.dims), i.data_type) for i in inits]
    graph = helper.make_graph(nodes, name, ins, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for out, inf in zip(model.graph.output, inferred.graph.output):
        if not out.type.tensor_type.HasField("shape"):
            out.CopyFrom(inf)
    onnx.checker.check_model(model)
    return model


def single_op(op: str, in_shapes: list, consts: dict | None = None, attrs: dict | None = None,
              input_names: list[str] | None = None) -> onnx.ModelProto:
    """One node ``op`` over activations ``x0, x1, ...`` (or ``input_names``) and constant inputs.

    ``consts`` maps an input position to a constant array (placed at that position).
    """
    consts = consts or {}
    n_inputs = len(in_shapes) + len(consts)
    names, inputs, inits = [], [], {}
    act = iter(input_names or [f"x{i}" for i in range(len(in_shapes))])
    shapes = iter(in_shapes)
    for pos in range(n_inputs):
        if pos in consts:
            cname = f"c{pos}"
            inits[cname] = np.asarray(consts[pos])
            names.append(cname)
        else:
            a = next(act)
            names.append(a)
            inputs.append(vinfo(a, list(next(shapes))))
    node = helper.make_node(op, names, ["y"], name=f"{op.lower()}_node", **(attrs or {}))
    return make_model([node], inputs, ["y"], inits)


def rng_weights(rng: np.random.Generator, shape, scale: float | None = None) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# -- the models the suite compiles --------------------------------------------------------------

def conv_net(seed: int = 0, cin: int = 3, cout: int = 8, hw: int = 8, classes: int = 10) -> onnx.ModelProto:
    """Conv -> Add(bias [C,1,1]) -> Relu -> MaxPool -> Reshape -> Gemm -> Softmax."""
    rng = np.random.default_rng(seed)
    flat = cout * (hw // 2) * (hw // 2)
    inits = {
        "W": rng_weights(rng, (cout, cin, 3, 3)),
        "B": (0.1 * rng.standard_normal((cout, 1, 1))).astype(np.float32),
        "shape": np.array([1, flat], dtype=np.int64),
        "G": rng_weights(rng, (classes, flat), 3.0 / np.sqrt(flat)),   # transB
        "GC": (0.1 * rng.standard_normal(classes)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["conv"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["conv", "B"], ["biased"], name="bias_add"),
        helper.make_node("Relu", ["biased"], ["relu"], name="relu"),
        helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["pool", "shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "G", "GC"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=-1),
    ]
    return make_model(nodes, [vinfo("x", [1, cin, hw, hw])], ["prob"], inits, name="conv_net")


def conv_net_logits(seed: int = 0, **kw) -> onnx.ModelProto:
    """:func:`conv_net` without its Softmax: the logits are a sharper thing to compare."""
    model = conv_net(seed, **kw)
    nodes = [n for n in model.graph.node if n.op_type != "Softmax"]
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return make_model(nodes, list(model.graph.input), ["logits"], inits, name="conv_net_logits")


def mlp(seed: int = 0, sizes=(64, 32, 10), batch_rows: int = 1) -> onnx.ModelProto:
    """MatMul -> Add([1,N]) -> Relu -> MatMul -> Add([N]): ``x`` is [batch_rows, sizes[0]]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], {}
    prev = "x"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        inits[f"W{i}"] = rng_weights(rng, (k, n), 1.0 / np.sqrt(k))
        inits[f"B{i}"] = (0.1 * rng.standard_normal((1, n) if i == 0 else (n,))).astype(np.float32)
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"], name=f"matmul{i}"))
        out = f"h{i}" if i < len(sizes) - 2 else "y"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"pre{i}" if out != "y" else "y"],
                                      name=f"add{i}"))
        if out != "y":
            nodes.append(helper.make_node("Relu", [f"pre{i}"], [out], name=f"relu{i}"))
            prev = out
    return make_model(nodes, [vinfo("x", [batch_rows, sizes[0]])], ["y"], inits, name="mlp")


def residual_net(seed: int = 0, cin: int = 4, ch: int = 8, hw: int = 8, classes: int = 5) -> onnx.ModelProto:
    """Conv1x1 -> Relu = h; Conv3x3 -> Relu -> Conv3x3 -> Add(h) -> Relu -> GAP -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = {
        "W0": rng_weights(rng, (ch, cin, 1, 1)), "B0": (0.1 * rng.standard_normal(ch)).astype(np.float32),
        "W1": rng_weights(rng, (ch, ch, 3, 3)), "B1": (0.1 * rng.standard_normal(ch)).astype(np.float32),
        "W2": rng_weights(rng, (ch, ch, 3, 3)), "B2": (0.1 * rng.standard_normal(ch)).astype(np.float32),
        "G": rng_weights(rng, (ch, classes), 2.0 / np.sqrt(ch)),
        "GC": (0.1 * rng.standard_normal(classes)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W0", "B0"], ["c0"], name="conv0", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c0"], ["h"], name="relu0"),
        helper.make_node("Conv", ["h", "W1", "B1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "h"], ["res"], name="residual"),
        helper.make_node("Relu", ["res"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "G", "GC"], ["y"], name="fc"),
    ]
    return make_model(nodes, [vinfo("x", [1, cin, hw, hw])], ["y"], inits, name="residual_net")


def avgpool_net(seed: int = 0, count_include_pad: int = 1, ceil_mode: int = 0) -> onnx.ModelProto:
    """Conv (stride 1, pad 1) -> Relu -> AveragePool 3x3/2 pad 1 -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = {"W": rng_weights(rng, (6, 2, 3, 3)), "B": (0.1 * rng.standard_normal(6)).astype(np.float32)}
    x = vinfo("x", [1, 2, 9, 9])
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="avgpool", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=count_include_pad, ceil_mode=ceil_mode),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
    ]
    # The pooled size depends on ceil_mode; build the Gemm once it is known.
    probe = make_model(nodes, [x], ["f"], inits)
    flat = probe.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    inits["G"] = rng_weights(rng, (flat, 7), 2.0 / np.sqrt(flat))
    nodes.append(helper.make_node("Gemm", ["f", "G"], ["y"], name="fc"))
    return make_model(nodes, [x], ["y"], inits, name="avgpool_net")


def transpose_net(seed: int = 0, seq: int = 16, feat: int = 8, hidden: int = 12) -> onnx.ModelProto:
    """x [1, feat, seq] -> Transpose -> [1, seq, feat] -> MatMul -> Relu -> MatMul: rank-3 activations."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng_weights(rng, (feat, hidden)), "W1": rng_weights(rng, (hidden, 4))}
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["t", "W0"], ["m0"], name="matmul0"),
        helper.make_node("Relu", ["m0"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "W1"], ["y"], name="matmul1"),
    ]
    return make_model(nodes, [vinfo("x", [1, feat, seq])], ["y"], inits, name="transpose_net")


def wide_conv_net(seed: int = 0, cin: int = 8, cout: int = 16, hw: int = 6) -> onnx.ModelProto:
    """A Conv whose (K=cin*9, N=cout) matrix needs 2 row blocks x 2 column blocks on 64x64 crossbars
    with 8 outputs each (K=72 > 64 rows, N=16 > 8 outputs): four crossbars, so on a target with two
    PEs per tile the layer spans two tiles and its partial sums cross the network."""
    rng = np.random.default_rng(seed)
    flat = cout * hw * hw
    inits = {"W": rng_weights(rng, (cout, cin, 3, 3)), "B": (0.1 * rng.standard_normal(cout)).astype(np.float32),
             "G": rng_weights(rng, (flat, 10), 2.0 / np.sqrt(flat))}
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="wide_conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "G"], ["y"], name="fc"),
    ]
    return make_model(nodes, [vinfo("x", [1, cin, hw, hw])], ["y"], inits, name="wide_conv_net")


# -- onnxruntime ------------------------------------------------------------------------------

_SESSIONS: dict[int, object] = {}


def ort_session(model: onnx.ModelProto):
    import onnxruntime as ort
    key = id(model)
    cached = _SESSIONS.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    _SESSIONS[key] = (model, session)
    return session


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of one onnxruntime inference."""
    return ort_session(model).run(None, {k: np.asarray(v, dtype=np.float32) for k, v in feeds.items()})


def ort_batch(model: onnx.ModelProto, name: str, xs: np.ndarray, output: int = 0) -> np.ndarray:
    """Run each sample of ``xs`` (leading sample axis) separately; stack the ``output``-th outputs."""
    session = ort_session(model)
    return np.stack([session.run(None, {name: x.astype(np.float32)})[output] for x in xs])


def normalized_error(got: np.ndarray, ref: np.ndarray) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def top1(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(-1, a.shape[-1]).argmax(-1)


def grouped_conv_net(seed: int = 4, hw: int = 9) -> onnx.ModelProto:
    """Grouped conv (2 groups of 12 outputs: each group needs two 8-output crossbars), then a strided,
    dilated depthwise conv, then a plain 1x1 conv; exercises groups on crossbars.

    The default seed draws weights whose 8-bit quantization error against onnxruntime stays well
    under 3e-2 on uniform inputs (some draws come close to it: the output is a signed feature map)."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng_weights(rng, (24, 3, 3, 3)), "B0": (0.1 * rng.standard_normal(24)).astype(np.float32),
             "W1": rng_weights(rng, (24, 1, 3, 3)), "W2": rng_weights(rng, (4, 24, 1, 1))}
    nodes = [
        helper.make_node("Conv", ["x", "W0", "B0"], ["c0"], name="grouped", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=2),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "W1"], ["c1"], name="depthwise", kernel_shape=[3, 3], group=24,
                         strides=[2, 2], dilations=[2, 2], pads=[2, 1, 2, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2"], ["y"], name="pointwise", kernel_shape=[1, 1]),
    ]
    return make_model(nodes, [vinfo("x", [1, 6, hw, hw])], ["y"], inits, name="grouped_conv_net")


def conv1d_net(seed: int = 0, length: int = 20) -> onnx.ModelProto:
    """1-D conv (stride 2, pad) -> Relu -> 1-D MaxPool -> 1-D conv -> Relu -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng_weights(rng, (16, 4, 5)), "B0": (0.1 * rng.standard_normal(16)).astype(np.float32),
             "W1": rng_weights(rng, (8, 16, 3))}
    nodes = [
        helper.make_node("Conv", ["x", "W0", "B0"], ["c0"], name="conv1d_0", kernel_shape=[5], strides=[2],
                         pads=[2, 2]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("MaxPool", ["r0"], ["p0"], name="pool", kernel_shape=[2], strides=[2]),
        helper.make_node("Conv", ["p0", "W1"], ["c1"], name="conv1d_1", kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Flatten", ["r1"], ["f"], name="flatten"),
    ]
    probe = make_model(nodes, [vinfo("x", [1, 4, length])], ["f"], inits)
    flat = probe.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    inits["G"] = rng_weights(rng, (flat, 6), 2.0 / np.sqrt(flat))
    nodes.append(helper.make_node("Gemm", ["f", "G"], ["y"], name="fc"))
    return make_model(nodes, [vinfo("x", [1, 4, length])], ["y"], inits, name="conv1d_net")


def batch2_conv_net(seed: int = 0) -> onnx.ModelProto:
    """:func:`wide_conv_net` whose model input carries a batch of 2 images (N = 2 inside the model)."""
    model = wide_conv_net(seed)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = list(model.graph.node)[:-2]       # Conv, Relu
    return make_model(nodes, [vinfo("x", [2, 8, 6, 6])], ["r"], inits, name="batch2_conv_net")


def vector_ops_net(seed: int = 0) -> onnx.ModelProto:
    """A strided, dilated Conv followed by every vector operator with constants on either side:
    Mul, Sub (constant first), Div, Relu, AveragePool, Transpose, Reshape, MatMul, Softmax(axis=1)."""
    rng = np.random.default_rng(seed)
    inits = {
        "W": rng_weights(rng, (8, 3, 3, 3)),
        "m": (1.0 + 0.5 * rng.random((8, 1, 1))).astype(np.float32),
        "s": (0.1 * rng.standard_normal((1, 8, 1, 1))).astype(np.float32),
        "d": np.array(1.5, dtype=np.float32),
        "shape": np.array([1, 4, 32], dtype=np.int64),
        "G": rng_weights(rng, (32, 6), 2.0 / np.sqrt(32)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3], strides=[2, 1],
                         dilations=[1, 2], pads=[1, 2, 1, 2]),
        helper.make_node("Mul", ["c", "m"], ["mul"], name="mul"),
        helper.make_node("Sub", ["s", "mul"], ["sub"], name="sub"),
        helper.make_node("Div", ["sub", "d"], ["div"], name="div"),
        helper.make_node("Relu", ["div"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="avg", kernel_shape=[2, 2], strides=[1, 2],
                         pads=[0, 0, 1, 0], count_include_pad=1),
        helper.make_node("Transpose", ["p"], ["t"], name="transpose", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["rs"], name="reshape"),
        helper.make_node("MatMul", ["rs", "G"], ["mm"], name="matmul"),
        helper.make_node("Softmax", ["mm"], ["y"], name="softmax", axis=1),
    ]
    return make_model(nodes, [vinfo("x", [1, 3, 8, 8])], ["y"], inits, name="vector_ops_net")


def two_io_net(seed: int = 0) -> onnx.ModelProto:
    """Two inputs (``x`` image, ``z`` vector) and two outputs (a feature map and logits)."""
    rng = np.random.default_rng(seed)
    inits = {"W": rng_weights(rng, (4, 2, 3, 3)), "G": rng_weights(rng, (64, 5), 2.0 / 8)}
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["features"], name="relu"),
        helper.make_node("Flatten", ["features"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "G"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "z"], ["logits"], name="add_z"),
    ]
    return make_model(nodes, [vinfo("x", [1, 2, 4, 4]), vinfo("z", [1, 5])], ["features", "logits"], inits,
                      name="two_io_net")


def conv_chain_net(seed: int = 0, hw: int = 9) -> onnx.ModelProto:
    """Convolutions feeding convolutions directly (no vector operator in between), so output rows
    flow set by set: 3x3 (K=72, N=16) -> 3x3 stride 2 (K=144, N=16) -> 2x2 dilated (K=64, N=8)."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng_weights(rng, (16, 8, 3, 3)), "W1": rng_weights(rng, (16, 16, 3, 3)),
             "W2": rng_weights(rng, (8, 16, 2, 2)), "B2": (0.1 * rng.standard_normal(8)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "W0"], ["c0"], name="conv0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c0", "W1"], ["c1"], name="conv1", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "W2", "B2"], ["y"], name="conv2", kernel_shape=[2, 2], dilations=[2, 2],
                         pads=[1, 1, 0, 0]),
    ]
    return make_model(nodes, [vinfo("x", [1, 8, hw, hw])], ["y"], inits, name="conv_chain_net")
