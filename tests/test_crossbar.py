"""The ``crossbar`` runtime level: bit slices, differential columns, bit-serial inputs, ADC clipping."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from onnx import helper

import cimc
from cimc.errors import TargetError
from cimc.runtime import crossbar as xb
from cimc.targets import preset_names, target_from_dict

import models
from conftest import compile_model, preset_dict, uniform
from models import make_model, vinfo
from corpus import corpus_root


# -- the mapping of one block, by hand ---------------------------------------------------------

W = np.array([[5, -3],
              [-7, 0],
              [2, 6]])


def test_slices_by_hand():
    """4-bit signed weights (3-bit magnitudes) on 2-bit cells: 2 slices, 4 columns per weight."""
    data = preset_dict("small")
    data["precision"]["weight_bits"] = 4
    target = target_from_dict(data, "t")
    assert target.weight_slices == 2 and target.columns_per_weight == 4
    cells = xb.slice_weights(W, 2, 2)
    assert cells.shape == (2, 2, 3, 2)                      # (polarity, slice, rows, cols)
    # positive magnitudes [[5,0],[0,0],[2,6]], negative [[0,3],[7,0],[0,0]]; slice s = bits 2s, 2s+1
    assert cells[0, 0].tolist() == [[1, 0], [0, 0], [2, 2]]
    assert cells[0, 1].tolist() == [[1, 0], [0, 0], [0, 1]]
    assert cells[1, 0].tolist() == [[0, 3], [3, 0], [0, 0]]
    assert cells[1, 1].tolist() == [[0, 0], [1, 0], [0, 0]]
    # Bitlines: output j at columns 4j..4j+3 = +slice0, +slice1, -slice0, -slice1.
    assert xb.physical_columns(cells).tolist() == [
        [1, 1, 0, 0, 0, 0, 3, 0],
        [0, 0, 3, 1, 0, 0, 0, 0],
        [2, 0, 0, 0, 2, 1, 0, 0]]
    # Lossless ADC bits with 1-bit inputs: ceil(log2(nonzero * 3 * 1 + 1)); column -slice1 of
    # output 1 is all zero: no ADC.
    bits = xb.lossless_bits(cells, cell_bits=2, dac_bits=1)
    assert bits.tolist() == [[[3, 2], [2, 2]],             # +: slice0 (out0, out1), slice1
                             [[2, 2], [2, 0]]]             # -: slice0, slice1
    two_bit_adc = dataclasses.replace(target, adc=dataclasses.replace(target.adc, bits=2))
    assert xb.xbar_cells(W.astype(np.int8), two_bit_adc).bits.max() == 2
    # 2-bit inputs: maxsum = nonzero * 3 * 3
    assert xb.lossless_bits(cells, 2, 2)[0, 0, 0] == 5     # 2 cells: 18 -> 5 bits
    # The cells represent the weights again.
    assert np.array_equal(xb.weighted(cells, np.ones((2, 2, 2), bool), 2), W)
    xc = xb.xbar_cells(W.astype(np.int8), target)
    assert np.array_equal(xc.cells, cells) and not xc.lossy.any()
    assert xb.adc_cost(xc, target.adc)[0] == 7              # 8 columns, one all zero


def test_slices_refuse_overflow():
    with pytest.raises(cimc.errors.ProgramError, match="does not fit"):
        xb.slice_weights(np.array([[8]]), 1, 3)
    assert xb.slices_for(np.array([[-128]]), 2, 4) == 4 and xb.slices_for(np.array([[-128]]), 1, 7) == 8


def _brute_force(u, cells, caps, cell_bits, dac_bits, x_bits):
    """Nested loops over chunks, polarities and slices: the definition, written out."""
    polarities, slices, rows, cols = cells.shape
    out = np.zeros((u.shape[0], cols), dtype=np.int64)
    clipped = 0
    for c in range(-(-x_bits // dac_bits)):
        bits = (u >> (dac_bits * c)) & ((1 << dac_bits) - 1)
        for p in range(polarities):
            for s in range(slices):
                col = bits.astype(np.int64) @ cells[p, s].astype(np.int64)
                clipped += int((col > caps[p, s]).sum())
                col = np.minimum(col, caps[p, s])
                out += (1 if p == 0 else -1) * (col << (cell_bits * s)) << (dac_bits * c)
    return out, clipped


@pytest.mark.parametrize("cell_bits,dac_bits,adc_bits", [(2, 1, 8), (2, 1, 5), (1, 2, 4), (3, 3, 6), (2, 1, 16)])
def test_simulate_matches_definition(cell_bits, dac_bits, adc_bits):
    rng = np.random.default_rng(cell_bits * 10 + dac_bits)
    rows, cols, x_bits = 40, 5, 8
    w = np.clip(np.rint(rng.laplace(0, 30, (rows, cols))), -127, 127).astype(np.int64)
    w[:, 0] = 127                                             # a column that must clip at low bits
    slices = -(-7 // cell_bits)
    cells = xb.slice_weights(w, cell_bits, slices)
    lossless = xb.lossless_bits(cells, cell_bits, dac_bits)
    cap_bits = np.minimum(lossless, adc_bits)
    data = xb.XbarCells(cells, lossless, cap_bits)
    u = rng.integers(0, 256, (33, rows))
    u[:3] = 255
    blk = xb.lossy_block(data, cap_bits > 0, cell_bits, np.arange(rows), np.arange(cols), cols, offset=0)
    got, clipped = xb.simulate(u.astype(np.int32), [blk], cols, x_bits, dac_bits, budget=4096)
    want, want_clipped = _brute_force(u, cells, (1 << cap_bits) - 1, cell_bits, dac_bits, x_bits)
    assert np.array_equal(got, want) and clipped == want_clipped
    if adc_bits >= lossless.max():
        assert clipped == 0 and np.array_equal(got, u @ w)
    elif adc_bits <= 5:
        assert clipped > 0


# -- lossless ADCs: bit-identical to the ideal level ---------------------------------------------

def _signed(model, count, seed):
    return {"x": (2 * uniform(model, count, seed) - 1).astype(np.float32)}


@pytest.mark.parametrize("builder", ["conv_net", "residual_net", "wide_conv_net", "mlp", "grouped_conv_net",
                                     "conv1d_net", "batch2_conv_net"])
@pytest.mark.parametrize("target", ["small", "narrow"])
def test_lossless_bit_identical(compiled, builder, target):
    c = compiled(builder, target)
    x = {"x": uniform(c.model, 5, seed=3)}
    ideal = cimc.run(c.program, x)
    for shortcut in (True, False):
        got = cimc.run(c.program, x, level="crossbar", shortcut=shortcut)
        for name in ideal.outputs:
            assert np.array_equal(got.outputs[name], ideal.outputs[name]), (name, shortcut)
        assert got.stats["clipped_fraction"] == 0.0 and got.stats["level"] == "crossbar"


def test_signed_inputs_bit_identical():
    """Signed DAC codes go through the offset-binary path; the offset comes back digitally."""
    model = models.residual_net()
    calib = _signed(model, 64, 0)
    program = cimc.compile(model, "small", calibration=calib)
    assert any(n["quant"]["x_signed"] for n in program.nodes if "quant" in n)
    x = _signed(model, 4, 1)
    ideal = cimc.run(program, x).outputs
    got = cimc.run(program, x, level="crossbar", shortcut=False).outputs
    assert all(np.array_equal(got[k], ideal[k]) for k in ideal)


def test_mnist_corpus_bit_identical():
    corpus = corpus_root()
    x = np.load(corpus / "data" / "mnist_test.npz")["x"][:20, None, None].astype(np.float32)
    calib = np.load(corpus / "data" / "mnist_train_5k.npz")["x"][:100, None, None].astype(np.float32)
    for name in ("mnist-8/model.onnx", "mnist-8_int8_qdq.onnx"):
        program = cimc.compile(corpus / "models" / name, "isaac", calibration={"Input3": calib})
        ideal = cimc.run(program, {"Input3": x}).outputs
        got = cimc.run(program, {"Input3": x}, level="crossbar", shortcut=False).outputs
        assert all(np.array_equal(got[k], ideal[k]) for k in ideal), name


# -- lossy ADCs --------------------------------------------------------------------------------

def _ones_matmul(k: int = 128, n: int = 4):
    return make_model([helper.make_node("MatMul", ["x", "W"], ["y"])], [vinfo("x", [1, k])], ["y"],
                      {"W": np.ones((k, n), np.float32)})


def test_isaac_adc_clips_full_column():
    """128 rows of weight 127 (cells 3,3,3,1) and all-ones inputs: every chunk's sum on slices 0-2
    is 128 * 3 = 384, which needs 9 bits; the 8-bit ADC outputs 255. Slice 3 (cells of 1) sums
    to 128 and fits."""
    model = _ones_matmul()
    program = cimc.compile(model, "isaac", calibration={"x": np.ones((4, 1, 128), np.float32)})
    x = {"x": np.ones((2, 1, 128), np.float32)}
    ideal = cimc.run(program, x)
    got = cimc.run(program, x, level="crossbar")
    assert np.array_equal(cimc.run(program, x, level="crossbar", shortcut=False).outputs["y"], got.outputs["y"])
    ratio = got.outputs["y"] / ideal.outputs["y"]
    assert np.allclose(ratio, (255 * (1 + 4 + 16) + 128 * 64) / (128 * 127), rtol=1e-6)
    s = got.stats
    assert s["adc_conversions"] == 8 * 4 * 4                 # chunks x outputs x nonzero columns
    assert s["clipped_fraction"] == pytest.approx(3 / 4)      # slices 0-2 clip on every chunk
    assert s["adc_energy_pj"] == pytest.approx(8 * 4 * 4 * program.target.adc.conversion_pj(8))
    assert ideal.stats["clipped_fraction"] == 0.0
    assert ideal.stats["adc_conversions"] == s["adc_conversions"]


def test_lossy_generated_models_clip():
    data = preset_dict("small")
    data["adc"]["bits"] = 4
    target = target_from_dict(data, "adc4")
    model = models.mlp()
    program = compile_model(model, target)
    x = {"x": uniform(model, 8, seed=2)}
    got = cimc.run(program, x, level="crossbar")
    assert 0 < got.stats["clipped_fraction"] < 1
    assert not np.array_equal(got.outputs["y"], cimc.run(program, x).outputs["y"])
    assert np.array_equal(cimc.run(program, x, level="crossbar", shortcut=False).outputs["y"], got.outputs["y"])


# -- statistics --------------------------------------------------------------------------------

def test_stats_keys_consistent(compiled):
    c = compiled("conv_net")
    p = c.program
    s = cimc.run(p, {"x": uniform(c.model, 2, seed=0)}, level="crossbar").stats
    for key in ("adc_conversions", "adc_energy_pj", "clipped_fraction", "crossbar_writes", "cell_utilization"):
        assert key in s
    assert s["crossbar_writes"] == p.report["cells_programmed"] > 0
    total = len(p.crossbars) * p.target.crossbar.rows * p.target.crossbar.cols
    assert s["cell_utilization"] == pytest.approx(s["crossbar_writes"] / total) and 0 < s["cell_utilization"] <= 1
    # Conversions: per output pixel and input chunk, every column with a nonzero cell.
    per_read = {x["id"]: xb.adc_cost(xb.xbar_cells(p.arrays[f"xbar/{x['id']}"], p.target), p.target.adc)
                for x in p.crossbars}
    pixels = {n["name"]: int(np.prod(p.tensors[n["outputs"][0]][2:])) for n in p.nodes if "quant" in n}
    chunks = p.target.input_chunks
    assert s["adc_conversions"] == sum(pixels[x["layer"]] * chunks * per_read[x["id"]][0] for x in p.crossbars)
    assert s["adc_energy_pj"] == pytest.approx(sum(pixels[x["layer"]] * chunks * per_read[x["id"]][1]
                                                   for x in p.crossbars))
    assert s["adc_conversions"] <= s["crossbar_reads"] * p.target.crossbar.cols


# -- targets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("section,key,value,match", [
    ("crossbar", "cell_bits", 8, "crossbar.cell_bits"),
    ("chip", "tiles", 0, "chip.tiles"),
    ("adc", "bits", 0, "adc.bits"),
    ("adc", "bits", 17, "adc.bits"),
    ("adc", "per_crossbar", 65, "adc.per_crossbar"),
    ("crossbar", "dac_bits", 9, "crossbar.dac_bits"),
])
def test_impossible_targets(section, key, value, match):
    data = preset_dict("small")
    data[section][key] = value
    with pytest.raises(TargetError, match=match):
        target_from_dict(data, "bad")


def test_digital_chip_has_no_adc():
    data = preset_dict("sram")
    assert data["crossbar"]["kind"] == "digital" and "adc" not in data
    data["adc"] = preset_dict("small")["adc"]
    with pytest.raises(TargetError, match=r"\[adc\] given for a digital chip"):
        target_from_dict(data, "bad")
    analog = preset_dict("small")
    del analog["adc"]
    with pytest.raises(TargetError, match=r"missing table \[adc\]"):
        target_from_dict(analog, "bad")
    analog = preset_dict("small")
    analog["crossbar"]["kind"] = "optical"
    with pytest.raises(TargetError, match="crossbar.kind.*analog, digital"):
        target_from_dict(analog, "bad")


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_compiles_and_runs_a_model_at_both_levels(preset):
    model = models.conv_net()
    calib = {"x": uniform(model, 32, seed=3)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        program = cimc.compile(model, preset, calibration=calib)
    x = uniform(model, 4, seed=4)
    ideal = cimc.run(program, {"x": x})
    hardware = cimc.run(program, {"x": x}, level="crossbar", shortcut=False)
    # the 8-bit presets' ADCs are lossless for this model's columns, so the hardware's
    # arithmetic gives the same bits
    np.testing.assert_array_equal(hardware.outputs["prob"], ideal.outputs["prob"])
    assert ideal.stats["latency_cycles"] == program.report["makespan_cycles"] > 0
    target = program.target
    if target.digital:
        assert ideal.stats["adc_conversions"] == 0 and ideal.stats["adc_energy_pj"] == 0.0
        # two's complement words, one bit per cell: 8 columns per weight
        assert target.columns_per_weight == target.precision.weight_bits
    else:
        assert ideal.stats["adc_conversions"] > 0


def test_unknown_level_names_crossbar():
    with pytest.raises(cimc.errors.CimcError, match="crossbar"):
        cimc.run(cimc.compile(_ones_matmul(8, 2), "small", calibration={"x": np.ones((2, 1, 8), np.float32)}),
                 {"x": np.ones((1, 8), np.float32)}, level="analog")


# -- the ADC settings a program carries ----------------------------------------------------------

def test_program_carries_each_columns_adc_resolution_and_the_runtime_uses_it(compiled):
    import copy
    program = compiled("conv_net").program
    for x in program.crossbars:
        stored = program.arrays[f"xbar_adc/{x['id']}"]
        derived = xb.xbar_cells(program.arrays[f"xbar/{x['id']}"], program.target).bits
        np.testing.assert_array_equal(stored[:, :derived.shape[1]], derived)
        assert stored.dtype == np.uint8 and not stored[:, derived.shape[1]:].any()
    # Setting the ADCs one bit lower than lossless makes sums clip: the runtime reads the setting.
    x = uniform(compiled("conv_net").model, 8, seed=2)
    lowered = copy.deepcopy(program)
    for x_ in lowered.crossbars:
        key = f"xbar_adc/{x_['id']}"
        lowered.arrays[key] = np.maximum(lowered.arrays[key].astype(np.int16) - 1, 0).astype(np.uint8)
    exact = cimc.run(program, {"x": x}, level="crossbar", shortcut=False)
    clipped = cimc.run(lowered, {"x": x}, level="crossbar", shortcut=False)
    assert exact.stats["clipped_fraction"] == 0 < clipped.stats["clipped_fraction"]
    assert clipped.stats["adc_energy_pj"] < exact.stats["adc_energy_pj"]
