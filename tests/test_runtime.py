"""Compiled programs on the reference runtime against onnxruntime; batching; statistics; input checks."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

import cimc
from cimc.errors import CimcError, InputError
from cimc.runtime import interpreter
from cimc.runtime.interpreter import ReadBeforeWrite

import models
from conftest import compile_model, uniform
from models import normalized_error, ort_batch, top1

MAX_ERROR = 3e-2          # normalized error at 8-bit weights and activations
SAMPLES = 24

CASES = [
    ("conv_net", "small", {}),
    ("conv_net_logits", "small", {}),
    ("mlp", "small", {}),
    ("mlp", "small", {"batch_rows": 3}),
    ("residual_net", "small", {}),
    ("avgpool_net", "small", {"count_include_pad": 1}),
    ("avgpool_net", "small", {"count_include_pad": 0}),
    ("avgpool_net", "small", {"count_include_pad": 1, "ceil_mode": 1}),
    ("transpose_net", "small", {}),
    ("conv1d_net", "small", {}),
    ("grouped_conv_net", "small", {}),
    ("vector_ops_net", "small", {}),
    ("conv_chain_net", "small", {}),
    # layers spanning tiles: partial sums travel over the network
    ("wide_conv_net", "narrow", {}),
    ("conv_net", "narrow", {}),
    ("residual_net", "narrow", {}),
    ("mlp", "narrow", {}),
    ("conv1d_net", "narrow", {}),
    ("batch2_conv_net", "narrow", {}),
    ("vector_ops_net", "narrow", {}),
    ("conv_chain_net", "narrow", {}),
    # ("mlp", "narrow", {"batch_rows": 3}) is test_multi_row_matmul_spanning_tiles
]


def _ids(case):
    builder, target, kw = case
    return "-".join([builder, target] + [f"{k}{v}" for k, v in kw.items()])


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_matches_onnxruntime(compiled, case):
    builder, target, kw = case
    c = compiled(builder, target, **kw)
    xs = uniform(c.model, SAMPLES, seed=77)
    result = cimc.run(c.program, {"x": xs})
    (name,) = c.program.outputs
    ref = ort_batch(c.model, "x", xs)
    got = result.outputs[name]
    assert got.shape == ref.shape and got.dtype == np.float32
    err = normalized_error(got, ref)
    agree = float((top1(got) == top1(ref)).mean())
    assert err < MAX_ERROR, f"normalized error {err:.4f}, top-1 agreement {agree:.3f}"
    assert agree >= 0.95, f"top-1 agreement {agree:.3f} (normalized error {err:.4f})"
    assert not np.array_equal(got[0], got[1])


EXACT_CASES = CASES + [("mlp", "narrow", {"batch_rows": 3})]


@pytest.mark.parametrize("case", EXACT_CASES, ids=[_ids(c) for c in EXACT_CASES])
def test_matches_quantized_reference(compiled, case):
    """The runtime computes exactly the program's quantized arithmetic (tests/reference.py), whatever
    the tiles, messages and schedule: only float32 rounding may differ."""
    from reference import evaluate_program
    builder, target, kw = case
    c = compiled(builder, target, **kw)
    xs = uniform(c.model, 8, seed=78)
    got = cimc.run(c.program, {"x": xs}).outputs
    ref = evaluate_program(c.program, {"x": xs})
    for name in c.program.outputs:
        err = normalized_error(got[name], ref[name])
        assert err < 1e-5, f"{name}: normalized error {err:.3g} against the quantized reference"


@pytest.mark.parametrize("builder", ["grouped_conv_net", "conv1d_net", "vector_ops_net", "residual_net"])
def test_quantized_reference_matches_onnxruntime(compiled, builder):
    """The oracle above is itself within quantization error of onnxruntime (it checks the runtime,
    not the other way round)."""
    from reference import evaluate_program
    c = compiled(builder)
    xs = uniform(c.model, 8, seed=79)
    (name,) = c.program.outputs
    err = normalized_error(evaluate_program(c.program, {"x": xs})[name], ort_batch(c.model, "x", xs))
    assert err < MAX_ERROR


def test_multi_tile_layer_really_spans_tiles(compiled):
    c = compiled("wide_conv_net", "narrow")
    layers = {layer["name"]: layer for layer in c.program.report["layers"]}
    assert layers["wide_conv"]["tiles"] == [0, 1] and layers["wide_conv"]["crossbars"] == 4
    assert len(layers["fc"]["tiles"]) > 1
    ops = {ins["op"] for stream in c.program.tiles for ins in stream}
    assert {"send", "recv"} <= ops
    assert any(ins["op"] == "recv" and ins["reduce"] for stream in c.program.tiles for ins in stream)


def test_multi_row_matmul_spanning_tiles(compiled):
    """A MatMul over a [3, K] activation whose crossbars sit on two tiles: every row's partial sums
    must reach the home tile (a narrower check than test_matches_onnxruntime, per output row)."""
    c = compiled("mlp", "narrow", batch_rows=3)
    assert c.program.report["layers"][0]["tiles"] == [0, 1]
    xs = uniform(c.model, 4, seed=3)
    got = cimc.run(c.program, {"x": xs}).outputs["y"]
    ref = ort_batch(c.model, "x", xs)
    for row in range(3):
        err = normalized_error(got[:, row], ref[:, row])
        assert err < MAX_ERROR, f"row {row}: normalized error {err:.3f}"


def test_batch_equals_single_runs(compiled):
    c = compiled("residual_net", "narrow")
    xs = uniform(c.model, 5, seed=11)
    batched = cimc.run(c.program, {"x": xs}).outputs["y"]
    singles = np.stack([cimc.run(c.program, {"x": x}).outputs["y"] for x in xs])
    assert batched.shape == (5, 1, 5) and singles.shape == (5, 1, 5)
    np.testing.assert_allclose(batched, singles, rtol=1e-6, atol=1e-7)


def test_unbatched_input_gives_unbatched_output(compiled):
    c = compiled("conv_net")
    x = uniform(c.model, 1, seed=2)[0]
    out = cimc.run(c.program, {"x": x}).outputs["prob"]
    assert out.shape == (1, 10)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-5)
    batch_of_one = cimc.run(c.program, {"x": x[None]}).outputs["prob"]
    assert batch_of_one.shape == (1, 1, 10)
    np.testing.assert_array_equal(batch_of_one[0], out)


def test_chunked_batches_equal_one_chunk(compiled, monkeypatch):
    c = compiled("conv_net")
    xs = uniform(c.model, 7, seed=5)
    whole = cimc.run(c.program, {"x": xs})
    monkeypatch.setattr(interpreter, "MEMORY_BUDGET_BYTES", 1)          # one sample per chunk
    assert interpreter._chunk_size(c.program, total=16, workers=1) == 1
    chunked = cimc.run(c.program, {"x": xs})
    np.testing.assert_allclose(chunked.outputs["prob"], whole.outputs["prob"], rtol=1e-6, atol=1e-8)
    assert chunked.stats["latency_cycles"] == whole.stats["latency_cycles"]
    assert chunked.stats["batch"] == whole.stats["batch"] == 7


def test_integer_and_float64_inputs_are_accepted(compiled):
    c = compiled("conv_net")
    x = (uniform(c.model, 2, seed=4) * 10).round()
    a = cimc.run(c.program, {"x": x.astype(np.float64)}).outputs["prob"]
    b = cimc.run(c.program, {"x": x.astype(np.int32)}).outputs["prob"]
    np.testing.assert_array_equal(a, b)


# -- programs spread over many tiles -----------------------------------------------------------

SPREAD = ("residual_net", "conv_chain_net")


@pytest.fixture(scope="module")
def spread(narrow):
    """clsa programs on the narrow preset: copies and layers over 15-16 tiles, activation rows sent
    between them and (conv_chain_net) partial sums reduced on the layers' home tiles."""
    return {b: compile_model(getattr(models, b)(), narrow, scheduler="clsa") for b in SPREAD}


