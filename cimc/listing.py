"""The human-readable instruction listing of a program, rendered by jinja2 (schedule views: schedule_views)."""

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
    if op == "spill":
        return f"{ins['tensor']} {span} -> global memory, done {ins['done']}"
    if op == "fill":
        return f"{ins['tensor']} {span} <- global memory, done {ins['done']}"
    return ins["tensor"]


def _few(index, shown: int = 6) -> str:
    head = ", ".join(str(int(i)) for i in index[:shown])
    return f"[{head}{', ...' if len(index) > shown else ''}]"


def block_span(program: Program, x: dict) -> str:
    """A block's rows and outputs: ranges, or the gathered rows / regrouped outputs of a sorted block."""
    rows, cols = program.arrays.get(f"xbar_rows/{x['id']}"), program.arrays.get(f"xbar_cols/{x['id']}")
    r = f"rows {x['rows'][0]}..{x['rows'][1] - 1}" if rows is None else f"gathers {rows.size} rows {_few(rows)}"
    c = f"outputs {x['cols'][0]}..{x['cols'][1] - 1}" if cols is None else f"outputs {_few(cols)}"
    return f"{r} {c}"


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
        describe=describe, span=lambda x: block_span(program, x))
