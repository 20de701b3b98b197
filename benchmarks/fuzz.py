"""Differential fuzzing against onnxruntime: the long profile of tests/test_fuzz.py.

    nice -n 10 .venv/bin/python benchmarks/fuzz.py                    # 2,000 graphs, writes results/fuzz.md
    .venv/bin/python benchmarks/fuzz.py --graphs 200 --no-record      # a quick look
    .venv/bin/python benchmarks/fuzz.py --seeds 521,177 -v            # replay graphs by seed

Graph ``k`` is ``tests/fuzz_graphs.generate(RngDraw(k))``: a random valid ONNX model from cimc's
supported operators (see that module for the operators, shapes and weight pathologies drawn, and
for the error bounds and why they are meaningful), its calibration data and its test inputs, the
same on every machine and whatever the other graphs do. Each graph is compiled for ``hp16``
(16 bits, bound 1e-3) and for one 8-bit preset drawn from ``small``, ``isaac``, ``clsa`` and
``sram`` (bound 3e-2), run on the reference runtime, and compared with onnxruntime. Every
``--reprogram-every``-th graph is also compiled with ``--allow-reprogramming`` for ``tiny`` (the
``small`` preset cut to 2 tiles of 2 crossbars: layers span tiles, models run in segments); every
``--determinism-every``-th is compiled twice (same bytes) and run again from its reloaded bytes
(same outputs); every ``--crossbar-every``-th also runs at level ``crossbar`` (without a clipped
conversion it must give the ``ideal`` outputs bit for bit).

Outcomes per compile: ok, refused (a ``CimcError`` at compile time: counted with its message, not
a crash), or a failure: crash (any other exception), run-refused (a ``CimcError`` running a program
cimc compiled), shape, nonfinite, accuracy, nondeterministic, crossbar-level. A graph onnxruntime
cannot run is a generator bug (``invalid``). The script exits with status 1 when anything failed.

Writes the run's figures into ``benchmarks/results/fuzz.md`` (``--results`` for another file,
``--no-record`` to print only), between two marker comments: the hand-written sections of that file
(failures found and fixed, hostile inputs, determinism, resource bounds) stay as they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _shared import git_commit  # noqa: E402

import fuzz_graphs as fg  # noqa: E402

EIGHT_BIT = ("small", "isaac", "clsa", "sram")
GRAPH_TIMEOUT = 120


def tiny_target():
    """``small`` cut to 2 tiles x 2 crossbars: layers span tiles, most models need segments."""
    import tomllib

    from cimc.targets import preset_text, target_from_dict
    data = tomllib.loads(preset_text("small"))
    data["name"] = "tiny"
    data["description"] = "small preset, 2 tiles x 2 crossbars"
    data["chip"] = {"tiles": 2, "pes_per_tile": 2}
    return target_from_dict(data, "tiny")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def fuzz_one(seed: int, args, tiny) -> dict:
    """Every outcome of graph ``seed``."""
    record = {"seed": seed, "outcomes": [], "features": set(), "depth": 0, "invalid": None}
    try:
        case = fg.generate(fg.RngDraw(seed))
    except Exception as exc:  # noqa: BLE001
        record["invalid"] = f"generator: {type(exc).__name__}: {exc}"
        return record
    record["features"] = case.features
    record["depth"] = case.crossbar_depth
    record["case"] = repr(case)
    try:
        ref = fg.onnxruntime_reference(case.model, case.inputs)
    except Exception as exc:  # noqa: BLE001
        record["invalid"] = f"onnxruntime: {str(exc).splitlines()[0][:200]}"
        return record
    for name, r in ref.items():
        if r.shape[1:] != case.shapes[name]:
            record["invalid"] = f"generator shape {case.shapes[name]} for {name}, onnxruntime {r.shape[1:]}"
            return record
    # The reference runs unoptimized (the ONNX semantics); note where onnxruntime's optimizer disagrees.
    try:
        optimized = fg.onnxruntime_reference(case.model, case.inputs, optimized=True)
        record["ort_optimized"] = max(fg.normalized_errors(optimized, ref).values())
    except Exception as exc:  # noqa: BLE001
        record["ort_optimized"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    pick = np.random.default_rng([seed, 1])
    runs = [(EIGHT_BIT[int(pick.integers(len(EIGHT_BIT)))], False), ("hp16", False)]
    if args.reprogram_every and seed % args.reprogram_every == 0:
        runs.append((tiny, True))
    for i, (target, reprogram) in enumerate(runs):
        determinism = bool(args.determinism_every and seed % args.determinism_every == 0)
        analog = bool(args.crossbar_every and seed % args.crossbar_every == 0 and i == 0)
        try:
            outcome = fg.check_case(case, target, reference=ref, allow_reprogramming=reprogram,
                                    determinism=determinism, crossbar_level=analog)
        except Exception as exc:  # noqa: BLE001 - the judge's own failure, reported, never fatal
            outcome = fg.Outcome("judge-error", getattr(target, "name", target), f"{type(exc).__name__}: {exc}")
        record["outcomes"].append(outcome)
        record.setdefault("checks", Counter())
        record["checks"]["determinism"] += determinism
        record["checks"]["crossbar"] += analog
    return record


def _normalize(message: str) -> str:
    """A refusal message with its node names and numbers taken out, to count refusals by kind."""
    message = message.splitlines()[0]
    message = re.sub(r"'[^']*'", "'…'", message)
    message = re.sub(r"\b\d+(\.\d+)?\b", "N", message)
    return message[:200]


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    q = np.quantile(np.asarray(values), [0.5, 0.9, 0.99, 1.0])
    return " / ".join(f"{v:.3g}" for v in q)


def report(records: list[dict], seconds: float, args) -> str:
    by_target: dict[str, Counter] = defaultdict(Counter)
    refusals: Counter = Counter()
    refusal_example: dict[str, str] = {}
    failures, invalid = [], []
    errors: dict[int, list[float]] = defaultdict(list)
    ideals: dict[int, list[float]] = defaultdict(list)
    ratios: dict[int, list[float]] = defaultdict(list)
    conditioned: dict[int, Counter] = defaultdict(Counter)
    by_depth: dict[tuple[int, int], list[tuple[float, bool]]] = defaultdict(list)
    features: Counter = Counter()
    depth: Counter = Counter()
    checks: Counter = Counter()
    compiles = 0
    for rec in records:
        if rec["invalid"]:
            invalid.append(rec)
            continue
        features.update(rec["features"])
        depth[rec["depth"]] += 1
        checks.update(rec.get("checks", {}))
        for o in rec["outcomes"]:
            compiles += 1
            by_target[o.target][o.status] += 1
            if o.status == "refused":
                key = _normalize(o.detail)
                refusals[key] += 1
                refusal_example.setdefault(key, f"graph {rec['seed']}: {o.detail.splitlines()[0][:300]}")
            elif o.failed:
                failures.append((rec, o))
            if o.errors:
                bits = 16 if o.bound == fg.BOUNDS[16] else 8
                errors[bits].append(o.error)
                if np.isnan(o.ideal):
                    conditioned[bits]["unavailable"] += 1
                    continue
                ideals[bits].append(o.ideal)
                conditioned[bits]["yes" if o.conditioned else "no"] += 1
                by_depth[bits, rec["depth"]].append((o.ideal, o.conditioned))
                if o.ideal >= 0.01 * o.bound:             # below that both are float32 noise
                    ratios[bits].append(o.error / o.ideal)
    graphs = len(records)
    crashes = sum(1 for _, o in failures if o.status == "crash")
    refused = sum(c["refused"] for c in by_target.values())
    lines = [
        "# Differential fuzzing against onnxruntime",
        "",
        "Measured by [`benchmarks/fuzz.py`](../fuzz.py) (generator and judge: "
        "[`tests/fuzz_graphs.py`](../../tests/fuzz_graphs.py); the fast profile is "
        "[`tests/test_fuzz.py`](../../tests/test_fuzz.py)). Rerun: "
        f"`nice -n 10 .venv/bin/python benchmarks/fuzz.py --graphs {graphs} --start {args.start}`.",
        "",
        "## This run",
        "",
        f"- date {dt.date.today().isoformat()}, commit {git_commit()}, {os.cpu_count()} cores, "
        f"wall {seconds:.0f} s ({seconds / max(graphs, 1):.2f} s per graph)",
        f"- **graphs fuzzed: {graphs}** (seeds {args.start}..{args.start + graphs - 1}"
        + (f", {len(invalid)} invalid: generator bugs" if invalid else "") + f"), **{compiles} compiles**",
        f"- **crashes (exceptions other than `CimcError`): {crashes}**; other failures: "
        f"{len(failures) - crashes}",
        f"- refused with a `CimcError`: {refused} of {compiles} compiles ({100 * refused / max(compiles, 1):.1f} %)",
        f"- determinism checks (compiled twice: same bytes; reloaded: same outputs): {checks['determinism']}; "
        f"crossbar level equal to ideal when nothing clipped: {checks['crossbar']} runs",
        "",
        "| target | compiles | ok | refused | failed |",
        "|---|---|---|---|---|",
    ]
    for target in sorted(by_target):
        c = by_target[target]
        total = sum(c.values())
        lines.append(f"| {target} | {total} | {c['ok']} | {c['refused']} | {total - c['ok'] - c['refused']} |")
    lines += ["", "### Accuracy", "",
              "Normalized max error `max|cimc - ort| / max|ort|` per graph (worst output), quantiles "
              "p50 / p90 / p99 / max; *ideal* is the ideal quantizer of the same precision on the same "
              "graph (onnxruntime on the graph with weights and crossbar inputs rounded to cimc's grids; "
              "no cimc code), *ratio* is cimc's error over the ideal quantizer's (where the latter is at least "
              "1 % of the bound; below, both are float32 noise). The bound applies to "
              f"graphs the ideal quantizer keeps within {fg.WELL_CONDITIONED:g} x the bound "
              f"(*well-conditioned*); every graph must stay within {fg.IDEAL_FACTOR:g} x ideal + "
              f"{fg.IDEAL_FLOOR:g} x bound.", "",
              "| precision | bound | runs | well-conditioned | cimc error | ideal quantizer | ratio |",
              "|---|---|---|---|---|---|---|"]
    for bits in sorted(errors):
        n = len(errors[bits])
        good = conditioned[bits]["yes"]
        unavailable = conditioned[bits]["unavailable"]
        lines.append(f"| {bits} bits | {fg.BOUNDS[bits]:g} | {n} | {good} ({100 * good / max(n, 1):.0f} %)"
                     + (f"; {unavailable} without ideal quantizer" if unavailable else "") + " | "
                     f"{_quantiles(errors[bits])} | {_quantiles(ideals[bits])} | {_quantiles(ratios[bits])} |")
    lines += ["", "Ideal quantizer's error by crossbar layers on the longest path (median; share of runs "
              "well-conditioned):", "", "| depth | " + " | ".join(f"{b} bits" for b in sorted(errors)) + " |",
              "|---|" + "---|" * len(errors)]
    for d in sorted({d for _, d in by_depth}):
        cells = []
        for bits in sorted(errors):
            runs = by_depth.get((bits, d), [])
            good = sum(1 for _, c in runs if c)
            cells.append(f"{np.median([i for i, _ in runs]):.3g}; {100 * good / len(runs):.0f} % of {len(runs)}"
                         if runs else "-")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", "### Failures", ""]
    if not failures and not invalid:
        lines.append("None.")
    for rec, o in failures:
        lines.append(f"- graph {rec['seed']} on {o.target}: **{o.status}**: {o.detail.splitlines()[0][:300]}")
    for rec in invalid:
        lines.append(f"- graph {rec['seed']}: invalid ({rec['invalid']})")
    disagree = [(r["seed"], r["ort_optimized"]) for r in records
                if not r["invalid"] and (isinstance(r.get("ort_optimized"), str) or r.get("ort_optimized", 0) > 1e-4)]
    lines += ["", "### onnxruntime's optimizer against onnxruntime unoptimized", "",
              "The reference is onnxruntime with graph optimizations disabled (the ONNX semantics). Graphs on "
              "which its default (optimized) session differs by a normalized error above 1e-4: "
              + (", ".join(f"{s} ({e:.3g})" if not isinstance(e, str) else f"{s} ({e})" for s, e in disagree)
                 if disagree else "none") + "."]
    lines += ["", "### Refusals", "", "Counted by message with names and numbers taken out; one example each.", ""]
    if not refusals:
        lines.append("None.")
    for key, count in refusals.most_common():
        lines.append(f"- {count} x {refusal_example[key]}")
    lines += ["", "### Coverage", "",
              "Crossbar layers on the longest input-to-output path: "
              + ", ".join(f"{d}: {depth[d]}" for d in sorted(depth)) + " graphs.", "",
              "Graphs with each feature: " + ", ".join(f"`{f}` {n}" for f, n in sorted(features.items())) + ".", ""]
    return "\n".join(lines)


BEGIN, END = "<!-- benchmarks/fuzz.py: generated from here -->", "<!-- benchmarks/fuzz.py: to here -->"


def record(path: Path, text: str) -> None:
    """Replace the generated block of ``path``, keeping the hand-written sections around it."""
    block = f"{BEGIN}\n{text}\n{END}"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = block + "\n" + old
    path.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", type=int, default=2000)
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--seeds", help="comma-separated seeds to replay instead of a range")
    p.add_argument("--reprogram-every", type=int, default=10)
    p.add_argument("--determinism-every", type=int, default=10)
    p.add_argument("--crossbar-every", type=int, default=5)
    p.add_argument("--results", type=Path, default=HERE / "results" / "fuzz.md")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="print every failure with its graph")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else range(args.start, args.start + args.graphs)
    tiny = tiny_target()
    signal.signal(signal.SIGALRM, _alarm)
    records = []
    began = time.perf_counter()
    for i, seed in enumerate(seeds):
        signal.alarm(GRAPH_TIMEOUT)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rec = fuzz_one(seed, args, tiny)
        except _Timeout:
            rec = {"seed": seed, "outcomes": [fg.Outcome("crash", "-", f"timeout after {GRAPH_TIMEOUT} s")],
                   "features": set(), "depth": 0, "invalid": None}
        finally:
            signal.alarm(0)
        records.append(rec)
        for o in rec["outcomes"]:
            if o.failed:
                print(f"graph {seed} on {o.target}: {o.status}: {o.detail.splitlines()[0][:300]}", flush=True)
                if args.verbose:
                    print(o.detail)
                    print(rec.get("case", ""))
        if rec["invalid"]:
            print(f"graph {seed}: invalid: {rec['invalid']}", flush=True)
        if (i + 1) % 100 == 0:
            print(f"... {i + 1} graphs, {time.perf_counter() - began:.0f} s", flush=True)
    text = report(records, time.perf_counter() - began, args)
    print(text)
    if not args.no_record:
        record(args.results, text)
        print(f"recorded in {args.results}")
    failed = any(o.failed for r in records for o in r["outcomes"]) or any(r["invalid"] for r in records)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