def _inputs(program, count: int, seed: int) -> dict[str, np.ndarray]:
    return {k: np.random.default_rng(seed).random((count,) + tuple(v)).astype(np.float32)
            for k, v in program.inputs.items()}


def _delayed(program, pick) -> tuple[object, int, dict]:
    """The program with the last message ``pick`` accepts landing after everything else: (program,
    receiving tile, that recv instruction)."""
    tiles = copy.deepcopy(program.tiles)
    end = max(max(ins["t"], ins.get("done", 0)) for stream in tiles for ins in stream)
    k, ins = max(((k, ins) for k, stream in enumerate(tiles) for ins in stream if ins["op"] == "recv" and pick(ins)),
                 key=lambda c: c[1]["t"])
    ins["t"] = end + 1
    return dataclasses.replace(program, tiles=tiles), k, ins


@pytest.mark.parametrize("builder", SPREAD)
def test_spread_program_computes_what_one_tile_computes(compiled, spread, builder):
    """The same model layer by layer on one or two tiles and spread over many: the same outputs,
    bit for bit (exact sums, whatever tile computes or holds what)."""
    few, many = compiled(builder).program, spread[builder]
    assert sum(1 for s in few.tiles if s) <= 2 and sum(1 for s in many.tiles if s) >= 15
    recvs = [ins for s in many.tiles for ins in s if ins["op"] == "recv"]
    assert sum(1 for ins in recvs if not ins["reduce"]) >= 40
    assert builder != "conv_chain_net" or sum(1 for ins in recvs if ins["reduce"]) >= 10
    xs = _inputs(many, 9, seed=21)
    a, b = cimc.run(few, xs).outputs, cimc.run(many, xs).outputs
    assert set(a) == set(b) == set(many.outputs)
    for name in a:
        np.testing.assert_array_equal(b[name], a[name])


