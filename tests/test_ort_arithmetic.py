"""The runtime's ``onnxruntime`` arithmetic: the int8 arithmetic of the installed onnxruntime.

On x86 CPUs without VNNI onnxruntime's u8 x s8 kernels saturate the sum of each
pair of adjacent products to int16 (see :mod:`cimc.runtime.ort_arithmetic`). The
correction is checked against numbers written out by hand, single-node models
against onnxruntime itself (bit for bit), and the corpus's int8 models against
onnxruntime on the same model.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import cimc
from cimc.cli import main
from cimc.errors import CimcError
from cimc.runtime.ort_arithmetic import onnxruntime_saturates, pair_saturation, saturating_pairs

from corpus import corpus_root, load_benchmark
from models import make_model, vinfo

mv = load_benchmark("models_vs_onnxruntime")

RNG = np.random.default_rng(11)
EXACT_ON_THIS_CPU = "onnxruntime's int8 kernels are exact on this CPU (VNNI, AMX or ARM): nothing to emulate"
SATURATING_ON_THIS_CPU = "onnxruntime's int8 kernels saturate pair sums on this CPU: the exact mode cannot match"


def _corrected(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The sums with onnxruntime's pair saturation: exact sums plus the correction."""
    pairs = saturating_pairs(w)
    exact = a.astype(np.int64) @ w.astype(np.int64)
    return exact if pairs is None else exact + pair_saturation(a, pairs)


