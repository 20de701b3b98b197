"""Passes: bias folding, weight quantization, crossbar mapping."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

from cimc.errors import CapacityError
from cimc.frontend import import_onnx
from cimc.ir import CrossbarQuant, Graph, Node
from cimc.passes.fuse import fold_channel_affine
from cimc.passes.mapping import blocks, map_layers
from cimc.passes.quantize import (CalibrationWarning, Range, activation_quant, quantize, quantize_weights,
                                  weight_matrix)
from cimc.runtime.graph_eval import evaluate
from cimc.targets import target_from_dict

from conftest import preset_dict
from models import conv_net, make_model, mlp, residual_net, rng_weights, vinfo


def _x(graph, n=4, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((n,) + graph.tensors["x"].shape).astype(np.float32)}


# -- fold_channel_affine -----------------------------------------------------------------------

def test_fold_conv_add_channel_constant():
    g = import_onnx(conv_net()).graph
    feeds = _x(g)
    before = evaluate(g, feeds)["prob"]
    assert fold_channel_affine(g) == 1
    assert "Add" not in [n.op for n in g.nodes()]
    conv = g.node("conv")
    assert conv.outputs == ["biased"]                    # the Add's output name survives
    assert g.consumers("biased")[0].op == "Relu"
    bias = g.constant(conv.inputs[2])
    assert bias.shape == (8,) and bias.dtype == np.float32
    src = {i.name: i for i in conv_net().graph.initializer}
    from onnx import numpy_helper
    np.testing.assert_array_equal(bias, numpy_helper.to_array(src["B"]).reshape(-1))
    after = evaluate(g, feeds)["prob"]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)


def test_fold_matmul_add_keeps_graph_output_name():
    g = import_onnx(mlp()).graph
    feeds = _x(g)
    before = evaluate(g, feeds)["y"]
    assert fold_channel_affine(g) == 2                           # [1, N] and [N] constants
    assert [n.op for n in g.nodes()] == ["MatMul", "Relu", "MatMul"]
    assert g.outputs == ["y"]
    assert g.producer("y").name == "matmul1"
    assert g.constant(g.node("matmul0").inputs[2]).shape == (32,)
    np.testing.assert_allclose(evaluate(g, feeds)["y"], before, rtol=1e-6, atol=1e-6)


def test_fold_adds_to_an_existing_bias():
    rng = np.random.default_rng(0)
    inits = {"W": rng_weights(rng, (4, 2, 3, 3)), "B": rng.standard_normal(4).astype(np.float32),
             "C": rng.standard_normal((4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("Add", ["C", "c"], ["y"], name="add")]       # constant first
    g = import_onnx(make_model(nodes, [vinfo("x", [1, 2, 5, 5])], ["y"], inits)).graph
    feeds = _x(g)
    before = evaluate(g, feeds)["y"]
    assert fold_channel_affine(g) == 1
    np.testing.assert_allclose(g.constant(g.node("conv").inputs[2]), inits["B"] + inits["C"].reshape(-1),
                               rtol=1e-6)
    np.testing.assert_allclose(evaluate(g, feeds)["y"], before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("const_shape", [(1, 4, 5, 5), (4, 5, 1), (5,), (1, 1, 5, 1)])
def test_no_fold_of_non_per_channel_constant(const_shape):
    rng = np.random.default_rng(0)
    inits = {"W": rng_weights(rng, (4, 2, 1, 1)), "C": rng.standard_normal(const_shape).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "C"], ["y"], name="add")]
    g = import_onnx(make_model(nodes, [vinfo("x", [1, 2, 5, 5])], ["y"], inits)).graph
    feeds = _x(g)
    before = evaluate(g, feeds)["y"]
    assert fold_channel_affine(g) == 0
    assert [n.op for n in g.nodes()] == ["Conv", "Add"]
    assert len(g.node("conv").inputs) == 2
    np.testing.assert_array_equal(evaluate(g, feeds)["y"], before)


def test_scalar_constant_is_a_per_channel_bias():
    rng = np.random.default_rng(0)
    inits = {"W": rng_weights(rng, (4, 2, 1, 1)), "C": np.array(0.75, dtype=np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "C"], ["y"], name="add")]
    g = import_onnx(make_model(nodes, [vinfo("x", [1, 2, 3, 3])], ["y"], inits)).graph
    feeds = _x(g)
    before = evaluate(g, feeds)["y"]
    assert fold_channel_affine(g) == 1
    np.testing.assert_array_equal(g.constant(g.node("conv").inputs[2]), np.full(4, 0.75, np.float32))
    np.testing.assert_allclose(evaluate(g, feeds)["y"], before, rtol=1e-6, atol=1e-6)


def test_no_fold_when_product_has_other_consumers():
    rng = np.random.default_rng(0)
    inits = {"W": rng_weights(rng, (6, 4)), "C": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "C"], ["a"], name="add"),
             helper.make_node("Mul", ["m", "a"], ["y"], name="mul")]
    g = import_onnx(make_model(nodes, [vinfo("x", [1, 6])], ["y"], inits)).graph
    assert fold_channel_affine(g) == 0
    assert [n.op for n in g.nodes()] == ["MatMul", "Add", "Mul"]


def test_fusion_leaves_residual_net_unchanged():
    g = import_onnx(residual_net()).graph
    feeds = _x(g, n=3, seed=4)
    before = evaluate(g, feeds)["y"]
    assert fold_channel_affine(g) == 0            # the residual Add adds two activations
    assert "residual" in [n.name for n in g.nodes()]
    np.testing.assert_array_equal(evaluate(g, feeds)["y"], before)


# -- quantization -------------------------------------------------------------------------------

def _check_weight_quant(w: np.ndarray, bits: int) -> None:
    q, scale = quantize_weights(w, bits)
    qmax = (1 << (bits - 1)) - 1
    assert q.shape == w.shape and scale.shape == (w.shape[1],)
    assert np.issubdtype(q.dtype, np.integer)
    assert np.abs(q).max(initial=0) <= qmax
    assert np.all(scale > 0) and np.all(np.isfinite(scale))
    err = np.abs(w - q * scale.astype(np.float64))
    assert np.all(err <= scale / 2 * (1 + 1e-5) + 1e-12), float((err / scale).max())
    peak = np.abs(w).max(axis=0)
    nonzero = peak > 0
    np.testing.assert_allclose(scale[nonzero], peak[nonzero] / qmax, rtol=1e-6)
    # the largest magnitude of every nonzero column uses the full range
    assert np.all(np.abs(q).max(axis=0)[nonzero] == qmax)
    assert np.all(q[:, ~nonzero] == 0)
    # symmetric: negating the weights negates the integers
    q_neg, scale_neg = quantize_weights(-w, bits)
    np.testing.assert_array_equal(q_neg, -q)
    np.testing.assert_array_equal(scale_neg, scale)


def test_quantize_weights_per_channel_with_zero_column():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 6)) * np.array([1, 10, 0.01, 0, 3, 1e-4])
    _check_weight_quant(w, 8)
    q, scale = quantize_weights(w, 8)
    assert scale[3] == 1.0 and np.all(q[:, 3] == 0)


@given(w=hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 6)),
                    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)),
       bits=st.sampled_from([2, 4, 8]))
def test_quantize_weights_round_trip_property(w, bits):
    w = np.where(np.abs(w) < 1e-6, 0.0, w)
    _check_weight_quant(w, bits)


def test_activation_quant():
    assert activation_quant(Range(0.0, 2.55), 8) == pytest.approx((0.01, False))
    scale, signed = activation_quant(Range(-1.27, 0.5), 8)
    assert signed and scale == pytest.approx(0.01)
    assert activation_quant(Range(0.0, 0.0), 8) == (1.0, False)


def test_quantize_attaches_quant_and_warns_without_calibration(small):
    g = import_onnx(conv_net()).graph
    fold_channel_affine(g)
    with pytest.warns(CalibrationWarning, match="--calibration"):
        quantize(g, small, None)
    for node in g.crossbar_nodes():
        q = node.attrs["quant"]
        assert isinstance(q, CrossbarQuant)
        assert q.w_int.shape == weight_matrix(g, node).shape
        assert q.x_bits == small.precision.activation_bits


def test_quantize_calibrated_ranges(small):
    g = import_onnx(conv_net()).graph
    fold_channel_affine(g)
    data = {"x": np.random.default_rng(0).random((40, 1, 3, 8, 8)).astype(np.float32) * 3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ranges = quantize(g, small, data)
    assert ranges["x"].low >= 0 and ranges["x"].high == pytest.approx(float(data["x"].max()))
    conv, fc = g.node("conv"), g.node("fc")
    assert not conv.attrs["quant"].x_signed                   # raw inputs are non-negative
    assert conv.attrs["quant"].x_scale == pytest.approx(float(data["x"].max()) / 255)
    assert not fc.attrs["quant"].x_signed                     # after Relu + MaxPool
    # conv weights (K ordered cin, kh, kw) come from the [Cout, Cin, kh, kw] tensor
    w = g.constant(conv.inputs[1])
    np.testing.assert_array_equal(weight_matrix(g, conv), w.reshape(8, 27).T)


def test_quantize_signed_inputs(small):
    g = import_onnx(mlp()).graph
    quantize(g, small, {"x": np.random.default_rng(0).standard_normal((16, 1, 64)).astype(np.float32)})
    assert g.node("matmul0").attrs["quant"].x_signed
    assert not g.node("matmul1").attrs["quant"].x_signed


# -- mapping ------------------------------------------------------------------------------------

def _target(rows=64, cols=64, tiles=4, pes=8, weight_bits=8, cell_bits=2, name="t"):
    d = preset_dict("small")
    d["name"] = name
    d["crossbar"].update(rows=rows, cols=cols, cell_bits=cell_bits)
    d["precision"]["weight_bits"] = weight_bits
    d["chip"] = {"tiles": tiles, "pes_per_tile": pes}
    return target_from_dict(d)


def _fake_layer(k: int, n: int, group: int = 1, op: str = "MatMul") -> tuple[Node, Graph]:
    q = CrossbarQuant(x_scale=1.0, x_bits=8, x_signed=False, w_int=np.zeros((k, n), np.int32),
                      w_scale=np.ones(n, np.float32), bias=None)
    node = Node("layer", op, ["x", "w"], ["y"], {"group": group, "quant": q})
    return node, Graph()


def test_blocks_for_k_by_n(small):
    assert small.crossbar.rows == 64 and small.outputs_per_crossbar == 8
    node, g = _fake_layer(150, 20)
    got = blocks(node, small)
    rows = [(0, 64), (64, 128), (128, 150)]
    cols = [(0, 8), (8, 16), (16, 20)]
    assert sorted((b.group, b.rows, b.cols) for b in got) == sorted((0, r, c) for r in rows for c in cols)
    assert sorted(b.local for b in got) == list(range(9)) and all(b.offset == (0, 0) for b in got)


def test_grouped_conv_never_mixes_groups(small):
    node, g = _fake_layer(3 * 3 * 3, 4 * 12, group=4, op="Conv")     # n_g = 12 > 8 outputs/crossbar
    got = blocks(node, small)
    assert len(got) == 4 * 2 and len({b.local for b in got}) == 8
    for b in got:
        (r0, r1), (c0, c1) = b.rows, b.cols
        assert 0 <= b.group < 4
        assert b.group * 12 <= c0 < c1 <= (b.group + 1) * 12
        assert c1 - c0 <= small.outputs_per_crossbar and r1 - r0 <= small.crossbar.rows


def test_depthwise_groups_share_crossbars(small):
    # 16 channels of a 3x3 depthwise conv: 9 rows and 1 output each. A 64x64 crossbar holds
    # 8 outputs and 7 groups of 9 rows, so 7 groups per crossbar, block-diagonally: 3 crossbars.
    node, g = _fake_layer(9, 16, group=16, op="Conv")
    got = blocks(node, small)
    assert [b.local for b in got] == [0] * 7 + [1] * 7 + [2] * 2
    assert [b.offset for b in got[:7]] == [(9 * i, i) for i in range(7)]
    assert got[7].offset == (0, 0) and got[8].offset == (9, 1)
    assert all(b.rows == (0, 9) and b.cols == (b.group, b.group + 1) for b in got)


@given(k=st.integers(1, 300), n_g=st.integers(1, 40), group=st.sampled_from([1, 2, 3, 8]),
       rows=st.sampled_from([8, 16, 64, 128]), cols=st.sampled_from([16, 30, 48, 64]),
       cell_bits=st.sampled_from([1, 2, 4]))
def test_every_weight_covered_exactly_once(k, n_g, group, rows, cols, cell_bits):
    target = _target(rows=rows, cols=cols, cell_bits=cell_bits)
    node, g = _fake_layer(k, n_g * group, group=group, op="Conv" if group > 1 else "MatMul")
    cover = np.zeros((k, n_g * group), dtype=np.int64)
    per = target.outputs_per_crossbar
    crossbars: dict[int, np.ndarray] = {}
    for b in blocks(node, target):
        (r0, r1), (c0, c1) = b.rows, b.cols
        assert r1 - r0 <= rows and c1 - c0 <= per
        assert b.group * n_g <= c0 < c1 <= (b.group + 1) * n_g
        cover[r0:r1, c0:c1] += 1
        # Blocks sharing a crossbar sit in disjoint wordlines and outputs within its bounds.
        cells = crossbars.setdefault(b.local, np.zeros((rows, per), dtype=np.int64))
        (w0, o0) = b.offset
        assert w0 + r1 - r0 <= rows and o0 + c1 - c0 <= per
        cells[w0:w0 + r1 - r0, :] += 1
        cells[:, o0:o0 + c1 - c0] += 1
        assert cells.max() <= 2 and not (cells[w0:w0 + r1 - r0, o0:o0 + c1 - c0] != 2).any()
    assert np.all(cover == 1)
    assert sorted(crossbars) == list(range(len(crossbars)))


def _quantized(model, target):
    g = import_onnx(model).graph
    fold_channel_affine(g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        quantize(g, target, None)
    return g


def test_mapping_of_conv_net(small):
    g = _quantized(conv_net(), small)
    m = map_layers(g, small)
    assert m.crossbars_used == 1 + 4 and m.tiles_used == 1
    ids = [x.id for lm in m.layers.values() for x in lm.crossbars]
    assert ids == list(range(5))
    assert m.layers["conv"].k == 27 and m.layers["conv"].n == 8
    assert m.layers["fc"].k == 128 and m.layers["fc"].n == 10
    for lm in m.layers.values():
        for x in lm.crossbars:
            assert x.tile == x.id // 8 and x.pe == x.id % 8


def test_layer_kept_in_one_tile_when_it_fits(small):
    g = _quantized(mlp(sizes=(64, 48, 32)), small)
    m = map_layers(g, small)
    assert len(m.layers["matmul0"].crossbars) == 6 and m.layers["matmul0"].tiles == (0,)
    # 4 crossbars do not fit in the 2 left on tile 0: the layer moves to tile 1 whole
    assert len(m.layers["matmul1"].crossbars) == 4 and m.layers["matmul1"].tiles == (1,)
    assert m.layers["matmul1"].home_tile == 1


def test_layers_split_when_the_chip_is_full():
    target = _target(tiles=2, pes=8)
    g = _quantized(mlp(sizes=(64, 48, 48, 32)), target)       # 6 + 6 + 4 = 16 crossbars = the chip
    m = map_layers(g, target)
    assert m.crossbars_used == 16
    assert sorted(x.id for lm in m.layers.values() for x in lm.crossbars) == list(range(16))
    assert len(m.layers["matmul1"].tiles) == 2


def test_layer_larger_than_a_tile_spans_tiles(narrow):
    g = _quantized(mlp(), narrow)
    m = map_layers(g, narrow)
    assert len(m.layers["matmul0"].crossbars) == 4 and m.layers["matmul0"].tiles == (0, 1)


def test_capacity_error_gives_both_counts(small):
    rng = np.random.default_rng(0)
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="huge")],
                       [vinfo("x", [1, 64])], ["y"], {"W": rng_weights(rng, (64, 300))})
    g = _quantized(model, small)
    with pytest.raises(CapacityError) as info:
        map_layers(g, small)
    msg = str(info.value)
    assert "38" in msg and "32" in msg and "huge" in msg
