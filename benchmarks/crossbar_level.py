"""Wall time and peak memory of the runtime's ``crossbar`` level against ``ideal``; ADC-bits sweep.

    .venv/bin/python benchmarks/crossbar_level.py                      # ResNet-8, 1,000 images
    .venv/bin/python benchmarks/crossbar_level.py --limit 200 --no-record
    .venv/bin/python benchmarks/crossbar_level.py --sweep              # ADC bits 4..10, both models

Timing: MLPerf Tiny ResNet-8 compiled for the ``isaac`` preset (128x128 crossbars, 2-bit cells,
1-bit DAC, 8-bit ADC: 9 bits would be lossless for a full 128-row column, so columns clip) with
500 calibration images, then one ``cimc.run`` per level on the same CIFAR-10 test images, after a
warm-up on 8 images; each level runs in a fresh child process so that its peak resident memory
(``resource.getrusage``, ru_maxrss) is its own. The ``crossbar`` level is timed twice: as it runs
by default (columns that provably cannot clip computed by exact products) and with every used
column simulated conversion by conversion (``shortcut=False``). The target is at most 40x the
``ideal`` time. Results are appended to ``benchmarks/results/crossbar_level.md``.

Sweep (``--sweep``): for ADC bits 4..10 (the isaac preset otherwise unchanged) top-1 accuracy,
clipped fraction and ADC energy at the ``crossbar`` level on mnist-8 and ResNet-8, written to
``benchmarks/results/adc_sweep.md``.

Needs the shared corpus (``$CIMC_CORPUS`` or ``../shared/corpus`` next to the repository).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import ROOT, git_commit, spread  # noqa: E402
from cimc.sweep.corpus import prepare  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGET_RATIO = 40.0

HEADER = """# Runtime level `crossbar` vs `ideal`

Written by `benchmarks/crossbar_level.py`. MLPerf Tiny ResNet-8 on CIFAR-10 test images, compiled
for the `isaac` preset (8-bit ADCs; 128 rows of 2-bit cells with 1-bit inputs need 9 bits, so sums
clip), one `cimc.run` call per level on the whole batch after a warm-up, each level in its own
process (peak RSS = ru_maxrss of that process, compile included). `crossbar` runs as by default
(unclippable columns by exact products); `crossbar (all columns)` simulates every used column
conversion by conversion. Ratio = seconds / `ideal` seconds; the target is at most 40x.

| date (UTC) | commit | cores | images | level | seconds | ratio | peak RSS MiB | accuracy | clipped fraction | ADC conversions / inference |
|---|---|---|---|---|---|---|---|---|---|---|
"""

SWEEP_HEADER = """# ADC resolution sweep at the `crossbar` level

Written by `benchmarks/crossbar_level.py --sweep`. The `isaac` preset (128x128 crossbars, 2-bit
cells, 1-bit DAC) with `adc.bits` set to each value; each column converts at its own lossless
resolution capped by that value (9 bits is lossless for a full column). Accuracy is top-1 against
the labels; "ideal" is the lossless reference; clipped fraction is over all conversions of the
batch; ADC energy per inference under the preset's Walden model (6.1 fJ/step).

