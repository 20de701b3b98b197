"""End-to-end demo: build the bundled example model, compile it, inspect it, run it, check it.

Everything goes through the ``cimc`` command line, exactly as a user would type it, in the working
folder ``out/demo/`` of the repository::

    cimc targets
    cimc compile model.onnx --target isaac -o demo.cimp --calibration calib.npz --report-json report.json \
        --scheduler cpsat --solver-work 1
    cimc inspect demo.cimp --program          (first lines shown)
    cimc inspect demo.cimp --schedule
    cimc run demo.cimp --input batch.npz --check model.onnx --stats-json stats.json --output outputs.npz

The model and data come from ``examples/build_demo_model.py`` (a small CNN and synthetic images,
owned by this project). The script exits non-zero when any step fails or when cimc's top-1
answers agree with onnxruntime's on fewer than 95 % of the images.

Run it with ``python3 dev.py demo`` (which also sets up the environment), or directly with the
virtual environment's python: ``.venv/bin/python examples/demo.py``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = ROOT / "out" / "demo"
CIMC = Path(sys.executable).parent / ("cimc.exe" if sys.platform == "win32" else "cimc")
MIN_AGREEMENT = 0.95
LISTING_LINES = 25
PRODUCTS = ("model.onnx", "calib.npz", "batch.npz", "labels.npy", "demo.cimp", "report.json",
            "stats.json", "outputs.npz")

sys.path.insert(0, str(HERE))
import build_demo_model as demo_model  # noqa: E402


class StepFailed(Exception):
    pass


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def cimc(*args: str, head: int | None = None) -> str:
    """Run ``cimc ARGS`` in the working folder, echo the command and its output; fail on non-zero."""
    print(f"$ cimc {shlex.join(args)}" + (f" | head -{head}" if head else ""), flush=True)
    proc = subprocess.run([str(CIMC), *args], cwd=WORK, capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    shown = lines[:head] if head else lines
    for line in shown:
        print(line)
    if head and len(lines) > head:
        print(f"... ({len(lines) - head} more lines)")
    if proc.stderr:
        print(proc.stderr, end="", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        raise StepFailed(f"`cimc {shlex.join(args)}` exited with status {proc.returncode}")
    return proc.stdout


def prepare() -> np.ndarray:
    WORK.mkdir(parents=True, exist_ok=True)
    for name in PRODUCTS:                       # stale results must never pass for fresh ones
        (WORK / name).unlink(missing_ok=True)
    labels = demo_model.write_files(WORK)
    print(f"model.onnx: (conv 3x3, relu, maxpool 2x2) x2, flatten, gemm, softmax; "
          f"input {demo_model.INPUT!r} [1, 1, 16, 16]")
    print(f"calib.npz: {demo_model.INPUT} [{demo_model.CALIBRATION_IMAGES}, 1, 1, 16, 16] (calibration images)")
    print(f"batch.npz: {demo_model.INPUT} [{demo_model.TEST_IMAGES}, 1, 1, 16, 16] (test images; "
          f"labels in labels.npy)")
    return labels


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                            epilog=f"Writes into {WORK.relative_to(ROOT)}/ of the repository.").parse_args(argv)
    if not CIMC.exists():
        print(f"demo: error: the cimc command is not installed next to this python ({CIMC}); "
              f"run `python3 dev.py demo` from the repository root", file=sys.stderr)
        return 1
    try:
        banner(f"building the example model and data in {WORK.relative_to(ROOT)}/")
        labels = prepare()
        banner("target presets")
        cimc("targets")
        banner("compile")
        cimc("compile", "model.onnx", "--target", "isaac", "-o", "demo.cimp",
             "--calibration", "calib.npz", "--report-json", "report.json", "--scheduler", "cpsat",
             "--solver-work", "1")
        banner("instruction listing")
        cimc("inspect", "demo.cimp", "--program", head=LISTING_LINES)
        banner("schedule")
        cimc("inspect", "demo.cimp", "--schedule")
        banner("run on the reference runtime, checked against onnxruntime")
        cimc("run", "demo.cimp", "--input", "batch.npz", "--check", "model.onnx",
             "--stats-json", "stats.json", "--output", "outputs.npz")
    except StepFailed as exc:
        print(f"\ndemo: FAILED: {exc}", file=sys.stderr)
        return 1

    report = json.loads((WORK / "report.json").read_text())
    stats = json.loads((WORK / "stats.json").read_text())
    check = stats["check"][demo_model.OUTPUT]
    with np.load(WORK / "outputs.npz") as npz:
        probs = npz[demo_model.OUTPUT]
    accuracy = float((probs.reshape(len(labels), -1).argmax(-1) == labels).mean())
    agreement = check["top1_agreement"]

    banner("summary")
    print(f"crossbars used       {report['crossbars_used']} of {report['crossbars_available']} "
          f"on {report['tiles_used']} tile(s)")
    kept = (f" (cpsat {report['solver_status']}, copies {report['placement']})"
            if report["solver_status"] else "")
    print(f"makespan             {report['makespan_cycles']} cycles ({report['makespan_us']:.2f} us), "
          f"{report['scheduler']} schedule{kept}")
    print(f"lower bound          {report['lower_bound_cycles']} cycles (gap {100 * report['gap']:.1f} %); "
          f"layer by layer without duplication {report['comparison']['layer_one_copy']} cycles "
          f"({report['comparison']['layer_one_copy'] / report['makespan_cycles']:.1f}x longer)")
    print(f"PE utilization       {100 * report['pe_utilization']:.1f} %")
    print(f"energy / inference   {stats['energy_pj'] / 1e6:.3f} uJ "
          f"({stats['adc_conversions']} ADC conversions)")
    print(f"normalized error     {check['normalized_error']:.4g} (max |cimc - onnxruntime| / max |onnxruntime|)")
    print(f"top-1 agreement      {100 * agreement:.2f} % of {stats['batch']} images")
    print(f"accuracy (labels)    {100 * accuracy:.2f} % on the synthetic test images")
    print(f"files                {WORK.relative_to(ROOT)}/: {', '.join(PRODUCTS)}")
    if agreement < MIN_AGREEMENT:
        print(f"\ndemo: FAILED: top-1 agreement {100 * agreement:.2f} % is below "
              f"{100 * MIN_AGREEMENT:.0f} %", file=sys.stderr)
        return 1
    print("\ndemo: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
