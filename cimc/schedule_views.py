"""Views of a program's schedule: a text table and timeline, JSON, Graphviz DOT and an HTML Gantt chart.

All four read the schedule stored in the program, which the runtime executes
cycle for cycle, so what a user inspects is what runs. The DOT view is the set
dependency graph (built with networkx, clustered by operator, critical path in
red); the HTML view is one self-contained page (inline SVG, no scripts or
network access) with one Gantt row per crossbar group, per GPEU and per tile's network link,
and one for the channel to the global memory when rows were spilled.
"""

from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass

import jinja2
import networkx as nx

from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.model import Schedule, Task, producers, task_tiles
from cimc.program import Program

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("cimc.targets", "templates"),
                          undefined=jinja2.StrictUndefined, autoescape=jinja2.select_autoescape(["html"]))


@dataclass(frozen=True)
class OperatorSpan:
    """One operator's sets in the schedule."""
    name: str
    kind: str
    copies: int
    idle: int            # copies that run none of its sets
    sets: int
    tile: int
    start: int
    end: int
    busy: float          # busy cycles of its hardware / (its span x copies)


def cycles(makespan: int | None) -> str:
    """A comparison's makespan; None: that scheduler could not fit the tile buffers."""
    return "does not fit the buffers" if makespan is None else f"{makespan} cycles"


def operator_spans(program: Program) -> list[OperatorSpan]:
    sched = program.schedule
    copies = {row["name"]: row["copies"] for row in program.report["layers"]}
    by_node: dict[str, list[Task]] = {}
    for t in sched.tasks:
        by_node.setdefault(t.node, []).append(t)
    spans = []
    for name, tasks in by_node.items():
        start = min(sched.start[t.id] for t in tasks)
        end = max(sched.end(t.id) for t in tasks)
        n = copies.get(name, 1)
        busy = sum(t.compute for t in tasks) / ((end - start) * n) if end > start else 0.0
        idle = n - len({t.copy for t in tasks}) if tasks[0].kind == "mvm" else 0
        spans.append(OperatorSpan(name, tasks[0].kind, n, idle, len(tasks), tasks[0].tile, start, end, busy))
    return spans