def _pairwise_reference(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_j sat16(a[2j] w[2j] + a[2j+1] w[2j+1]), every pair formed (K padded to even)."""
    k = a.shape[1]
    a = np.pad(a.astype(np.int64), ((0, 0), (0, k % 2)))
    w = np.pad(w.astype(np.int64), ((0, k % 2), (0, 0)))
    p = a[:, 0::2, None] * w[None, 0::2] + a[:, 1::2, None] * w[None, 1::2]
    return np.clip(p, -(1 << 15), (1 << 15) - 1).sum(axis=1)


# -- the correction ----------------------------------------------------------------------------

def test_an_overflowing_pair_saturates():
    a = np.array([[255, 255]])
    w = np.array([[127], [127]], dtype=np.int8)
    # 255 * 127 + 255 * 127 = 64770 does not fit int16: vpmaddubsw gives 32767
    assert _corrected(a, w)[0, 0] == 32767
    assert pair_saturation(a, saturating_pairs(w))[0, 0] == 32767 - 64770
    assert _corrected(a, -w)[0, 0] == -32768
    # an odd K: the lone last product pairs with a zero and fits
    assert _corrected(np.array([[255, 255, 255]]), np.full((3, 1), 127, np.int8))[0, 0] == 32767 + 255 * 127


def test_no_correction_when_no_pair_can_overflow():
    # 255 * (|w0| + |w1|) <= 255 * 128 fits int16, and so does any pair of opposite signs
    w = np.array([[64, -128, 127, 0, -100], [64, 127, -128, 1, -28]], dtype=np.int8)
    assert saturating_pairs(w) is None
    a = np.array([[255, 255], [0, 255], [255, 0]])
    assert np.array_equal(_pairwise_reference(a, w), a @ w.astype(np.int64))


@pytest.mark.parametrize("k", [7, 8, 64])
def test_correction_equals_pairwise_saturation(k):
    a = RNG.integers(0, 256, (200, k))
    a[:40] = 255                                             # rows that overflow wherever they can
    w = RNG.integers(-128, 128, (k, 9)).astype(np.int8)
    assert np.array_equal(_corrected(a, w), _pairwise_reference(a, w))


def test_pairs_split_between_owners_are_corrected_once():
    a = RNG.integers(200, 256, (50, 12))
    w = RNG.integers(-128, 128, (12, 6)).astype(np.int8)
    owned = RNG.random(w.shape) < 0.5
    parts = [saturating_pairs(w, mask) for mask in (owned, ~owned)]
    total = sum(pair_saturation(a, p) for p in parts if p is not None)
    assert np.array_equal(total, pair_saturation(a, saturating_pairs(w)))


# -- single operators against onnxruntime ------------------------------------------------------

def _ort(model: onnx.ModelProto, xs: np.ndarray, name: str = "x") -> np.ndarray:
    """onnxruntime with its default (fused, optimized) kernels, one sample at a time."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([session.run(None, {name: x})[0] for x in xs])


def _inputs(shape: tuple[int, ...], count: int = 6) -> np.ndarray:
    """uint8 codes with a saturated band, where pairs of large weights overflow int16."""
    x = RNG.integers(0, 256, (count, 1) + shape).astype(np.uint8)
    x[..., :2, :] = 255
    return x


def _qlinear_conv(cin: int, cout: int, kernel: int, stride: int, pad: int, x_zero: int) -> onnx.ModelProto:
    w = RNG.integers(-127, 128, (cout, cin, kernel, kernel)).astype(np.int8)
    k = cin * kernel * kernel
    w_scale = RNG.uniform(0.005, 0.02, cout).astype(np.float32)
    inits = {"xs": np.float32(0.02), "xz": np.uint8(x_zero), "w": w, "ws": w_scale, "wz": np.zeros(cout, np.int8),
             "ys": np.float32(0.02 * 0.0125 * 11000 * np.sqrt(k) / 50), "yz": np.uint8(60),
             "b": RNG.integers(-20000, 20000, cout).astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
    return make_model([node], [vinfo("x", [1, cin, 9, 9], TensorProto.UINT8)], [vinfo("y", None, TensorProto.UINT8)],
                      inits)


def _qlinear_matmul(k: int, n: int) -> onnx.ModelProto:
    """A QLinearMatMul with int8 weights: onnxruntime's u8 x s8 GEMM, like the QGemm of QDQ models."""
    inits = {"xs": np.float32(0.02), "xz": np.uint8(100), "w": RNG.integers(-127, 128, (k, n)).astype(np.int8),
             "ws": np.float32(0.01), "wz": np.int8(0), "ys": np.float32(0.02 * 0.01 * 11000 * np.sqrt(k) / 50),
             "yz": np.uint8(128)}
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    return make_model([node], [vinfo("x", [1, k], TensorProto.UINT8)], [vinfo("y", None, TensorProto.UINT8)], inits)


def _matmul_integer(k: int, n: int) -> onnx.ModelProto:
    inits = {"w": RNG.integers(-127, 128, (k, n)).astype(np.int8)}
    node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
    return make_model([node], [vinfo("x", [1, k], TensorProto.UINT8)], [vinfo("y", None, TensorProto.INT32)], inits)


# C=1 takes ORT's im2col GEMM, whose pairs cross kernel taps; C=8, M=16 its ConvSym kernel.
CONVS = {"c1-m8": (1, 8, 5, 1, 2), "c8-m16": (8, 16, 3, 1, 1), "c8-m16-stride2": (8, 16, 3, 2, 1),
         "c3-m16-1x1": (3, 16, 1, 1, 0)}
# isaac holds each layer in one crossbar; small spreads the larger ones over crossbars and tiles.
CASES = [pytest.param(*CONVS[c], z, t, id=f"{c}-zero{z}-{t}") for c in CONVS for z in (0, 128)
         for t in ("isaac", "small")]


def _programs(model: onnx.ModelProto, target: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """onnxruntime's output, cimc's exact one and cimc's with the onnxruntime arithmetic."""
    program = cimc.compile(model, target)
    got = {a: cimc.run(program, {"x": x}, arithmetic=a).outputs["y"] for a in ("exact", "onnxruntime")}
    return _ort(model, x), got["exact"], got["onnxruntime"]


@pytest.mark.parametrize("cin,cout,kernel,stride,pad,x_zero,target", CASES)
def test_qlinear_conv_equals_onnxruntime(cin, cout, kernel, stride, pad, x_zero, target):
    if not onnxruntime_saturates():
        pytest.skip(EXACT_ON_THIS_CPU)
    model = _qlinear_conv(cin, cout, kernel, stride, pad, x_zero)
    ref, exact, emulated = _programs(model, target, _inputs((cin, 9, 9)))
    assert np.array_equal(emulated, ref)
    if kernel > 1:                                  # the case exercises the saturation
        assert not np.array_equal(exact, ref)


@pytest.mark.parametrize("build", [_qlinear_matmul, _matmul_integer], ids=["qlinear_matmul", "matmul_integer"])
@pytest.mark.parametrize("target", ["isaac", "small"])
def test_u8s8_matmul_equals_onnxruntime(build, target):
    if not onnxruntime_saturates():
        pytest.skip(EXACT_ON_THIS_CPU)
    model = build(200, 40)
    x = RNG.integers(0, 256, (6, 1, 200)).astype(np.uint8)
    x[:, :, :120] = 255
    ref, exact, emulated = _programs(model, target, x)
    assert np.array_equal(emulated, ref) and not np.array_equal(exact, ref)


@pytest.mark.parametrize("cin,cout,kernel,stride,pad,x_zero,target", CASES[:4])
def test_exact_arithmetic_equals_onnxruntime_where_it_does_not_saturate(cin, cout, kernel, stride, pad, x_zero,
                                                                        target):
    if onnxruntime_saturates():
        pytest.skip(SATURATING_ON_THIS_CPU)
    model = _qlinear_conv(cin, cout, kernel, stride, pad, x_zero)
    ref, exact, emulated = _programs(model, target, _inputs((cin, 9, 9)))
    assert np.array_equal(exact, ref) and np.array_equal(emulated, ref)


def test_uint8_weights_are_exact_in_onnxruntime_and_left_exact():
    inits = {"xs": np.float32(0.02), "xz": np.uint8(0), "w": RNG.integers(0, 256, (64, 8)).astype(np.uint8),
             "ws": np.float32(0.01), "wz": np.uint8(0), "ys": np.float32(3.0), "yz": np.uint8(0)}
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    model = make_model([node], [vinfo("x", [1, 64], TensorProto.UINT8)], [vinfo("y", None, TensorProto.UINT8)], inits)
    ref, exact, emulated = _programs(model, "isaac", np.full((2, 1, 64), 255, np.uint8))
    assert np.array_equal(exact, ref) and np.array_equal(emulated, ref)


@pytest.mark.parametrize("op", ["AveragePool", "GlobalAveragePool"])
def test_quantized_global_average_pool_equals_onnxruntime(op):
    # Scales whose exact averages fall on half steps: onnxruntime's integer pool rounds those
    # ties from its own float32 scale, the float pool from the rounding of its mean.
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node(op, ["xd"], ["p"], **({"kernel_shape": [2, 2]} if op == "AveragePool" else {})),
             helper.make_node("QuantizeLinear", ["p", "sy", "zy"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "sy", "zy"], ["y"])]
    inits = {"sx": np.float32(0.3), "zx": np.uint8(3), "sy": np.float32(0.1), "zy": np.uint8(5)}
    model = make_model(nodes, [vinfo("x", [1, 16, 2, 2])], [vinfo("y", [1, 16, 1, 1])], inits)
    x = (RNG.random((300, 1, 16, 2, 2)) * 20).astype(np.float32)
    ref, exact, emulated = _programs(model, "isaac", x)
    assert np.array_equal(emulated, ref) and not np.array_equal(exact, ref)


# -- where the option applies --------------------------------------------------------------------

def test_the_crossbar_level_refuses_it():
    program = cimc.compile(_qlinear_matmul(16, 8), "isaac")
    x = np.zeros((1, 16), np.uint8)
    with pytest.raises(CimcError, match="ideal level only"):
        cimc.run(program, {"x": x}, level="crossbar", arithmetic="onnxruntime")
    with pytest.raises(CimcError, match="unknown arithmetic"):
        cimc.run(program, {"x": x}, arithmetic="float")


def test_layers_cimc_quantized_are_unchanged():
    w = RNG.normal(size=(64, 8)).astype(np.float32) * 3
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vinfo("x", [1, 64])], ["y"], {"w": w})
    x = RNG.uniform(0, 255, (20, 1, 64)).astype(np.float32)
    program = cimc.compile(model, "isaac", calibration={"x": x})
    got = {a: cimc.run(program, {"x": x}, arithmetic=a) for a in ("exact", "onnxruntime")}
    assert np.array_equal(got["exact"].outputs["y"], got["onnxruntime"].outputs["y"])
    assert got["onnxruntime"].stats["arithmetic"] == "onnxruntime"


