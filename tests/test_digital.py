"""Programs for the digital SRAM targets: int8 (sram) and bfloat16 (sram-bf16), on approximate
multipliers (`cimc run --multiplier`).

The oracles below are written independently of the runtime: the int8 one quantizes each layer's
input with QuantizeLinear's arithmetic, convolves in NCHW with a plain loop over kernel offsets, and
takes every product from the multiplier's table, ``sign(x) sign(w) T[|x|, |w|]``, elementwise; the
bfloat16 one splits the operands into sign, significand and exponent and takes
``sign_x sign_w T[sig_x, sig_w] 2**(e_x + e_w)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import helper

import cimc
import models
from cimc.cli import main
from cimc.errors import CapacityError, CimcError, MultiplierError, ProgramError, TargetError
from cimc.runtime.multipliers import STANDARD_NAMES, bf16_round, bf16_split, get_multiplier
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


# -- the bfloat16 chip (sram-bf16) --------------------------------------------------------------

#: Normalized error (max |cimc - onnxruntime| / max |onnxruntime|) a bfloat16 chip stays within on the
#: generated models (at most 4 crossbar layers): bfloat16 keeps 8 significant bits, so rounding an
#: input or a weight errs by at most 2**-9 relatively, a product by about 2**-8, and sums with
#: cancellation over a few layers by a few times that (7.4e-3 at most measured, over 3 seeds each).
BF16_BOUND = 2.0 ** -6
BF16_MODELS = ["conv_net", "mlp", "residual_net", "grouped_conv_net", "conv1d_net", "conv_chain_net",
               "wide_conv_net", "transpose_net", "avgpool_net"]


def _narrow_bf16():
    """sram-bf16 with 16 tiles of 2 macros: layers span tiles, partial sums travel as float32."""
    data = preset_dict("sram-bf16")
    data["name"] = "narrow-bf16"
    data["chip"] = {"tiles": 16, "pes_per_tile": 2}
    return target_from_dict(data, "narrow-bf16")


@pytest.mark.parametrize("name", BF16_MODELS)
def test_bf16_programs_match_onnxruntime(name):
    model = getattr(models, name)()
    x_name, y_name = model.graph.input[0].name, model.graph.output[0].name
    x = uniform(model, 4, seed=3, name=x_name)
    ref = models.ort_batch(model, x_name, x)
    outputs = []
    for target in ("sram-bf16", _narrow_bf16()):
        with warnings.catch_warnings():
            warnings.simplefilter("error")                     # no calibration needed, none asked for
            program = cimc.compile(model, target)
        assert all(n["quant"]["w_type"] == "bfloat16" for n in program.nodes if "quant" in n)
        outputs.append(cimc.run(program, {x_name: x}).outputs[y_name])
        assert models.normalized_error(outputs[-1], ref) <= BF16_BOUND
    # partial sums added on other tiles only reorder float32 additions
    assert models.normalized_error(outputs[1], outputs[0]) <= 1e-5


def _bf16_conv_oracle(x: np.ndarray, w: np.ndarray, bias: np.ndarray, table: np.ndarray) -> np.ndarray:
    """A 3x3, pad-1 convolution whose products are ``sign_x sign_w T[sig_x, sig_w] 2**(e_x + e_w)`` of the
    bfloat16 operands, summed in float64, rounded to float32, plus the float32 bias (NCHW, kernel taps
    as the only loop; no runtime code)."""
    px, pw = bf16_split(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))), bf16_split(w)
    n, c, h, wd = x.shape
    acc = np.zeros((n, w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            sx, gx, ex = (a[:, None, :, i:i + h, j:j + wd] for a in (px.sign, px.significand, px.exponent))
            sw, gw, ew = (a[None, :, :, i, j, None, None] for a in (pw.sign, pw.significand, pw.exponent))
            acc += np.ldexp((sx * sw * table[gx, gw]).astype(np.float64), ex + ew).sum(axis=2)
    return acc.astype(np.float32) + bias[None, :, None, None]


@pytest.mark.parametrize("name", STANDARD_NAMES)
def test_bf16_conv_equals_the_elementwise_definition(name):
    """Operands in [1, 4) and [1, 2) (and zeros, either sign): every product is a multiple of 2**-14
    below 2**3, so 72 of them and the bias sum exactly in float32 in any order: bit for bit."""
    rng = np.random.default_rng(5)
    w = bf16_round(rng.uniform(1, 2, (16, 8, 3, 3)) * rng.choice([-1, 1, 0], (16, 8, 3, 3)))
    bias = (rng.integers(-2 ** 14, 2 ** 14, 16) * 2.0 ** -14).astype(np.float32)
    model = models.single_op("Conv", [(1, 8, 5, 5)], {1: w, 2: bias}, {"kernel_shape": [3, 3], "pads": [1] * 4},
                             input_names=["x"])
    x = bf16_round(rng.uniform(1, 4, (3, 1, 8, 5, 5)) * rng.choice([-1, 1, 0], (3, 1, 8, 5, 5)))
    program = cimc.compile(model, "sram-bf16")
    got = cimc.run(program, {"x": x}, multiplier=name).outputs["y"]
    want = _bf16_conv_oracle(x[:, 0], w, bias, get_multiplier(name).table())
    np.testing.assert_array_equal(got[:, 0], want)


def test_bf16_exact_multiplier_and_levels_are_the_plain_run(chain):
    model, _ = chain
    program = cimc.compile(model, "sram-bf16")
    x = {"x": uniform(model, 3, seed=5)}
    plain = cimc.run(program, x)
    assert _same(plain.outputs, cimc.run(program, x, multiplier="exact").outputs)
    assert _same(plain.outputs, cimc.run(program, x, level="crossbar", shortcut=False).outputs)
    drum = cimc.run(program, x, multiplier="drum6")                # factors: one BLAS product of mapped operands
    assert 0 < drum.stats["multiplier_error"] < 0.05


def test_bf16_stats_come_from_the_target(chain):
    model, _ = chain
    program = cimc.compile(model, "sram-bf16")
    target = program.target
    assert target.bf16 and target.input_chunks == 8 and target.columns_per_weight == 16
    x = {"x": uniform(model, 2, seed=1)}
    exact, approx = cimc.run(program, x), cimc.run(program, x, multiplier="pc4")
    assert exact.stats["mac_energy_pj"] == pytest.approx(exact.stats["macs"] * target.multipliers.mac_pj)
    assert target.multipliers.mac_pj == 0.1
    assert approx.stats["mac_energy_pj"] == pytest.approx(0.75 * exact.stats["mac_energy_pj"])
    assert approx.stats["multiplier_latency_cycles"] == pytest.approx(
        approx.stats["latency_cycles"] - 0.43 * approx.stats["mvm_cycles"])
    assert exact.stats["adc_conversions"] == 0
    assert exact.stats["crossbar_reads"] > 0 and 0 < approx.stats["multiplier_error"] < 0.1


def test_bf16_program_file_and_listing(chain, tmp_path, capsys):
    model, _ = chain
    program = cimc.compile(model, "sram-bf16")
    x = {"x": uniform(model, 2, seed=2)}
    program.save(tmp_path / "p.cimp")
    loaded = cimc.Program.load(tmp_path / "p.cimp")
    assert _same(cimc.run(loaded, x).outputs, cimc.run(program, x).outputs)
    assert all(v.dtype == np.int16 for k, v in loaded.arrays.items() if k.startswith("xbar/"))
    assert main(["inspect", str(tmp_path / "p.cimp"), "--program"]) == 0
    assert "bfloat16 weights and inputs, float32 sums" in capsys.readouterr().out


def test_bf16_program_contents_are_checked(chain):
    model, _ = chain
    program = cimc.compile(model, "sram-bf16")
    key = next(k for k in program.arrays if k.startswith("xbar/"))
    bad = cimc.Program.from_bytes(program.to_bytes())
    bad.arrays[key] = bad.arrays[key].astype(np.int32)
    with pytest.raises(ProgramError, match="finite bfloat16 words"):
        cimc.Program.from_bytes(bad.to_bytes())
    bad.arrays[key] = np.full_like(program.arrays[key], 0x7F80)           # +inf
    with pytest.raises(ProgramError, match="finite bfloat16 words"):
        cimc.Program.from_bytes(bad.to_bytes())
    mixed = cimc.Program.from_bytes(program.to_bytes())
    mixed.nodes[0]["quant"]["w_type"] = None
    with pytest.raises(ProgramError, match="is not a bfloat16 layer on target sram-bf16"):
        cimc.Program.from_bytes(mixed.to_bytes())


def test_bf16_infinity_and_nan_propagate():
    """A sum beyond float32 is inf, and the next layer multiplies it as IEEE arithmetic does (inf x 0 is
    NaN), with or without a multiplier (inputs themselves must be finite)."""
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["y"])]
    inits = {"W1": np.array([[6e35, 1], [0, 1]], np.float32), "W2": np.array([[1, 0], [1, 1]], np.float32)}
    model = models.make_model(nodes, [models.vinfo("x", [1, 2])], ["y"], inits)
    program = cimc.compile(model, "sram-bf16")
    x = np.array([[[4000, 1]], [[1, 1]]], np.float32)
    for mult in (None, "exact", "pc3", "drum4"):
        y = cimc.run(program, {"x": x}, multiplier=mult).outputs["y"]
        assert y[0, 0, 0] == np.inf and np.isnan(y[0, 0, 1]) and np.isfinite(y[1]).all(), (mult, y)


def test_bf16_weights_that_bfloat16_cannot_hold():
    w = np.full((2, 3), 3.4e38, np.float32)                      # rounds to infinity in bfloat16
    model = models.single_op("MatMul", [(1, 2)], {1: w}, input_names=["x"])
    with pytest.raises(cimc.errors.ModelError, match=r"round to infinity in bfloat16"):
        cimc.compile(model, "sram-bf16")
    model = models.single_op("MatMul", [(1, 2)], {1: np.full((2, 3), 1e37, np.float32)}, input_names=["x"])
    program = cimc.compile(model, "sram-bf16")
    x = {"x": np.ones((1, 2), np.float32)}
    assert cimc.run(program, x).outputs["y"][0, 0] == pytest.approx(2e37, rel=1e-2)
    with pytest.raises(MultiplierError, match=r"2\*\*119"):
        cimc.run(program, x, multiplier="pc3")


def test_bf16_refuses_models_quantized_to_integers():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("DequantizeLinear", ["w", "s", "zw"], ["wd"]),
             helper.make_node("MatMul", ["d", "wd"], ["y"])]
    model = models.make_model(nodes, [models.vinfo("x", [1, 4])], ["y"],
                              {"s": np.float32(0.1), "z": np.uint8(0), "zw": np.int8(0),
                               "w": np.ones((4, 3), np.int8)})
    with pytest.raises(CapacityError, match=r"quantized to integers by the model.*bfloat16"):
        cimc.compile(model, "sram-bf16")


@pytest.mark.parametrize("change, match", [
    ({"crossbar": {"kind": "analog"}}, r"needs a digital chip"),
    ({"precision": {"format": "bf16", "weight_bits": 8, "activation_bits": 8}}, r"set precision.weight_bits"),
    ({"precision": {"format": "fp8", "weight_bits": 16, "activation_bits": 16}}, r"precision.format.*int, bf16"),
])
def test_bf16_target_validation(change, match):
    data = preset_dict("sram-bf16")
    for section, values in change.items():
        data[section].update(values)
    if data["crossbar"]["kind"] == "analog":
        data.pop("multipliers")
        data["adc"] = preset_dict("small")["adc"]
    with pytest.raises(TargetError, match=match):
        target_from_dict(data, "bad")


def test_cli_runs_a_bf16_program_with_a_multiplier(chain, tmp_path, capsys):
    model, _ = chain
    cimc.compile(model, "sram-bf16").save(tmp_path / "bf16.cimp")
    np.savez(tmp_path / "inputs.npz", x=uniform(model, 2, seed=9))
    assert main(["run", str(tmp_path / "bf16.cimp"), "-i", str(tmp_path / "inputs.npz"), "--multiplier", "or"]) == 0
    assert "multiplier or: crossbar sums off by" in capsys.readouterr().out