def render_text(program: Program, width: int = 64) -> str:
    """A table per operator (copies, those idle, sets, start, end, busy fraction) and an ASCII timeline."""
    sched = program.schedule
    makespan = max(sched.makespan, 1)
    r = program.report
    lines = [f"schedule {sched.scheduler}: makespan {sched.makespan} cycles, {len(sched.tasks)} sets, "
             f"PE utilization {100 * r['pe_utilization']:.1f} %, lower bound {r['lower_bound_cycles']} cycles "
             f"(gap {100 * r['gap']:.1f} %); same mapping: layer {cycles(r['comparison']['layer'])}, clsa "
             f"{cycles(r['comparison']['clsa'])}", "",
             f"{'operator':<30} {'kind':<5} {'copies':>6} {'idle':>4} {'sets':>5} {'tile':>4} {'start':>10} {'end':>10} "
             f"{'busy':>6}  timeline"]

    def bar(a: int, b: int) -> str:
        lo = a * width // makespan
        hi = max(lo + 1, b * width // makespan)
        return f"|{' ' * lo + '#' * (hi - lo):<{width}}|"

    for w in sched.writes:
        lines.append(f"{'write segment ' + str(w.segment):<30} {'write':<5} {'':>6} {'':>4} {'':>5} {'':>4} "
                     f"{w.start:>10} {w.end:>10} {'':>6}  {bar(w.start, w.end)}")
    for s in operator_spans(program):
        lines.append(f"{s.name[:30]:<30} {s.kind:<5} {s.copies:>6} {s.idle:>4} {s.sets:>5} {s.tile:>4} {s.start:>10} "
                     f"{s.end:>10} {100 * s.busy:>5.1f}%  {bar(s.start, s.end)}")
    return "\n".join(lines)


def schedule_json(program: Program) -> dict:
    """Every set with its hardware, start and end; the write windows of a segmented model; the
    transfers of spilled rows to and from the global memory."""
    sched = program.schedule
    return {
        "scheduler": sched.scheduler, "makespan_cycles": sched.makespan,
        "writes": [{"segment": w.segment, "start": w.start, "end": w.end} for w in sched.writes],
        "sets": [{"id": t.id, "operator": t.node, "kind": t.kind, "index": t.index, "copy": t.copy,
                  "rows": list(t.out_rows), "tile": t.tile, "resources": list(t.resources),
                  "start": sched.start[t.id], "compute_end": sched.start[t.id] + t.compute,
                  "end": sched.end(t.id), "send": sched.send(t.id)} for t in sched.tasks],
        "stores": [{"set": x.task, "start": x.start, "end": x.start + x.duration} for x in sched.stores],
        "loads": [{"set": x.task, "tile": x.tile, "start": x.start, "end": x.start + x.duration}
                  for x in sched.loads],
    }


def set_graph(program: Program) -> nx.DiGraph:
    """Sets as nodes (with their times), producer -> consumer edges weighted by the producer's duration."""
    sched = program.schedule
    g = nx.DiGraph()
    for t in sched.tasks:
        g.add_node(t.id, operator=t.node, index=t.index, start=sched.start[t.id], end=sched.end(t.id))
    for t, sources in zip(sched.tasks, producers(program.graph(), sched.tasks)):
        for p in sources:
            g.add_edge(p, t.id, weight=sched.tasks[p].duration)
    return g


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(program: Program) -> str:
    g = set_graph(program)
    critical = set(nx.dag_longest_path(g, weight="weight")) if g.number_of_nodes() else set()
    lines = [f"digraph {_quote(program.manifest['model_name'] + ' schedule')} {{", "  rankdir=LR;",
             "  node [shape=box, fontsize=10];"]
    clusters: dict[str, list[int]] = {}
    for n, data in g.nodes(data=True):
        clusters.setdefault(data["operator"], []).append(n)
    for i, (name, members) in enumerate(clusters.items()):
        lines += [f"  subgraph cluster_{i} {{", f"    label={_quote(name)};"]
        for n in members:
            d = g.nodes[n]
            color = ", color=red" if n in critical else ""
            lines.append(f'    s{n} [label="set {d["index"]}\\n{d["start"]}..{d["end"]}"{color}];')
        lines.append("  }")
    for a, b in g.edges():
        color = " [color=red]" if a in critical and b in critical else ""
        lines.append(f"  s{a} -> s{b}{color};")
    lines.append("}")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Bar:
    x: float
    w: float
    color: str
    title: str


def _color(name: str) -> str:
    r, g, b = colorsys.hls_to_rgb((zlib.crc32(name.encode()) % 360) / 360, 0.55, 0.55)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _messages(program: Program) -> list[tuple[int, int, int, Task, str]]:
    """(tile, start, cycles, set, what) of every message on a tile's network link."""
    sched, graph, mapping = program.schedule, program.graph(), program.mapping()
    cost = CostModel(program.target, graph, mapping)
    remote = [False] * len(sched.tasks)
    for t, sources in zip(sched.tasks, producers(graph, sched.tasks)):
        for p in sources:
            remote[p] |= any(tile != sched.tasks[p].tile for tile in task_tiles(t, mapping))
    out = []
    for t in sched.tasks:
        out += [(tile, sched.start[t.id] + t.compute, cycles, t, "partial sums") for tile, cycles in t.reductions]
        if remote[t.id]:
            rows = cost.link_cycles(cost.rows_bytes(graph.node(t.node).outputs[0], t.out_rows[1] - t.out_rows[0]))
            out.append((t.tile, sched.send(t.id), rows, t, "output rows"))
    return out


def render_html(program: Program, width: int = 1200) -> str:
    """One Gantt row per crossbar group (an operator's copy), per GPEU and per tile's network link,
    plus the segment writes and the channel to the global memory (spilled rows)."""
    sched: Schedule = program.schedule
    scale = width / max(sched.makespan, 1)
    rows: dict[str, list[_Bar]] = {}
    for w in sched.writes:
        rows.setdefault("writes", []).append(
            _Bar(w.start * scale, max(w.duration * scale, 1.0), "#888888",
                 f"write segment {w.segment}: {w.start}..{w.end}"))
    for t in sched.tasks:
        label = f"{t.node} copy {t.copy}" if t.kind == "mvm" else f"GPEU tile {t.tile}"
        start = sched.start[t.id]
        rows.setdefault(label, []).append(
            _Bar(start * scale, max(t.compute * scale, 1.0), _color(t.node),
                 f"{t.node} set {t.index} rows {t.out_rows[0]}..{t.out_rows[1] - 1}: "
                 f"{start}..{start + t.compute}"))
    for tile, begin, cycles, t, what in _messages(program):
        rows.setdefault(f"link tile {tile}", []).append(
            _Bar(begin * scale, max(cycles * scale, 1.0), _color(t.node),
                 f"{t.node} set {t.index} {what}: {begin}..{begin + cycles}"))
    for x, what in [(x, "stored") for x in sched.stores] + [(x, f"loaded into tile {x.tile}") for x in sched.loads]:
        t = sched.tasks[x.task]
        rows.setdefault("global memory", []).append(
            _Bar(x.start * scale, max(x.duration * scale, 1.0), _color(t.node),
                 f"{t.node} set {t.index} {what}: {x.start}..{x.start + x.duration}"))
    return _ENV.get_template("schedule.html.j2").render(
        m=program.manifest, r=program.report, t=program.target, makespan=sched.makespan, width=width,
        rows=list(rows.items()), spans=operator_spans(program))