def test_spread_program_holds_each_activation_once(spread):
    """Tiles holding rows of an activation share one array of its values (each with its own commit
    counts); a convolution's partial sums stay per tile, each holding the rows its instructions name."""
    p = spread["conv_chain_net"]
    m = interpreter.Machine(p, _inputs(p, 3, seed=2))
    m.execute()
    holders: dict[str, list] = {}
    for tile in [*m.tiles, m.memory]:
        for name, buf in tile.buffers.items():
            holders.setdefault(name, []).append(buf)
    acts = {n: bufs for n, bufs in holders.items() if not n.startswith("acc:")}
    assert max(len(bufs) for bufs in acts.values()) >= 4
    for name, bufs in acts.items():
        assert len({id(b.data) for b in bufs}) == 1, name
        assert len({id(b.count) for b in bufs}) == len(bufs), name
    convs = [n for n in holders if n.startswith("acc:") and p.node(n[4:])["op"] == "Conv"]
    assert convs
    for name in convs:
        height = p.tensors[p.node(name[4:])["outputs"][0]][2]
        bufs = holders[name]
        assert len({id(b.data) for b in bufs}) == len(bufs) >= 2, name
        assert sum(b.data.shape[1] for b in bufs) < len(bufs) * height, name


def test_rows_only_other_tiles_hold_are_read_before_write(spread):
    """Sharing the values does not share what a tile may read: with one message of activation rows
    landing after the end, its tile reads those rows (whose values other tiles hold by then) before
    they are there, and the run stops there."""
    p = spread["residual_net"]
    xs = _inputs(p, 3, seed=4)
    cimc.run(p, xs, workers=1)
    per_tensor = lambda ins: sum(1 for s in p.tiles for i in s if i["op"] == "recv"    # noqa: E731
                                 and i["tensor"] == ins["tensor"] and i.get("src") is not None) > 1
    q, k, ins = _delayed(p, lambda ins: not ins["reduce"] and per_tensor(ins))
    tensor, (a, b) = ins["tensor"], ins["rows"]
    assert len(p.tensors[tensor]) == 4
    m = interpreter.Machine(q, xs)
    with pytest.raises(ReadBeforeWrite, match=f"tile {k} reads rows [0-9.]+ of {tensor} before"):
        m.execute()
    assert m.storage[tensor].fixed[a:b].all()              # the values are on the chip, elsewhere
    assert not m.tiles[k].buffers[tensor].count[a:b].any()
    with pytest.raises(ReadBeforeWrite, match=f"tile {k} reads rows"):
        cimc.run(q, xs, workers=2)


def test_partial_sums_stay_on_their_tile(spread):
    """A home tile whose partial sums from another tile land too late cannot write the layer back,
    though that tile has computed them."""
    p = spread["conv_chain_net"]
    xs = _inputs(p, 2, seed=5)
    q, k, ins = _delayed(p, lambda ins: ins["reduce"])
    with pytest.raises(ReadBeforeWrite, match=f"tile {k} reads rows [0-9.]+ of {ins['tensor']} before"):
        cimc.run(q, xs, workers=1)