def test_cli_run_arithmetic(tmp_path, capsys):
    model = _qlinear_matmul(200, 40)
    onnx.save(model, tmp_path / "m.onnx")
    x = RNG.integers(0, 256, (4, 1, 200)).astype(np.uint8)
    x[:, :, :120] = 255
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "isaac", "-o", str(tmp_path / "m.cimp")]) == 0
    assert main(["run", str(tmp_path / "m.cimp"), "-i", str(tmp_path / "x.npz"), "--arithmetic", "onnxruntime",
                 "-o", str(tmp_path / "y.npz"), "--stats-json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["arithmetic"] == "onnxruntime"
    assert np.array_equal(np.load(tmp_path / "y.npz")["y"], _ort(model, x))
    assert main(["run", str(tmp_path / "m.cimp"), "-i", str(tmp_path / "x.npz"), "--arithmetic", "onnxruntime",
                 "--level", "crossbar"]) == 2
    assert "ideal level only" in capsys.readouterr().err


# -- the corpus's int8 models --------------------------------------------------------------------

def _corpus_case(name: str, count: int) -> tuple:
    corpus = corpus_root()
    if name.startswith("mnist"):
        x = np.load(corpus / "data" / "mnist_test.npz")["x"][:count, None, None].astype(np.float32)
        return corpus / "models" / f"{name}.onnx", "Input3", x
    x = np.load(corpus / "data" / "cifar10_test.npz")["x"]
    x = x[load_benchmark("_shared").spread(len(x), count)].transpose(0, 3, 1, 2)[:, None]   # sorted by class
    return corpus / "models" / f"{name}.onnx", "input_1", x.astype(np.float32)


@pytest.mark.parametrize("name", ["mnist-8_int8_qdq", "mnist-8_int8_qop_std", "resnet8_int8_qdq"])
def test_corpus_int8_models_give_onnxruntime_outputs(name):
    path, input_name, x = _corpus_case(name, 300)
    model = onnx.load(path)
    program = cimc.compile(model, "isaac")
    got = cimc.run(program, {input_name: x}, arithmetic="onnxruntime").outputs[next(iter(program.outputs))]
    ref = _ort(model, x, input_name)
    agreement = (mv.top1(got) == mv.top1(ref)).mean()
    within = mv.within_step(got, ref, mv.output_step(model))
    assert agreement >= 0.995 and within >= 0.99, (agreement, within, (got == ref).mean())


def test_corpus_resnet8_qop_integer_layers_give_onnxruntime_outputs():
    """resnet8_int8_qop ends in float operators (Add, Relu, AveragePool, Gemm, Softmax): up to its
    last integer layers and the float Add after them, cimc gives onnxruntime's values; the float
    Gemm is cimc's own quantization (at 16 bits here, for the top-1 figure)."""
    path, input_name, x = _corpus_case("resnet8_int8_qop_std", 300)
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    cut = next(n.output[0] for n in model.graph.node if n.op_type == "AveragePool")
    pool_input = next(n.input[0] for n in model.graph.node if n.output[0] == cut)
    head = onnx.utils.Extractor(model).extract_model([input_name], [pool_input])
    program = cimc.compile(head, "isaac")
    got = cimc.run(program, {input_name: x}, arithmetic="onnxruntime").outputs[pool_input]
    assert (got == _ort(head, x, input_name)).mean() >= 0.99
    calibration = np.load(corpus_root() / "data" / "cifar10_train_1k.npz")["x"][:200].transpose(0, 3, 1, 2)[:, None]
    program = cimc.compile(path, "hp16", calibration={input_name: calibration.astype(np.float32)})
    got = cimc.run(program, {input_name: x}, arithmetic="onnxruntime").outputs["Identity"]
    assert (mv.top1(got) == mv.top1(_ort(model, x, input_name))).mean() >= 0.995
