"""Design-space sweeps (``cimc sweep``, ``cimc.sweep``): spec validation, the local and Ray executors,
the results store across a kill, identical points run once, and the outputs (CSV, SVG, HTML).

Everything runs on a small generated model (tests/models.py), so these tests need no corpus.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest

import cimc
from cimc.errors import SweepError
from cimc.sweep import executors
from cimc.sweep.executors import LocalExecutor, Progress
from cimc.sweep.raster import read_png
from cimc.sweep.points import combinations, plan
from cimc.sweep.spec import load_spec
from cimc.sweep.table import TIMING_COLUMNS, pareto_mask

from conftest import compile_model, uniform
from models import conv_net, ort_batch
from test_cli import _fails

SPEC = """\
name = "tiny"
target = "small"

[[models]]
path = "model.onnx"
calibration = "calib.npz"
data = "test.npz"
samples = 48

[parameters]
"crossbar.size" = [12, 64]              # 12 columns cannot hold a weight of 1-bit cells, nor fc's crossbars
"adc.bits" = { range = [3, 5, 2] }
"crossbar.cell_bits" = [1, 2]
scheduler = ["layer", "clsa"]

[run]
level = "crossbar"
"""
POINTS, ACCURACY_RUNS = 16, 8                 # accuracy: once per combination other than the scheduler


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The model, its calibration data, labelled test data (onnxruntime's top-1) and the spec."""
    d = tmp_path_factory.mktemp("sweep")
    model = conv_net()
    onnx.save(model, d / "model.onnx")
    np.savez(d / "calib.npz", x=uniform(model, 32, seed=1))
    x = uniform(model, 48, seed=2)
    np.savez(d / "test.npz", x=x, labels=ort_batch(model, "x", x).reshape(len(x), -1).argmax(-1))
    (d / "spec.toml").write_text(SPEC)
    return d


@pytest.fixture(scope="module")
def local(folder, tmp_path_factory):
    return cimc.sweep(folder / "spec.toml", tmp_path_factory.mktemp("local") / "results", workers=2, progress=False)


def _csv_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


# -- the local executor and the outputs ------------------------------------------------------------

def test_local_sweep_records_every_point_and_failure(local):
    assert len(local) == POINTS
    rows = {(r["crossbar.size"], r["adc.bits"], r["crossbar.cell_bits"], r["scheduler"]): r for r in local}
    for (size, adc, cell, scheduler), r in rows.items():
        if size == 12:                         # failed, with the compiler's message, and the sweep went on
            assert r["status"] == "failed" and r["latency_cycles"] is None
            assert ("cannot hold one weight" if cell == 1 else "crossbars") in r["error"]
            continue
        assert r["status"] == "ok" and r["error"] is None, r
        assert r["latency_cycles"] > 0 and r["energy_pj"] > r["adc_energy_pj"] > 0 and r["crossbars"] > 0
        assert 0 < r["pe_utilization"] <= 1 and 0 <= r["accuracy"] <= 1 and r["samples"] == 48
        assert r["ort_accuracy"] == 1.0                    # the labels are onnxruntime's answers
        assert r["accuracy"] == r["ort_agreement"]
    for size, adc, cell in {(64, a, c) for a in (3, 5) for c in (1, 2)}:
        layer, clsa = rows[size, adc, cell, "layer"], rows[size, adc, cell, "clsa"]
        assert clsa["latency_cycles"] < layer["latency_cycles"]           # duplication pays
        assert clsa["accuracy"] == layer["accuracy"] and clsa["energy_pj"] == pytest.approx(layer["energy_pj"])
    assert rows[64, 3, 2, "layer"]["clipped_fraction"] > rows[64, 5, 2, "layer"]["clipped_fraction"]
    results = Path(local.folder)
    assert len(list((results / "points").glob("*.json"))) == POINTS
    assert len(list((results / "accuracy").glob("*.json"))) == ACCURACY_RUNS


def test_outputs_csv_plots_and_report_link_schedule_pages(local):
    results = Path(local.folder)
    rows = _csv_rows(results / "results.csv")
    assert list(rows[0]) == list(local.columns) and len(rows) == POINTS
    assert [r["status"] for r in rows] == [r["status"] for r in local]
    ok = [r for r in local if r["status"] == "ok"]
    plots = sorted((results / "plots").glob("*.svg"))
    assert len(plots) == 6                             # 4 objectives: 6 pairs, one model
    for plot in plots:
        svg = ET.parse(plot).getroot()
        links = [a.get("href") for a in svg.iter("{http://www.w3.org/2000/svg}a")]
        assert len(links) == len(ok)
        assert all((plot.parent / link).is_file() for link in links)
    pngs = sorted((results / "plots").glob("*.png"))
    assert [p.with_suffix(".svg") for p in pngs] == plots
    for png in pngs:
        pixels = read_png(png.read_bytes())
        assert pixels.shape == (760, 1080, 3)             # twice the SVG's 540 x 380
        front = (pixels == (0x1f, 0x77, 0xb4)).all(-1)     # the first model's colour: front dots, legend
        assert 100 < front.sum() and (pixels == 255).all(-1).mean() > 0.5
    report = (results / "report.html").read_text()
    for r in ok:
        assert f'href="{r["schedule"]}"' in report
        assert "<svg" in (results / r["schedule"]).read_text()
    assert report.count("<svg") == 6 and "failed" in report
    assert "<script" not in report and "http" not in report.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_rerun_runs_nothing_and_gives_the_same_table(folder, local):
    again = cimc.sweep(folder / "spec.toml", local.folder, workers=2, progress=False)
    assert "24 tasks (0 run now" in again.summary
    assert again.results() == local.results()