def test_a_tile_writing_other_values_gets_its_own(compiled):
    """Tiles share an activation's values while they write the same ones; a tile writing other values
    into rows already written (no compiled program does) gets its own copy: every tile reads what was
    written into its buffer, and none reads rows it never got."""
    c = compiled("conv_net")
    p = c.program
    tensor = next(t for t, s in p.tensors.items() if len(s) == 4 and s[2] >= 3 and t not in p.inputs)
    m = interpreter.Machine(p, {"x": uniform(c.model, 2, seed=3)})
    t0, t1, t2, t3 = m.tiles[:4]
    v = np.random.default_rng(0).random((2,) + tuple(p.tensors[tensor])).astype(np.float32)
    w = v + 1

    def rows(tile, a, b):
        return m._read(tile, tensor, (a, b))[:, :, :, a:b]

    m._put(t0, tensor, (1, 2), v[:, :, :, 1:2])
    m._put(t1, tensor, (1, 2), v[:, :, :, 1:2])
    assert t1.buffers[tensor].data is t0.buffers[tensor].data
    m._put(t2, tensor, (1, 2), w[:, :, :, 1:2])
    assert t2.buffers[tensor].data is not t0.buffers[tensor].data
    m._put(t3, tensor, (1, 3), v[:, :, :, 1:3])              # row 1 as shared, row 2 new
    assert t3.buffers[tensor].data is t0.buffers[tensor].data
    for tile in (t0, t1, t2):
        with pytest.raises(ReadBeforeWrite, match=f"tile {tile.index} reads rows 1..2 of {tensor}"):
            m._read(tile, tensor, (1, 3))
    m._put(t0, tensor, (2, 3), w[:, :, :, 2:3])              # t3 holds v there
    for tile, want, (a, b) in [(t0, np.concatenate([v[:, :, :, 1:2], w[:, :, :, 2:3]], axis=3), (1, 3)),
                               (t1, v[:, :, :, 1:2], (1, 2)), (t2, w[:, :, :, 1:2], (1, 2)),
                               (t3, v[:, :, :, 1:3], (1, 3))]:
        np.testing.assert_array_equal(rows(tile, a, b), want)


# -- statistics ---------------------------------------------------------------------------------

@pytest.mark.parametrize("builder,target", [("conv_net", "small"), ("wide_conv_net", "narrow"),
                                            ("residual_net", "narrow")])
def test_stats(compiled, builder, target):
    c = compiled(builder, target)
    p = c.program
    stats = cimc.run(p, {"x": uniform(c.model, 3, seed=0)}).stats
    for key in ("latency_cycles", "crossbars_used", "pe_utilization", "adc_conversions", "energy_pj",
                "crossbar_reads", "latency_us", "batch", "level"):
        assert key in stats
    assert stats["level"] == "ideal" and stats["batch"] == 3
    assert stats["latency_cycles"] == p.report["makespan_cycles"] > 0
    assert stats["latency_us"] == pytest.approx(stats["latency_cycles"] / p.target.timing.clock_mhz)
    assert stats["crossbars_used"] == len(p.crossbars) == p.report["crossbars_used"] > 0
    assert stats["crossbars_available"] == p.target.total_crossbars
    assert 0 < stats["pe_utilization"] <= 1
    assert stats["pe_utilization"] == pytest.approx(p.report["pe_utilization"])
    assert stats["crossbar_reads"] > 0 and stats["adc_conversions"] > 0
    assert stats["energy_pj"] == pytest.approx(stats["adc_energy_pj"] + stats["crossbar_read_energy_pj"]
                                               + stats["vector_energy_pj"])
    assert stats["energy_pj"] > 0


def test_stats_are_per_inference(compiled):
    c = compiled("conv_net")
    one = cimc.run(c.program, {"x": uniform(c.model, 1, seed=0)}).stats
    four = cimc.run(c.program, {"x": uniform(c.model, 4, seed=0)}).stats
    for key in ("latency_cycles", "crossbar_reads", "adc_conversions", "energy_pj"):
        assert one[key] == four[key], key


