"""From a spec to points and tasks: grid or seeded random expansion, content-addressed keys.

A *point* is one row of the results: a model and one value per varied parameter. Its
work is one or two *tasks*: a :class:`PointTask` (compile, schedule, per-inference figures)
and, when the model has accuracy data, an :class:`AccuracyTask` (run the test samples).
Every task is named by the SHA-256 of what determines its result (model and data file
hashes, the fully resolved target, every compile and run option, written as canonical
JSON), so the same work is never done twice, within a sweep or across reruns and specs
sharing a results folder. An accuracy task leaves out the scheduling options
(:data:`~cimc.sweep.spec.SCHEDULE_OPTIONS`): points that differ only in how sets are
scheduled compute the same outputs and share one accuracy run.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

import cimc
from cimc.sweep.models import ModelRef, resolve
from cimc.sweep.spec import RUN_DEFAULTS, SCHEDULE_OPTIONS, SIZE, Parameter, SweepSpec, compile_defaults

#: Bump when what a task computes or records changes: old results then no longer match.
SWEEP_FORMAT = 1


@dataclass(frozen=True)
class PointTask:
    key: str
    model: str
    target: dict                     # target TOML data, base target with the point's overrides
    compile: dict                    # every compile option
    run: dict                        # every run option
    kind = "points"


@dataclass(frozen=True)
class AccuracyTask:
    key: str
    model: str
    target: dict
    compile: dict                    # without the scheduling options: the layer-by-layer program
    run: dict
    kind = "accuracy"


Task = PointTask | AccuracyTask


@dataclass(frozen=True)
class Point:
    index: int
    model: str
    params: dict                     # parameter name -> value, in the spec's order
    key: str                         # its PointTask
    accuracy: str | None             # its AccuracyTask, None without accuracy data


@dataclass(frozen=True)
class Plan:
    points: tuple[Point, ...]
    tasks: tuple[Task, ...]          # unique by key; accuracy runs (the long ones) first
    models: dict[str, ModelRef]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def task_key(obj: dict) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def _base(target: str) -> str:
    from cimc.targets import load_target
    return canonical_json(load_target(target).to_dict())


def target_data(base: str, overrides: dict[str, Any]) -> dict:
    """The base target's TOML data with ``section.field`` overrides (``crossbar.size`` sets rows
    and columns); validated by whoever builds the target from it."""
    data = json.loads(_base(base))
    for name, value in overrides.items():
        if name == SIZE:
            data["crossbar"]["rows"] = data["crossbar"]["cols"] = value
        else:
            section, field = name.split(".", 1)
            data.setdefault(section, {})[field] = value
    return data


def combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the parameters (grid), or ``spec.points`` of them drawn with
    ``spec.seed`` (random): distinct combinations of discrete values when every parameter is
    discrete (all of them if there are no more), else independent draws per parameter."""
    params = spec.parameters
    if spec.sampling == "grid":
        return [dict(zip((p.name for p in params), values)) for values in itertools.product(*(p.values for p in params))]
    rng = np.random.default_rng(spec.seed)
    if all(p.distribution is None for p in params):
        sizes = [len(p.values) for p in params]
        total = math.prod(sizes)
        picks = range(total) if total <= spec.points else sorted(rng.choice(total, spec.points, replace=False))
        return [{p.name: p.values[i] for p, i in zip(params, np.unravel_index(int(k), sizes))} if params else {}
                for k in picks]
    return [{p.name: _draw(p, rng) for p in params} for _ in range(spec.points)]


def _draw(p: Parameter, rng: np.random.Generator) -> Any:
    if p.distribution is None:
        return p.values[int(rng.integers(len(p.values)))]
    kind, lo, hi = p.distribution
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def plan(spec: SweepSpec) -> Plan:
    """Resolve the models, expand the parameters, and name every task by its content."""
    refs = {m.name: resolve(m, f"models[{i}]") for i, m in enumerate(spec.models)}
    kinds = {p.name: p.kind for p in spec.parameters}
    defaults = compile_defaults()
    common = {"format": SWEEP_FORMAT, "cimc": cimc.__version__}
    points, tasks = [], {}
    for model in spec.models:
        ref = refs[model.name]
        for combo in combinations(spec):
            def varied(kind: str) -> dict:
                return {k: v for k, v in combo.items() if kinds[k] == kind}
            target = target_data(spec.target, varied("target"))
            options = {**defaults, **spec.compile, **varied("compile")}
            run = {**RUN_DEFAULTS, **spec.run, **varied("run")}
            point = PointTask(task_key({**common, "kind": "point", **ref.identity(), "target": target,
                                        "compile": options, "run": run}), ref.name, target, options, run)
            tasks.setdefault(point.key, point)
            accuracy = None
            if ref.test is not None:
                numerics = {k: v for k, v in options.items() if k not in SCHEDULE_OPTIONS}
                task = AccuracyTask(task_key({**common, "kind": "accuracy", **ref.identity(),
                                              "test": ref.test.identity(), "target": target,
                                              "compile": numerics, "run": run}), ref.name, target, numerics, run)
                tasks.setdefault(task.key, task)
                accuracy = task.key
            points.append(Point(len(points), ref.name, combo, point.key, accuracy))
    ordered = sorted(tasks.values(), key=lambda t: t.kind != "accuracy")     # stable: plan order within kinds
    return Plan(tuple(points), tuple(ordered), refs)