def test_identical_points_run_once(folder):
    """Two names for the same model file: the same points, so the same tasks; accuracy is shared
    by points that differ only in their scheduler."""
    spec = load_spec({"target": "small", "models": [
        {"name": "a", "path": "model.onnx", "data": "test.npz", "samples": 8},
        {"name": "b", "path": "model.onnx", "data": "test.npz", "samples": 8}],
        "parameters": {"scheduler": ["layer", "clsa"], "adc.bits": [4, 5]}}, folder)
    work = plan(spec)
    assert len(work.points) == 8
    assert len({p.key for p in work.points}) == 4 and len({p.accuracy for p in work.points}) == 2
    assert len(work.tasks) == 6 and work.tasks[0].kind == "accuracy"


def test_random_sampling_is_seeded_and_draws_distinct_points(folder):
    data = {"target": "small", "models": [{"path": "model.onnx"}], "sampling": "random", "points": 5, "seed": 3,
            "parameters": {"adc.bits": {"range": [3, 8]}, "crossbar.cell_bits": [1, 2], "scheduler": ["layer", "clsa"]}}
    drawn = combinations(load_spec(data, folder))
    assert len(drawn) == 5 and len({tuple(c.values()) for c in drawn}) == 5
    assert all(3 <= c["adc.bits"] <= 8 and c["crossbar.cell_bits"] in (1, 2) for c in drawn)
    assert combinations(load_spec(data, folder)) == drawn
    assert combinations(load_spec({**data, "seed": 4}, folder)) != drawn
    data["parameters"]["energy.cell_write_pj"] = {"log_uniform": [1, 100]}
    assert all(1 <= c["energy.cell_write_pj"] <= 100 for c in combinations(load_spec(data, folder)))
    with pytest.raises(SweepError, match="has no grid"):
        load_spec({k: v for k, v in data.items() if k not in ("sampling", "points")}, folder)
    data["parameters"]["adc.bits"] = {"uniform": [3, 8]}        # real numbers for an integer field
    with pytest.raises(SweepError, match=r"adc.bits: expected int, got float 3.0 \(the uniform distribution"):
        load_spec(data, folder)


def test_accuracy_does_not_depend_on_the_scheduler():
    """Why an accuracy run is shared by points that differ only in scheduling options: the same
    outputs, bit for bit, at the crossbar level with clipping ADCs and SWS."""
    from cimc.sweep.points import target_data
    from cimc.targets import target_from_dict
    target = target_from_dict(target_data("small", {"adc.bits": 3}))
    model = conv_net()
    x = {"x": uniform(model, 16, seed=5)}
    outputs = [cimc.run(compile_model(model, target, scheduler=s, sws=True), x, level="crossbar").outputs["prob"]
               for s in ("layer", "clsa", "cpsat")]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_pareto_mask():
    values = np.array([[1, 5], [2, 2], [3, 3], [5, 1], [1, 5]], dtype=float)
    assert pareto_mask(values, ["min", "min"]).tolist() == [True, True, False, True, True]
    assert pareto_mask(values, ["min", "max"]).tolist() == [True, False, False, False, True]
    assert pareto_mask(values, ["max", "max"]).tolist() == [True, False, True, True, True]
    # the same energy summed in another order (layer and clsa schedules of one mapping) is a tie
    noisy = np.array([[220211, 1851366.6399999964], [220548, 1851366.639999998], [220600, 1851366.7]])
    assert pareto_mask(noisy, ["max", "min"]).tolist() == [False, True, True]
    same_latency = noisy[:2] * [0, 1] + [220211, 0]
    assert pareto_mask(same_latency, ["min", "min"]).tolist() == [True, True]


def test_progress_line_shows_counts_failures_and_eta():
    out = io.StringIO()
    bar = Progress(4, 1, out, show=True)
    bar.update({"error": None})
    bar.update({"error": "boom"})
    bar.close()
    last = out.getvalue().split("\r")[-1]
    assert "3/4 tasks (1 already done), 1 failed" in last and "ETA" in last
    quiet = io.StringIO()
    Progress(4, 0, quiet).update({"error": None})           # not a terminal: nothing
    assert quiet.getvalue() == ""


