"""What a person looks at after a sweep: the table as CSV (and Parquet), Pareto plots, an HTML page.

Plots are drawn here (no plotting library: cimc's dependencies stay small), one per model and
pair of objectives, as SVG (every point a dot linked to its schedule page and titled with its
parameters) and as PNG (:mod:`~cimc.sweep.raster`, for slides and documents), the Pareto
front of that pair highlighted and joined by its staircase.
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

from cimc.fsutil import atomic_path, write_text_atomic
from cimc.sweep import raster
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


def figure(title: str, rows: list[dict], x: Objective, y: Objective, parameters: tuple[str, ...],
           color: str, link_prefix: str) -> list[tuple]:
    """One Pareto plot as shapes, in drawing order, for :func:`to_svg` and :func:`to_png`:
    ``("rect", x, y, w, h, fill, stroke)``, ``("line", x1, y1, x2, y2, color)``,
    ``("polyline", points, color, width, opacity)``, ``("dot", cx, cy, r, fill, stroke, href, tooltip)``
    (stroke None: a plain dot), ``("text", x, y, text, size, anchor, rotate, interactive_text)``.
    ``rows``: the points with both figures."""
    xs = np.array([r[x.name] for r in rows], dtype=np.float64)
    ys = np.array([r[y.name] for r in rows], dtype=np.float64)
    ax, ay = Axis.fit(x, xs), Axis.fit(y, ys)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    front = pareto_mask(np.stack([xs, ys], 1), [x.direction, y.direction])
    shapes: list[tuple] = [("rect", 0, 0, WIDTH, HEIGHT, "white", None),
                           ("text", WIDTH / 2, 18, title, 13, "middle", False, None)]
    for t in ax.ticks():
        px = ax.at(t, x0, x1)
        shapes += [("line", px, y1, px, y0, "#eee"), ("text", px, y0 + 14, number(t), 11, "middle", False, None)]
    for t in ay.ticks():
        py = ay.at(t, y0, y1)
        shapes += [("line", x0, py, x1, py, "#eee"), ("text", x0 - 5, py + 4, number(t), 11, "end", False, None)]
    shapes += [("rect", x0, y1, x1 - x0, y0 - y1, None, "#888"),
               ("text", (x0 + x1) / 2, HEIGHT - 14, ax.label(), 11, "middle", False, None),
               ("text", 14, (y0 + y1) / 2, ay.label(), 11, "middle", True, None)]
    order = sorted(np.flatnonzero(front), key=lambda i: (xs[i], ys[i]))
    steps = []
    for i, j in zip(order, order[1:]):
        corner = (xs[j], ys[i]) if x.direction == "min" else (xs[i], ys[j])
        steps += [(xs[i], ys[i]), corner]
    steps += [(xs[order[-1]], ys[order[-1]])]
    shapes.append(("polyline", [(ax.at(a, x0, x1), ay.at(b, y0, y1)) for a, b in steps], color, 1.5, 0.7))
    for i in sorted(range(len(rows)), key=lambda i: front[i]):          # front dots drawn last, on top
        r = rows[i]
        px, py = ax.at(xs[i], x0, x1), ay.at(ys[i], y0, y1)
        shapes.append(("dot", px, py, 4.5, color, "black", f"{link_prefix}{r['schedule']}",
                       _tooltip(r, parameters, (x, y))) if front[i] else
                      ("dot", px, py, 3, "#b8b8b8", None, f"{link_prefix}{r['schedule']}",
                       _tooltip(r, parameters, (x, y))))
    legend = f"Pareto front: {int(front.sum())} of {len(rows)} points (grey: the others"
    shapes += [("dot", x0 + 5, y1 - 10, 4.5, color, "black", None, None),
               ("text", x0 + 13, y1 - 6, legend + ")", 11, "start", False,
                legend + "; click a point for its schedule)")]
    return shapes


def to_svg(title: str, shapes: list[tuple]) -> str:
    """The shapes as SVG markup: dots linked to their schedule pages, titled with their parameters."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" role="img">',
           f"<title>{html.escape(title)}</title>"]
    for shape in shapes:
        kind = shape[0]
        if kind == "rect":
            _, x, y, w, h, fill, stroke = shape
            out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill or "none"}"'
                       + (f' stroke="{stroke}"' if stroke else "") + "/>")
        elif kind == "line":
            _, xa, ya, xb, yb, color = shape
            out.append(f'<line x1="{xa:.1f}" y1="{ya:.1f}" x2="{xb:.1f}" y2="{yb:.1f}" stroke="{color}"/>')
        elif kind == "polyline":
            _, points, color, width, opacity = shape
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{width}" '
                       f'opacity="{opacity}"/>')
        elif kind == "dot":
            _, cx, cy, r, fill, stroke, href, tooltip = shape
            dot = f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{fill}"' + (
                f' stroke="{stroke}" stroke-width="0.6"' if stroke else "")
            if href is None:
                out.append(dot + "/>")
            else:
                out.append(f'<a href="{html.escape(href)}">{dot}><title>{html.escape(tooltip)}</title></circle></a>')
        else:
            _, x, y, text, size, anchor, rotate, interactive = shape
            place = (f'transform="translate({x} {y:.1f}) rotate(-90)"' if rotate
                     else f'x="{x:.1f}" y="{y:.1f}"')
            out.append(f'<text {place} text-anchor="{anchor}"' + (f' font-size="{size}"' if size != 11 else "")
                       + f">{html.escape(interactive or text)}</text>")
    out.append("</svg>")
    return "\n".join(out)


