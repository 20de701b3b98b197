"""The command line, run in-process through ``cimc.cli.main`` (and once as a real process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from cimc.cli import main

from conftest import no_leftovers, preset_dict, uniform
from models import conv_net, make_model, ort_batch, vinfo


def _toml(data: dict) -> str:
    """A minimal TOML writer for target dicts (tables of scalars)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)
    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.onnx, calib.npz, inputs.npz and a compiled model.cimp in a shared folder."""
    d = tmp_path_factory.mktemp("cli")
    model = conv_net()
    onnx.save(model, d / "model.onnx")
    np.savez(d / "calib.npz", x=uniform(model, 32, seed=1))
    np.savez(d / "inputs.npz", x=uniform(model, 6, seed=2))
    assert main(["compile", str(d / "model.onnx"), "--target", "small", "-o", str(d / "model.cimp"),
                 "--calibration", str(d / "calib.npz")]) == 0
    return d


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("cimc: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _fails(capsys, argv, folder: Path | None = None) -> str:
    """Run ``argv``; expect status 2, one error line, nothing on stdout, no file left in ``folder``."""
    before = set(folder.iterdir()) if folder is not None else set()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    line = _one_error_line(err)
    if folder is not None:
        assert set(folder.iterdir()) == before, sorted(p.name for p in set(folder.iterdir()) - before)
    return line


# -- the happy path -----------------------------------------------------------------------------

def test_compile_inspect_run_check(files, tmp_path, capsys):
    out = tmp_path / "m.cimp"
    report = tmp_path / "report.json"
    code = main(["compile", str(files / "model.onnx"), "--target", "small", "-o", str(out),
                 "--calibration", str(files / "calib.npz"), "--report-json", str(report)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""                                      # calibrated: no warning
    assert "compiled conv_net for small" in stdout and str(out) in stdout
    assert out.is_file() and zipfile.is_zipfile(out)

    r = json.loads(report.read_text())
    assert r["target"] == "small" and r["scheduler"] == "layer"
    assert r["crossbars_used"] == 5 and r["makespan_cycles"] > 0
    assert [(layer["name"], layer["crossbars"]) for layer in r["layers"]] == [("conv", 1), ("fc", 4)]
    assert sum(layer["crossbars"] for layer in r["layers"]) == r["crossbars_used"]
    assert {"frontend", "quantize", "mapping", "schedule", "codegen"} <= set(r["pass_seconds"])
    assert all(v >= 0 for v in r["pass_seconds"].values())

    assert main(["inspect", str(out), "--program"]) == 0
    listing, err = capsys.readouterr()
    assert err == ""
    assert "; target small" in listing and ".tile 0" in listing and "mvm" in listing and "writeback" in listing

    stats = tmp_path / "stats.json"
    outputs = tmp_path / "out.npz"
    code = main(["run", str(out), "--input", str(files / "inputs.npz"), "--check", str(files / "model.onnx"),
                 "--stats-json", str(stats), "--output", str(outputs)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "ran 6 inference(s)" in stdout
    assert "check against onnxruntime, output prob" in stdout and "top-1 agreement" in stdout
    s = json.loads(stats.read_text())
    assert s["latency_cycles"] == r["makespan_cycles"] > 0
    assert s["crossbars_used"] == 5
    assert 0 < s["pe_utilization"] <= 1
    assert s["check"]["prob"]["normalized_error"] < 3e-2
    assert s["check"]["prob"]["top1_agreement"] >= 0.8
    with np.load(outputs) as npz:
        got = npz["prob"]
    xs = np.load(files / "inputs.npz")["x"]
    ref = ort_batch(conv_net(), "x", xs)
    assert got.shape == ref.shape == (6, 1, 10)
    assert np.abs(got - ref).max() == pytest.approx(s["check"]["prob"]["max_abs_error"], rel=1e-6)
    assert no_leftovers(tmp_path) == ["m.cimp"]


def test_compile_without_calibration_warns(files, tmp_path, capsys):
    assert main(["compile", str(files / "model.onnx"), "-t", "small", "-o", str(tmp_path / "m.cimp")]) == 0
    _, err = capsys.readouterr()
    assert err.startswith("cimc: warning: no calibration data") and "--calibration" in err


def test_inspect_views(files, capsys):
    assert main(["inspect", str(files / "model.onnx")]) == 0
    text = capsys.readouterr().out
    assert "graph conv_net" in text and "Conv(%x" in text
    assert main(["inspect", str(files / "model.onnx"), "--format", "json"]) == 0
    assert [n["op"] for n in json.loads(capsys.readouterr().out)["nodes"]][0] == "Conv"
    assert main(["inspect", str(files / "model.onnx"), "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith('digraph "conv_net"')
    assert main(["inspect", str(files / "model.cimp"), "--schedule"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("schedule layer: makespan") and "conv" in text
    assert main(["inspect", str(files / "model.cimp"), "--schedule", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["scheduler"] == "layer"
    assert main(["inspect", str(files / "model.cimp"), "--ir"]) == 0
    assert "MaxPool" in capsys.readouterr().out
    assert main(["inspect", str(files / "model.cimp"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["manifest"]["format"] == "cimp" and len(data["crossbars"]) == 5


def test_inspect_schedule_of_a_model_is_an_error(files, capsys):
    line = _fails(capsys, ["inspect", files / "model.onnx", "--schedule"])
    assert ".cimp" in line


def test_targets(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "isaac" in names and "small" in names
    assert main(["targets", "small"]) == 0
    assert 'name = "small"' in capsys.readouterr().out
    line = _fails(capsys, ["targets", "nonesuch"])
    assert "isaac" in line


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    import cimc
    assert capsys.readouterr().out.strip() == f"cimc {cimc.__version__}"


def test_target_toml_file(files, tmp_path, capsys):
    data = preset_dict("small")
    data["name"] = "from_file"
    data["chip"]["tiles"] = 2
    target = tmp_path / "t.toml"
    target.write_text(_toml(data))
    out = tmp_path / "m.cimp"
    assert main(["compile", str(files / "model.onnx"), "-t", str(target), "-o", str(out),
                 "--calibration", str(files / "calib.npz")]) == 0
    assert "for from_file" in capsys.readouterr().out


def test_model_larger_than_the_chip_runs_with_allow_reprogramming(tmp_path, capsys):
    from models import mlp
    onnx.save(mlp(sizes=(64, 48, 48, 32)), tmp_path / "mlp.onnx")     # 16 crossbars on a chip of 8
    data = preset_dict("small")
    data["chip"] = {"tiles": 1, "pes_per_tile": 8}
    (tmp_path / "chip.toml").write_text(_toml(data))
    out = tmp_path / "mlp.cimp"
    args = ["compile", tmp_path / "mlp.onnx", "-t", tmp_path / "chip.toml", "-o", out]
    line = _fails(capsys, args, tmp_path)
    assert "needs 16 crossbars" in line and "has 8" in line and "--allow-reprogramming" in line
    assert main([str(a) for a in args] + ["--allow-reprogramming"]) == 0
    assert "in 3 segments" in capsys.readouterr().out and out.exists()


# -- user errors: status 2, one line, nothing left behind ------------------------------------------

def test_not_an_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    line = _fails(capsys, ["compile", bad, "-t", "small", "-o", tmp_path / "out.cimp"], tmp_path)
    assert "bad.onnx" in line and "not an ONNX model" in line


def test_unsupported_operator(tmp_path, capsys):
    model = make_model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                        helper.make_node("Cos", ["r"], ["y"], name="the_cos")], [vinfo("x", [1, 4])], ["y"])
    onnx.save(model, tmp_path / "cos.onnx")
    line = _fails(capsys, ["compile", tmp_path / "cos.onnx", "-t", "small", "-o", tmp_path / "out.cimp"],
                  tmp_path)
    assert "the_cos" in line and "Cos" in line and "Supported operators" in line


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["crossbar"].pop("rows"), "crossbar.rows is missing"),
    (lambda d: d.pop("timing"), r"missing table \[timing\]"),
    (lambda d: d["crossbar"].update(rows="64"), "crossbar.rows: expected int"),
    (lambda d: d["chip"].update(tiles=1.5), "chip.tiles: expected int"),
    (lambda d: d["chip"].update(tiles=0), "chip.tiles"),
    (lambda d: d["adc"].update(energy_model="magic"), "adc.energy_model"),
    (lambda d: d["chip"].update(cores=4), "unknown key 'cores'"),
    (lambda d: d.update(flux_capacitor={"x": 1}), "unknown key 'flux_capacitor'"),
    (lambda d: d["crossbar"].update(cols=4), "crossbar.cols"),
])
def test_bad_target_toml(files, tmp_path, capsys, edit, match):
    data = preset_dict("small")
    edit(data)
    target = tmp_path / "t.toml"
    target.write_text(_toml(data))
    line = _fails(capsys, ["compile", files / "model.onnx", "-t", target, "-o", tmp_path / "out.cimp"],
                  tmp_path)
    assert "t.toml" in line
    assert re.search(match, line), line


def test_target_not_toml_and_not_found(files, tmp_path, capsys):
    target = tmp_path / "t.toml"
    target.write_text("[chip\ntiles = ")
    line = _fails(capsys, ["compile", files / "model.onnx", "-t", target, "-o", tmp_path / "o.cimp"], tmp_path)
    assert "not valid TOML" in line
    line = _fails(capsys, ["compile", files / "model.onnx", "-t", "nonesuch", "-o", tmp_path / "o.cimp"],
                  tmp_path)
    assert "nonesuch" in line and "small" in line


def test_model_too_large(tmp_path, capsys):
    w = np.random.default_rng(0).standard_normal((64, 300)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="huge")],
                       [vinfo("x", [1, 64])], ["y"], {"W": w})
    onnx.save(model, tmp_path / "huge.onnx")
    line = _fails(capsys, ["compile", tmp_path / "huge.onnx", "-t", "small", "-o", tmp_path / "o.cimp"],
                  tmp_path)
    assert "38" in line and "32" in line


@pytest.mark.parametrize("arrays,match", [
    ({"y": np.zeros((4, 1, 3, 8, 8), np.float32)}, "'x'"),
    ({"x": np.zeros((4, 1, 3, 8, 7), np.float32)}, "shape"),
])
def test_bad_calibration(files, tmp_path, capsys, arrays, match):
    np.savez(tmp_path / "c.npz", **arrays)
    line = _fails(capsys, ["compile", files / "model.onnx", "-t", "small", "-o", tmp_path / "o.cimp",
                           "--calibration", tmp_path / "c.npz"], tmp_path)
    assert match in line


@pytest.mark.parametrize("arrays,match", [
    ({"input": np.zeros((1, 3, 8, 8), np.float32)}, "'x'"),
    ({"x": np.zeros((1, 3, 9, 8), np.float32)}, "shape"),
    ({"x": np.full((1, 3, 8, 8), np.nan, np.float32)}, "NaN"),
])
def test_bad_run_inputs(files, tmp_path, capsys, arrays, match):
    np.savez(tmp_path / "in.npz", **arrays)
    line = _fails(capsys, ["run", files / "model.cimp", "--input", tmp_path / "in.npz",
                           "--output", tmp_path / "out.npz", "--stats-json", tmp_path / "s.json"], tmp_path)
    assert match in line


def test_input_not_an_npz(files, tmp_path, capsys):
    (tmp_path / "in.npz").write_bytes(b"nope")
    line = _fails(capsys, ["run", files / "model.cimp", "--input", tmp_path / "in.npz"], tmp_path)
    assert "in.npz" in line
    line = _fails(capsys, ["run", files / "model.cimp", "--input", tmp_path / "missing.npz"], tmp_path)
    assert "does not exist" in line


def test_truncated_program(files, tmp_path, capsys):
    data = (files / "model.cimp").read_bytes()
    (tmp_path / "t.cimp").write_bytes(data[:len(data) // 2])
    line = _fails(capsys, ["run", tmp_path / "t.cimp", "--input", files / "inputs.npz",
                           "--output", tmp_path / "out.npz"], tmp_path)
    assert "t.cimp" in line
    _fails(capsys, ["inspect", tmp_path / "t.cimp", "--program"], tmp_path)


def test_edited_program(files, tmp_path, capsys):
    data = bytearray((files / "model.cimp").read_bytes())
    data[len(data) // 2] ^= 0x5A
    (tmp_path / "e.cimp").write_bytes(bytes(data))
    line = _fails(capsys, ["run", tmp_path / "e.cimp", "--input", files / "inputs.npz",
                           "--stats-json", tmp_path / "s.json", "--output", tmp_path / "o.npz"], tmp_path)
    assert "e.cimp" in line


def test_missing_program(files, tmp_path, capsys):
    line = _fails(capsys, ["run", tmp_path / "none.cimp", "--input", files / "inputs.npz"], tmp_path)
    assert "does not exist" in line


def test_compile_output_folder_missing(files, tmp_path, capsys):
    line = _fails(capsys, ["compile", files / "model.onnx", "-t", "small", "-o", tmp_path / "no" / "m.cimp",
                           "--calibration", files / "calib.npz", "--report-json", tmp_path / "r.json"], tmp_path)
    assert "does not exist" in line
    line = _fails(capsys, ["compile", files / "model.onnx", "-t", "small", "-o", tmp_path / "m.cimp",
                           "--calibration", files / "calib.npz", "--report-json", tmp_path / "no" / "r.json"],
                  tmp_path)
    assert "does not exist" in line


def test_run_output_folder_missing(files, tmp_path, capsys):
    """A failed run leaves nothing behind: not the outputs, and not the statistics either."""
    line = _fails(capsys, ["run", files / "model.cimp", "--input", files / "inputs.npz",
                           "--stats-json", tmp_path / "stats.json", "--output", tmp_path / "no" / "out.npz"],
                  tmp_path)
    assert "does not exist" in line


def test_run_stats_folder_missing(files, tmp_path, capsys):
    line = _fails(capsys, ["run", files / "model.cimp", "--input", files / "inputs.npz",
                           "--stats-json", tmp_path / "no" / "stats.json", "--output", tmp_path / "out.npz"],
                  tmp_path)
    assert "does not exist" in line


def test_check_against_a_broken_model(files, tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    line = _fails(capsys, ["run", files / "model.cimp", "--input", files / "inputs.npz",
                           "--check", tmp_path / "bad.onnx", "--stats-json", tmp_path / "s.json"], tmp_path)
    assert "bad.onnx" in line


def test_real_process_exit_status(files, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "cimc.cli", "compile", str(bad), "--target", "small",
                           "-o", str(tmp_path / "out.cimp")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr)
    assert proc.stdout == ""
    assert not no_leftovers(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "cimc.cli", "targets"], capture_output=True, text=True,
                        env=env, timeout=120)
    assert ok.returncode == 0 and "small" in ok.stdout


@pytest.mark.parametrize("which", ["compile -o", "run --stats-json", "run --output"])
def test_output_path_is_an_existing_folder(files, tmp_path, capsys, which):
    """A folder where a file should go is a user error (status 2, one line), and nothing is left."""
    folder = tmp_path / "taken"
    folder.mkdir()
    if which == "compile -o":
        argv = ["compile", files / "model.onnx", "-t", "small", "-o", folder, "--calibration", files / "calib.npz",
                "--report-json", tmp_path / "report.json"]
    elif which == "run --stats-json":
        argv = ["run", files / "model.cimp", "--input", files / "inputs.npz", "--stats-json", folder]
    else:
        argv = ["run", files / "model.cimp", "--input", files / "inputs.npz", "--output", folder,
                "--stats-json", tmp_path / "stats.json"]
    _fails(capsys, argv, tmp_path)
    assert list(folder.iterdir()) == []


def _dynamic_model_file(folder: Path) -> Path:
    model = conv_net()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for out in model.graph.output:
        out.type.tensor_type.shape.dim[0].dim_param = "batch"
    path = folder / "dyn.onnx"
    onnx.save(model, path)
    return path


def test_dynamic_input_needs_input_shape(files, tmp_path, capsys):
    path = _dynamic_model_file(tmp_path)
    line = _fails(capsys, ["compile", path, "-t", "small", "-o", tmp_path / "d.cimp"], tmp_path)
    assert "--input-shape x=1x3x8x8" in line
    assert main(["compile", str(path), "-t", "small", "-o", str(tmp_path / "d.cimp"), "--input-shape", "x=1x3x8x8",
                 "--calibration", str(files / "calib.npz")]) == 0
    capsys.readouterr()
    assert main(["inspect", str(path), "--input-shape", "x=1x3x8x8"]) == 0
    assert "float32[1x3x8x8]" in capsys.readouterr().out
    line = _fails(capsys, ["compile", path, "-t", "small", "-o", tmp_path / "e.cimp", "--input-shape", "x=1x3"],
                  tmp_path)
    assert "rank" in line
