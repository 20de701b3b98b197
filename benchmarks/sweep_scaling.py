"""Sweep executors: how a sweep scales from one local worker to two, and what a Ray task costs.

    .venv/bin/python benchmarks/sweep_scaling.py                     # both measurements, recorded
    .venv/bin/python benchmarks/sweep_scaling.py --points 20 --no-record

**Scaling.** A 100-point sweep (``cimc.sweep`` on a generated 3-convolution CNN, 48x48 RGB input,
on the ``isaac`` preset with the ``clsa`` scheduler: 5 crossbar sizes x 5 ADC resolutions x 2 cell
widths x SWS off/on, no accuracy runs; a point takes about 0.8 s: compile, schedule, one
inference for the energy figures, the schedule page) runs on the local process pool with one
worker, then with two, each into a fresh results folder; the wall time of the whole
``cimc.sweep`` call (pool start-up and outputs included) is compared. Target: two workers at
least 1.8x faster than one on a 2-core machine. The two tables must be equal (timing aside).

**Ray overhead.** The same model at 8x8 makes tiny points (about 0.1 s; 100 of them, drawn at
random over ``energy.vector_op_pj``, which changes each point's key and nothing of its cost). They
run one after the other in this process (``run_task``, after a warm-up), then through the Ray
executor on a local Ray instance with one CPU (after a warm-up batch that starts the worker and
imports cimc); overhead per point = (Ray wall time - in-process time) / points. Target: under
50 ms. Ray's start-up (``ray.init``, the first worker) is reported apart: it is paid once per
sweep, not per point.

The machine's load average is recorded before each measurement: other jobs on a 2-core machine
distort both figures. Appends a section to ``benchmarks/results/sweep_scaling.md``
(``--results`` for another file, ``--no-record`` to print only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import ROOT, git_commit  # noqa: E402

import cimc  # noqa: E402
from cimc.sweep.evaluate import run_task, set_threads  # noqa: E402
from cimc.sweep.points import plan  # noqa: E402
from cimc.sweep.spec import load_spec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "sweep_scaling.md"
SPEEDUP_TARGET = 1.8
OVERHEAD_TARGET_MS = 50.0
#: Input height and width of the scaling sweep's model: points of about a second, the low end
#: of real sweeps (seconds to minutes a point), where fixed costs weigh the most.
SCALING_HW = 48
HEADER = """# Sweep executors: scaling and Ray overhead

