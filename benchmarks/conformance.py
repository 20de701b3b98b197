"""Operator conformance: ONNX's own backend test cases through cimc, judged against their outputs.

    .venv/bin/python benchmarks/conformance.py                       # every case, hp16 and isaac
    .venv/bin/python benchmarks/conformance.py --targets hp16 -k conv --no-record
    .venv/bin/python benchmarks/conformance.py --jobs 2 --timeout 120

Cases (see ``discover``):

* every case in the corpus's ``onnx-node-tests`` (266 single-operator cases of the ONNX suite);
* the cases of the onnx wheel's ``onnx/backend/test/data/pytorch-converted`` and
  ``pytorch-operator`` folders whose operators all lie in cimc's domain (``DOMAIN_OPS``: the
  corpus operators plus the CNN vector operators Elu, Tanh, Pad, DepthToSpace and the shape
  operators); the others are listed in the results as out of scope, with the operators that put
  them there.

Each case is compiled with ``cimc.compile(model, target, calibration={input: test input})`` and run
with ``cimc.run`` on its test input, for each target (``hp16``: 16 bits, ``isaac``: 8 bits).
cimc programs weights into crossbars at compile time, so a case's *parameter* inputs
(Conv/Gemm/MatMul weights and biases, BatchNormalization statistics, PRelu slopes, Clip bounds,
Reshape shapes, Resize scales, quantization scales and zero points) are turned into initializers
holding the test data's values ("frozen") before compiling. The first graph input is the data in
every case of these suites and stays an input, and so do all inputs of models made only of
data-combining operators (Add, Concat, ...). The results list what was frozen per case.

Each case ends in one of:

* **passed**: outputs of the expected shapes within tolerance. Crossbar cases (the model contains
  Conv, ConvTranspose, Gemm, MatMul, QLinearConv, QLinearMatMul, ConvInteger or MatMulInteger) are
  judged by the normalized max error max|cimc - expected| / max|expected|, at most 1e-3 on 16-bit
  targets and 3e-2 on 8-bit ones; the other (vector) cases by the suite's tolerance, rtol 1e-3 and
  atol 1e-7 with ``numpy.testing.assert_allclose`` semantics;
* **failed**: cimc accepted the case and returned wrong outputs (or wrong shapes), or raised an
  exception that is not a ``cimc.CimcError`` (an **internal error**, i.e. a bug in cimc: these are
  listed first in the results), or ran past the time limit;
* **refused**: a ``cimc.CimcError`` at compile or run time; its message is recorded, and judged
  *clear* when it is one non-empty line that names the offending node, operator or input.

onnxruntime runs every case too (the original model, nothing frozen, suite tolerance), so the
results show which cases the reference runtime itself fails (the corpus README counts 19).

Writes ``benchmarks/results/conformance.md`` (``--results`` for another file, ``--no-record`` to
print only). ``tests/test_conformance.py`` imports this module and asserts the same judgements.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import multiprocessing
import os
import re
import signal
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import DEFAULT_CORPUS, ROOT, corpus_root, git_commit  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "conformance.md"
TARGETS = ("hp16", "isaac")

#: Suite tolerance of ONNX's backend tests (numpy.testing.assert_allclose semantics).
RTOL, ATOL = 1e-3, 1e-7
#: Normalized max error allowed on crossbar cases, by the target's weight/activation width.
CROSSBAR_TOLERANCE = {16: 1e-3, 8: 3e-2}
#: The issue's target: at most this fraction of all cases refused.
MAX_REFUSED_FRACTION = 0.15

CROSSBAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul",
                          "ConvInteger", "MatMulInteger"})
#: Operators of the corpus's conformance set, plus the CNN vector and shape operators cimc is meant
#: to cover (the pytorch-* folders are filtered by this set).
DOMAIN_OPS = CROSSBAR_OPS | frozenset({
    "QuantizeLinear", "DequantizeLinear", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "BatchNormalization", "Add", "Sub", "Mul", "Div", "Concat", "Flatten", "Reshape",
    "Softmax", "Relu", "LeakyRelu", "PRelu", "Elu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Clip", "Resize", "Upsample", "Pad", "DepthToSpace", "Transpose", "Squeeze", "Unsqueeze",
    "Identity", "Dropout", "Constant"})
#: Operators whose inputs are all data: cases made only of these keep every input an input.
DATA_COMBINING = frozenset({"Add", "Sub", "Mul", "Div", "Concat", "Sum", "Max", "Min", "Mean", "Pow"})
#: Accepted cases that miss their tolerance for a reason that is not a cimc defect, with the reason
#: (shown in the results; tests/test_conformance.py reports them as xfail).
KNOWN_MISSES = {
    ("node/test_matmul_1d_3d", "isaac"):
        "the outputs (|y| ~ 0.25) are small next to the operands (|a|, |b| up to 2.2), so ideal 8-bit "
        "symmetric quantization (per-tensor activation, per-channel weights) already errs by 3.34e-2 "
        "> 3e-2; cimc's error equals that figure",
}
#: ONNX-suite folders in the onnx wheel that are filtered by DOMAIN_OPS.
PYTORCH_SUITES = ("pytorch-converted", "pytorch-operator")


# -- locations ---------------------------------------------------------------------------------

def onnx_test_data() -> Path:
    return Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"


# -- cases -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    suite: str                  # "node" (corpus onnx-node-tests), "pytorch-converted", "pytorch-operator"
    name: str
    folder: Path
    ops: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"

    @property
    def crossbar(self) -> bool:
        return bool(CROSSBAR_OPS & set(self.ops))


def _ops(model_path: Path) -> tuple[str, ...]:
    model = onnx.load(str(model_path), load_external_data=False)
    return tuple(sorted({n.op_type for n in model.graph.node}))


def discover(corpus: Path | None) -> tuple[list[Case], list[tuple[str, tuple[str, ...]]]]:
    """The cases to run, and the pytorch-* cases left out (with the operators outside the domain)."""
    cases: list[Case] = []
    excluded: list[tuple[str, tuple[str, ...]]] = []
    if corpus is not None:
        node_root = corpus / "onnx-node-tests"
        for folder in sorted(p for p in node_root.iterdir() if (p / "model.onnx").is_file()):
            cases.append(Case("node", folder.name, folder, _ops(folder / "model.onnx")))
    data = onnx_test_data()
    for suite in PYTORCH_SUITES:
        for folder in sorted(p for p in (data / suite).iterdir() if (p / "model.onnx").is_file()):
            ops = _ops(folder / "model.onnx")
            outside = tuple(op for op in ops if op not in DOMAIN_OPS)
            if outside:
                excluded.append((f"{suite}/{folder.name}", outside))
            else:
                cases.append(Case(suite, folder.name, folder, ops))
    return cases, excluded


def read_pb(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def load_case(case: Case) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[np.ndarray]]:
    """The model, its test inputs by graph-input name, and its expected outputs in graph order."""
    model = onnx.load(str(case.folder / "model.onnx"))
    data = case.folder / "test_data_set_0"
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    inputs = {}
    for k, name in enumerate(names):
        path = data / f"input_{k}.pb"
        if path.is_file():
            inputs[name] = read_pb(path)
    expected = [read_pb(data / f"output_{k}.pb") for k in range(len(model.graph.output))]
    return model, inputs, expected


def freeze_parameters(model: onnx.ModelProto, inputs: dict[str, np.ndarray]
                      ) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]:
    """Make every parameter input an initializer holding its test value (see the module docstring).

    The first graph input is the data in every case of these suites; the others are parameters,
    except in models made of data-combining operators only (``DATA_COMBINING``: Add, Concat, ...),
    where every input stays an input. Returns the new model, the inputs that stay inputs, and the
    names frozen.
    """
    names = [i.name for i in model.graph.input if i.name in inputs]
    ops = {n.op_type for n in model.graph.node} - {"Constant"}
    keep = set(names) if ops and ops <= DATA_COMBINING else set(names[:1])
    frozen = [n for n in names if n not in keep]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not frozen:
        return out, {k: v for k, v in inputs.items() if k in keep}, []
    kept_inputs = [i for i in out.graph.input if i.name not in frozen]
    del out.graph.input[:]
    out.graph.input.extend(kept_inputs)
    for name in frozen:
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(inputs[name]), name))
    if out.ir_version < 4:
        out.ir_version = 4          # initializers that are not graph inputs need IR 4
    return out, {k: v for k, v in inputs.items() if k in keep}, frozen


# -- judging -----------------------------------------------------------------------------------

def target_bits(target) -> int:
    from cimc.targets import load_target
    t = load_target(target)
    return max(t.precision.weight_bits, t.precision.activation_bits)


def crossbar_tolerance(bits: int) -> float:
    return CROSSBAR_TOLERANCE[16] if bits >= 16 else CROSSBAR_TOLERANCE[8]


def normalized_error(got: np.ndarray, ref: np.ndarray) -> float:
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.size == 0:
        return 0.0
    diff = np.abs(got - ref)
    if not np.isfinite(diff).all():
        return float("inf")
    return float(diff.max() / max(np.abs(ref).max(), 1e-30))


def allclose_error(got: np.ndarray, ref: np.ndarray) -> str | None:
    """None if ``got`` passes ``assert_allclose(got, ref, rtol, atol)``, else a one-line reason."""
    try:
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(ref, np.float64),
                                   rtol=RTOL, atol=ATOL)
        return None
    except AssertionError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        keep = [ln for ln in lines if ln.startswith(("Mismatched", "Max absolute", "Max relative"))]
        return "; ".join(keep) or (lines[0] if lines else "mismatch")


def judge(got: list[np.ndarray | None], expected: list[np.ndarray], crossbar: bool, bits: int
          ) -> tuple[bool, str, float | None]:
    """(passed, detail, worst normalized error) for one case's outputs."""
    worst = 0.0
    problems = []
    for k, (g, e) in enumerate(zip(got, expected)):
        if g is None:
            problems.append(f"output {k} missing")
            continue
        g = np.asarray(g)
        if g.shape != e.shape:
            problems.append(f"output {k} shape {g.shape}, expected {e.shape}")
            continue
        err = normalized_error(g, e)
        worst = max(worst, err)
        if crossbar:
            tol = crossbar_tolerance(bits)
            if not err <= tol:
                problems.append(f"output {k} normalized error {err:.3g} > {tol:g}")
        else:
            reason = allclose_error(g, e)
            if reason:
                problems.append(f"output {k}: {reason}")
    if problems:
        return False, "; ".join(problems), worst
    return True, f"normalized error {worst:.3g}", worst