def test_crossbar_reads_count(compiled):
    """conv_net: conv (1 crossbar) runs 64 output pixels, fc (4 crossbars) one; 8 input chunks each."""
    c = compiled("conv_net")
    stats = cimc.run(c.program, {"x": uniform(c.model, 1, seed=0)}).stats
    assert c.program.target.input_chunks == 8
    assert stats["crossbar_reads"] == 8 * (64 * 1 + 1 * 4)


# -- input errors -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def program(compiled):
    return compiled("conv_net").program


@pytest.mark.parametrize("inputs,match", [
    ({"y": np.zeros((1, 3, 8, 8), np.float32)}, "'x'"),
    ({}, "'x'"),
    ({"x": np.zeros((1, 3, 8, 8), np.float32), "extra": np.zeros(3, np.float32)}, "'extra'"),
    ({"x": np.zeros((1, 3, 8, 9), np.float32)}, r"shape \(1, 3, 8, 9\)"),
    ({"x": np.zeros((3, 8, 8), np.float32)}, "shape"),
    ({"x": np.zeros((2, 2, 3, 8, 8), np.float32)}, "shape"),
    ({"x": np.zeros((0, 1, 3, 8, 8), np.float32)}, "shape"),
    ({"x": np.full((1, 3, 8, 8), np.nan, np.float32)}, "NaN"),
    ({"x": np.full((2, 1, 3, 8, 8), np.inf, np.float32)}, "NaN or Inf"),
    ({"x": np.full((1, 3, 8, 8), "a")}, "dtype"),
])
def test_input_errors(program, inputs, match):
    with pytest.raises(InputError, match=match):
        cimc.run(program, inputs)


def test_one_nan_among_many_values(program):
    x = np.zeros((4, 1, 3, 8, 8), np.float32)
    x[3, 0, 2, 7, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        cimc.run(program, {"x": x})


def test_unknown_level(program):
    with pytest.raises(CimcError, match="level"):
        cimc.run(program, {"x": np.zeros((1, 3, 8, 8), np.float32)}, level="analog")


@pytest.mark.parametrize("cin,cout,group,kernel", [(6, 24, 2, 3), (6, 6, 3, 2), (8, 8, 2, 1), (4, 8, 1, 3)])
def test_grouped_conv_layer(small, cin, cout, group, kernel):
    """One convolution per case: groups on crossbars (each group's rows see only its own channels)."""
    from onnx import helper

    from conftest import compile_model
    from models import make_model, rng_weights, vinfo
    w = rng_weights(np.random.default_rng(cin * cout + group), (cout, cin // group, kernel, kernel))
    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[kernel, kernel],
                                         group=group, pads=[1, 1, 1, 1])],
                       [vinfo("x", [1, cin, 6, 6])], ["y"], {"W": w})
    program = compile_model(model, small)
    xs = uniform(model, 6, seed=8)
    err = normalized_error(cimc.run(program, {"x": xs}).outputs["y"], ort_batch(model, "x", xs))
    assert err < MAX_ERROR, f"normalized error {err:.3f}"


def test_signed_activations(narrow):
    """Inputs with negative values: the first layer's DAC codes are signed."""
    from models import mlp
    model = mlp()
    rng = np.random.default_rng(21)
    program = cimc.compile(model, narrow, calibration={"x": rng.standard_normal((64, 1, 64)).astype(np.float32)})
    assert program.nodes[0]["quant"]["x_signed"] and not program.node("matmul1")["quant"]["x_signed"]
    xs = rng.standard_normal((16, 1, 64)).astype(np.float32)
    err = normalized_error(cimc.run(program, {"x": xs}).outputs["y"], ort_batch(model, "x", xs))
    assert err < MAX_ERROR


def test_two_inputs_two_outputs(small):
    from models import ort_run, two_io_net
    model = two_io_net()
    rng = np.random.default_rng(0)
    data = {"x": rng.random((12, 1, 2, 4, 4)).astype(np.float32),
            "z": rng.standard_normal((12, 1, 5)).astype(np.float32)}
    program = cimc.compile(model, small, calibration=data)
    assert list(program.inputs) == ["x", "z"] and list(program.outputs) == ["features", "logits"]
    result = cimc.run(program, data)
    for j, name in enumerate(["features", "logits"]):
        ref = np.stack([ort_run(model, {"x": data["x"][i], "z": data["z"][i]})[j] for i in range(12)])
        assert result.outputs[name].shape == ref.shape
        assert normalized_error(result.outputs[name], ref) < MAX_ERROR
    with pytest.raises(InputError, match="disagree"):
        cimc.run(program, {"x": data["x"][:3], "z": data["z"][:4]})
    with pytest.raises(InputError, match="'z'"):
        cimc.run(program, {"x": data["x"]})