"""


def corpus_dir() -> Path:
    env = os.environ.get("CIMC_CORPUS")
    path = Path(env) if env else ROOT.parent / "shared" / "corpus"
    if not (path / "models").is_dir():
        sys.exit(f"crossbar_level.py: error: the test corpus is not available in {path} (set CIMC_CORPUS)")
    return path


CASES = {
    "resnet8": ("ResNet-8", "models/mlperf_tiny_resnet8_cifar10.onnx", "input_1", "cifar10_train_1k.npz",
                "cifar10_test.npz"),
    "mnist": ("mnist-8", "models/mnist-8/model.onnx", "Input3", "mnist_train_5k.npz", "mnist_test.npz"),
}


def _prepare(case: str, x: np.ndarray) -> np.ndarray:
    """Raw corpus images as the sweep feeds them (raw 0..255 pixels, a leading sample axis)."""
    return prepare("cifar_raw" if case == "resnet8" else "mnist_raw", x)


def _data(case: str, limit: int):
    corpus = corpus_dir()
    _, model, name, calib_file, test_file = CASES[case]
    with np.load(corpus / "data" / calib_file) as npz:
        calib = _prepare(case, npz["x"][spread(len(npz["x"]), 500)])
    with np.load(corpus / "data" / test_file) as npz:
        pick = spread(len(npz["y"]), limit)
        x, y = _prepare(case, npz["x"][pick]), npz["y"][pick].astype(np.int64)
    return corpus / model, name, calib, x, y


def _target(adc_bits: int | None):
    from cimc.targets import preset_text, target_from_dict
    data = tomllib.loads(preset_text("isaac"))
    if adc_bits is not None:
        data["adc"]["bits"] = adc_bits
        data["name"] = f"isaac-adc{adc_bits}"
    return target_from_dict(data, data["name"])


def child(case: str, level: str, shortcut: bool, limit: int, adc_bits: int | None) -> dict:
    """One measurement, in this process: compile, warm up, time one run."""
    import cimc
    model, name, calib, x, y = _data(case, limit)
    program = cimc.compile(model, _target(adc_bits), calibration={name: calib})
    cimc.run(program, {name: x[:8]}, level=level, shortcut=shortcut)            # warm-up
    began = time.perf_counter()
    result = cimc.run(program, {name: x}, level=level, shortcut=shortcut)
    seconds = time.perf_counter() - began
    out = next(iter(result.outputs.values())).reshape(len(x), -1)
    s = result.stats
    return {"seconds": seconds, "accuracy": float((out.argmax(-1) == y).mean()),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "clipped_fraction": s["clipped_fraction"], "adc_conversions": s["adc_conversions"],
            "adc_energy_pj": s["adc_energy_pj"]}


def measure(case: str, level: str, shortcut: bool, limit: int, adc_bits: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([case, level, shortcut, limit, adc_bits])]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"child {cmd} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timing(limit: int, record: bool) -> None:
    runs = [("ideal", "ideal", True), ("crossbar", "crossbar", True),
            ("crossbar (all columns)", "crossbar", False)]
    rows, base = [], None
    for label, level, shortcut in runs:
        r = measure("resnet8", level, shortcut, limit)
        base = base or r["seconds"]
        ratio = r["seconds"] / base
        print(f"{label:24s} {r['seconds']:8.2f} s  {ratio:6.1f}x  peak {r['peak_rss_mib']:7.0f} MiB  "
              f"acc {100 * r['accuracy']:.1f} %  clipped {100 * r['clipped_fraction']:.3f} %", flush=True)
        rows.append(f"| {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} | {git_commit()} | {os.cpu_count()} | "
                    f"{limit} | {label} | {r['seconds']:.2f} | {ratio:.1f} | {r['peak_rss_mib']:.0f} | "
                    f"{100 * r['accuracy']:.1f} % | {100 * r['clipped_fraction']:.3f} % | "
                    f"{r['adc_conversions']:,} |")
    if record:
        path = RESULTS / "crossbar_level.md"
        if not path.exists():
            path.write_text(HEADER)
        with path.open("a") as f:
            f.write("\n".join(rows) + "\n")
        print(f"appended to {path}")


def sweep(limits: dict[str, int], record: bool) -> None:
    lines = [SWEEP_HEADER, f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {git_commit()}, "
             f"{platform.machine()}.\n"]
    for case, limit in limits.items():
        ideal = measure(case, "ideal", True, limit)
        lines += [f"\n## {CASES[case][0]} ({limit} test images spread evenly over the test set; ideal accuracy "
                  f"{100 * ideal['accuracy']:.1f} %)\n",
                  "| ADC bits | accuracy | clipped fraction | ADC conversions / inference | ADC energy / inference (nJ) |",
                  "|---|---|---|---|---|"]
        for bits in range(4, 11):
            r = measure(case, "crossbar", True, limit, bits)
            print(f"{case} adc {bits}: acc {100 * r['accuracy']:.1f} % clipped {100 * r['clipped_fraction']:.3f} %",
                  flush=True)
            lines.append(f"| {bits} | {100 * r['accuracy']:.1f} % | {100 * r['clipped_fraction']:.3f} % | "
                         f"{r['adc_conversions']:,} | {r['adc_energy_pj'] / 1000:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if record:
        (RESULTS / "adc_sweep.md").write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=1000, help="test images (default 1000)")
    ap.add_argument("--sweep", action="store_true", help="ADC bits sweep instead of the timing")
    ap.add_argument("--sweep-limit", type=int, default=1000, help="test images per sweep point")
    ap.add_argument("--no-record", action="store_true", help="print only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    if args.sweep:
        sweep({"mnist": args.sweep_limit, "resnet8": args.sweep_limit}, not args.no_record)
    else:
        timing(args.limit, not args.no_record)


if __name__ == "__main__":
    main()
