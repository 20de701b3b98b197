"""Wall time of the cimc reference runtime against onnxruntime on full test sets.

    .venv/bin/python benchmarks/runtime_vs_onnxruntime.py                 # both models, 10,000 images each
    .venv/bin/python benchmarks/runtime_vs_onnxruntime.py --limit 2000    # quicker
    .venv/bin/python benchmarks/runtime_vs_onnxruntime.py --models mnist --no-record

For each model (mnist-8 on the MNIST test set, MLPerf Tiny ResNet-8 on the CIFAR-10 test set) the
script compiles the model for a target (``isaac``), then times, in this one process:

* onnxruntime: one ``InferenceSession`` (CPU provider, default threading), one ``session.run``
  per image in a Python loop, because both models have a fixed batch of 1 and that is how they
  run;
* cimc: one ``cimc.run`` call (runtime level ``ideal``) on the whole [N, 1, ...] batch.

Both get one warm-up inference first, outside the timing; with ``--repeat R`` each is timed R
times and the shortest kept. Compile time is reported but not part of the comparison. It prints both wall times, their ratio (cimc / onnxruntime; the target is
within 10x) and both accuracies against the labels, and appends one row per model to
``benchmarks/results/runtime_vs_onnxruntime.md`` (``--no-record`` to skip, ``--results`` for
another file).

Needs the shared corpus (``$CIMC_CORPUS`` or ``../shared/corpus`` next to the repository).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

import cimc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import ROOT, git_commit, spread  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "runtime_vs_onnxruntime.md"
TARGET_RATIO = 10.0

HEADER = """# cimc runtime vs onnxruntime

Written by `benchmarks/runtime_vs_onnxruntime.py` (see `benchmarks/README.md`). Each row: one model's
test set through onnxruntime (one session, CPU provider, default threading, one `session.run` per
image because the models have a fixed batch of 1) and through one `cimc.run` call at runtime
level `ideal` on the whole batch, in the same process, after one warm-up inference each; with
`--repeat R` the shortest of R timings ("runs"). Ratio = cimc seconds / onnxruntime seconds; the
target is within 10x. Accuracy is top-1 against the labels; agreement is how often the two runtimes'
top-1 answers match. Commit `+dirty` means the working tree had uncommitted changes to tracked files.

| date (UTC) | commit | cores | model | images | runs | onnxruntime s | cimc s | ratio | onnxruntime acc. | cimc acc. | agreement | within 10x |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    input: str
    calibration: str
    test: str
    prepare: Callable[[np.ndarray], np.ndarray]


def _mnist(x: np.ndarray) -> np.ndarray:        # [N,28,28] raw pixels -> [N,1,1,28,28]
    return x.astype(np.float32)[:, None, None]


def _cifar(x: np.ndarray) -> np.ndarray:        # [N,32,32,3] HWC -> [N,1,3,32,32] NCHW, raw 0..255
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)[:, None]


CASES = {
    "mnist": Case("mnist-8", "models/mnist-8/model.onnx", "Input3", "mnist_train_5k.npz",
                  "mnist_test.npz", _mnist),
    "resnet8": Case("ResNet-8 (CIFAR-10)", "models/mlperf_tiny_resnet8_cifar10.onnx", "input_1",
                    "cifar10_train_1k.npz", "cifar10_test.npz", _cifar),
}


def corpus_dir() -> Path:
    env = os.environ.get("CIMC_CORPUS")
    path = Path(env) if env else ROOT.parent / "shared" / "corpus"
    if not (path / "models").is_dir() or not (path / "data").is_dir():
        where = f"CIMC_CORPUS={env}" if env else f"{path} (set CIMC_CORPUS to point elsewhere)"
        sys.exit(f"runtime_vs_onnxruntime.py: error: the test corpus is not available: no models/ and "
                 f"data/ in {where}")
    return path


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    """The shortest wall time of ``repeat`` calls, and the last call's result."""
    best, value = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - began)
    return best, value