def test_model_without_crossbar_operators(small):
    from models import single_op
    model = single_op("Relu", [[1, 4, 3, 3]], input_names=["x"])
    program = cimc.compile(model, small, calibration={"x": np.ones((2, 1, 4, 3, 3), np.float32)})
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float32)
    result = cimc.run(program, {"x": x})
    np.testing.assert_array_equal(result.outputs["y"], np.maximum(x, 0))
    assert result.stats["crossbars_used"] == 0 and result.stats["pe_utilization"] == 0.0
    assert result.stats["latency_cycles"] == program.report["makespan_cycles"] > 0


def _single_op_cases():
    rng = np.random.default_rng(0)
    from models import rng_weights
    return [
        ("Gemm", [4, 3], {1: rng_weights(rng, (4, 5)), 2: rng.standard_normal((3, 5)).astype(np.float32)},
         dict(transA=1, alpha=0.5, beta=2.0)),
        ("Gemm", [3, 4], {1: rng_weights(rng, (5, 4)), 2: rng.standard_normal((3, 1)).astype(np.float32)},
         dict(transB=1)),
        ("MatMul", [1, 2, 3, 6], {1: rng_weights(rng, (6, 5))}, {}),
        ("MatMul", [2, 3, 6], {1: rng_weights(rng, (6, 5))}, {}),
        ("Conv", [2, 3, 7, 7], {1: rng_weights(rng, (4, 3, 3, 3))}, dict(auto_pad="SAME_UPPER", strides=[2, 2])),
        ("Conv", [1, 4, 12], {1: rng_weights(rng, (4, 4, 3)), 2: rng.standard_normal(4).astype(np.float32)},
         dict(strides=[2], dilations=[2], pads=[2, 1])),
        ("Softmax", [1, 3, 4, 5], {}, dict(axis=1)),
        ("Transpose", [1, 2, 3, 4], {}, dict(perm=[0, 3, 1, 2])),
        ("GlobalAveragePool", [2, 5, 4, 3], {}, {}),
        ("MaxPool", [1, 2, 7, 7], {}, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[1, 1, 1, 1])),
        ("AveragePool", [1, 2, 7, 7], {}, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[1, 1, 1, 1],
                                               count_include_pad=1)),
        ("Div", [2, 3, 4], {0: np.abs(rng.standard_normal((3, 1))).astype(np.float32) + 0.5}, {}),
        ("Sub", [2, 3, 4], {1: rng.standard_normal(4).astype(np.float32)}, {}),
        ("Identity", [2, 3], {}, {}),
        ("Reshape", [2, 3, 4], {1: np.array([4, -1], dtype=np.int64)}, {}),
        ("Relu", [1, 2, 3, 3], {}, {}),
    ]


@pytest.mark.parametrize("index", range(len(_single_op_cases())),
                         ids=[f"{c[0]}{i}" for i, c in enumerate(_single_op_cases())])
def test_compiled_single_operator(small, index):
    """Each operator alone, compiled: the runtime's instruction for it agrees with onnxruntime."""
    from models import single_op
    op, shape, consts, attrs = _single_op_cases()[index]
    model = single_op(op, [shape], consts=consts, attrs=attrs, input_names=["x"])
    rng = np.random.default_rng(index)
    calib = np.abs(rng.standard_normal((128, *shape))).astype(np.float32) + 0.5
    program = cimc.compile(model, small, calibration={"x": calib})
    xs = np.abs(rng.standard_normal((6, *shape))).astype(np.float32) + 0.5
    got = cimc.run(program, {"x": xs}).outputs["y"]
    ref = ort_batch(model, "x", xs)
    assert got.shape == ref.shape
    quantized = any("quant" in n for n in program.nodes)
    assert normalized_error(got, ref) < (MAX_ERROR if quantized else 1e-6)
