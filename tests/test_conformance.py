"""Operator conformance: the ONNX backend test cases through cimc (see benchmarks/conformance.py).

Every case of the corpus's ``onnx-node-tests`` and the in-domain cases of the onnx wheel's
``pytorch-converted`` / ``pytorch-operator`` folders is compiled for ``hp16`` and ``isaac`` and run
on its test input. Per case and target: an internal error (an exception that is not a
``cimc.CimcError``) fails; a result outside tolerance fails (xfail instead when cimc's output is
onnxruntime's and onnxruntime misses the ONNX reference too, or for the documented
``conformance.KNOWN_MISSES``); a refusal must carry a clear message and is reported as a skip with
that message. Per target: at most 15 % of the cases refused (the issue's target). Cases whose inputs
hold more than ``HEAVY_ELEMENTS`` values run only in the benchmark (``benchmarks/conformance.py``),
which also runs onnxruntime on every case.

The corpus follows the rule of ``tests/test_corpus.py``: ``$CIMC_CORPUS``, else ``../shared/corpus``
next to the repository; absent and unset, its cases are not collected and
``test_corpus_location`` skips; set but missing, that test fails.
"""

from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import helper

from corpus import load_benchmark

conformance = load_benchmark("conformance")

TARGETS = ("hp16", "isaac")
#: Cases with more input values than this run only in the benchmark (time).
HEAVY_ELEMENTS = 200_000
#: Seconds allowed per case and target.
CASE_TIMEOUT = 30.0

try:
    CORPUS, CORPUS_ERROR = conformance.corpus_root(), None
except FileNotFoundError as exc:
    CORPUS, CORPUS_ERROR = None, str(exc)


def _input_elements(case) -> int:
    model = onnx.load(str(case.folder / "model.onnx"), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return sum(int(np.prod([d.dim_value for d in vi.type.tensor_type.shape.dim] or [1]))
               for vi in model.graph.input if vi.name not in inits)


ALL_CASES, EXCLUDED = conformance.discover(CORPUS)
CASES = [c for c in ALL_CASES if _input_elements(c) <= HEAVY_ELEMENTS]

_OUTCOMES: dict = {}


def outcome(case, target: str):
    key = (case.id, target)
    if key not in _OUTCOMES:
        _OUTCOMES[key] = conformance.run_case(case, target, timeout=CASE_TIMEOUT)
    return _OUTCOMES[key]


# -- the corpus location rule, and the harness itself ---------------------------------------

def test_corpus_location():
    if CORPUS_ERROR:
        pytest.fail(CORPUS_ERROR)
    if CORPUS is None:
        pytest.skip(f"test corpus absent ({conformance.DEFAULT_CORPUS}); set CIMC_CORPUS to run the "
                    f"onnx-node-tests cases")
    node = [c for c in ALL_CASES if c.suite == "node"]
    assert len(node) == 266, f"expected the corpus's 266 onnx-node-tests cases, found {len(node)}"


def test_corpus_env_var_missing_folder_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("CIMC_CORPUS", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="CIMC_CORPUS"):
        conformance.corpus_root()


def test_pytorch_cases_are_filtered_by_domain():
    ids = {c.id for c in ALL_CASES}
    excluded = dict(EXCLUDED)
    assert "pytorch-converted/test_Conv2d_depthwise" in ids
    assert "pytorch-converted/test_PixelShuffle" in ids
    assert "pytorch-converted/test_GLU" in excluded and "Split" in excluded["pytorch-converted/test_GLU"]
    assert "pytorch-converted/test_LogSoftmax" in excluded


def test_freeze_parameters_keeps_data_and_freezes_weights():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    w = helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, [1, 1, 3, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    conv = helper.make_model(helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"])], "g", [x, w], [y]))
    inputs = {"x": np.zeros((1, 1, 4, 4), np.float32), "W": np.ones((1, 1, 3, 3), np.float32)}
    frozen_model, data, frozen = conformance.freeze_parameters(conv, inputs)
    assert frozen == ["W"] and list(data) == ["x"]
    assert [i.name for i in frozen_model.graph.input] == ["x"]
    assert [i.name for i in frozen_model.graph.initializer] == ["W"]
    add = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g", [x, w], [y]))
    _, data, frozen = conformance.freeze_parameters(add, inputs)
    assert frozen == [] and set(data) == {"x", "W"}


def test_judge_thresholds():
    ref = np.array([1.0, -2.0, 4.0], np.float32)
    near = ref + np.float32(2e-3)                      # normalized error 5e-4
    far = ref + np.float32(0.2)                        # normalized error 5e-2
    assert conformance.judge([near], [ref], crossbar=True, bits=16)[0]
    assert not conformance.judge([far], [ref], crossbar=True, bits=16)[0]
    assert conformance.judge([ref + np.float32(0.1)], [ref], crossbar=True, bits=8)[0]   # 2.5e-2
    assert not conformance.judge([far], [ref], crossbar=True, bits=8)[0]
    assert not conformance.judge([near], [ref], crossbar=False, bits=16)[0]          # rtol 1e-3
    assert conformance.judge([ref * np.float32(1 + 5e-4)], [ref], crossbar=False, bits=16)[0]
    assert not conformance.judge([ref[:2]], [ref], crossbar=False, bits=16)[0]        # shape


# -- the cases -------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, target):
    o = outcome(case, target)
    if o.internal:
        pytest.fail(f"internal error (a bug in cimc) at {o.stage}: {o.detail}")
    if o.status == "failed":
        reason = conformance.KNOWN_MISSES.get((case.id, target))
        if reason:
            pytest.xfail(f"{o.detail}: {reason}")
        if o.matches_ort and conformance.run_ort(case).status != "passed":
            pytest.xfail(f"{o.detail}; cimc gives onnxruntime's output, which misses the ONNX reference too")
        pytest.fail(f"{'crossbar' if o.crossbar else 'vector'} case, {o.stage}: {o.detail}")
    if o.status == "refused":
        assert o.clear, f"refusal without a clear message: {o.detail!r}"
        pytest.skip(f"refused ({o.error_type}): {o.detail[:300]}")
    assert o.status == "passed"


@pytest.mark.parametrize("target", TARGETS)
def test_refused_at_most_15_percent(target):
    if CORPUS is None:              # the figure is over the whole suite, the corpus's cases included
        pytest.skip(f"test corpus absent ({conformance.DEFAULT_CORPUS}); the refused fraction is measured "
                    f"over the corpus's onnx-node-tests cases and the onnx wheel's together")
    outcomes = [outcome(c, target) for c in CASES]
    refused = [o for o in outcomes if o.status == "refused"]
    fraction = len(refused) / max(len(outcomes), 1)
    reasons: dict[str, int] = {}
    for o in refused:
        pattern = conformance._summarize_refusal(o.detail)
        reasons[pattern] = reasons.get(pattern, 0) + 1
    top = "; ".join(f"{n}x {r[:90]}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:6])
    assert fraction <= conformance.MAX_REFUSED_FRACTION, (
        f"{target}: {len(refused)} of {len(outcomes)} cases refused ({100 * fraction:.1f} % > "
        f"{100 * conformance.MAX_REFUSED_FRACTION:.0f} %); most frequent reasons: {top}")
