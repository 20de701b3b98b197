"""Record a run of the example sweep (examples/sweep_mnist_resnet8.toml): a summary and a snapshot.

    .venv/bin/cimc sweep examples/sweep_mnist_resnet8.toml -o out/sweep      # timed by the caller
    .venv/bin/python benchmarks/sweep_example.py out/sweep --wall-seconds 1234 \\
        --command "cimc sweep examples/sweep_mnist_resnet8.toml -o out/sweep" --note "fresh clone"

Reads the results folder the sweep wrote (``results.csv``, ``plots/``, ``report.html``) and writes

- ``benchmarks/results/sweep_example.md``: the command, date, commit, wall time (as measured by
  the caller: the whole command, start-up and outputs included), points, failures with their
  messages, headline figures per model, and the Pareto-optimal points of every pair of objectives
  per model (points that tie on both figures merged into one row);
- ``benchmarks/results/sweep_example/``: ``results.csv``, ``plots/*.svg`` and ``*.png``,
  ``report.html`` and a README. Schedule pages are copied only while the snapshot stays under
  ``--budget-mib`` (default 3): first those of the points Pareto-optimal in all objectives.

It computes nothing itself: every figure comes from the results folder.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import platform
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import ROOT, git_commit  # noqa: E402

from cimc.sweep.table import pareto_mask  # noqa: E402

SPEC = ROOT / "examples" / "sweep_mnist_resnet8.toml"
SUMMARY = ROOT / "benchmarks" / "results" / "sweep_example.md"
SNAPSHOT = ROOT / "benchmarks" / "results" / "sweep_example"
FIGURES = ("latency_cycles", "latency_us", "energy_pj", "adc_energy_pj", "crossbars", "tiles", "segments",
           "pe_utilization", "cell_utilization", "lower_bound_cycles", "accuracy", "ort_accuracy",
           "ort_agreement", "clipped_fraction", "samples", "compile_seconds", "point_seconds", "accuracy_seconds")


def value(text: str):
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def show(name: str, v) -> str:
    if v is None:
        return ""
    if name in ("accuracy", "ort_accuracy", "ort_agreement", "pe_utilization", "cell_utilization"):
        return f"{100 * v:.1f} %"
    if name in ("energy_pj", "adc_energy_pj"):
        return f"{v / 1e3:,.1f} nJ"
    if name == "clipped_fraction":
        return f"{100 * v:.3f} %"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def merged(rows: list[dict], parameters: list[str]) -> str:
    """The parameter settings of tied points, one value set per parameter."""
    parts = []
    for p in parameters:
        values = list(dict.fromkeys(r[p] for r in rows))
        parts.append(f"{p} {', '.join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="the results folder of the example sweep")
    ap.add_argument("--wall-seconds", type=float, required=True, help="wall time of the sweep command")
    ap.add_argument("--command", required=True, help="the command that was timed, as run")
    ap.add_argument("--note", default="", help="how it was run (fresh clone, reruns, ...)")
    ap.add_argument("--budget-mib", type=float, default=3.0, help="snapshot size limit (MiB)")
    args = ap.parse_args(argv)

    spec = tomllib.loads(SPEC.read_text())
    objectives = list(spec["objectives"].items())
    parameters = list(spec["parameters"])
    with open(args.results / "results.csv", newline="") as fh:
        rows = [{k: (value(v) if k in FIGURES or k in parameters or k == "point" else v) for k, v in r.items()}
                for r in csv.DictReader(fh)]
    for r in rows:
        for p in parameters:
            if isinstance(r[p], str) and r[p] in ("true", "false"):
                r[p] = r[p] == "true"
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    accuracy_runs = {(r["model"], *(r[p] for p in parameters if p != "scheduler")): r["accuracy_seconds"] or 0
                     for r in rows}

    out = ["# The example sweep: mnist-8 and ResNet-8 on ISAAC-like chips", "",
           "Written by `benchmarks/sweep_example.py` from the results folder of one run of",
           "[`examples/sweep_mnist_resnet8.toml`](../../examples/sweep_mnist_resnet8.toml); the table, plots and",
           "report of that run are in [`sweep_example/`](sweep_example/). Every figure below comes from",
           "`results.csv`; the wall time is the whole command's, measured by the caller.", "",
           f"- command: `{args.command}`" + (f" ({args.note})" if args.note else ""),
           f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {git_commit()}; "
           f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
           f"- wall time: {args.wall_seconds / 60:.1f} min ({args.wall_seconds:.0f} s)",
           f"- points: {len(rows)} ({len(ok)} ok, {len(failed)} failed); accuracy on "
           f"{', '.join(sorted({str(r['samples']) for r in ok if r.get('samples')}))} test images per point",
           f"- task time: {sum(r['point_seconds'] or 0 for r in rows):,.0f} s compiling, scheduling and "
           f"measuring the {len(rows)} points, {sum(accuracy_runs.values()):,.0f} s in the {len(accuracy_runs)} "
           f"accuracy runs (one per combination other than the scheduler), summed over the workers",
           ""]
    if failed:
        out += ["## Failures", "", "| points | error |", "|---|---|"]
        for error, group in itertools.groupby(sorted(failed, key=lambda r: r["error"]), key=lambda r: r["error"]):
            group = list(group)
            out.append(f"| {len(group)} ({merged(group, ['model', *parameters])}) | {error} |")
        out.append("")
    out += ["## Headline figures per model", "",
            "| model | points ok | best accuracy | onnxruntime accuracy | lowest latency (cycles) | lowest energy / inference | fewest crossbars |",
            "|---|---|---|---|---|---|---|"]
    for m in models:
        group = [r for r in ok if r["model"] == m]
        if not group:
            out.append(f"| {m} | 0 | | | | | |")
            continue
        best = max(group, key=lambda r: r["accuracy"])
        out.append(f"| {m} | {len(group)} | {show('accuracy', best['accuracy'])} | "
                   f"{show('accuracy', best['ort_accuracy'])} | "
                   f"{show('latency_cycles', min(r['latency_cycles'] for r in group))} | "
                   f"{show('energy_pj', min(r['energy_pj'] for r in group))} | "
                   f"{show('crossbars', min(r['crossbars'] for r in group))} |")
    out += ["", "## Accuracy by ADC resolution", "",
            "Mean, min and max top-1 accuracy over the other parameters (crossbar size, cell bits, SWS; the",
            "scheduler does not change it), and the mean clipped fraction of the ADC conversions.", ""]
    out += ["| model | ADC bits | accuracy mean | min | max | clipped fraction (mean) |", "|---|---|---|---|---|---|"]
    for m in models:
        for bits in sorted({r["adc.bits"] for r in ok if r["model"] == m}):
            acc = np.array([r["accuracy"] for r in ok if r["model"] == m and r["adc.bits"] == bits])
            clip = np.array([r["clipped_fraction"] for r in ok if r["model"] == m and r["adc.bits"] == bits])
            out.append(f"| {m} | {bits} | {show('accuracy', acc.mean())} | {show('accuracy', acc.min())} | "
                       f"{show('accuracy', acc.max())} | {show('clipped_fraction', clip.mean())} |")
    preset = [r for r in ok if r["crossbar.size"] == 128 and r["crossbar.cell_bits"] == 2 and r["sws"] is False
              and r["scheduler"] == "layer"]
    if preset:
        out += ["", "The `isaac` preset's own crossbars (128x128, 2-bit cells), without SWS: the setting of",
                "[`adc_sweep.md`](adc_sweep.md) (`benchmarks/crossbar_level.py --sweep`, the same 1,000 images), for",
                "comparison.", "", "| model | ADC bits | accuracy | clipped fraction | ADC energy / inference |",
                "|---|---|---|---|---|"]
        for r in sorted(preset, key=lambda r: (models.index(r["model"]), r["adc.bits"])):
            out.append(f"| {r['model']} | {r['adc.bits']} | {show('accuracy', r['accuracy'])} | "
                       f"{show('clipped_fraction', r['clipped_fraction'])} | {show('adc_energy_pj', r['adc_energy_pj'])} |")
    out += ["", "## Pareto-optimal points per pair of objectives", "",
            "Per model and pair, the points no other point of that model beats in both figures (points that tie",
            "on both are one row, their parameters merged: each parameter lists the values that occur).", ""]
    for m in models:
        group = [r for r in ok if r["model"] == m]
        for (x, dx), (y, dy) in itertools.combinations(objectives, 2):
            values = np.array([[r[x], r[y]] for r in group], dtype=np.float64)
            front = [r for r, keep in zip(group, pareto_mask(values, [dx, dy])) if keep]
            out += [f"### {m}: {x} ({dx}) and {y} ({dy})", "",
                    f"| {x} | {y} | points | parameters |", "|---|---|---|---|"]
            ties: dict[tuple, list[dict]] = {}
            for r in front:                 # ties: equal to 9 digits (one energy summed in two orders)
                ties.setdefault((float(f"{r[x]:.9g}"), float(f"{r[y]:.9g}")), []).append(r)
            for (vx, vy), tied in sorted(ties.items(), key=lambda kv: kv[0][0] * (1 if dx == "min" else -1)):
                out.append(f"| {show(x, vx)} | {show(y, vy)} | {', '.join(str(r['point']) for r in tied)} | "
                           f"{merged(tied, parameters)} |")
            out.append("")

    snapshot(args.results, rows, objectives, args.budget_mib * 2**20)
    SUMMARY.write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote {SUMMARY.relative_to(ROOT)} and {SNAPSHOT.relative_to(ROOT)}/")
    return 0


def snapshot(results: Path, rows: list[dict], objectives: list[tuple[str, str]], budget: float) -> None:
    """Copy the table, plots and report; then schedule pages, front first, while under the budget."""
    if SNAPSHOT.exists():
        shutil.rmtree(SNAPSHOT)
    (SNAPSHOT / "plots").mkdir(parents=True)
    for name in ("results.csv", "report.html"):
        shutil.copy2(results / name, SNAPSHOT / name)
    for plot in sorted((results / "plots").iterdir()):
        if plot.suffix in (".svg", ".png"):
            shutil.copy2(plot, SNAPSHOT / "plots" / plot.name)
    size = sum(p.stat().st_size for p in SNAPSHOT.rglob("*") if p.is_file())
    ok = [r for r in rows if r["status"] == "ok"]
    front = []
    for m in dict.fromkeys(r["model"] for r in ok):
        group = [r for r in ok if r["model"] == m]
        values = np.array([[r[o] for o, _ in objectives] for r in group], dtype=np.float64)
        front += [r for r, keep in zip(group, pareto_mask(values, [d for _, d in objectives])) if keep]
    order = front + [r for r in ok if r not in front]
    copied = 0
    for r in order:
        page = results / r["schedule"]
        if size + page.stat().st_size > budget:
            break
        (SNAPSHOT / "schedules").mkdir(exist_ok=True)
        shutil.copy2(page, SNAPSHOT / r["schedule"])
        size += page.stat().st_size
        copied += 1
    missing = len(ok) - copied
    (SNAPSHOT / "README.md").write_text(
        "# Snapshot of the example sweep's outputs\n\n"
        "`results.csv`, the Pareto plots (`plots/`, SVG and PNG) and `report.html` of the run summarized in\n"
        "[`../sweep_example.md`](../sweep_example.md). "
        + (f"The schedule pages of {copied} points are here (the points Pareto-optimal in all objectives\n"
           f"first); the other {missing} are left out to keep the snapshot small, so their links in the\n"
           "report and the plots lead nowhere. To get every page, run the example (its results folder\n"
           "holds them all):\n\n"
           "```\n.venv/bin/cimc sweep examples/sweep_mnist_resnet8.toml -o out/sweep\n```\n"
           if missing else "Every point's schedule page is in `schedules/`.\n"))


if __name__ == "__main__":
    sys.exit(main())