Written by `benchmarks/sweep_scaling.py` (see its docstring for the method). Scaling: wall time of
a 100-point `cimc.sweep` on the local process pool with 1 and 2 workers (target: 2 workers >= 1.8x
faster on 2 cores). Ray overhead: (wall time of 100 tiny points through the Ray executor on a local
1-CPU Ray instance - the same points run in-process) / 100 (target: < 50 ms per point). Load
averages (1 min) are taken just before each measurement; a loaded machine distorts both.
"""


def cnn(hw: int, seed: int = 0) -> onnx.ModelProto:
    """Conv 3->16, Conv 16->32 stride 2, Conv 32->32, global average pool, MatMul 32->10 (ReLUs)."""
    rng = np.random.default_rng(seed)
    shapes = {"W0": (16, 3, 3, 3), "W1": (32, 16, 3, 3), "W2": (32, 32, 3, 3), "G": (32, 10)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32), n)
             for n, s in shapes.items()]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "W0"], ["c0"], **conv), helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "W1"], ["c1"], strides=[2, 2], **conv),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], **conv), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "G"], ["y"])]
    graph = helper.make_graph(nodes, f"cnn{hw}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_model(folder: Path, hw: int) -> None:
    onnx.save(cnn(hw), folder / f"cnn{hw}.onnx")
    np.savez(folder / f"calib{hw}.npz", x=np.random.default_rng(1).random((16, 1, 3, hw, hw)).astype(np.float32))


def model_entry(hw: int) -> dict:
    return {"name": f"cnn{hw}", "path": f"cnn{hw}.onnx", "calibration": f"calib{hw}.npz"}


def scaling_spec(points: int) -> dict:
    spec = {"target": "isaac", "models": [model_entry(SCALING_HW)], "compile": {"scheduler": "clsa"},
            "parameters": {"crossbar.size": [32, 64, 128, 256, 512], "adc.bits": {"range": [4, 8]},
                           "crossbar.cell_bits": [1, 2], "sws": [False, True]}}
    if points < 100:
        spec.update(sampling="random", points=points)
    return spec


def tiny_spec(points: int, seed: int) -> dict:
    return {"target": "isaac", "models": [model_entry(8)], "sampling": "random", "points": points, "seed": seed,
            "parameters": {"energy.vector_op_pj": {"log_uniform": [0.1, 10.0]}}}


def load() -> float:
    return os.getloadavg()[0]


def timed_sweep(spec: dict, folder: Path, out: Path, **kw) -> "tuple[float, cimc.sweep.SweepTable, float]":
    before = load()
    began = time.perf_counter()
    table = cimc.sweep(load_spec(spec, folder), out, progress=False, **kw)
    return time.perf_counter() - began, table, before


def scaling(folder: Path, points: int) -> dict:
    spec = scaling_spec(points)
    one, t1, load1 = timed_sweep(spec, folder, folder / "one", workers=1)
    two, t2, load2 = timed_sweep(spec, folder, folder / "two", workers=2)
    assert t1.results() == t2.results(), "1 and 2 workers gave different tables"
    failed = len(t1.failed)
    def mean_point(t) -> float:
        return float(np.mean([r["point_seconds"] for r in t if r["point_seconds"] is not None]))

    return {"points": len(t1), "failed": failed, "one": one, "two": two, "speedup": one / two,
            "load_one": load1, "load_two": load2, "mean_point": mean_point(t1), "mean_point_two": mean_point(t2)}


def ray_overhead(folder: Path, points: int) -> dict | None:
    try:
        from cimc.sweep.executors import RayExecutor
        import ray  # noqa: F401
    except ImportError:
        print("sweep_scaling.py: Ray is not installed (pip install 'cimc[ray]'): no Ray figures", file=sys.stderr)
        return None
    work = plan(load_spec(tiny_spec(points, seed=0), folder))
    warm = plan(load_spec(tiny_spec(4, seed=1), folder))
    tasks, warm_tasks = list(work.tasks), list(warm.tasks)
    set_threads(1)
    for task in warm_tasks:
        run_task(task, work.models[task.model])
    load_serial = load()
    began = time.perf_counter()
    records = [run_task(task, work.models[task.model]) for task in tasks]
    serial = time.perf_counter() - began
    assert not [r for r in records if r["error"]], [r["error"] for r in records if r["error"]][:1]
    load_ray = load()
    began = time.perf_counter()
    executor = RayExecutor(1, None)
    init = time.perf_counter() - began
    try:
        began = time.perf_counter()
        list(executor.run(warm_tasks, warm.models))
        first = time.perf_counter() - began
        began = time.perf_counter()
        on_ray = list(executor.run(tasks, work.models))
        wall = time.perf_counter() - began
    finally:
        executor.close()
    assert len(on_ray) == len(tasks) and not [r for r in on_ray if r["error"]]
    return {"points": len(tasks), "serial": serial, "ray": wall, "overhead_ms": 1000 * (wall - serial) / len(tasks),
            "init": init, "warmup": first, "load_serial": load_serial, "load_ray": load_ray}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def report(scale: dict, ray: dict | None) -> str:
    met = "met" if scale["speedup"] >= SPEEDUP_TARGET else "NOT met"
    lines = [f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {git_commit()}",
             f"\nMachine: {machine()}.\n",
             "| measurement | figure | target |", "|---|---|---|",
             f"| {scale['points']}-point sweep, 1 local worker | {scale['one']:.1f} s (load {scale['load_one']:.2f}; "
             f"mean point {scale['mean_point']:.2f} s, {scale['failed']} failed) | |",
             f"| same, 2 local workers | {scale['two']:.1f} s (load {scale['load_two']:.2f}; "
             f"mean point {scale['mean_point_two']:.2f} s) | |",
             f"| speedup, 2 workers over 1 | **{scale['speedup']:.2f}x** | >= {SPEEDUP_TARGET}x: {met} |"]
    if ray is None:
        lines.append("| Ray overhead per point | not measured: Ray is not installed | < 50 ms |")
    else:
        met = "met" if ray["overhead_ms"] < OVERHEAD_TARGET_MS else "NOT met"
        lines += [f"| {ray['points']} tiny points in-process | {ray['serial']:.2f} s (load {ray['load_serial']:.2f}) | |",
                  f"| same points, Ray executor, local 1-CPU instance | {ray['ray']:.2f} s (load {ray['load_ray']:.2f}) | |",
                  f"| Ray overhead per point | **{ray['overhead_ms']:.1f} ms** | < {OVERHEAD_TARGET_MS:g} ms: {met} |",
                  f"| Ray start-up, once per sweep (not per point) | ray.init {ray['init']:.1f} s, first worker "
                  f"and imports {ray['warmup']:.1f} s | |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100, help="points of each sweep (default 100)")
    parser.add_argument("--skip-ray", action="store_true", help="only the scaling measurement")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file to append to")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cimc-sweep-scaling-") as tmp:
        folder = Path(tmp)
        write_model(folder, SCALING_HW)
        write_model(folder, 8)
        scale = scaling(folder, args.points)
        ray = None if args.skip_ray else ray_overhead(folder, args.points)
    text = report(scale, ray)
    print(text)
    if not args.no_record:
        previous = args.results.read_text() if args.results.is_file() else HEADER
        args.results.write_text(previous + text)


if __name__ == "__main__":
    main()