def test_eta_weighs_the_remaining_tasks_by_their_kind_and_model():
    """Two accuracy runs of 10 s and four points of 1 s left; one of each done in 11 s on one
    worker: 13 s to go (1 x 10 + 3 x 1), not 4 tasks x 5.5 s."""
    from types import SimpleNamespace
    todo = [SimpleNamespace(kind="accuracy", model="m")] * 2 + [SimpleNamespace(kind="points", model="m")] * 4
    bar = Progress(6, 0, io.StringIO(), show=False, todo=todo)
    bar.update({"error": None, "kind": "accuracy", "model": "m", "seconds": 10.0})
    bar.update({"error": None, "kind": "points", "model": "m", "seconds": 1.0})
    bar.began = time.monotonic() - 11.0
    assert bar.eta() == pytest.approx(13.0, rel=0.02)
    bar.began = time.monotonic() - 5.5                     # two workers: task time done twice as fast
    assert bar.eta() == pytest.approx(6.5, rel=0.02)


def _sleep(task, data):
    """Stands in for run_task in the pool's worker processes: a point that takes a minute (its key
    is a file to create when it starts)."""
    Path(task.key).touch()
    time.sleep(60)
    return {"key": task.key, "error": None}


def test_interrupted_pool_stops_its_workers_at_once(monkeypatch, tmp_path):
    """Ctrl-C while workers are busy with long points: the running tasks are ended at once (their
    records would not be stored anyway), so the command exits now, not when they finish."""
    import multiprocessing
    import threading
    from types import SimpleNamespace
    monkeypatch.setattr(executors, "run_task", _sleep)
    tasks = [SimpleNamespace(key=str(tmp_path / f"started{i}"), model="m") for i in range(4)]
    main_thread, stop = threading.main_thread().ident, threading.Event()

    def interrupt():                        # a real SIGINT, as Ctrl-C sends, once both workers are busy
        while len(list(tmp_path.glob("started*"))) < 2 and not stop.wait(0.05):
            pass
        if not stop.is_set():
            signal.pthread_kill(main_thread, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            list(LocalExecutor(2).run(tasks, {"m": None}))
    finally:
        stop.set()
    interrupted = time.monotonic()
    while multiprocessing.active_children() and time.monotonic() - interrupted < 10:
        time.sleep(0.1)
    assert not multiprocessing.active_children()


def test_parquet_when_pyarrow_is_installed(local):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed: results.parquet is optional")
    table = pq.read_table(Path(local.folder) / "results.parquet")
    assert table.num_rows == POINTS and table.column_names == list(local.columns)


# -- kill and resume --------------------------------------------------------------------------------

def _records(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for kind in ("points", "accuracy")
            for p in (results / kind).glob("*.json")}


def test_killed_sweep_resumes_without_recomputing_or_losing_a_point(folder, local, tmp_path):
    """SIGKILL the whole process group of a running ``cimc sweep`` once some tasks have finished;
    the rerun runs only the rest, every finished record is kept byte for byte (its pid and finish
    time included: nothing was recomputed), and the table equals an uninterrupted run's."""
    results = tmp_path / "results"
    command = [sys.executable, "-m", "cimc", "sweep", str(folder / "spec.toml"), "-o", str(results), "--workers", "1"]
    sweep = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while sweep.poll() is None and time.monotonic() < deadline:
        if (results / "points").is_dir() and len(_records(results)) >= 5:
            os.killpg(sweep.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    sweep.wait()
    assert sweep.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    before = _records(results)
    assert 5 <= len(before) < POINTS + ACCURACY_RUNS
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({POINTS + ACCURACY_RUNS - len(before)} run now on the local executor, {len(before)} already done)" \
        in rerun.stdout
    assert "sweep:" not in rerun.stderr                 # no progress line off a terminal
    after = _records(results)
    assert len(after) == POINTS + ACCURACY_RUNS
    assert {k: after[k] for k in before} == before
    assert not [p for p in results.rglob(".*.tmp")]
    resumed = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in _csv_rows(results / "results.csv")]
    uninterrupted = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                     for r in _csv_rows(Path(local.folder) / "results.csv")]
    assert resumed == uninterrupted


# -- Ray ----------------------------------------------------------------------------------------------

