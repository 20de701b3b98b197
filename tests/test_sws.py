"""Sorted weight sectioning: same outputs as the natural order, legal layouts, ADC accounting that
agrees with the runtime, magnitude pruning, and the command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from hypothesis import given, strategies as st

import cimc
from cimc.cli import main
from cimc.errors import CimcError, ProgramError, TargetError
from cimc.passes import adc_energy, sws
from cimc.passes.mapping import col_indices, row_indices
from cimc.prune import prune_array, prune_model
from cimc.runtime import crossbar as xb
from cimc.targets import target_from_dict

import models
from conftest import compile_model, no_leftovers, preset_dict, uniform
from corpus import corpus_root


def _target(name: str = "small", routing: str = "shared", **crossbar) -> "cimc.targets.Target":
    data = preset_dict(name)
    data["name"] = f"{name}-{routing}"
    data["crossbar"].update(input_routing=routing, **crossbar)
    return target_from_dict(data, data["name"])


PER_GROUP = _target(routing="per_group")
NARROW_PER_GROUP = target_from_dict({**preset_dict("small"), "name": "narrow-pg",
                                     "chip": {"tiles": 16, "pes_per_tile": 2},
                                     "crossbar": {**preset_dict("small")["crossbar"], "input_routing": "per_group"}})

_PROGRAMS: dict = {}


def _pair(builder: str, sparsity: float, scheme, target):
    """(model, natural program, SWS program) for a generated model pruned to ``sparsity``."""
    key = (builder, sparsity, scheme, target.name)
    if key not in _PROGRAMS:
        model, _ = prune_model(getattr(models, builder)(), sparsity) if sparsity else (getattr(models, builder)(), [])
        natural = compile_model(model, target)
        _PROGRAMS[key] = (model, natural, compile_model(model, target, sws=scheme))
    return _PROGRAMS[key]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# -- same outputs as the natural order --------------------------------------------------------

BUILDERS = ["conv_net", "residual_net", "wide_conv_net", "mlp", "grouped_conv_net", "conv1d_net",
            "transpose_net", "batch2_conv_net"]


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("scheme,target", [("s2", "small"), ("s3", "narrow"), ("auto", "small"),
                                           ("s1", "per_group"), ("auto", "narrow_per_group")])
def test_bit_identical_with_and_without_sws(builder, scheme, target, small, narrow):
    target = {"small": small, "narrow": narrow, "per_group": PER_GROUP, "narrow_per_group": NARROW_PER_GROUP}[target]
    model, natural, sorted_ = _pair(builder, 0.7, scheme, target)
    x = {"x": uniform(model, 3, seed=5)}
    want = cimc.run(natural, x).outputs
    assert _same(cimc.run(sorted_, x).outputs, want)
    hardware = cimc.run(sorted_, x, level="crossbar", shortcut=False)     # small's 8-bit ADCs are lossless
    assert hardware.stats["clipped_fraction"] == 0 and _same(hardware.outputs, want)
    # the program went through the file format, gather arrays included
    loaded = cimc.Program.from_bytes(sorted_.to_bytes())
    assert _same(cimc.run(loaded, x).outputs, want)


def test_sws_drops_rows_and_frees_crossbars(small):
    """At 90 % sparsity only rows that are nonzero for some output of a crossbar are kept: fewer
    wordlines are programmed, fewer conversions made."""
    model, natural, sorted_ = _pair("mlp", 0.9, "s2", small)
    assert sorted_.report["cells_programmed"] < natural.report["cells_programmed"]
    assert sorted_.report["crossbars_used"] <= natural.report["crossbars_used"]
    assert any(k.startswith("xbar_rows/") for k in sorted_.arrays)
    t = sorted_.report["adc"]["total"]
    assert t["chosen"]["conversions"] <= t["b2"]["conversions"] < t["b1"]["conversions"]


def test_a_misrouted_row_is_caught(small):
    """The bit-identity check has teeth: swapping two gathered rows of one crossbar changes outputs,
    although the file is well formed."""
    model, natural, sorted_ = _pair("conv_net", 0.5, "s2", small)
    x = {"x": uniform(model, 3, seed=6)}
    want = cimc.run(natural, x).outputs
    key = next(k for k in sorted(sorted_.arrays) if k.startswith("xbar_rows/"))
    cells = sorted_.arrays["xbar/" + key.split("/")[1]]
    i, j = next((i, j) for i in range(len(cells)) for j in range(i + 1, len(cells))
                if not np.array_equal(cells[i], cells[j]))
    rows = sorted_.arrays[key].copy()
    rows[[i, j]] = rows[[j, i]]
    tampered = cimc.Program.from_bytes(dataclasses.replace(sorted_, arrays={**sorted_.arrays, key: rows}).to_bytes())
    assert not _same(cimc.run(tampered, x).outputs, want)
    assert not _same(cimc.run(tampered, x, level="crossbar").outputs, want)


@pytest.mark.parametrize("edit,match", [
    (lambda r: np.concatenate([r[:-1], r[:1]]), "malformed xbar_rows"),     # a row twice
    (lambda r: r + 10_000, "malformed xbar_rows"),                            # outside K
    (lambda r: r[:-1], "malformed xbar_rows"),                                # too short
])
def test_malformed_gather_refused_at_load(small, edit, match):
    _, _, sorted_ = _pair("conv_net", 0.5, "s2", small)
    key = next(k for k in sorted(sorted_.arrays) if k.startswith("xbar_rows/") and sorted_.arrays[k].size > 1)
    arrays = {**sorted_.arrays, key: edit(sorted_.arrays[key])}
    data = dataclasses.replace(sorted_, arrays=arrays).to_bytes()
    with pytest.raises(ProgramError, match=match):
        cimc.Program.from_bytes(data)


def test_orphan_gather_refused(small):
    _, _, sorted_ = _pair("conv_net", 0.5, "s2", small)
    arrays = {**sorted_.arrays, "xbar_rows/999": np.arange(3, dtype=np.int32)}
    with pytest.raises(ProgramError, match="belongs to no crossbar"):
        cimc.Program.from_bytes(dataclasses.replace(sorted_, arrays=arrays).to_bytes())


# -- ADC accounting: analytic = measured ------------------------------------------------------

@pytest.mark.parametrize("builder,scheme,target", [
    ("residual_net", None, "small"), ("residual_net", "auto", "small"), ("grouped_conv_net", "s3", "narrow"),
    ("wide_conv_net", "s1", "per_group"), ("transpose_net", "s2", "small"), ("grouped_conv_net", "auto", "per_group")])
@pytest.mark.parametrize("energy_model", ["walden", "floor", "sar"])
def test_report_agrees_with_runtime(builder, scheme, target, energy_model, small, narrow):
    base = {"small": small, "narrow": narrow, "per_group": PER_GROUP}[target]
    data = base.to_dict()
    data["adc"]["energy_model"] = energy_model
    data["name"] = f"{base.name}-{energy_model}"
    target = target_from_dict(data, data["name"])
    model, _ = prune_model(getattr(models, builder)(), 0.6)
    program = compile_model(model, target, sws=scheme or False)
    adc = program.report["adc"]
    assert adc["energy_model"] == energy_model
    x = {"x": uniform(model, 2, seed=7)}
    for level in ("ideal", "crossbar"):
        s = cimc.run(program, x, level=level).stats
        assert s["adc_conversions"] == adc["total"]["chosen"]["conversions"]
        assert s["adc_energy_pj"] == pytest.approx(adc["total"]["chosen"]["energy_pj"], rel=1e-9)
    assert adc["total"]["chosen"]["crossbars"] == program.report["crossbars_used"]
    for layer in adc["layers"]:
        assert layer["chosen"]["conversions"] <= layer["b1"]["conversions"]
        assert layer["b2"]["conversions"] <= layer["b1"]["conversions"]
        if scheme is None:
            assert layer["scheme"] == "natural" and layer["chosen"] == layer["b2"]
        else:
            assert layer["chosen"] == layer["candidates"][layer["scheme"]]
            if scheme == "auto":        # the cheapest candidate in energy was kept
                assert layer["chosen"]["energy_pj"] == min(c["energy_pj"] for c in layer["candidates"].values())


def test_b1_is_every_column_at_the_worst_case(small):
    model, natural, _ = _pair("mlp", 0.0, "s2", small)
    adc = natural.report["adc"]
    assert adc["b1_bits"] == 8                       # 64 rows of 2-bit cells, 1-bit DAC: 192 -> 8 bits
    for layer in adc["layers"]:
        cols = sum(x["cols"][1] - x["cols"][0] for x in natural.crossbars if x["layer"] == layer["name"])
        assert layer["b1"]["conversions"] == layer["reads"] * cols * small.columns_per_weight
        assert layer["b1"]["conversions_by_bits"] == {"8": layer["b1"]["conversions"]}


def test_digital_target_has_no_conversions():
    model = models.conv_net()
    program = compile_model(model, "sram", sws=True)
    adc = program.report["adc"]
    assert adc["energy_model"] is None and adc["total"]["chosen"]["conversions"] == 0
    x = {"x": uniform(model, 2, seed=1)}
    assert _same(cimc.run(program, x).outputs, cimc.run(compile_model(model, "sram"), x).outputs)


# -- properties of the layouts ----------------------------------------------------------------

def _sparse_matrix(draw, k: int, n: int) -> np.ndarray:
    seed = draw(st.integers(0, 2 ** 31))
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]))
    rng = np.random.default_rng(seed)
    w = np.clip(np.rint(rng.laplace(0, 25, (k, n))), -127, 127).astype(np.int32)
    w[rng.random((k, n)) < sparsity] = 0
    return w


@st.composite
def layouts(draw):
    group = draw(st.sampled_from([1, 1, 2, 3, 8]))
    k = draw(st.integers(1, 300))
    n_g = draw(st.integers(1, 40))
    rows = draw(st.sampled_from([8, 16, 64, 128]))
    cols = draw(st.sampled_from([16, 30, 64, 128]))
    cell_bits = draw(st.sampled_from([1, 2, 4]))
    scheme = draw(st.sampled_from(["s1", "s2", "s3"]))
    target = _target(routing="per_group" if scheme == "s1" else "shared", rows=rows, cols=cols,
                     cell_bits=cell_bits)
    return _sparse_matrix(draw, k, n_g * group), group, target, scheme


@given(layouts())
def test_every_nonzero_weight_mapped_exactly_once(layout):
    w, group, target, scheme = layout
    n_g = w.shape[1] // group
    blocks = sws.scheme_blocks(w, group, target, scheme)
    seen = np.zeros(w.shape, dtype=np.int64)
    per_xbar: dict[int, list] = {}
    for b in blocks:
        r, c = row_indices(b), col_indices(b)
        assert len(r) == b.rows[1] - b.rows[0] <= target.crossbar.rows
        assert len(c) == b.cols[1] - b.cols[0] <= target.outputs_per_crossbar
        assert np.all((b.group * n_g <= c) & (c < (b.group + 1) * n_g))      # never mixes groups
        seen[np.ix_(r, c)] += 1
        per_xbar.setdefault(b.local, []).append(b)
    assert np.all(seen[w != 0] == 1) and seen.max() <= 1
    assert sorted(per_xbar) == list(range(len(per_xbar)))
    for members in per_xbar.values():
        # Within the crossbar's bounds; outputs never overlap; with shared routing the wordlines of
        # different blocks do not overlap either (each reads its own inputs only per group).
        outs = np.zeros(target.outputs_per_crossbar, dtype=np.int64)
        lines = np.zeros(target.crossbar.rows, dtype=np.int64)
        for b in members:
            h, width = b.rows[1] - b.rows[0], b.cols[1] - b.cols[0]
            assert b.offset[0] + h <= target.crossbar.rows and b.offset[1] + width <= target.outputs_per_crossbar
            outs[b.offset[1]:b.offset[1] + width] += 1
            lines[b.offset[0]:b.offset[0] + h] += 1
        assert outs.max() <= 1 and (scheme == "s1" or lines.max() <= 1)


@given(layouts())
def test_rows_sorted_by_their_key(layout):
    w, group, target, scheme = layout
    for b in sws.scheme_blocks(w, group, target, scheme):
        key = np.abs(w[np.ix_(row_indices(b), col_indices(b))]).max(axis=1)
        assert np.all(np.diff(key) >= 0)
        if np.any(w):
            assert key.min() > 0                  # rows zero for every output of the block are dropped


@given(layouts())
def test_zero_columns_cost_nothing_and_analytic_equals_per_crossbar(layout):
    w, group, target, scheme = layout
    blocks = sws.scheme_blocks(w, group, target, scheme)
    conversions, energy = 0, 0.0
    for b in blocks:
        xc = xb.xbar_cells(w[np.ix_(row_indices(b), col_indices(b))], target)
        zero = ~xc.cells.any(axis=2)                               # (polarity, slice, col) all-zero
        assert np.all(xc.lossless[zero] == 0) and np.all(xc.lossless[~zero] > 0)
        c, e = xb.adc_cost(xc, target.adc)
        assert c == int((~zero).sum())
        conversions, energy = conversions + c, energy + e
    cost = adc_energy.read_cost(w, blocks, target)
    assert cost.conversions == conversions and cost.energy_pj(target.adc) == pytest.approx(energy, rel=1e-12)


def test_s3_groups_outputs_that_share_rows():
    """Outputs 0, 2, 4 use rows 0..9, outputs 1, 3, 5 rows 10..19: S3 puts each kind on its own
    crossbar (3 outputs per crossbar), S2 (natural order) mixes them, and its 20 rows need two
    16-row crossbars per column block."""
    data = preset_dict("small")
    data["crossbar"].update(rows=16, cols=24)            # 24 columns / 8 per weight = 3 outputs
    target = target_from_dict(data, "t")
    w = np.zeros((20, 6), dtype=np.int32)
    w[:10, 0::2] = 100
    w[10:, 1::2] = 100
    s3 = sws.scheme_blocks(w, 1, target, "s3")
    assert sorted(sorted(col_indices(b).tolist()) for b in s3) == [[0, 2, 4], [1, 3, 5]]
    assert all(len(row_indices(b)) == 10 for b in s3)
    s2 = sws.scheme_blocks(w, 1, target, "s2")
    assert sum(len(row_indices(b)) for b in s2) == 40
    c3, c2 = adc_energy.read_cost(w, s3, target), adc_energy.read_cost(w, s2, target)
    assert c3.conversions < c2.conversions and c3.crossbars == 2 < c2.crossbars == 4


def test_cut_aligns_sections_at_the_large_end():
    assert sws.cut(300, 128) == [(0, 44), (44, 172), (172, 300)]
    assert sws.cut(256, 128) == [(0, 128), (128, 256)] and sws.cut(0, 128) == []


def test_all_zero_layer_keeps_one_block(small):
    blocks = sws.scheme_blocks(np.zeros((30, 5), dtype=np.int32), 1, small, "s2")
    assert len(blocks) == 1 and len(row_indices(blocks[0])) == 1


# -- target and options -----------------------------------------------------------------------

def test_s1_refused_on_shared_routing_with_what_to_change(small):
    with pytest.raises(TargetError, match=r'input_routing = "per_group"'):
        compile_model(models.mlp(), small, sws="s1")
    with pytest.raises(CimcError, match="unknown SWS scheme"):
        compile_model(models.mlp(), small, sws="s9")


def test_input_routing_is_validated():
    data = preset_dict("small")
    data["crossbar"]["input_routing"] = "crossbar"
    with pytest.raises(TargetError, match="crossbar.input_routing.*shared, per_group"):
        target_from_dict(data, "bad")
    assert target_from_dict(preset_dict("small"), "ok").crossbar.input_routing == "shared"


def test_sws_without_crossbar_operators_is_a_user_error(tmp_path, capsys):
    model = models.single_op("Relu", [[1, 4]], input_names=["x"])
    onnx.save(model, tmp_path / "relu.onnx")
    assert main(["compile", str(tmp_path / "relu.onnx"), "-t", "small", "-o", str(tmp_path / "r.cimp"),
                 "--sws"]) == 2
    err = capsys.readouterr().err
    assert "cimc: error: SWS" in err and "has none" in err
    assert not (tmp_path / "r.cimp").exists()


def test_cli_sws_report_and_summary(tmp_path, capsys):
    model, _ = prune_model(models.conv_net(), 0.8)
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=uniform(model, 16, seed=1))
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "small", "-o", str(tmp_path / "m.cimp"),
                 "--calibration", str(tmp_path / "calib.npz"), "--sws", "--report-json",
                 str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "SWS:" in out and "than B2" in out and "than B1" in out and "walden model" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["adc"]["energy_model"] == "walden" and report["pass_seconds"]["sws"] >= 0
    assert set(report["adc"]["total"]) == {"chosen", "b1", "b2"}
    assert all(layer["sws"] in sws.SCHEMES for layer in report["layers"])
    assert main(["inspect", str(tmp_path / "m.cimp")]) == 0
    assert "gathers" in capsys.readouterr().out
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "small", "-o", str(tmp_path / "n.cimp"),
                 "--calibration", str(tmp_path / "calib.npz"), "--sws", "s1"]) == 2
    assert 'input_routing = "per_group"' in capsys.readouterr().err


# -- pruning ----------------------------------------------------------------------------------

@given(st.integers(1, 400), st.sampled_from([0.0, 0.3, 0.5, 0.9, 0.999]), st.integers(0, 1000))
def test_prune_array_keeps_the_largest(size, sparsity, seed):
    w = np.random.default_rng(seed).standard_normal(size).astype(np.float32)
    p = prune_array(w, sparsity)
    zeros = int(round(sparsity * size))
    assert np.count_nonzero(p == 0) == zeros
    kept = p != 0
    assert np.array_equal(p[kept], w[kept])
    if 0 < zeros < size:
        assert np.abs(w[~kept]).max() <= np.abs(w[kept]).min()


def test_prune_model_per_layer():
    model = models.grouped_conv_net()
    pruned, done = prune_model(model, 0.75)
    assert len(done) == 3                          # three Conv weights, biases untouched
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for p in done:
        assert p.zeros_after == round(0.75 * p.size) == np.count_nonzero(inits[p.name] == 0)
    assert np.count_nonzero(inits["B0"] == 0) == 0


def test_cli_prune(tmp_path, capsys):
    onnx.save(models.mlp(), tmp_path / "m.onnx")
    assert main(["prune", str(tmp_path / "m.onnx"), "--sparsity", "0.9", "-o", str(tmp_path / "p.onnx")]) == 0
    assert "90 % sparsity" in capsys.readouterr().out
    w = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "p.onnx")).graph.initializer]
    assert any(np.mean(a == 0) == pytest.approx(0.9, abs=0.01) for a in w if a.ndim == 2)
    for bad in ("1", "-0.1", "1.5", "nan"):
        assert main(["prune", str(tmp_path / "m.onnx"), "--sparsity", bad, "-o", str(tmp_path / "q.onnx")]) == 2
        assert "sparsity must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists() and not no_leftovers(tmp_path)
    onnx.save(models.single_op("Relu", [[1, 4]]), tmp_path / "relu.onnx")
    assert main(["prune", str(tmp_path / "relu.onnx"), "--sparsity", "0.5", "-o", str(tmp_path / "q.onnx")]) == 2
    assert "no float weight" in capsys.readouterr().err


# -- corpus models ----------------------------------------------------------------------------

def _lossless_isaac():
    data = preset_dict("isaac")
    data["adc"]["bits"] = 9                     # 128 rows of 2-bit cells, 1-bit DAC: 9 bits is lossless
    data["name"] = "isaac-lossless"
    return target_from_dict(data, data["name"])


def _cifar(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)[:, None]


@pytest.mark.parametrize("name,sparsity", [("mnist-8/model.onnx", 0.7), ("mlperf_tiny_resnet8_cifar10.onnx", 0.5),
                                           ("mlperf_tiny_vww_mobilenetv1_96.onnx", 0.9)])
def test_corpus_models_bit_identical(name, sparsity):
    corpus = corpus_root()
    model, _ = prune_model(onnx.load(str(corpus / "models" / name)), sparsity)
    if name.startswith("mnist"):
        data = np.load(corpus / "data" / "mnist_test.npz")["x"][:6, None, None].astype(np.float32)
        calib = np.load(corpus / "data" / "mnist_train_5k.npz")["x"][:64, None, None].astype(np.float32)
    else:
        calib = _cifar(np.load(corpus / "data" / "cifar10_train_1k.npz")["x"][:32])
        data = _cifar(np.load(corpus / "data" / "cifar10_test.npz")["x"][:4])
        if "vww" in name:                       # 96x96 inputs: CIFAR images repeated 3x3
            calib, data = (np.tile(a, (1, 1, 1, 3, 3)) / 255.0 for a in (calib[:8], data[:2]))
    feed = model.graph.input[0].name
    target = _lossless_isaac()
    natural = cimc.compile(model, target, calibration={feed: calib})
    sorted_ = cimc.compile(model, target, calibration={feed: calib}, sws=True)
    want = cimc.run(natural, {feed: data}).outputs
    assert _same(cimc.run(sorted_, {feed: data}).outputs, want)
    hardware = cimc.run(sorted_, {feed: data}, level="crossbar")
    assert hardware.stats["clipped_fraction"] == 0 and _same(hardware.outputs, want)
    assert hardware.stats["adc_conversions"] == sorted_.report["adc"]["total"]["chosen"]["conversions"]
    assert sorted_.report["crossbars_used"] <= natural.report["crossbars_used"]


def test_benchmark_measurement_on_a_small_model():
    """The benchmark's own measurement (benchmarks/sws.py) on a generated model: every SWS program
    identical to the natural one, and the rows ordered as their definitions require."""
    from corpus import load_benchmark
    bench = load_benchmark("sws")
    model = models.mlp()
    x = uniform(model, 20, seed=3)
    rows, seconds = bench.measure([bench.Net("mlp", model, "x", x[:16], x[16:])], 0.7, 1)
    assert set(rows) == set(bench.ROWS) and seconds >= 0
    assert all(p.identical for p in rows.values() if p.identical is not None)
    t = bench.chip(1)
    e = {r: bench.energy_pj(p.by_bits, t, "floor") for r, p in rows.items()}
    assert e["B2"] <= e["B1"] and e["auto/floor"] <= min(e["S2"], e["S3"]) and rows["B1"].crossbars == rows["B2"].crossbars
    assert t.adc.bits == 8 and bench.chip(2).adc.bits == 9        # lossless for a full column
