"""`cimc inspect --schedule` in its four formats: text, JSON, DOT and HTML."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import networkx as nx
import pytest

from cimc import schedule_views
from cimc.cli import main
from cimc.passes.schedule.model import producers

from conftest import compile_model, preset_dict
from models import mlp
from cimc.targets import target_from_dict


@pytest.fixture(scope="module")
def program(compiled):
    return compiled("residual_net").program


@pytest.fixture(scope="module")
def segmented():
    d = preset_dict("small")
    d["name"] = "one_tile"
    d["chip"] = {"tiles": 1, "pes_per_tile": 8}
    return compile_model(mlp(sizes=(64, 48, 48, 32)), target_from_dict(d), allow_reprogramming=True)


def test_text_has_a_row_per_operator_with_its_span(program):
    text = schedule_views.render_text(program)
    lines = text.splitlines()
    assert lines[0].startswith(f"schedule layer: makespan {program.schedule.makespan} cycles")
    spans = {s.name: s for s in schedule_views.operator_spans(program)}
    for node in program.nodes:
        row = next(line for line in lines if line.startswith(node["name"][:30] + " "))
        s = spans[node["name"]]
        assert f" {s.start} " in row and f" {s.end} " in row and "|" in row
    # a layer-by-layer schedule keeps a single copy busy for its whole span
    assert all(s.copies == 1 and s.busy == pytest.approx(1.0) for s in spans.values() if s.kind == "mvm")


def test_json_lists_every_set_with_its_times(program):
    data = schedule_views.schedule_json(program)
    sched = program.schedule
    assert data["makespan_cycles"] == sched.makespan and len(data["sets"]) == len(sched.tasks)
    for entry, task in zip(data["sets"], sched.tasks):
        assert entry["start"] == sched.start[task.id] and entry["end"] == sched.end(task.id)
        assert entry["operator"] == task.node and entry["copy"] == 0
    json.dumps(data)


def test_dot_is_the_set_dependency_graph_clustered_by_operator(program):
    dot = schedule_views.render_dot(program)
    sched = program.schedule
    edges = re.findall(r"^  s(\d+) -> s(\d+)", dot, flags=re.M)
    want = {(p, t.id) for t, sources in zip(sched.tasks, producers(program.graph(), sched.tasks))
            for p in sources}
    assert {(int(a), int(b)) for a, b in edges} == want
    assert dot.count("subgraph cluster_") == len({t.node for t in sched.tasks})
    # the red path is a longest path of the dependency graph, from a source to a sink
    g = schedule_views.set_graph(program)
    red = [int(n) for n in re.findall(r"^    s(\d+) \[.*color=red", dot, flags=re.M)]
    assert red and nx.is_directed_acyclic_graph(g)
    assert set(red) == set(nx.dag_longest_path(g, weight="weight"))


def test_html_is_one_offline_page_with_a_bar_per_set(program):
    page = schedule_views.render_html(program)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert not re.search(r"(src|href)=\"https?:", page)
    svg = page[page.index("<svg"):page.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)                           # well-formed
    rects = root.findall("{http://www.w3.org/2000/svg}rect")
    assert len(rects) == len(program.schedule.tasks)
    labels = {t.text for t in root.findall("{http://www.w3.org/2000/svg}text")}
    assert any(label.startswith("GPEU tile") for label in labels)
    assert any(label.endswith("copy 0") for label in labels)


def test_segment_writes_appear_in_every_view(segmented):
    assert "write segment 2" in schedule_views.render_text(segmented)
    assert [w["segment"] for w in schedule_views.schedule_json(segmented)["writes"]] == [0, 1, 2]
    page = schedule_views.render_html(segmented)
    assert "write segment 1" in page and ">writes<" in page


@pytest.mark.parametrize("fmt", ["text", "json", "dot", "html"])
def test_cli_formats(program, tmp_path, capsys, fmt):
    path = tmp_path / "p.cimp"
    program.save(path)
    assert main(["inspect", str(path), "--schedule", "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert out.strip()
    if fmt == "json":
        assert json.loads(out)["scheduler"] == "layer"


def test_cli_refuses_html_for_graphs_and_listings(program, tmp_path, capsys):
    path = tmp_path / "p.cimp"
    program.save(path)
    assert main(["inspect", str(path), "--format", "html"]) == 2
    assert "--schedule" in capsys.readouterr().err
    assert main(["inspect", str(path), "--ir", "--format", "html"]) == 2
    assert "html is for --schedule" in capsys.readouterr().err


def test_the_text_table_counts_the_copies_that_run_no_set():
    """A copy no set runs on (left idle by the buffer fitting, or not needed) is counted in its
    operator's row, as the report's idle_copies counts it."""
    import dataclasses
    import models
    program = compile_model(models.residual_net(), "small", scheduler="clsa")
    sched = program.schedule
    assert program.report["copies"]["conv0"] > 2 and not program.report["idle_copies"]
    tasks = [dataclasses.replace(t, copy=0) if t.node == "conv0" and t.copy == 1 else t for t in sched.tasks]
    edited = dataclasses.replace(program, schedule=dataclasses.replace(sched, tasks=tasks))
    spans = {s.name: s for s in schedule_views.operator_spans(edited)}
    assert spans["conv0"].idle == 1 and all(s.idle == 0 for name, s in spans.items() if name != "conv0")
    row = next(line for line in schedule_views.render_text(edited).splitlines() if line.startswith("conv0 "))
    assert f" {spans['conv0'].copies:>6} {1:>4} {spans['conv0'].sets:>5} " in row
