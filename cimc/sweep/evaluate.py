"""One task, run wherever an executor puts it: compile (and run), return a flat record.

A task never raises: a user error (:class:`~cimc.errors.CimcError`, ``ValueError``) becomes
the record's ``error``, a bug becomes ``internal error: ...``, so one bad point cannot stop
a sweep. Records hold plain JSON values only, so a record is the same bytes whichever
executor produced it, apart from the fields in :data:`RUN_FIELDS`, which say when, where
and how long.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings

import numpy as np
import onnx
from threadpoolctl import threadpool_limits

import cimc
from cimc.errors import CimcError
from cimc.sweep.models import ModelData, ModelRef, load
from cimc.sweep.points import AccuracyTask, PointTask, Task

#: Record fields that describe the run, not the result: excluded when results are compared.
RUN_FIELDS = ("seconds", "compile_seconds", "pid", "finished_at")
#: Runtime threads per task; executors set it once per worker process (see :func:`set_threads`).
_threads = 1


def set_threads(count: int) -> None:
    """Threads one task may use for the runtime's batch chunks: a pool of N workers on C cores
    gives each C // N, so the workers do not fight over the cores. BLAS stays on one thread:
    a sweep's matrices are small (one inference of a point, one chunk of an accuracy run), too
    small for threaded BLAS to pay for its synchronization."""
    global _threads
    _threads = max(1, count)
    threadpool_limits(limits=1, user_api="blas")


def run_task(task: Task, data: "ModelData | ModelRef") -> dict:
    """The record of ``task`` on ``data`` (a :class:`ModelRef` is loaded, once per process)."""
    began = time.perf_counter()
    record: dict = {"key": task.key, "kind": task.kind, "model": task.model, "error": None, "warnings": []}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = load(data) if isinstance(data, ModelRef) else data
            record.update(_point(task, loaded) if isinstance(task, PointTask) else _accuracy(task, loaded))
        record["warnings"] = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
    except (CimcError, ValueError) as exc:
        record["error"] = str(exc) or type(exc).__name__
    except MemoryError:
        record["error"] = "out of memory"
    except Exception as exc:  # a bug in cimc: recorded, and the sweep goes on
        record["error"] = f"internal error: {type(exc).__name__}: {exc}"
    record.update(seconds=round(time.perf_counter() - began, 3), pid=os.getpid(), finished_at=time.time())
    return record


def _compile(task: Task, data: ModelData) -> cimc.Program:
    from cimc.targets import target_from_dict
    target = target_from_dict(task.target, "target")
    return cimc.compile(onnx.load_from_string(data.model), target, calibration=data.calibration,
                        input_shapes=list(data.input_shapes) or None, **task.compile)


def _point(task: PointTask, data: ModelData) -> dict:
    """Compile; the schedule's figures from the report, the energy per inference from one run
    (hardware figures per inference do not depend on the input values: a zero input serves)."""
    from cimc import schedule_views
    began = time.perf_counter()
    program = _compile(task, data)
    compile_seconds = round(time.perf_counter() - began, 3)
    zeros = {name: np.zeros((1, *shape), np.float32) for name, shape in program.inputs.items()}
    stats = cimc.run(program, zeros, level="ideal", workers=_threads, arithmetic=task.run["arithmetic"],
                     multiplier=task.run["multiplier"]).stats
    r = program.report
    return {"latency_cycles": r["makespan_cycles"], "latency_us": r["makespan_us"],
            "energy_pj": stats["energy_pj"], "adc_energy_pj": stats["adc_energy_pj"],
            "crossbars": r["crossbars_used"], "tiles": r["tiles_used"], "segments": r["segments"],
            "pe_utilization": r["pe_utilization"], "cell_utilization": r["cell_utilization"],
            "lower_bound_cycles": r["lower_bound_cycles"], "compile_seconds": compile_seconds,
            "schedule_html": schedule_views.render_html(program)}


def _accuracy(task: AccuracyTask, data: ModelData) -> dict:
    """Top-1 accuracy of the layer-by-layer program on the test samples, onnxruntime's accuracy
    on the same samples, and how often the two agree."""
    program = _compile(task, data)
    result = cimc.run(program, data.inputs, level=task.run["level"], workers=_threads,
                      arithmetic=task.run["arithmetic"], multiplier=task.run["multiplier"])
    count = len(data.labels)
    top1 = _top1(result.outputs[next(iter(program.outputs))], count)
    reference = _onnxruntime_top1(data)
    return {"accuracy": float(np.mean(top1 == data.labels)), "ort_accuracy": float(np.mean(reference == data.labels)),
            "ort_agreement": float(np.mean(top1 == reference)), "clipped_fraction": result.stats["clipped_fraction"],
            "samples": count}


def _top1(output: np.ndarray, count: int) -> np.ndarray:
    return np.asarray(output, np.float64).reshape(count, -1).argmax(-1)


def _onnxruntime_top1(data: ModelData) -> np.ndarray:
    """onnxruntime's top-1 on the test samples, once per process per model and samples: the
    accuracy tasks of a sweep share it."""
    h = hashlib.sha256(data.model)
    for array in data.inputs.values():
        h.update(np.ascontiguousarray(array).tobytes())
    key = h.hexdigest()
    if key not in _ORT:
        from cimc.compare import onnxruntime_outputs
        outputs = onnxruntime_outputs(data.model, data.inputs, batched=True)
        first = onnx.load_from_string(data.model).graph.output[0].name
        _ORT[key] = _top1(outputs[first], len(data.labels))
    return _ORT[key]


_ORT: dict[str, np.ndarray] = {}
