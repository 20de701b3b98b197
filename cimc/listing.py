"""Human-readable views of a program: the instruction listing and the schedule, rendered by jinja2."""

from __future__ import annotations

import jinja2

from cimc.program import Program

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("cimc.targets", "templates"),
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def describe(ins: dict) -> str:
    op = ins["op"]
    rows = ins.get("rows")
    span = f"rows {rows[0]}..{rows[1] - 1}" if rows else ""
    if op == "mvm":
        return f"{ins['layer']} set {ins['set']} {span} xbars {ins['xbars']} -> done {ins['done']}"
    if op == "send":
        return f"{ins['tensor']} {span} -> tile {ins['dst']} (msg {ins['msg']})"
    if op == "recv":
        kind = "add " if ins["reduce"] else ""
        return f"{kind}{ins['tensor']} {span} <- tile {ins['src']} (msg {ins['msg']})"
    if op == "writeback":
        return f"{ins['layer']} {span}"
    if op == "vec":
        return f"{ins['node']} -> done {ins['done']}"
    if op == "write":
        return f"segment {ins['segment']} blocks {ins['xbars']} -> done {ins['done']}"
    return ins["tensor"]


def render_listing(program: Program) -> str:
    layers = [n for n in program.nodes if "quant" in n]
    xbars_of: dict[str, list] = {n["name"]: [] for n in layers}
    for x in program.crossbars:
        xbars_of[x["layer"]].append(x["xbar"])
    xbars_of = {k: sorted(set(v)) for k, v in xbars_of.items()}
    used = [i for i, s in enumerate(program.tiles) if s]
    return _ENV.get_template("listing.txt.j2").render(
        m=program.manifest, t=program.target, r=program.report, layers=layers, xbars_of=xbars_of,
        crossbars=program.crossbars, tiles=[program.tiles[i] for i in used], tile_ids=used,
        describe=describe)


def render_schedule(program: Program, width: int = 64) -> str:
    """A table per layer and an ASCII timeline (one line per operator)."""
    sched = program.schedule
    makespan = max(sched.makespan, 1)
    by_node: dict[str, list] = {}
    for t in sched.tasks:
        by_node.setdefault(t.node, []).append(t)
    lines = [f"schedule {sched.scheduler}: makespan {sched.makespan} cycles, "
             f"{len(sched.tasks)} sets, PE utilization {100 * program.report['pe_utilization']:.1f} %", "",
             f"{'operator':<30} {'kind':<4} {'sets':>5} {'tile':>4} {'start':>10} {'end':>10}  timeline"]
    for name, tasks in by_node.items():
        first = min(sched.start[t.id] for t in tasks)
        last = max(sched.end(t.id) for t in tasks)
        a, b = first * width // makespan, max(first * width // makespan + 1, last * width // makespan)
        bar = " " * a + "#" * (b - a)
        lines.append(f"{name[:30]:<30} {tasks[0].kind:<4} {len(tasks):>5} {tasks[0].tile:>4} "
                     f"{first:>10} {last:>10}  |{bar:<{width}}|")
    return "\n".join(lines)