def bench(case: Case, corpus: Path, limit: int | None, target: str, repeat: int) -> dict:
    with np.load(corpus / "data" / case.calibration) as npz:
        calib = case.prepare(npz["x"][spread(len(npz["x"]), 500)])
    with np.load(corpus / "data" / case.test) as npz:
        pick = spread(len(npz["y"]), limit)
        x, y = case.prepare(npz["x"][pick]), npz["y"][pick].astype(np.int64)
    model = corpus / case.model
    print(f"{case.name}: {len(x)} images", flush=True)

    began = time.perf_counter()
    program = cimc.compile(model, target, calibration={case.input: calib})
    print(f"  cimc compile for {target}: {time.perf_counter() - began:.2f} s", flush=True)

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out_name = session.get_outputs()[0].name
    session.run(None, {case.input: x[0]})                                   # warm-up
    ort_s, ort_out = best_of(repeat, lambda: [session.run([out_name], {case.input: sample})[0] for sample in x])
    ort_top1 = np.stack(ort_out).reshape(len(x), -1).argmax(-1)
    print(f"  onnxruntime, {len(x)} session.run calls: {ort_s:.3f} s", flush=True)

    cimc.run(program, {case.input: x[:1]})                                  # warm-up
    cimc_s, result = best_of(repeat, lambda: cimc.run(program, {case.input: x}))
    cimc_top1 = result.outputs[out_name].reshape(len(x), -1).argmax(-1)
    print(f"  cimc.run on the batch (level {result.stats['level']}): {cimc_s:.3f} s", flush=True)

    row = {"model": case.name, "images": len(x), "runs": repeat, "ort_s": ort_s, "cimc_s": cimc_s,
           "ratio": cimc_s / ort_s, "ort_acc": float((ort_top1 == y).mean()),
           "cimc_acc": float((cimc_top1 == y).mean()), "agreement": float((ort_top1 == cimc_top1).mean())}
    print(f"  ratio cimc / onnxruntime {row['ratio']:.2f}x ({'within' if row['ratio'] <= TARGET_RATIO else 'NOT within'} "
          f"{TARGET_RATIO:.0f}x); accuracy onnxruntime {100 * row['ort_acc']:.2f} %, cimc "
          f"{100 * row['cimc_acc']:.2f} %, agreement {100 * row['agreement']:.2f} %", flush=True)
    return row


def record(rows: list[dict], path: Path) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    rev, cores = git_commit(), os.cpu_count()
    lines = []
    for r in rows:
        lines.append(f"| {stamp} | {rev} | {cores} | {r['model']} | {r['images']} | {r['runs']} | {r['ort_s']:.3f} | "
                     f"{r['cimc_s']:.3f} | {r['ratio']:.2f}x | {100 * r['ort_acc']:.2f} % | "
                     f"{100 * r['cimc_acc']:.2f} % | {100 * r['agreement']:.2f} % | "
                     f"{'yes' if r['ratio'] <= TARGET_RATIO else 'no'} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.is_file() else HEADER
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + "\n".join(lines) + "\n")
    print(f"recorded in {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, metavar="N", help="N test images of each set, spread evenly over it (the default: all)")
    ap.add_argument("--models", default="mnist,resnet8",
                    help=f"comma-separated, from {', '.join(CASES)} (default: all)")
    ap.add_argument("--target", default="isaac", help="target preset or TOML file (default: isaac)")
    ap.add_argument("--repeat", type=int, default=1, metavar="R",
                    help="time each runtime R times and keep the shortest (default: 1)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="markdown file to append to")
    ap.add_argument("--no-record", action="store_true", help="print only; do not write the results file")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        ap.error(f"unknown model {unknown[0] if unknown else '(none)'}; choose from {', '.join(CASES)}")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    corpus = corpus_dir()
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, numpy "
          f"{np.__version__}, onnxruntime {ort.__version__}, cimc {cimc.__version__} ({git_commit()})")
    rows = [bench(CASES[n], corpus, args.limit, args.target, args.repeat) for n in names]
    if not args.no_record:
        record(rows, args.results.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