def to_png(shapes: list[tuple]) -> bytes:
    """The same shapes as a PNG at twice the SVG's size (no links, no tooltips)."""
    canvas = raster.Canvas(WIDTH, HEIGHT, scale=2)
    for shape in shapes:
        kind = shape[0]
        if kind == "rect":
            _, x, y, w, h, fill, stroke = shape
            canvas.rect(x, y, w, h, fill, stroke)
        elif kind == "line":
            canvas.line(*shape[1:5], shape[5])
        elif kind == "polyline":
            _, points, color, width, opacity = shape
            canvas.polyline(points, color, width, opacity)
        elif kind == "dot":
            _, cx, cy, r, fill, stroke = shape[:6]
            canvas.circle(cx, cy, r, fill, stroke, 0.6 if stroke else 0.0)
        else:
            _, x, y, text, size, anchor, rotate, _ = shape
            canvas.text(x, y, text, size, anchor, rotate, "#222")
    return canvas.png()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


@dataclass(frozen=True)
class Plot:
    """One model's points for one pair of objectives."""
    stem: str                        # file name without .svg / .png
    title: str
    shapes: list

    def svg(self) -> str:
        return to_svg(self.title, self.shapes)


def plots(table: SweepTable, link_prefix: str) -> dict[str, list[Plot]]:
    """Per model, a plot per pair of objectives with at least one point to show; dots link to
    ``link_prefix`` + the point's schedule page."""
    out: dict[str, list[Plot]] = {}
    models = list(dict.fromkeys(r["model"] for r in table.rows))
    for m, model in enumerate(models):
        out[model] = []
        for x, y in itertools.combinations(table.objectives, 2):
            rows = [r for r in table.rows if r["model"] == model and r["status"] == "ok"
                    and r[x.name] is not None and r[y.name] is not None]
            if rows:
                title = f"{model}: {y.name} vs {x.name}"
                out[model].append(Plot(f"{slug(model)}__{x.name}__{y.name}", title,
                                       figure(title, rows, x, y, table.parameters, COLORS[m % len(COLORS)],
                                              link_prefix)))
    return out


def write(table: SweepTable, folder: Path, summary: str) -> Outputs:
    """Write results.csv, results.parquet (with pyarrow), plots/*.svg and *.png, and report.html."""
    csv_path = folder / "results.csv"
    write_text_atomic(csv_path, table.to_csv())
    parquet = _parquet(table, folder / "results.parquet")
    (folder / PLOTS).mkdir(exist_ok=True)
    files = []
    for entries in plots(table, "../").values():
        for plot in entries:
            svg, png = folder / PLOTS / f"{plot.stem}.svg", folder / PLOTS / f"{plot.stem}.png"
            write_text_atomic(svg, plot.svg() + "\n")
            with atomic_path(png) as tmp:
                tmp.write_bytes(to_png(plot.shapes))
            files += [svg, png]
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
    with atomic_path(path) as tmp:
        pyarrow.parquet.write_table(pyarrow.table(columns), tmp)
    return path


def _html(table: SweepTable, summary: str, parquet: bool) -> str:
    figures = [o.name for o in table.objectives]
    shown = figures + [c for c in ("latency_cycles", "energy_pj", "crossbars", "pe_utilization", "accuracy")
                       if c in table.columns and c not in figures]
    models = []
    for model, entries in plots(table, "").items():
        rows = [r for r in table.rows if r["model"] == model]
        front = {r["point"] for r in table.pareto(model=model)}
        models.append({"name": model, "id": slug(model), "plots": [plot.svg() for plot in entries], "total": len(rows),
                       "ok": sum(r["status"] == "ok" for r in rows),
                       "rows": sorted(rows, key=lambda r: (r["point"] not in front, r["point"])), "front": front})
    return _ENV.get_template("report.html.j2").render(
        name=table.name, summary=summary, models=models, parameters=table.parameters, shown=shown,
        objectives=table.objectives, number=number, parquet=parquet,
        written=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
