"""What a person looks at after a sweep: the table as CSV (and Parquet), Pareto plots, an HTML page.

Plots are SVG written here (no plotting library: cimc's dependencies stay small): one per
model and pair of objectives, every point a dot linked to its schedule page and titled with
its parameters, the Pareto front of that pair highlighted and joined by its staircase.
Axes turn logarithmic when a figure spans two decades or more. ``report.html`` inlines the
plots and lists the points (front first) with links to their schedule pages: it opens
offline, like the schedule pages themselves (``cimc inspect --schedule --format html``).
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from cimc.fsutil import write_text_atomic
from cimc.sweep.spec import Objective
from cimc.sweep.table import SweepTable, pareto_mask

WIDTH, HEIGHT = 540, 380
LEFT, RIGHT, TOP, BOTTOM = 74, 18, 44, 54
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
PLOTS = "plots"

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("cimc.sweep", "templates"), undefined=jinja2.StrictUndefined,
                          autoescape=jinja2.select_autoescape(["html", "j2"]))


@dataclass(frozen=True)
class Outputs:
    csv: Path
    parquet: Path | None             # None when pyarrow is not installed
    plots: tuple[Path, ...]
    report: Path


def number(value) -> str:
    """Short and readable: 3 significant digits, k/M/G/T for large magnitudes."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    a = abs(value)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Axis:
    objective: Objective
    lo: float
    hi: float
    log: bool

    @classmethod
    def fit(cls, objective: Objective, values: np.ndarray) -> "Axis":
        lo, hi = float(values.min()), float(values.max())
        if lo > 0 and hi / lo >= 100:
            return cls(objective, lo / 1.25, hi * 1.25, True)
        pad = (hi - lo) * 0.06 or (abs(lo) * 0.1 or 1.0)
        return cls(objective, lo - pad, hi + pad, False)

    def at(self, value: float, a: float, b: float) -> float:
        """Pixel position of ``value`` between pixels ``a`` (at lo) and ``b`` (at hi)."""
        f = ((math.log10(value) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo)) if self.log
             else (value - self.lo) / (self.hi - self.lo))
        return a + f * (b - a)

    def ticks(self) -> list[float]:
        if self.log:
            decades = range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
            steps = (1,) if len(decades) > 4 else (1, 2, 5)
            return [m * 10.0 ** d for d in decades for m in steps if self.lo <= m * 10.0 ** d <= self.hi]
        raw = (self.hi - self.lo) / 5
        magnitude = 10.0 ** math.floor(math.log10(raw))
        step = magnitude * next(m for m in (1, 2, 5, 10) if m * magnitude >= raw)
        return [float(t) for t in np.arange(math.ceil(self.lo / step) * step, self.hi + step * 1e-9, step)]

    def label(self) -> str:
        return f"{self.objective.name} ({'lower' if self.objective.direction == 'min' else 'higher'} is better)"


def _tooltip(row: dict, parameters: tuple[str, ...], objectives: tuple[Objective, ...]) -> str:
    params = ", ".join(f"{p}={number(row[p])}" for p in parameters)
    figures = ", ".join(f"{o.name} {number(row[o.name])}" for o in objectives)
    return f"point {row['point']}: {params}; {figures}"


