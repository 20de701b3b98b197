"""A layer larger than the whole chip is cut by output channels into parts that segments hold."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st

import cimc
from cimc.errors import CapacityError
from cimc.frontend import import_onnx
from cimc.passes.mapping import blocks
from cimc.passes.quantize import quantize
from cimc.passes.split import split_oversized
from cimc.runtime.graph_eval import evaluate

import models
from conftest import compile_model, uniform
from test_quantized import _qdq_conv
from test_reprogramming import _chip


def _quantized(model, target):
    graph = import_onnx(model).graph
    quantize(graph, target, {"x": uniform(model, 8, seed=3)})
    return graph


@pytest.mark.parametrize("scheduler", ["layer", "clsa", "cpsat"])
def test_a_layer_larger_than_the_chip_runs_in_parts_and_computes_the_same(scheduler):
    model = models.mlp(sizes=(64, 48, 10))        # matmul0 needs 6 crossbars of 8 outputs; the chip has 4
    program = compile_model(model, _chip(1, 4), allow_reprogramming=True, scheduler=scheduler)
    whole = compile_model(model, _chip(4, 8))
    r = program.report
    assert r["split_layers"] == {"matmul0": ["matmul0/part0", "matmul0/part1"]}
    parts = {layer["name"]: layer for layer in r["layers"]}
    assert [parts[p]["crossbars"] for p in r["split_layers"]["matmul0"]] == [3, 3]       # even, whole blocks
    assert [parts[p]["n"] for p in r["split_layers"]["matmul0"]] == [24, 24]
    assert r["segments"] == 3 and whole.report["split_layers"] == {}
    x = uniform(model, 16, seed=7)
    got, want = cimc.run(program, {"x": x}), cimc.run(whole, {"x": x})
    np.testing.assert_array_equal(got.outputs["y"], want.outputs["y"])       # the same integers and scales
    reference = np.stack([models.ort_run(model, {"x": xi})[0] for xi in x])
    assert models.normalized_error(got.outputs["y"], reference) < 3e-2
    assert got.stats["latency_cycles"] == r["makespan_cycles"]


def test_a_split_convolution_keeps_its_row_sets():
    model = models.conv_net(cout=40, hw=4)      # conv: 40 outputs, 5 crossbars of 8; fc: 3 rows x 2; chip: 4
    program = compile_model(model, _chip(1, 4), allow_reprogramming=True, scheduler="clsa")
    whole = compile_model(model, _chip(8, 8), scheduler="clsa")
    assert program.report["split_layers"] == {"conv": ["conv/part0", "conv/part1"], "fc": ["fc/part0", "fc/part1"]}
    assert [layer["n"] for layer in program.report["layers"]] == [24, 16, 8, 2]
    # the parts' Concat (named like the layer, writing its tensor) is cut into rows like the layer was
    assert sum(1 for t in program.schedule.tasks if t.node == "conv") == 4
    x = uniform(model, 8, seed=2)
    np.testing.assert_array_equal(cimc.run(program, {"x": x}).outputs["prob"],
                                  cimc.run(whole, {"x": x}).outputs["prob"])


def test_a_split_pre_quantized_layer_keeps_the_model_integers():
    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (24, 3, 3, 3)).astype(np.int8)        # 3 crossbars of 8 outputs on 2
    model = _qdq_conv(w, 1.0, 0.5, rng.integers(-2000, 2000, 24).astype(np.int32))
    program = cimc.compile(model, _chip(1, 2), allow_reprogramming=True)
    assert len(program.report["split_layers"]) == 1
    x = rng.integers(0, 256, (8, 1, 3, 6, 6)).astype(np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options)
    reference = np.stack([session.run(None, {"x": xi})[0] for xi in x])
    np.testing.assert_array_equal(cimc.run(program, {"x": x}).outputs["out"], reference)


def test_the_cut_graph_computes_what_the_layer_did():
    model = models.conv_net(cout=40, hw=4)
    target = _chip(1, 4)
    graph = _quantized(model, target)
    before = graph.node("conv").attrs["quant"]
    x = uniform(model, 4, seed=1)
    want = evaluate(graph, {"x": x})
    assert split_oversized(graph, target)["conv"] == ["conv/part0", "conv/part1"]
    # (float BLAS may sum a narrower product in another order: the integer program is exact, above)
    np.testing.assert_allclose(evaluate(graph, {"x": x})["prob"], want["prob"], rtol=1e-5, atol=1e-7)
    parts = [graph.node(f"conv/part{j}").attrs["quant"] for j in range(2)]
    np.testing.assert_array_equal(np.concatenate([p.w_int for p in parts], axis=1), before.w_int)
    np.testing.assert_array_equal(np.concatenate([p.w_scale for p in parts]), before.w_scale)
    assert all(p.x_scale == before.x_scale for p in parts)
    assert graph.node("conv").op == "Concat" and "W" not in graph.tensors       # the whole weights are gone


@settings(max_examples=25, deadline=None, derandomize=True)
@given(k=st.integers(1, 300), n=st.integers(2, 120), tiles=st.integers(1, 3), pes=st.integers(1, 6))
def test_parts_fit_the_chip_cover_every_channel_once_and_are_as_few_as_possible(k, n, tiles, pes):
    model = models.mlp(sizes=(k, n))
    target = _chip(tiles, pes)
    graph = _quantized(model, target)
    original = graph.node("matmul0").attrs["quant"].w_int
    total, per = target.total_crossbars, target.outputs_per_crossbar
    row_blocks, column_blocks = math.ceil(k / target.crossbar.rows), math.ceil(n / per)
    split = split_oversized(graph, target)
    if row_blocks * column_blocks <= total or row_blocks > total:
        assert split == {}
        return
    parts = [graph.node(name) for name in split["matmul0"]]
    assert all(len(blocks(p, target)) <= total for p in parts)
    assert len(parts) == math.ceil(column_blocks / (total // row_blocks))
    np.testing.assert_array_equal(np.concatenate([p.attrs["quant"].w_int for p in parts], axis=1), original)


def test_without_the_option_the_message_says_how_to_run_it():
    with pytest.raises(CapacityError, match="matmul0 alone needs 6 crossbars.*--allow-reprogramming to cut it"):
        compile_model(models.mlp(sizes=(64, 48, 10)), _chip(1, 4))


@pytest.mark.parametrize("model,chip,layer", [
    (models.mlp(sizes=(300, 8)), (1, 4), "matmul0"),           # 5 row blocks: one column is larger than the chip
    (models.grouped_conv_net(), (1, 2), "grouped"),            # grouped layers are not cut
])
def test_a_layer_that_cannot_be_cut_is_refused_with_the_reason(model, chip, layer):
    with pytest.raises(CapacityError, match=f"{layer} alone needs .* cannot be cut into parts that fit"):
        compile_model(model, _chip(*chip), allow_reprogramming=True)
