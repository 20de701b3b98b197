"""Compile time per model: the frontend and the passes, separately, for the ``hp16`` target.

    .venv/bin/python benchmarks/compile_time.py                     # corpus models and light_* models
    .venv/bin/python benchmarks/compile_time.py --models light_densenet121 --repeat 3 --no-record

Each model (every model of the corpus and the nine ``light_*`` models of the onnx wheel) is
compiled with ``cimc.compile(model, "hp16", calibration=<one sample>)``; the stage times come from
``program.pass_seconds``: ``frontend`` (reading, checking, opset conversion, constant folding, shape
inference, lowering to the IR) and the passes (``fuse``, ``quantize`` (calibration included),
``mapping``, ``schedule``, ``validate``, ``codegen``). One calibration sample (the model's reference
input, or its first test image) keeps calibration from dominating the passes time. With
``--repeat R`` the fastest of R compiles is kept, per stage. A model cimc refuses is timed up to the
refusal (the stage where it happened is named) and its message recorded.

Target: ``light_densenet121`` through the frontend in under 5 s.

Rewrites ``benchmarks/results/compile_time.md`` (``--results`` for another file, ``--no-record``
to print only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models_vs_onnxruntime as mv  # noqa: E402  (the model registry and data)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "compile_time.md"
TARGET = "hp16"
FRONTEND_TARGETS = {"light_densenet121": 5.0}
PASSES = ("fuse", "quantize", "mapping", "schedule", "validate", "codegen")


@dataclass
class Timing:
    key: str
    status: str = "ok"                          # ok | refused | internal error
    message: str = ""
    stage: str = ""                             # where a refusal happened
    seconds: dict = field(default_factory=dict)
    wall: float = 0.0
    nodes: int = 0
    crossbars: int | None = None

    @property
    def frontend(self) -> float | None:
        return self.seconds.get("frontend")

    @property
    def passes(self) -> float | None:
        if not all(p in self.seconds for p in PASSES):
            return None
        return sum(self.seconds[p] for p in PASSES)


def one_sample(spec: mv.Spec, corpus: Path | None) -> tuple[str, np.ndarray]:
    name = mv.input_name(spec, corpus)
    if spec.light:
        x, _, _ = mv.light_reference(spec)
        return name, x
    xs, _ = mv.samples(spec, corpus, "train", 1)
    return name, xs[0]


def time_model(spec: mv.Spec, corpus: Path | None, repeat: int = 1) -> Timing:
    import onnx

    import cimc
    from cimc.frontend import import_onnx

    timing = Timing(spec.key)
    path = mv.model_path(spec, corpus)
    timing.nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    name, x = one_sample(spec, corpus)
    shapes = list(spec.input_shapes) if spec.input_shapes else None
    best: dict[str, float] = {}
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = cimc.compile(path, TARGET, calibration={name: x}, input_shapes=shapes)
        except cimc.CimcError as exc:
            elapsed = time.perf_counter() - started
            timing.status, timing.message = "refused", str(exc)
            # Where did it stop? Re-run the frontend alone: if it refuses too, that was the stage.
            began = time.perf_counter()
            try:
                import_onnx(path, shapes)
                timing.stage = "passes"
                best["frontend"] = min(best.get("frontend", 1e9), time.perf_counter() - began)
            except cimc.CimcError:
                timing.stage = "frontend"
                best["frontend (to refusal)"] = min(best.get("frontend (to refusal)", 1e9), elapsed)
            timing.wall = elapsed if not timing.wall else min(timing.wall, elapsed)
            continue
        except Exception as exc:  # noqa: BLE001 - an internal error is a finding
            timing.status = "internal error"
            tb = traceback.extract_tb(exc.__traceback__)
            where = next((f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(tb)
                          if any(p in f.filename for p in ("/cimc/", "/runtime/", "/passes/", "/targets/"))), "")
            timing.message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]} (at {where})"
            break
        elapsed = time.perf_counter() - started
        timing.wall = elapsed if not timing.wall else min(timing.wall, elapsed)
        for stage, seconds in program.pass_seconds.items():
            best[stage] = min(best.get(stage, 1e9), seconds)
        timing.crossbars = program.report.get("crossbars_used")
    timing.seconds = best
    if "frontend (to refusal)" in best:
        timing.seconds = {"frontend": best["frontend (to refusal)"]}
    return timing


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def report(timings: list[Timing], repeat: int, wall: float) -> str:
    import cimc

    lines = [
        "# Compile time (hp16)",
        "",
        f"Written by `benchmarks/compile_time.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit "
        f"`{mv.git_commit()}`, cimc {cimc.__version__}, {os.cpu_count()} cores (shared), fastest of {repeat} "
        f"compile(s) per model, {wall:.0f} s wall. Seconds per stage from `program.pass_seconds`; calibration "
        "on one sample. A refused model is timed up to its refusal: when the frontend refuses, the frontend "
        "column holds the time to the refusal (marked `*`). Target: light_densenet121 frontend < 5 s.",
        "",
        "| model | nodes | status | frontend s | passes s | " + " | ".join(f"{p} s" for p in PASSES) +
        " | total s | crossbars | message |",
        "|---|---|---|---|---|" + "---|" * len(PASSES) + "---|---|---|",
    ]
    for t in timings:
        front = _fmt(t.frontend) + ("*" if t.status == "refused" and t.stage == "frontend" else "")
        cells = [_fmt(t.seconds.get(p)) for p in PASSES]
        msg = " ".join(t.message.split())
        if len(msg) > 240:
            msg = msg[:237] + "..."
        status = {"ok": "ok", "refused": f"refused ({t.stage})", "internal error": "**INTERNAL ERROR**"}[t.status]
        lines.append(f"| {t.key} | {t.nodes} | {status} | {front} | {_fmt(t.passes)} | " + " | ".join(cells) +
                     f" | {_fmt(t.wall)} | {t.crossbars if t.crossbars is not None else '-'} | "
                     f"{msg.replace('|', '/')} |")
    lines += ["", "Targets:", ""]
    for key, limit in FRONTEND_TARGETS.items():
        t = next((t for t in timings if t.key == key), None)
        if t is None:
            continue
        if t.frontend is None:
            verdict = f"not measured ({t.status})"
        elif t.status == "refused" and t.stage == "frontend":
            verdict = (f"not met: refused in the frontend after {t.frontend:.2f} s (full frontend time unknown)"
                       if t.frontend < limit else f"not met: {t.frontend:.2f} s before the refusal")
        else:
            verdict = f"{'met' if t.frontend < limit else 'NOT met'}: {t.frontend:.2f} s"
        lines.append(f"- {key} frontend < {limit:g} s: {verdict}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated model keys (default: all)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--memory-gb", type=float, default=12.0,
                        help="address-space limit (the machine is shared; 0: none)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    mv.quiet()
    mv.limit_memory(args.memory_gb)
    try:
        corpus = mv.corpus_root()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = args.models.split(",") if args.models else list(mv.SPECS)
    unknown = [k for k in keys if k not in mv.SPECS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(mv.SPECS)}")
    if corpus is None:
        print("note: corpus absent; timing the light_* models only", file=sys.stderr)
        keys = [k for k in keys if mv.SPECS[k].light]
    started = time.perf_counter()
    timings = []
    for key in keys:
        t = time_model(mv.SPECS[key], corpus, args.repeat)
        timings.append(t)
        print(f"{key:<24} {t.status:<8} frontend {_fmt(t.frontend)} s, passes {_fmt(t.passes)} s, "
              f"total {_fmt(t.wall)} s {t.message[:120]}", flush=True)
    wall = time.perf_counter() - started
    if not args.no_record:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(report(timings, args.repeat, wall))
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