def clear_message(message: str, model: onnx.ModelProto) -> bool:
    """One non-empty line naming a node, an operator or an input of the model."""
    if not message or "\n" in message.strip() or len(message) > 2000:
        return False
    words = {n.name for n in model.graph.node if n.name} | {n.op_type for n in model.graph.node}
    words |= {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    words |= {"input", "node", "operator", "model"}
    return any(w and w in message for w in words)


# -- running -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    case: str
    target: str
    status: str                        # passed | failed | refused
    detail: str = ""
    error_type: str = ""               # for refusals and internal errors: the exception class
    internal: bool = False             # a non-CimcError exception: a bug in cimc
    clear: bool | None = None          # refusals: is the message clear
    stage: str = ""                    # compile | run | judge
    normalized_error: float | None = None
    crossbar: bool = False
    frozen: list[str] = field(default_factory=list)
    seconds: float = 0.0
    matches_ort: bool | None = None    # failed cases: is cimc's output onnxruntime's (same tolerance)?


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def run_case(case: Case, target: str, timeout: float | None = None) -> Outcome:
    """Compile and run one case for one target; never raises (everything ends in an Outcome)."""
    import cimc

    started = time.perf_counter()
    out = Outcome(case.id, target, "failed", crossbar=case.crossbar)
    model, inputs, expected = load_case(case)
    frozen_model, data, frozen = freeze_parameters(model, inputs)
    out.frozen = frozen
    previous = None
    if timeout and hasattr(signal, "SIGALRM"):
        try:
            previous = signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout)
        except ValueError:            # not the main thread: no time limit
            previous = None
    out.stage = "compile"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = cimc.compile(frozen_model, target, calibration=dict(data))
            out.stage = "run"
            result = cimc.run(program, dict(data))
        out.stage = "judge"
        got = [result.outputs.get(o.name) for o in frozen_model.graph.output]
        bits = target_bits(target)
        ok, detail, err = judge(got, expected, case.crossbar, bits)
        out.status = "passed" if ok else "failed"
        out.detail, out.normalized_error = detail, err
        if not ok:
            reference = ort_reference(model, inputs)
            if reference is not None and len(reference) == len(got):
                out.matches_ort = judge(got, [np.asarray(r) for r in reference], case.crossbar, bits)[0]
    except CaseTimeout:
        out.status, out.detail = "failed", f"time limit of {timeout:g} s exceeded during {out.stage}"
        out.error_type = "Timeout"
    except cimc.CimcError as exc:
        message = str(exc)
        out.status, out.detail, out.error_type = "refused", message, type(exc).__name__
        out.clear = clear_message(message, frozen_model)
    except Exception as exc:  # noqa: BLE001 - an internal error is a finding, not a crash
        out.status, out.internal, out.error_type = "failed", True, type(exc).__name__
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(tb)
                      if "/cimc/" in f.filename or "/runtime/" in f.filename or "/passes/" in f.filename
                      or "/targets/" in f.filename), "")
        first = (str(exc).splitlines() or [""])[0][:300]
        out.detail = f"{type(exc).__name__}: {first}" + (f" (at {where})" if where else "")
    finally:
        if timeout and previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    out.seconds = round(time.perf_counter() - started, 3)
    return out


