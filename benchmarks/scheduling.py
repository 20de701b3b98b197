"""Schedulers on the CLSA-style chip: makespan, utilization, speedup over layer by layer, bound and gap.

    .venv/bin/python benchmarks/scheduling.py                          # nine light_* and the corpus models
    .venv/bin/python benchmarks/scheduling.py --models light_resnet50 --no-record

Every model (the nine ``light_*`` models of the onnx wheel and every model of the corpus) is
compiled for the ``clsa`` preset (64 tiles x 64 crossbars of 256x256) three times, with
``--scheduler layer`` (no duplication: the baseline), ``clsa`` (greedy duplication, cross-layer
as soon as possible) and ``cpsat`` (local search over copy counts, then CP-SAT hinted with clsa;
``--solver-work`` per model below), calibrated on one sample, with ``--allow-reprogramming`` (the
models larger than the chip run in segments, each duplicated into the crossbars it leaves free;
AlexNet, ZFNet and VGG-19 have a fully connected layer larger than the whole chip, cut into parts
by output channels).
Each model runs in a child process, whose peak resident memory is reported. The ``cpsat``
compile's wall time is the whole compile (frontend, quantization and all passes), as a user
waits for it.

Figures to reach: light_resnet50 with cpsat in at most 60 s of wall time and a gap of at most
15 %; light_densenet121 in at most 120 s with a gap of at most 25 %; memory under 4 GiB; a best
speedup over layer of at least 20x; cpsat never worse than clsa, and at least 1 % better on at
least half of the models where a decision exists.

The bound (``lower_bound_cycles``) holds for any schedule of the model on the chip with any
duplication the crossbar budget allows; gap = (makespan - bound) / makespan.

Rewrites ``benchmarks/results/scheduling.md`` (``--results`` for another file, ``--no-record`` to
print only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compile_time as ct  # noqa: E402  (one calibration sample per model)
import models_vs_onnxruntime as mv  # noqa: E402  (the model registry)
from _shared import corpus_root, git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scheduling.md"
TARGET = "clsa"
SCHEDULERS = ("layer", "clsa", "cpsat")
#: cpsat's --solver-work per model (units of CP-SAT's deterministic time); others get
#: DEFAULT_SOLVER_WORK. A unit costs far more wall time on the two largest models (light_resnet50
#: with its copies spread over the tiles: 60 to 120 s, and CP-SAT finds nothing better there).
SOLVER_WORK = {"light_resnet50": 0.25, "light_densenet121": 1.0}
DEFAULT_SOLVER_WORK = 5.0
LIMITS = {"light_resnet50": (60.0, 0.15), "light_densenet121": (120.0, 0.25)}   # wall seconds, gap


def measure(key: str) -> dict:
    """Compile one model with every scheduler (in this process) and return the figures."""
    import cimc
    spec = mv.SPECS[key]
    corpus = corpus_root()
    name, x = ct.one_sample(spec, corpus)
    path = mv.model_path(spec, corpus)
    shapes = list(spec.input_shapes) if spec.input_shapes else None
    out: dict = {"key": key}
    for scheduler in SCHEDULERS:
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = cimc.compile(path, TARGET, scheduler=scheduler, calibration={name: x},
                                   input_shapes=shapes, allow_reprogramming=True,
                                   solver_work=SOLVER_WORK.get(key, DEFAULT_SOLVER_WORK))
        r = program.report
        out[scheduler] = {"makespan": r["makespan_cycles"], "utilization": r["pe_utilization"],
                          "bound": r["lower_bound_cycles"], "gap": r["gap"], "status": r["solver_status"],
                          "limit": r.get("solver_limit"), "work": r.get("solver_work"),
                          "copies": sum(r["copies"].values()), "layers": len(r["copies"]),
                          "idle": sum(r["idle_copies"].values()),
                          "placement": r["placement"],
                          "segments": r["segments"], "crossbars": r["crossbars_used"],
                          "split": len(r["split_layers"]),
                          "budget_binds": any(c < layer["sets"] for c, layer in
                                              zip(r["copies"].values(), r["layers"])),
                          "sets": sum(layer["sets"] for layer in r["layers"]),
                          "tasks": len(program.schedule.tasks), "bounds": r["lower_bounds"],
                          "comparison": r["comparison"], "wall": time.perf_counter() - began,
                          "schedule_seconds": program.pass_seconds["schedule"],
                          "buffer_kib": r["buffer_peak_kib"], "buffer_capacity_kib": r["buffer_kib_per_tile"],
                          "moved_mib": (r["memory"]["stored_kib"] + r["memory"]["loaded_kib"]) / 1024}
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(key: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", key], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        return {"key": key, "error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(m: dict) -> str:
    if "error" in m:
        return f"| {m['key']} | refused or failed: {m['error'][:120]} |" + " |" * 15
    lay, cl, cp = m["layer"], m["clsa"], m["cpsat"]
    better = (cl["makespan"] - cp["makespan"]) / cl["makespan"] * 100
    segments = cp["segments"]
    name = m["key"] if segments == 1 else f"{m['key']} ({segments} segments{', split' if cp['split'] else ''})"
    spread = " spread" if cp["placement"] == "spread" else ""
    return (f"| {name} | {cp['tasks']:,} | {cp['copies']}/{cp['layers']}{spread} | {lay['makespan']:,} | "
            f"{cl['makespan']:,} | {cp['makespan']:,} | {100 * lay['utilization']:.1f} / "
            f"{100 * cl['utilization']:.1f} / {100 * cp['utilization']:.1f} | "
            f"{lay['makespan'] / cl['makespan']:.1f}x | {lay['makespan'] / cp['makespan']:.1f}x | "
            f"{better:+.2f} % | {cp['bound']:,} | {100 * cp['gap']:.1f} % | {cp['status']}{' (time cap)' if cp['limit'] == 'time' else ''} | "
            f"{lay['buffer_kib']:,.0f} / {cl['buffer_kib']:,.0f} / {cp['buffer_kib']:,.0f} | "
            f"{lay['moved_mib']:,.1f} / {cl['moved_mib']:,.1f} / {cp['moved_mib']:,.1f} | "
            f"{cp['wall']:.1f} s | {m['peak_mib']:,.0f} |")


def report(measured: list[dict], wall: float) -> str:
    import cimc
    ok = [m for m in measured if "error" not in m]
    lines = [
        "# Schedulers on the CLSA-style chip",
        "",
        "Models marked (N segments) need more crossbars than the chip has: they run in N segments programmed "
        "one after another (`--allow-reprogramming`), each duplicated into the crossbars it leaves free (in "
        "the layer-by-layer baseline too, every layer has one copy); *split*: a layer larger than the "
        "whole chip (a fully connected layer of AlexNet, ZFNet or VGG-19) is cut by output channels into parts "
        "that segments hold (`split_layers` in the report).",
        "",
        f"`benchmarks/scheduling.py`, {dt.date.today()}, commit `{git_commit()}`, cimc {cimc.__version__}, "
        f"{os.cpu_count()} cores, {wall:.0f} s wall. Target `{TARGET}` (64 tiles x 64 crossbars of 256x256, "
        f"8 ADCs per crossbar, one 16-element/cycle GPEU per tile, one 32 B/cycle network link per tile). "
        f"Calibration on one sample; "
        f"`--allow-reprogramming`; cpsat `--solver-work` {DEFAULT_SOLVER_WORK:g} "
        f"({', '.join(f'{k} {v:g}' for k, v in SOLVER_WORK.items())}), seed 0, 2 workers, deterministic search "
        f"(the same table on any machine, but for the wall times). Load average at the end of the run "
        f"{os.getloadavg()[1]:.1f} (5 min): wall times grow with it.",
        "",
        "Makespans in cycles. *sets*: sets (tasks) scheduled; *copies*: layer copies / layers under cpsat, "
        "*spread* where cpsat spread the copies over the tiles (else packed tile after tile, as for clsa); "
        "utilization: crossbar busy cycles / (crossbars holding weights x makespan) for layer / clsa / cpsat; "
        "*cpsat vs clsa*: how much shorter cpsat's schedule is; *bound*: a lower bound on the makespan of any "
        "schedule with any duplication the crossbar budget allows (critical path, per-layer and per-GPEU work, "
        "crossbar budget; see `passes/schedule/problem.py`); gap = (makespan - bound) / makespan; *status*: "
        "CP-SAT's status for the chosen duplication and placement (`optimal`: proven optimal for them; `hint`: "
        "CP-SAT found nothing better in time); *buffer KiB*: the largest activation buffer any tile holds "
        "(rows held from written or arrived until their last consumer there ends; `buffer_peak_kib`) for "
        "layer / clsa / cpsat, at most the chip's 256 KiB a tile: rows that do not fit wait in the global "
        "memory; *spilled MiB*: rows moved to and from the global memory for that (`memory` in the report), "
        "layer / clsa / cpsat; "
        "*wall*: the whole cpsat compile; *MiB*: peak resident memory of the process that compiled the model "
        "three times.",
        "",
        "| model | sets | copies | layer | clsa | cpsat | utilization % | clsa speedup | cpsat speedup | "
        "cpsat vs clsa | bound | gap | status | buffer KiB | spilled MiB | wall | MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(m) for m in measured]
    if ok:
        best = max(ok, key=lambda m: m["layer"]["makespan"] / m["cpsat"]["makespan"])
        speed = best["layer"]["makespan"] / best["cpsat"]["makespan"]
        util = max(ok, key=lambda m: m["cpsat"]["utilization"] / max(m["layer"]["utilization"], 1e-12))
        gain = util["cpsat"]["utilization"] / max(util["layer"]["utilization"], 1e-12)
        decided = [m for m in ok
                   if (m["cpsat"]["budget_binds"] or m["cpsat"]["status"] != "optimal"
                        or m["cpsat"]["makespan"] < m["clsa"]["makespan"])]
        improved = [m for m in decided if m["cpsat"]["makespan"] <= 0.99 * m["clsa"]["makespan"]]
        worse = [m["key"] for m in ok if m["cpsat"]["makespan"] > m["clsa"]["makespan"]]
        lines += [
            "",
            "## Against the figures",
            "",
            f"- Best speedup over layer by layer: **{speed:.1f}x** ({best['key']}, cpsat, "
            f"{best['cpsat']['copies']} copies of {best['cpsat']['layers']} layers). CLSA-CIM reports up to "
            f"29.2x speedup and 17.9x utilization; here the largest utilization gain is {gain:.1f}x "
            f"({util['key']}). Target: at least 20x. The largest figures come from models far smaller "
            f"than the chip, where duplication gives the busiest layers hundreds of copies against one in the "
            f"layer-by-layer baseline; on light_resnet50, which nearly fills the chip (so the budget binds, as "
            f"in CLSA-CIM's setting), cpsat is "
            f"{next((m['layer']['makespan'] / m['cpsat']['makespan'] for m in ok if m['key'] == 'light_resnet50'), 0):.1f}x "
            f"faster than layer by layer.",
            f"- cpsat worse than clsa on: {', '.join(worse) or 'no model'}.",
            "- Copies that run no set, clsa / cpsat (no set needed them: another copy finishes each as early; "
            "or the buffer fitting left them idle, as on super-resolution-10): "
            + (", ".join(f"{m['key']} {m['clsa']['idle']} / {m['cpsat']['idle']}" for m in ok
                         if m["clsa"]["idle"] or m["cpsat"]["idle"]) or "none") + ".",
            f"- Models where a decision exists (the crossbar budget binds: a layer has fewer copies "
            f"than sets; or the clsa schedule is not optimal: CP-SAT does not prove it so or finds a shorter "
            f"one, so shared GPEUs or links bind): "
            f"{len(decided)}; cpsat at "
            f"least 1 % better than clsa on {len(improved)} "
            f"({', '.join(m['key'] for m in improved) or 'none'}). Target: at least half.",
        ]
        for key, (seconds, gap) in LIMITS.items():
            m = next((m for m in ok if m["key"] == key), None)
            if m:
                cp = m["cpsat"]
                lines.append(f"- {key}: cpsat compile {cp['wall']:.1f} s (limit {seconds:g} s), gap "
                             f"{100 * cp['gap']:.1f} % (limit {100 * gap:g} %), {m['peak_mib']:,.0f} MiB "
                             f"(limit 4,096). Bounds: "
                             + ", ".join(f"{k} {v:,}" for k, v in cp["bounds"].items()) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="model keys (default: light_* and the corpus models)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    corpus = corpus_root()
    keys = args.models or (mv.LIGHT + ([k for k in mv.SPECS if not mv.SPECS[k].light] if corpus else []))
    began = time.perf_counter()
    measured = []
    for key in keys:
        m = run_child(key)
        print(_row(m), flush=True)
        measured.append(m)
    text = report(measured, time.perf_counter() - began)
    print(text)
    if not args.no_record:
        args.results.write_text(text)


if __name__ == "__main__":
    main()
