"""The network on chip as a scheduled resource: one link per tile, one message at a time."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cimc
from cimc.passes.schedule.validator import ScheduleInvalid, validate
from cimc.targets import target_from_dict

import models
from conftest import compile_model, narrow_dict


@pytest.fixture(scope="module")
def jammed():
    """The narrow chip with a network eight times slower: messages queue for the links."""
    data = narrow_dict()
    data["name"] = "jammed"
    data["noc"] = {**data["noc"], "bytes_per_cycle": data["noc"]["bytes_per_cycle"] / 8}
    return target_from_dict(data, "jammed")


@pytest.fixture(scope="module")
def programs(jammed, narrow):
    cache = {}

    def get(scheduler: str, target: str = "jammed", builder: str = "residual_net") -> cimc.Program:
        key = (scheduler, target, builder)
        if key not in cache:
            cache[key] = compile_model(getattr(models, builder)(), {"jammed": jammed, "narrow": narrow}[target],
                                       scheduler=scheduler, solver_work=1.0)
        return cache[key]
    return get


def _check(program: cimc.Program, schedule) -> None:
    validate(schedule, program.graph(), program.mapping(), program.target)


def _late_sends(schedule) -> list[int]:
    return [t.id for t in schedule.tasks if schedule.sends[t.id] > schedule.end(t.id)]


@pytest.mark.parametrize("scheduler", ["layer", "clsa", "cpsat"])
def test_schedules_queue_messages_on_busy_links_and_the_program_keeps_their_times(programs, scheduler):
    program = programs(scheduler)
    schedule = program.schedule
    late = _late_sends(schedule)
    assert late, "the slow network never made a message wait: the test does not exercise the links"
    # sent as soon as their sets end, the queued messages would share a link
    eager = dataclasses.replace(schedule, sends=[schedule.end(t.id) for t in schedule.tasks])
    with pytest.raises(ScheduleInvalid, match="network link of tile"):
        _check(program, eager)
    feeds = {n: np.random.default_rng(3).random((2,) + tuple(s)).astype(np.float32) for n, s in program.inputs.items()}
    result = cimc.run(program, feeds)
    assert result.stats["latency_cycles"] == program.report["makespan_cycles"]
    reference = cimc.run(programs("layer", "narrow"), feeds)
    for name, value in reference.outputs.items():
        np.testing.assert_array_equal(result.outputs[name], value)


def test_a_slower_network_makes_every_schedule_longer_and_cpsat_stays_best(programs):
    for scheduler in ("layer", "clsa", "cpsat"):
        assert programs(scheduler).report["makespan_cycles"] > programs(scheduler, "narrow").report["makespan_cycles"]
    r = programs("cpsat").report
    assert r["lower_bound_cycles"] <= r["makespan_cycles"] <= r["comparison"]["clsa"] <= r["comparison"]["layer"]


def test_validator_refuses_rows_sent_before_their_set_ends(programs):
    program = programs("clsa")
    schedule = program.schedule
    i = next(t.id for t in schedule.tasks if program.schedule.sends[t.id] > 0)
    early = dataclasses.replace(schedule, sends=list(schedule.sends))
    early.sends[i] = schedule.end(i) - 1
    with pytest.raises(ScheduleInvalid, match="before it ends"):
        _check(program, early)


def test_validator_counts_the_link_time_of_the_rows(programs):
    """A consumer on another tile may start only once the whole message has crossed the link."""
    program = programs("clsa")
    schedule = program.schedule
    for p, successors in enumerate(_successors(schedule, program)):
        for c in successors:
            if schedule.tasks[c].tile != schedule.tasks[p].tile:
                hops = program.target.hops(schedule.tasks[p].tile, schedule.tasks[c].tile)
                # rows sent this late would reach the consumer in time if the link took no time
                late = dataclasses.replace(schedule, sends=list(schedule.sends))
                late.sends[p] = schedule.start[c] - hops * program.target.noc.hop_cycles
                assert late.sends[p] > schedule.sends[p]
                with pytest.raises(ScheduleInvalid, match="arrive at"):
                    _check(program, late)
                return
    pytest.fail("no consumer on another tile than its producer")


def test_validator_refuses_a_set_that_ends_before_its_partial_sums_arrive(programs):
    program = programs("clsa", builder="wide_conv_net")       # a layer over two tiles
    schedule = program.schedule
    spread = next(t for t in schedule.tasks if t.reductions)
    cut = list(schedule.tasks)
    cut[spread.id] = dataclasses.replace(spread, duration=spread.compute)
    with pytest.raises(ScheduleInvalid, match="partial sums"):
        _check(program, dataclasses.replace(schedule, tasks=cut))


def _successors(schedule, program) -> list[list[int]]:
    """Consumers of each set, from the rows they read (the program's own dependency record)."""
    out: list[list[int]] = [[] for _ in schedule.tasks]
    graph = program.graph()
    by_tensor: dict[str, list] = {}
    for t in schedule.tasks:
        by_tensor.setdefault(graph.node(t.node).outputs[0], []).append(t)
    for t in schedule.tasks:
        for tensor, a, b in t.reads:
            for p in by_tensor.get(tensor, []):
                if max(a, p.out_rows[0]) < min(b, p.out_rows[1]):
                    out[p.id].append(t.id)
    return out


def test_schedule_views_show_the_links(programs):
    from cimc.schedule_views import render_html, schedule_json
    program = programs("clsa")
    page = render_html(program)
    assert "link tile" in page and "output rows" in page
    sets = schedule_json(program)["sets"]
    assert [s["send"] for s in sets] == program.schedule.sends
    assert any(s["send"] > s["end"] for s in sets)


def test_cpsat_without_links_in_its_model_replays_its_solution_onto_them(jammed, monkeypatch):
    """Above LINK_MODEL_SETS sets CP-SAT leaves the links out; the replay keeps the result valid."""
    import cimc.passes.schedule.cpsat as cpsat
    monkeypatch.setattr(cpsat, "LINK_MODEL_SETS", 0)
    program = compile_model(models.residual_net(), jammed, scheduler="cpsat", solver_work=1.0)
    _check(program, program.schedule)
    assert _late_sends(program.schedule)
    assert program.report["makespan_cycles"] <= program.report["comparison"]["clsa"]