def scatter(title: str, rows: list[dict], x: Objective, y: Objective, parameters: tuple[str, ...],
            color: str, link_prefix: str) -> str:
    """One Pareto plot as SVG markup. ``rows``: the points with both figures."""
    xs = np.array([r[x.name] for r in rows], dtype=np.float64)
    ys = np.array([r[y.name] for r in rows], dtype=np.float64)
    ax, ay = Axis.fit(x, xs), Axis.fit(y, ys)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    front = pareto_mask(np.stack([xs, ys], 1), [x.direction, y.direction])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" role="img">',
           f"<title>{html.escape(title)}</title>",
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>']
    for t in ax.ticks():
        px = ax.at(t, x0, x1)
        out.append(f'<line x1="{px:.1f}" y1="{y1}" x2="{px:.1f}" y2="{y0}" stroke="#eee"/>'
                   f'<text x="{px:.1f}" y="{y0 + 14}" text-anchor="middle">{number(t)}</text>')
    for t in ay.ticks():
        py = ay.at(t, y0, y1)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#eee"/>'
                   f'<text x="{x0 - 5}" y="{py + 4:.1f}" text-anchor="end">{number(t)}</text>')
    out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#888"/>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 14}" text-anchor="middle">{html.escape(ax.label())}</text>')
    out.append(f'<text transform="translate(14 {(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">'
               f'{html.escape(ay.label())}</text>')
    order = sorted(np.flatnonzero(front), key=lambda i: (xs[i], ys[i]))
    steps = []
    for i, j in zip(order, order[1:]):
        corner = (xs[j], ys[i]) if x.direction == "min" else (xs[i], ys[j])
        steps += [(xs[i], ys[i]), corner]
    steps += [(xs[order[-1]], ys[order[-1]])]
    path = " ".join(f"{ax.at(a, x0, x1):.1f},{ay.at(b, y0, y1):.1f}" for a, b in steps)
    out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5" opacity="0.7"/>')
    for i in sorted(range(len(rows)), key=lambda i: front[i]):          # front dots drawn last, on top
        r = rows[i]
        px, py = ax.at(xs[i], x0, x1), ay.at(ys[i], y0, y1)
        dot = (f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5" fill="{color}" stroke="black" stroke-width="0.6">'
               if front[i] else f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="#b8b8b8">')
        out.append(f'<a href="{link_prefix}{html.escape(r["schedule"])}">{dot}'
                   f'<title>{html.escape(_tooltip(r, parameters, (x, y)))}</title></circle></a>')
    out.append(f'<circle cx="{x0 + 5}" cy="{y1 - 10}" r="4.5" fill="{color}" stroke="black" stroke-width="0.6"/>'
               f'<text x="{x0 + 13}" y="{y1 - 6}">Pareto front: {int(front.sum())} of {len(rows)} points '
               f'(grey: the others; click a point for its schedule)</text>')
    out.append("</svg>")
    return "\n".join(out)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def plots(table: SweepTable, link_prefix: str) -> dict[str, list[tuple[str, str]]]:
    """Per model, (file name, SVG) per pair of objectives with at least one point to show."""
    out: dict[str, list[tuple[str, str]]] = {}
    models = list(dict.fromkeys(r["model"] for r in table.rows))
    for m, model in enumerate(models):
        out[model] = []
        for x, y in itertools.combinations(table.objectives, 2):
            rows = [r for r in table.rows if r["model"] == model and r["status"] == "ok"
                    and r[x.name] is not None and r[y.name] is not None]
            if rows:
                svg = scatter(f"{model}: {y.name} vs {x.name}", rows, x, y, table.parameters,
                              COLORS[m % len(COLORS)], link_prefix)
                out[model].append((f"{slug(model)}__{x.name}__{y.name}.svg", svg))
    return out


def write(table: SweepTable, folder: Path, summary: str) -> Outputs:
    """Write results.csv, results.parquet (with pyarrow), plots/*.svg and report.html."""
    csv_path = folder / "results.csv"
    write_text_atomic(csv_path, table.to_csv())
    parquet = _parquet(table, folder / "results.parquet")
    (folder / PLOTS).mkdir(exist_ok=True)
    files = []
    for entries in plots(table, "../").values():
        for name, svg in entries:
            write_text_atomic(folder / PLOTS / name, svg + "\n")
            files.append(folder / PLOTS / name)
    report = folder / "report.html"
    write_text_atomic(report, _html(table, summary, parquet is not None))
    return Outputs(csv_path, parquet, tuple(files), report)


def _parquet(table: SweepTable, path: Path) -> Path | None:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return None
    columns = {}
    for name in table.columns:
        values = [row[name] for row in table.rows]
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) > 1 and kinds != {int, float} or list in kinds:    # mixed or lists: as text
            values = [None if v is None else str(v) for v in values]
        columns[name] = values
    tmp = path.with_name(f".{path.name}.tmp")
    pyarrow.parquet.write_table(pyarrow.table(columns), tmp)
    tmp.replace(path)
    return path


def _html(table: SweepTable, summary: str, parquet: bool) -> str:
    figures = [o.name for o in table.objectives]
    shown = figures + [c for c in ("latency_cycles", "energy_pj", "crossbars", "pe_utilization", "accuracy")
                       if c in table.columns and c not in figures]
    models = []
    for model, entries in plots(table, "").items():
        rows = [r for r in table.rows if r["model"] == model]
        front = {r["point"] for r in table.pareto(model=model)}
        models.append({"name": model, "id": slug(model), "plots": [svg for _, svg in entries], "total": len(rows),
                       "ok": sum(r["status"] == "ok" for r in rows),
                       "rows": sorted(rows, key=lambda r: (r["point"] not in front, r["point"])), "front": front})
    return _ENV.get_template("report.html.j2").render(
        name=table.name, summary=summary, models=models, parameters=table.parameters, shown=shown,
        objectives=table.objectives, number=number, parquet=parquet,
        written=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
