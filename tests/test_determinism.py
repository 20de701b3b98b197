"""Deterministic compiles: the same model and options give byte-identical ``.cimp`` files, in one
process (also for fuzzed graphs, on every preset) and across processes with different hash seeds.

test_program.py already checks one model compiled twice in one process through the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest

import cimc
from cimc.cli import main

import fuzz_graphs as fg
from conftest import uniform
from models import residual_net

PRESETS = ("small", "isaac", "hp16", "clsa", "sram")


@pytest.mark.parametrize("seed", [3, 11, 24, 40])
def test_fuzzed_graphs_compile_to_the_same_bytes_on_every_preset(seed):
    case = fg.generate(fg.RngDraw(seed))
    for target in PRESETS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = cimc.compile(case.model, target, calibration=case.calibration).to_bytes()
            second = cimc.compile(case.model, target, calibration=case.calibration).to_bytes()
        assert first == second, (seed, target)


@pytest.mark.parametrize("scheduler", ["clsa", "cpsat"])
def test_cross_layer_schedules_compile_to_the_same_bytes(scheduler):
    """Duplication, clsa and a cpsat that ends within its budget are deterministic."""
    model = residual_net()
    calib = {"x": uniform(model, 16, seed=5)}
    programs = [cimc.compile(model, "small", calibration=calib, scheduler=scheduler) for _ in range(2)]
    assert programs[0].report.get("solver_limit") in (None, "work")
    assert programs[0].to_bytes() == programs[1].to_bytes()


def test_cpsat_stopped_by_its_work_budget_gives_the_same_bytes_on_a_loaded_machine():
    """A cpsat compile that ends on its budget, not on optimality, is reproducible: the budget is
    counted work (CP-SAT's deterministic time, copy counts tried), so a second compile with both
    cores busy with other processes gives the same program."""
    model = residual_net(hw=32, ch=4)
    calib = {"x": uniform(model, 8, seed=5)}

    def build() -> cimc.Program:
        return cimc.compile(model, "small", calibration=calib, scheduler="cpsat", solver_work=1.0)
    quiet = build()
    # CP-SAT improved on the hint and was stopped by its budget: a result the search path decides
    assert quiet.report["solver_status"] == "feasible" and quiet.report["solver_limit"] == "work"
    assert quiet.report["makespan_cycles"] < quiet.report["comparison"]["clsa"]
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        loaded = build()
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert loaded.to_bytes() == quiet.to_bytes()


def test_cli_compiles_twice_to_the_same_file(tmp_path, capsys):
    model = residual_net()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=uniform(model, 32, seed=5))
    for name in ("a.cimp", "b.cimp"):
        assert main(["compile", str(tmp_path / "m.onnx"), "-t", "isaac", "-o", str(tmp_path / name),
                     "--calibration", str(tmp_path / "c.npz")]) == 0
    capsys.readouterr()
    assert (tmp_path / "a.cimp").read_bytes() == (tmp_path / "b.cimp").read_bytes()


_COMPILE = """
import sys, warnings
sys.path.insert(0, sys.argv[1])
import fuzz_graphs as fg
import cimc
warnings.simplefilter("ignore")
for seed in (5, 17):
    case = fg.generate(fg.RngDraw(seed))
    cimc.compile(case.model, "small", calibration=case.calibration).save(f"{sys.argv[2]}/fuzz{seed}.cimp")
"""


def test_same_bytes_across_processes_and_hash_seeds(tmp_path):
    """Three processes with different PYTHONHASHSEED values (set and dict iteration orders differ)
    compile the same models: one through the command line, two fuzzed graphs through the API."""
    model = residual_net(seed=2)
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=uniform(model, 16, seed=6))
    tests = os.path.dirname(os.path.abspath(__file__))
    outputs = []
    for hash_seed in ("0", "1", "4242"):
        out = tmp_path / f"seed{hash_seed}"
        out.mkdir()
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONWARNINGS="ignore")
        cli = subprocess.run([sys.executable, "-m", "cimc", "compile", str(tmp_path / "m.onnx"), "-t", "clsa",
                              "-o", str(out / "m.cimp"), "--calibration", str(tmp_path / "c.npz")],
                             capture_output=True, text=True, env=env, timeout=300)
        assert cli.returncode == 0, cli.stderr
        api = subprocess.run([sys.executable, "-c", _COMPILE, tests, str(out)], capture_output=True, text=True,
                             env=env, timeout=300)
        assert api.returncode == 0, api.stderr
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert sorted(outputs[0]) == ["fuzz17.cimp", "fuzz5.cimp", "m.cimp"]
    for other in outputs[1:]:
        for name, data in outputs[0].items():
            assert other[name] == data, name
