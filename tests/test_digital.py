"""Programs for the digital SRAM target run on approximate multipliers (`cimc run --multiplier`).

The oracle below is written independently of the runtime: it quantizes each layer's input
with QuantizeLinear's arithmetic, convolves in NCHW with a plain loop over kernel offsets, and
takes every product from the multiplier's table, ``sign(x) sign(w) T[|x|, |w|]``, elementwise.
"""

from __future__ import annotations

import numpy as np
import pytest

import cimc
import models
from cimc.cli import main
from cimc.errors import CimcError, MultiplierError, TargetError
from cimc.runtime.multipliers import get_multiplier
from cimc.targets import load_target, target_from_dict
from conftest import compile_model, preset_dict, uniform


@pytest.fixture(scope="module")
def chain():
    """Three convolutions feeding each other (signed activations, stride, dilation, bias) on sram."""
    model = models.conv_chain_net(hw=6)
    return model, compile_model(model, "sram", calibration_samples=64)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _oracle(program, x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """conv_chain_net's output, every product ``sign(x) sign(w) T[|x|, |w|]`` (NCHW, no runtime code).

    ``x`` is (samples, 1, C, H, W): a sample axis before the model's batch of one."""
    x = x[:, 0]
    for node in program.nodes:
        q, a = node["quant"], node["attrs"]
        name = node["name"]
        w_scale = program.arrays[f"layer/{name}/w_scale"]
        (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["strides"], a["dilations"]
        xbar = next(program.arrays[f"xbar/{c['id']}"] for c in program.crossbars if c["layer"] == name)
        n_out, c_in = q["n"], q["k"] // (kh * kw)
        w = xbar.astype(np.int64).T.reshape(n_out, c_in, kh, kw)       # ONNX (N, C, kh, kw) order
        lo, hi = (-128, 127) if q["x_signed"] else (0, 255)
        codes = np.rint(x.astype(np.float32) / np.float32(q["x_scale"]))
        codes = np.clip(codes, lo - q["x_zero"], hi - q["x_zero"]).astype(np.int64)
        pt, pl, pb, pr = a["pads"][0], a["pads"][1], a["pads"][2], a["pads"][3]
        codes = np.pad(codes, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        ho = (codes.shape[2] - dh * (kh - 1) - 1) // sh + 1
        wo = (codes.shape[3] - dw * (kw - 1) - 1) // sw + 1
        acc = np.zeros((x.shape[0], n_out, ho, wo), dtype=np.int64)
        for u in range(kh):
            for v in range(kw):
                patch = codes[:, :, u * dh:u * dh + sh * (ho - 1) + 1:sh, v * dw:v * dw + sw * (wo - 1) + 1:sw]
                xs, ws = patch[:, None], w[None, :, :, u, v, None, None]      # (B, N, C, ho, wo)
                acc += (np.sign(xs) * np.sign(ws) * table[np.abs(xs), np.abs(ws)]).sum(axis=2)
        scale = (q["x_scale"] * w_scale.astype(np.float64)).astype(np.float32)
        x = acc.astype(np.float32) * scale[None, :, None, None]
        bias = program.arrays.get(f"layer/{name}/bias")
        if bias is not None:
            x = x + bias[None, :, None, None]
    return x[:, None]


def test_exact_multiplier_is_the_plain_run_bit_for_bit(chain):
    model, program = chain
    x = {"x": uniform(model, 3, seed=5)}
    plain, exact = cimc.run(program, x), cimc.run(program, x, multiplier="exact")
    assert _same(plain.outputs, exact.outputs)
    assert plain.stats["multiplier"] is None and exact.stats["multiplier"] == "exact"
    assert exact.stats["multiplier_error"] == 0.0
    assert exact.stats["mac_energy_pj"] == plain.stats["mac_energy_pj"] > 0
    assert exact.stats["multiplier_latency_cycles"] == exact.stats["latency_cycles"]


@pytest.mark.parametrize("name", ["exact", "or", "pc3", "mitchell", "drum4"])
def test_outputs_equal_the_elementwise_table_oracle(chain, name):
    model, program = chain
    x = uniform(model, 2, seed=7)
    got = cimc.run(program, {"x": x}, multiplier=name).outputs["y"]
    want = _oracle(program, x, get_multiplier(name).table())
    np.testing.assert_array_equal(got, want)


def test_or_never_increases_a_partial_product(tmp_path):
    table = get_multiplier("or").table()
    a = np.arange(256)
    assert (table <= a[:, None] * a[None, :]).all()
    # Nonnegative inputs and weights: every crossbar sum, hence every output, is at most the exact one.
    w = np.abs(models.rng_weights(np.random.default_rng(3), (8, 4, 3, 3)))
    model = models.single_op("Conv", [(1, 4, 6, 6)], {1: w}, {"kernel_shape": [3, 3]}, input_names=["x"])
    program = compile_model(model, "sram", calibration_samples=32)
    x = {"x": uniform(model, 4, seed=2)}
    exact, approx = cimc.run(program, x), cimc.run(program, x, multiplier="or")
    assert (approx.outputs["y"] <= exact.outputs["y"]).all()
    assert (approx.outputs["y"] < exact.outputs["y"]).any()
    s = approx.stats
    assert s["multiplier_bias"] == pytest.approx(-s["multiplier_error"]) and s["multiplier_error"] > 0


def test_stats_scale_by_the_target_ratios(chain):
    model, program = chain
    x = {"x": uniform(model, 2, seed=1)}
    exact, approx = cimc.run(program, x), cimc.run(program, x, multiplier="or")
    s, e = approx.stats, exact.stats
    macs = sum(n["quant"]["k"] * n["quant"]["n"] * int(np.prod(program.tensors[n["outputs"][0]][-2:]))
               for n in program.nodes)
    assert s["macs"] == e["macs"] == macs
    cost = program.target.multipliers
    assert s["multiplier_cycle_ratio"] == 0.57 and s["multiplier_energy_ratio"] == 0.75
    assert e["mac_energy_pj"] == pytest.approx(macs * cost.mac_pj)
    assert s["mac_energy_pj"] == pytest.approx(0.75 * e["mac_energy_pj"])
    assert s["energy_pj"] == pytest.approx(e["energy_pj"] - 0.25 * e["mac_energy_pj"])
    assert 0 < s["mvm_cycles"] <= s["latency_cycles"] == e["latency_cycles"]
    assert s["multiplier_latency_cycles"] == pytest.approx(s["latency_cycles"] - 0.43 * s["mvm_cycles"])
    # A multiplier the target gives no ratios for runs, with unknown costs.
    unlisted = cimc.run(program, x, multiplier="drum6").stats
    assert unlisted["multiplier_error"] > 0
    assert unlisted["mac_energy_pj"] is None and unlisted["energy_pj"] is None
    assert unlisted["multiplier_cycle_ratio"] is None and unlisted["multiplier_latency_cycles"] is None


def test_table_file_multiplier(chain, tmp_path):
    model, program = chain
    x = {"x": uniform(model, 2, seed=4)}
    path = tmp_path / "or.npy"
    np.save(path, get_multiplier("or").table())
    assert _same(cimc.run(program, x, multiplier_table=path).outputs,
                 cimc.run(program, x, multiplier="or").outputs)


# -- the target's [multipliers] table -----------------------------------------------------------

def test_sram_preset_has_daism_ratios():
    t = load_target("sram")
    assert t.multipliers.cost("or").cycles == 0.57 and t.multipliers.cost("or").energy == 0.75
    assert t.multipliers.cost("exact").cycles == 1.0 and t.multipliers.cost("mitchell") is None
    assert target_from_dict(t.to_dict(), "again") == t


@pytest.mark.parametrize("entry, match", [
    ({"mac_pj": 0.1, "or": {"cycles": 0.0, "energy": 0.7}}, r"multipliers\.or\.cycles: expected a ratio > 0"),
    ({"mac_pj": 0.1, "or": {"cycles": 0.5, "energy": -1}}, r"multipliers\.or\.energy: expected a ratio > 0"),
    ({"mac_pj": 0.1, "or": {"cycles": 0.5}}, r"multipliers\.or: expected \{ cycles"),
    ({"mac_pj": 0.1, "pc9": {"cycles": 0.5, "energy": 0.5}}, r"multipliers\.pc9: unknown multiplier.*known:"),
    ({"mac_pj": 0.1, "exact": {"cycles": 0.5, "energy": 1}}, r"multipliers\.exact: the exact multiplier"),
    ({"or": {"cycles": 0.5, "energy": 0.5}}, r"multipliers\.mac_pj is missing"),
    ({"mac_pj": "x"}, r"multipliers\.mac_pj: expected a number"),
    ("fast", r"expected a table \[multipliers\]"),
])
def test_bad_multiplier_tables(entry, match):
    data = preset_dict("sram")
    data["multipliers"] = entry
    with pytest.raises(TargetError, match=match):
        target_from_dict(data, "bad")


def test_multiplier_table_refused_on_analog_chip():
    data = preset_dict("small")
    data["multipliers"] = {"mac_pj": 0.1}
    with pytest.raises(TargetError, match=r"\[multipliers\] given for an analog chip"):
        target_from_dict(data, "bad")


# -- bad requests ------------------------------------------------------------------------------

def test_refusals_through_the_api(chain):
    model, program = chain
    x = {"x": uniform(model, 1, seed=1)}
    with pytest.raises(MultiplierError, match=r"unknown multiplier 'pc9'; known: exact, or"):
        cimc.run(program, x, multiplier="pc9")
    with pytest.raises(CimcError, match="emulated at the ideal level"):
        cimc.run(program, x, multiplier="or", level="crossbar")
    with pytest.raises(CimcError, match="arithmetic onnxruntime"):
        cimc.run(program, x, multiplier="or", arithmetic="onnxruntime")
    hp16 = compile_model(model, "hp16", calibration_samples=16)
    with pytest.raises(CimcError, match="is analog"):
        cimc.run(hp16, x, multiplier="or")


def test_sixteen_bit_digital_layers_are_refused():
    data = preset_dict("sram")
    data["name"] = "sram16"
    data["precision"] = {"weight_bits": 16, "activation_bits": 16}
    model = models.conv_net()
    program = compile_model(model, target_from_dict(data, "sram16"), calibration_samples=16)
    with pytest.raises(CimcError, match=r"16-bit activations.*8-bit magnitudes"):
        cimc.run(program, {"x": uniform(model, 1, seed=1)}, multiplier="or")


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, chain):
    model, program = chain
    d = tmp_path_factory.mktemp("digital")
    program.save(d / "sram.cimp")
    np.savez(d / "inputs.npz", x=uniform(model, 2, seed=9))
    return d


def _error(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cimc: error: ") and not out, err
    return lines[0]


def test_cli_runs_with_a_multiplier(cli_files, capsys, tmp_path):
    stats = tmp_path / "stats.json"
    assert main(["run", str(cli_files / "sram.cimp"), "-i", str(cli_files / "inputs.npz"),
                 "--multiplier", "pc3", "--stats-json", str(stats)]) == 0
    out = capsys.readouterr().out
    assert "multiplier pc3: crossbar sums off by" in out and "latency estimate" in out
    assert '"multiplier": "pc3"' in stats.read_text()


def test_cli_bad_multiplier_requests(cli_files, capsys, tmp_path):
    run = ["run", cli_files / "sram.cimp", "-i", cli_files / "inputs.npz"]
    line = _error(capsys, run + ["--multiplier", "bogus"])
    assert "unknown multiplier 'bogus'; known: exact, or, pc<k>" in line
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((16, 16), dtype=np.int64))
    assert "has shape (16, 16)" in _error(capsys, run + ["--multiplier-table", short])
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((256, 256), dtype=np.float32))
    assert "must hold integers" in _error(capsys, run + ["--multiplier", "table", "--multiplier-table", floats])
    assert "needs a table file" in _error(capsys, run + ["--multiplier", "table"])


def test_cli_multiplier_on_an_analog_target(tmp_path, capsys):
    model = models.conv_net()
    program = compile_model(model, "small", calibration_samples=16)
    program.save(tmp_path / "small.cimp")
    np.savez(tmp_path / "inputs.npz", x=uniform(model, 1, seed=1))
    line = _error(capsys, ["run", tmp_path / "small.cimp", "-i", tmp_path / "inputs.npz", "--multiplier", "or"])
    assert line == ("cimc: error: target small is analog: its crossbars add currents, there is no multiplier "
                    "to choose (--multiplier or); compile for a digital target such as sram")