def test_ray_executor_gives_the_local_table(folder, local, tmp_path):
    """A smaller sweep of the same points on a local Ray instance: the rows of the points both ran
    are equal (timing aside; the point index is the position in each sweep)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'cimc[ray]'): the ray executor is untested")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace('[12, 64]', '[64]').replace('{ range = [3, 5, 2] }', '[3]'))
    for name in ("model.onnx", "calib.npz", "test.npz"):
        (tmp_path / name).symlink_to(folder / name)
    on_ray = cimc.sweep(spec, tmp_path / "ray", executor="ray", workers=2, progress=False)
    assert "4 points, 6 tasks (6 run now on the ray executor" in on_ray.summary
    by_key = {r["key"]: r for r in local.results()}
    for row in on_ray.results():
        assert row == {**by_key[row["key"]], "point": row["point"]}


# -- bad input: one clear line, exit status 2, nothing written ---------------------------------------

BAD_SPECS = {
    "unknown parameter": ('"adc.bits" =', '"adc.bitz" =', "unknown parameter 'adc.bitz'; target fields:"),
    "empty list": ('"adc.bits" = { range = [3, 5, 2] }', '"adc.bits" = []', "parameters.adc.bits: empty list"),
    "empty range": ('range = [3, 5, 2]', 'range = [9, 4]', "parameters.adc.bits.range: empty range [9, 4]"),
    "value out of range": ('"adc.bits" = { range = [3, 5, 2] }', '"adc.bits" = [40]', "adc.bits: 40 is outside"),
    "missing model": ('path = "model.onnx"', 'path = "missing.onnx"', "models[0].path: no such file"),
    "unknown corpus model": ('path = "model.onnx"\ncalibration = "calib.npz"\ndata = "test.npz"',
                             'corpus = "mnist-9"', "unknown corpus model 'mnist-9'"),
    "malformed TOML": ('target = "small"', 'target = "small', "is not valid TOML"),
    "unknown scheduler": ('["layer", "clsa"]', '["layer", "fast"]', "parameters.scheduler: 'fast' is not one of"),
    "unknown option": ('[run]\n', '[run]\nspeed = 2\n', "run.speed: unknown run option"),
    "unknown key": ('name = "tiny"', 'nmae = "tiny"', "unknown key 'nmae'"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_spec_is_refused_before_any_point_runs(folder, tmp_path, capsys, case):
    old, new, message = BAD_SPECS[case]
    text = SPEC.replace(old, new)
    assert text != SPEC
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    for name in ("model.onnx", "calib.npz", "test.npz"):
        (tmp_path / name).symlink_to(folder / name)
    line = _fails(capsys, ["sweep", spec, "-o", tmp_path / "results"], tmp_path)
    assert message in line, line


def test_corpus_model_without_the_corpus(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CIMC_CORPUS", str(tmp_path / "nowhere"))
    spec = tmp_path / "spec.toml"
    spec.write_text('target = "small"\n[[models]]\ncorpus = "mnist-8"\nsamples = 10\n[parameters]\n"adc.bits" = [4]\n')
    line = _fails(capsys, ["sweep", spec, "-o", tmp_path / "results"], tmp_path)
    assert "models[0]: model 'mnist-8': the shared test corpus is not available" in line


def test_unreachable_ray_address(folder, tmp_path, capsys):
    began = time.monotonic()
    line = _fails(capsys, ["sweep", folder / "spec.toml", "-o", tmp_path / "results", "--executor", "ray",
                           "--address", "ray://127.0.0.1:1"], tmp_path)
    if importlib.util.find_spec("ray") is None:
        assert "pip install 'cimc[ray]'" in line
    else:
        assert "cannot reach the Ray cluster at ray://127.0.0.1:1: connection refused" in line
    assert time.monotonic() - began < 15


def test_ray_not_installed(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # import ray raises ImportError
    line = _fails(capsys, ["sweep", folder / "spec.toml", "-o", tmp_path / "results", "--executor", "ray"], tmp_path)
    assert "the ray executor needs Ray, which is not installed: pip install 'cimc[ray]'" in line


def test_workers_with_a_ray_cluster_address(folder, tmp_path, capsys):
    line = _fails(capsys, ["sweep", folder / "spec.toml", "-o", tmp_path / "results", "--executor", "ray",
                           "--workers", "2", "--address", "ray://127.0.0.1:1"], tmp_path)
    assert "--workers sets the CPUs of a Ray instance started here" in line


def test_address_needs_the_ray_executor(folder, tmp_path, capsys):
    line = _fails(capsys, ["sweep", folder / "spec.toml", "-o", tmp_path / "results", "--address", "ray://h:1"],
                  tmp_path)
    assert "--address names a Ray cluster; use it with --executor ray" in line


def test_a_script_without_a_main_guard_is_told_so(folder, tmp_path):
    """Pool workers are spawned and import the script that started them: a script calling
    cimc.sweep at top level makes every worker fail, and the message must say what to add."""
    import subprocess
    import sys
    script = tmp_path / "unguarded.py"
    script.write_text("import cimc\n"
                      f"cimc.sweep({str(folder / 'spec.toml')!r}, {str(tmp_path / 'out')!r}, workers=2)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr
