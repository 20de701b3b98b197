"""The results table: one row per point, joined from the store, and its Pareto fronts.

Rows come in point order (models in spec order, then parameter combinations in grid or
draw order), never in finishing order, so a table does not depend on the executor, the
number of workers or on interruptions. The columns in :data:`TIMING_COLUMNS` measure the
run (seconds), not the point; :meth:`SweepTable.results` leaves them out, which is what two
sweeps of the same spec must agree on.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from cimc.sweep.points import Plan
from cimc.sweep.spec import Objective, SweepSpec
from cimc.sweep.store import SCHEDULES, Store

FIGURES = ("latency_cycles", "latency_us", "energy_pj", "adc_energy_pj", "crossbars", "tiles", "segments",
           "pe_utilization", "cell_utilization", "lower_bound_cycles")
ACCURACY = ("accuracy", "ort_accuracy", "ort_agreement", "clipped_fraction", "samples")
TIMING_COLUMNS = ("compile_seconds", "point_seconds", "accuracy_seconds")


@dataclass(frozen=True)
class SweepTable:
    """What ``cimc.sweep`` returns: ``rows`` (dicts keyed by ``columns``), the spec's
    ``objectives``, the folder the outputs were written to, and a one-line summary."""
    name: str
    columns: tuple[str, ...]
    parameters: tuple[str, ...]
    rows: tuple[dict, ...]
    objectives: tuple[Objective, ...]
    folder: str
    summary: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def column(self, name: str) -> np.ndarray:
        """One column as an array (object dtype when it holds None or mixed types)."""
        values = [row[name] for row in self.rows]
        if len({type(v) for v in values}) > 1:
            array = np.empty(len(values), dtype=object)
            array[:] = values
            return array
        return np.asarray(values)

    def results(self) -> list[dict]:
        """The rows without the timing columns: equal for any two runs of the same sweep."""
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in self.rows]

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] != "ok"]

    def to_pandas(self):
        """A pandas DataFrame (pandas is not a cimc dependency: install it to use this)."""
        import pandas
        return pandas.DataFrame(list(self.rows), columns=list(self.columns))

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        return out.getvalue()

    def pareto(self, objectives: "tuple[Objective, ...] | None" = None, model: str | None = None) -> list[dict]:
        """The rows no other row of the same model beats in every objective (default: the spec's)."""
        objectives = objectives or self.objectives
        rows = [r for r in self.rows if r["status"] == "ok" and (model is None or r["model"] == model)
                and all(r[o.name] is not None for o in objectives)]
        front = []
        for name in dict.fromkeys(r["model"] for r in rows):
            group = [r for r in rows if r["model"] == name]
            values = np.array([[r[o.name] for o in objectives] for r in group], dtype=np.float64)
            front += [r for r, keep in zip(group, pareto_mask(values, [o.direction for o in objectives])) if keep]
        return front


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return value


#: Figures within this relative distance of each other are equal for the Pareto fronts: the same
#: energy summed in another order (a clsa schedule runs the same conversions as a layer one, in
#: another order) differs in the last bits of a float, which must not make one point beat another.
RELATIVE_TOLERANCE = 1e-9


def pareto_mask(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Rows of ``values`` (points x objectives) that no other row dominates: at least as good in
    every objective and better in one, beyond :data:`RELATIVE_TOLERANCE`. Equal rows keep each
    other. One row at a time: memory stays linear in the number of points."""
    if not len(values):
        return np.zeros(0, dtype=bool)
    v = np.asarray(values, dtype=np.float64) * np.where(np.array(directions) == "max", -1.0, 1.0)  # all minimized
    keep = np.ones(len(v), dtype=bool)
    for i, row in enumerate(v):
        tolerance = RELATIVE_TOLERANCE * np.maximum(np.abs(v), np.abs(row))
        no_worse = (v <= row + tolerance).all(-1)
        better = (v < row - tolerance).any(-1)
        keep[i] = not (no_worse & better).any()
    return keep


def build(spec: SweepSpec, plan: Plan, store: Store) -> SweepTable:
    """Join each point with its task records."""
    parameters = tuple(p.name for p in spec.parameters)
    columns = ("point", "model", *parameters, "status", "error", *FIGURES,
               *(ACCURACY if spec.accuracy else ()), "warnings", "key", "schedule", *TIMING_COLUMNS)
    rows = []
    for point in plan.points:
        rec = store.record("points", point.key) or {}
        acc = (store.record("accuracy", point.accuracy) or {}) if point.accuracy else {}
        error = rec.get("error") if rec else "not run"
        if error is None and point.accuracy:
            error = (f"accuracy run: {acc['error']}" if acc.get("error") else None) if acc else "accuracy not run"
        row = {"point": point.index, "model": point.model, **point.params,
               "status": "ok" if error is None else "failed", "error": error,
               **{k: rec.get(k) for k in FIGURES},
               **({k: acc.get(k) for k in ACCURACY} if spec.accuracy else {}),
               "warnings": sorted(set(rec.get("warnings", [])) | set(acc.get("warnings", []))),
               "key": point.key,
               "schedule": f"{SCHEDULES}/{point.key}.html" if rec and rec.get("error") is None else None,
               "compile_seconds": rec.get("compile_seconds"), "point_seconds": rec.get("seconds"),
               "accuracy_seconds": acc.get("seconds")}
        rows.append({c: row.get(c) for c in columns})
    return SweepTable(spec.name, columns, parameters, tuple(rows), spec.objectives, str(store.root))