def _ort_session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ort_reference(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """onnxruntime's outputs for the original case, or None if it cannot run it."""
    try:
        return _ort_session(model).run(None, inputs)
    except Exception:  # noqa: BLE001
        return None


@dataclass
class OrtOutcome:
    case: str
    status: str                        # passed | failed | error
    detail: str = ""


def run_ort(case: Case) -> OrtOutcome:
    """onnxruntime on the original case (nothing frozen), judged by the suite tolerance."""
    model, inputs, expected = load_case(case)
    try:
        got = _ort_session(model).run(None, inputs)
    except Exception as exc:  # noqa: BLE001
        return OrtOutcome(case.id, "error", f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}")
    problems = []
    for k, (g, e) in enumerate(zip(got, expected)):
        g = np.asarray(g)
        if g.shape != e.shape:
            problems.append(f"output {k} shape {g.shape}, expected {e.shape}")
            continue
        if e.dtype.kind not in "biuf" or g.dtype.kind not in "biuf":     # float8/float4 and the like
            g, e = g.astype(np.float32), e.astype(np.float32)
        reason = allclose_error(g, e)
        if reason:
            problems.append(f"output {k}: {reason}")
    return OrtOutcome(case.id, "failed" if problems else "passed", "; ".join(problems))


def _work(item):
    kind, case, target, timeout = item
    if kind == "ort":
        return run_ort(case)
    return run_case(case, target, timeout)


def run_all(cases: list[Case], targets: list[str], *, jobs: int = 1, timeout: float | None = None,
            ort: bool = True, progress=None) -> tuple[list[Outcome], list[OrtOutcome]]:
    items = [("cimc", c, t, timeout) for t in targets for c in cases]
    if ort:
        items += [("ort", c, None, None) for c in cases]
    results = []
    if jobs > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs, maxtasksperchild=50) as pool:
            for r in pool.imap(_work, items, chunksize=1):
                results.append(r)
                if progress:
                    progress(r)
    else:
        for item in items:
            r = _work(item)
            results.append(r)
            if progress:
                progress(r)
    return ([r for r in results if isinstance(r, Outcome)], [r for r in results if isinstance(r, OrtOutcome)])


# -- report ------------------------------------------------------------------------------------

def counts(outcomes: list[Outcome], target: str) -> Counter:
    c = Counter(o.status for o in outcomes if o.target == target)
    c["internal"] = sum(o.internal for o in outcomes if o.target == target)
    c["total"] = sum(1 for o in outcomes if o.target == target)
    return c


def _cell(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text.replace("|", "\\|")


def _summarize_refusal(message: str) -> str:
    """Group refusal messages: strip node and input names so like reasons count together."""
    m = re.sub(r"'[^']*'", "'…'", message)
    m = re.sub(r"Supported operators: .*", "Supported operators: …", m)
    m = re.sub(r"\(\d+(, \d+)*,?\)|\b\d+\b", "#", m)
    return m[:200]


def report(cases: list[Case], excluded, outcomes: list[Outcome], ort: list[OrtOutcome],
           targets: list[str], wall: float) -> str:
    import cimc
    import onnxruntime

    ort_by = {o.case: o for o in ort}
    by = {(o.case, o.target): o for o in outcomes}
    total = len(cases)
    lines = [
        "# Conformance: ONNX backend test cases through cimc",
        "",
        f"Written by `benchmarks/conformance.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"commit `{git_commit()}`, cimc {cimc.__version__}, onnx {onnx.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, {os.cpu_count()} cores, {wall:.0f} s wall. See `benchmarks/README.md`.",
        "",
        f"{total} cases: {sum(c.suite == 'node' for c in cases)} from the corpus's `onnx-node-tests`, "
        f"{sum(c.suite == 'pytorch-converted' for c in cases)} from `pytorch-converted` and "
        f"{sum(c.suite == 'pytorch-operator' for c in cases)} from `pytorch-operator` (onnx wheel; "
        f"{len(excluded)} more out of scope, listed at the end). "
        f"{sum(c.crossbar for c in cases)} are crossbar cases (normalized max error <= "
        f"{CROSSBAR_TOLERANCE[16]:g} at 16 bits, <= {CROSSBAR_TOLERANCE[8]:g} at 8 bits), the rest vector "
        f"cases (rtol {RTOL:g}, atol {ATOL:g}). Parameter inputs are frozen into initializers (module "
        f"docstring). Target: refused <= {MAX_REFUSED_FRACTION:.0%} of all cases, each with a clear message.",
        "",
        "## Summary",
        "",
        "| target | passed | failed | of which internal errors | refused | refused % | unclear refusals | "
        "refusal target met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        c = counts(outcomes, t)
        unclear = sum(1 for o in outcomes if o.target == t and o.status == "refused" and not o.clear)
        frac = c["refused"] / max(c["total"], 1)
        lines.append(f"| {t} | {c['passed']} | {c['failed']} | {c['internal']} | {c['refused']} | "
                     f"{100 * frac:.1f} % | {unclear} | "
                     f"{'yes' if frac <= MAX_REFUSED_FRACTION and not unclear else 'no'} |")
    if ort:
        oc = Counter(o.status for o in ort)
        lines += ["", f"onnxruntime on the same cases: {oc['passed']} passed, {oc['failed']} failed "
                      f"(wrong values), {oc['error']} errors (cannot load or run): "
                      f"{oc['failed'] + oc['error']} fail in all."]
    # by suite and kind
    lines += ["", "By suite and kind (passed / failed / refused):", "",
              "| suite | kind | cases | " + " | ".join(targets) + " |",
              "|---|---|---|" + "---|" * len(targets)]
    for suite in ("node",) + PYTORCH_SUITES:
        for kind in (True, False):
            subset = [c for c in cases if c.suite == suite and c.crossbar == kind]
            if not subset:
                continue
            cells = []
            for t in targets:
                cc = Counter(by[(c.id, t)].status for c in subset if (c.id, t) in by)
                cells.append(f"{cc['passed']} / {cc['failed']} / {cc['refused']}")
            lines.append(f"| {suite} | {'crossbar' if kind else 'vector'} | {len(subset)} | "
                         + " | ".join(cells) + " |")

    internal = [o for o in outcomes if o.internal]
    lines += ["", "## Internal errors (bugs in cimc)", ""]
    if internal:
        lines += ["| case | target | stage | error |", "|---|---|---|---|"]
        lines += [f"| {o.case} | {o.target} | {o.stage} | {_cell(o.detail)} |" for o in internal]
    else:
        lines.append("None.")

    failed = [o for o in outcomes if o.status == "failed" and not o.internal]
    lines += ["", "## Failed (accepted, wrong result or time limit)", ""]
    if failed:
        lines += ["\"onnxruntime\" is onnxruntime's own verdict on the case; \"= ort\" says whether cimc's "
                  "output is onnxruntime's within the same tolerance.", "",
                  "| case | target | onnxruntime | = ort | detail | note |", "|---|---|---|---|---|---|"]
        for o in failed:
            note = KNOWN_MISSES.get((o.case, o.target), "")
            if not note and o.matches_ort and ort_by.get(o.case) and ort_by[o.case].status != "passed":
                note = "cimc follows onnxruntime, which misses the ONNX reference output too"
            lines.append(f"| {o.case} | {o.target} | {ort_by[o.case].status if o.case in ort_by else '-'} | "
                         f"{'-' if o.matches_ort is None else ('yes' if o.matches_ort else 'no')} | "
                         f"{_cell(o.detail)} | {_cell(note)} |")
    else:
        lines.append("None.")

    lines += ["", "## Refusal reasons", "", "Messages grouped with names and numbers blanked out "
              "(count over all targets).", "", "| count | reason (pattern) |", "|---|---|"]
    reasons = Counter(_summarize_refusal(o.detail) for o in outcomes if o.status == "refused")
    lines += [f"| {n} | {_cell(r, 200)} |" for r, n in reasons.most_common()]

    lines += ["", "## onnxruntime failures", ""]
    bad = [o for o in ort if o.status != "passed"]
    if bad:
        lines += ["| case | onnxruntime | detail | cimc " + " | cimc ".join(targets) + " |",
                  "|---|---|---|" + "---|" * len(targets)]
        for o in bad:
            lines.append(f"| {o.case} | {o.status} | {_cell(o.detail, 200)} | " + " | ".join(
                by[(o.case, t)].status if (o.case, t) in by else "-" for t in targets) + " |")
    else:
        lines.append("None." if ort else "Not run (--no-ort).")

    lines += ["", "## Every case", "",
              "Status per target (worst normalized error for cases that ran; E = internal error); "
              "refusal messages are those of the first target listed.", "",
              "| case | kind | frozen | onnxruntime | " + " | ".join(targets) + " | message / detail |",
              "|---|---|---|---|" + "---|" * len(targets) + "---|"]
    for c in cases:
        cells = []
        detail = ""
        for t in targets:
            o = by.get((c.id, t))
            if o is None:
                cells.append("-")
                continue
            tag = {"passed": "pass", "failed": "FAIL", "refused": "refused"}[o.status]
            if o.internal:
                tag = "FAIL (E)"
            if o.normalized_error is not None:
                tag += f" {o.normalized_error:.2g}"
            cells.append(tag)
            if not detail and o.status != "passed":
                detail = o.detail
        frozen = ", ".join(by[(c.id, targets[0])].frozen) if (c.id, targets[0]) in by else ""
        lines.append(f"| {c.id} | {'crossbar' if c.crossbar else 'vector'} | {_cell(frozen, 60)} | "
                     f"{ort_by[c.id].status if c.id in ort_by else '-'} | " + " | ".join(cells) +
                     f" | {_cell(detail, 300)} |")

    lines += ["", "## Out of scope (pytorch-* cases with operators outside cimc's domain)", "",
              "| case | operators outside the domain |", "|---|---|"]
    lines += [f"| {name} | {', '.join(ops)} |" for name, ops in excluded]
    return "\n".join(lines) + "\n"


def print_summary(outcomes: list[Outcome], ort: list[OrtOutcome], targets: list[str], total: int) -> None:
    for t in targets:
        c = counts(outcomes, t)
        print(f"{t:>6}: {c['passed']} passed, {c['failed']} failed ({c['internal']} internal errors), "
              f"{c['refused']} refused ({100 * c['refused'] / max(total, 1):.1f} %) of {total}")
    internal = [o for o in outcomes if o.internal]
    if internal:
        print(f"\n!!! {len(internal)} INTERNAL ERRORS (bugs in cimc):")
        for o in internal:
            print(f"  {o.case} [{o.target}, {o.stage}]: {o.detail}")
    if ort:
        bad = [o for o in ort if o.status != "passed"]
        print(f"\nonnxruntime fails {len(bad)} of {len(ort)} cases")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated presets or TOML files")
    parser.add_argument("-k", dest="pattern", default=None,
                        help="only cases whose id (suite/name) contains this text or matches this glob")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case and target")
    parser.add_argument("--no-ort", action="store_true", help="do not run onnxruntime")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="address-space limit per process (the machine is shared; 0: none)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = parser.parse_args(argv)
    if args.memory_gb > 0:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = int(args.memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        corpus = corpus_root()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if corpus is None:
        print(f"note: corpus absent ({DEFAULT_CORPUS}); set CIMC_CORPUS. Running the onnx wheel's cases only.",
              file=sys.stderr)
    cases, excluded = discover(corpus)
    if args.pattern:
        cases = [c for c in cases if args.pattern in c.id or fnmatch.fnmatch(c.id, args.pattern)]
    targets = [t for t in args.targets.split(",") if t]
    started = time.perf_counter()
    done = [0]
    n_items = len(cases) * (len(targets) + (0 if args.no_ort else 1))

    def progress(r) -> None:
        done[0] += 1
        if args.verbose:
            where = getattr(r, "target", "ort")
            print(f"[{done[0]}/{n_items}] {r.case} {where}: {r.status} {_cell(r.detail, 160)}", flush=True)
        elif done[0] % 50 == 0:
            print(f"  {done[0]}/{n_items} ({time.perf_counter() - started:.0f} s)", flush=True)

    outcomes, ort = run_all(cases, targets, jobs=args.jobs, timeout=args.timeout, ort=not args.no_ort,
                            progress=progress)
    wall = time.perf_counter() - started
    print_summary(outcomes, ort, targets, len(cases))
    if not args.no_record:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(report(cases, excluded, outcomes, ort, targets, wall))
        print(f"\nwrote {args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
