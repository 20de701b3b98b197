"""Tile buffer capacity: every scheduler keeps each tile within ``[buffer] kib_per_tile`` by
spilling rows to the global memory, the validator checks it on its own, and the programs that
spill compute what the programs that do not compute."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import cimc
from cimc.errors import CapacityError
from cimc.passes.schedule.validator import ScheduleInvalid, validate
from cimc.targets import target_from_dict

import models
from conftest import compile_model, preset_dict, uniform
from test_cross_layer import _graph

SCHEDULERS = ("layer", "clsa", "cpsat")


def _chip(kib: float, memory: bool = True, latency: int | None = None):
    data = preset_dict("small")
    data["name"] = f"small-{kib:g}k"
    data["buffer"] = {"kib_per_tile": kib}
    if not memory:
        del data["memory"]
    elif latency is not None:
        data["memory"] = {**data["memory"], "latency_cycles": latency}
    return target_from_dict(data, data["name"])


def _compile(builder: str, target, scheduler: str):
    return compile_model(getattr(models, builder)(), target, scheduler=scheduler, solver_work=0.5)


@pytest.fixture(scope="module")
def tight():
    """residual_net and conv_chain_net on tiles of 1 KiB (16 rows of their 64-byte rows): layer
    by layer must spill; the reference is the same model on 64 KiB tiles."""
    out = {}
    for builder in ("residual_net", "conv_chain_net"):
        for scheduler in SCHEDULERS:
            out[(builder, scheduler)] = (_compile(builder, _chip(1.0), scheduler),
                                         _compile(builder, _chip(64.0), scheduler))
    return out


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("builder", ["residual_net", "conv_chain_net"])
def test_schedules_fit_the_buffer_and_compute_the_same(tight, builder, scheduler):
    program, roomy = tight[(builder, scheduler)]
    r = program.report
    assert r["buffer_peak_kib"] <= r["buffer_kib_per_tile"] == 1.0
    if scheduler == "layer":
        assert roomy.report["buffer_peak_kib"] > 1.0, "the roomy compile must need more than the tight buffer"
    x = uniform(models.__dict__[builder](), 3, seed=5)
    got, want = cimc.run(program, {"x": x}), cimc.run(roomy, {"x": x})
    for name in want.outputs:
        np.testing.assert_array_equal(got.outputs[name], want.outputs[name])
    assert got.stats["latency_cycles"] == r["makespan_cycles"]
    moved = sum(program.report["memory"][k] for k in ("stored_kib", "loaded_kib")) * 1024
    assert got.stats["memory_bytes"] == pytest.approx(moved)


def test_layer_by_layer_spills_and_pays_for_it(tight):
    for builder in ("residual_net", "conv_chain_net"):
        program, roomy = tight[(builder, "layer")]
        assert program.schedule.stores and program.schedule.loads
        assert not roomy.schedule.stores
        assert program.report["makespan_cycles"] >= roomy.report["makespan_cycles"]
        assert program.report["memory"]["energy_pj"] > 0


def test_the_validator_counts_every_tile_buffer(tight):
    """A schedule made for roomy tiles is refused for tight ones, where it holds too much."""
    _, roomy = tight[("residual_net", "layer")]
    g, mapping = roomy.graph(), roomy.mapping()
    validate(roomy.schedule, g, mapping, roomy.target)
    with pytest.raises(ScheduleInvalid, match=r"tile \d+ holds .* KiB of rows at cycle \d+, more than its 1 KiB"):
        validate(roomy.schedule, g, mapping, _chip(1.0))


def _edited(program, **change):
    return dataclasses.replace(program.schedule, **change)


def test_the_validator_checks_stores_and_loads(tight):
    program, _ = tight[("residual_net", "layer")]
    s, g, m, t = program.schedule, program.graph(), program.mapping(), program.target
    validate(s, g, m, t)
    load = s.loads[0]
    store = next(x for x in s.stores if x.task == load.task)
    early = dataclasses.replace(load, start=store.start)
    with pytest.raises(ScheduleInvalid, match="loaded into tile .* before their store is in memory"):
        validate(_edited(program, loads=[early] + s.loads[1:]), g, m, t)
    short = dataclasses.replace(store, duration=0)
    with pytest.raises(ScheduleInvalid, match="takes 0 cycles"):
        validate(_edited(program, stores=[short if x is store else x for x in s.stores]), g, m, t)
    if len(s.loads) > 1:
        clash = dataclasses.replace(s.loads[1], start=load.start)
        with pytest.raises(ScheduleInvalid, match="channel to the global memory carries|before their store"):
            validate(_edited(program, loads=[load, clash] + s.loads[2:]), g, m, t)
    with pytest.raises(ScheduleInvalid, match="before any load of the rows"):
        late = dataclasses.replace(load, start=load.start + 10 ** 7)
        validate(_edited(program, loads=[late if x is load else x for x in s.loads]), g, m, t)
    no_memory = dataclasses.replace(t, memory=None)
    with pytest.raises(ScheduleInvalid, match="has none"):
        validate(s, g, m, no_memory)


def test_without_a_global_memory_rows_are_held_back_or_the_compile_is_refused():
    """Layer by layer must hold whole tensors: with no global memory to spill to, it is refused.
    A cross-layer schedule can fit by holding rows back (their producers start later), at a
    price in cycles; the report then has no layer-by-layer figure to compare with."""
    with pytest.raises(CapacityError, match=r"it has no \[memory\] to spill rows to\); add a \[memory\] table"):
        _compile("residual_net", _chip(1.0, memory=False), "layer")
    tight = _compile("conv_chain_net", _chip(0.75, memory=False), "clsa")
    roomy = _compile("conv_chain_net", _chip(64.0, memory=False), "clsa")
    r = tight.report
    assert r["buffer_peak_kib"] <= 0.75 < roomy.report["buffer_peak_kib"]
    assert not tight.schedule.stores and r["memory"] == {"stored_kib": 0.0, "loaded_kib": 0.0, "energy_pj": None}
    assert r["makespan_cycles"] > roomy.report["makespan_cycles"]
    assert r["comparison"]["layer_one_copy"] is None and roomy.report["comparison"]["layer_one_copy"] > 0
    x = uniform(models.conv_chain_net(), 2, seed=3)
    np.testing.assert_array_equal(cimc.run(tight, {"x": x}).outputs["y"], cimc.run(roomy, {"x": x}).outputs["y"])


def test_a_buffer_smaller_than_one_set_is_refused():
    with pytest.raises(CapacityError, match="needs .* KiB of activation buffer for its input and output rows"):
        _compile("residual_net", _chip(0.1), "clsa")


def test_copies_a_tile_cannot_feed_at_once_are_left_idle():
    """conv1 in eight copies, most on one tile: layer by layer, its sets all start together and
    each reads three 256-byte rows, more than a 2 KiB buffer holds at once while all are being
    read. Holding rows back only moved that overflow from round to round (no schedule within the
    rounds allowed); the fitting now leaves copies idle until the rest fit, and the report says how
    many."""
    from cimc.driver import _layer, _schedule_report
    from cimc.passes.mapping import map_layers
    from cimc.passes.schedule.cost import CostModel
    from cimc.passes.schedule.problem import build_problem
    data = preset_dict("small")
    data["chip"]["pes_per_tile"] = 40
    data["buffer"] = {"kib_per_tile": 2.0}
    target = target_from_dict(data, "small-wide-tiles")
    g = _graph(models.conv_chain_net(hw=16), target)
    mapping = map_layers(g, target, copies={"conv1": 8})
    problem = build_problem(g, mapping, CostModel(target, g, mapping))
    homes = [o.tile for o in next(opts for opts in problem.options if opts[0].node == "conv1")]
    assert max(homes.count(t) for t in homes) >= 4, "copies must share a tile's buffer"
    schedule = _layer(problem)
    validate(schedule, g, mapping, target)
    running = {t.copy for t in schedule.tasks if t.node == "conv1"}
    assert 1 < len(running) < 8
    solver = {"placement": "packed", "status": None, "bound": None, "work": None, "limit": None,
              "comparison": {"layer": schedule.makespan}}
    assert _schedule_report(problem, schedule, solver, target)["idle_copies"] == {"conv1": 8 - len(running)}


@settings(max_examples=30, deadline=None)
@given(kib=st.floats(1.0, 4.0), pes=st.sampled_from([16, 24, 32, 40, 48]), copies=st.integers(2, 8),
       memory=st.booleans(), scheduler=st.sampled_from(["layer", "clsa"]))
def test_many_copies_on_a_tile_fit_the_buffer_or_are_refused(kib, pes, copies, memory, scheduler):
    """conv1 in 2 to 8 copies on tiles of 16 to 48 crossbars, buffers of 1 to 4 KiB, with or
    without a global memory: the fitting (spilling, holding back, leaving copies idle) gives a
    schedule the validator accepts, every layer still running, or refuses with what to change."""
    from cimc.driver import _clsa, _layer
    from cimc.passes.mapping import map_layers
    from cimc.passes.schedule.cost import CostModel
    from cimc.passes.schedule.problem import build_problem
    data = preset_dict("small")
    data["chip"]["pes_per_tile"] = pes
    data["buffer"] = {"kib_per_tile": kib}
    if not memory:
        del data["memory"]
    target = target_from_dict(data, "small-copies")
    g = _graph(models.conv_chain_net(hw=16), target)
    mapping = map_layers(g, target, copies={"conv1": copies})
    problem = build_problem(g, mapping, CostModel(target, g, mapping))
    try:
        schedule = (_layer if scheduler == "layer" else _clsa)(problem)
    except CapacityError as e:
        assert "choose a larger [buffer] kib_per_tile" in str(e)
        return
    validate(schedule, g, mapping, target)
    assert {t.node for t in schedule.tasks} == {t.node for opts in problem.options for t in opts}


@settings(max_examples=12, deadline=None)
@given(kib=st.floats(0.7, 3.0), latency=st.integers(0, 300), memory=st.booleans(),
       scheduler=st.sampled_from(SCHEDULERS), builder=st.sampled_from(["conv_chain_net", "residual_net"]))
def test_every_buffer_fits_or_is_refused_with_a_reason(kib, latency, memory, scheduler, builder):
    """Any buffer size, memory latency, with or without a global memory: a compile either fits
    every tile (the compiler's validator has checked it on its own) or is refused with a
    capacity message, never an invalid schedule or a crash."""
    try:
        program = _compile(builder, _chip(kib, memory, latency if memory else None), scheduler)
    except CapacityError as exc:
        assert "kib_per_tile" in str(exc)
        return
    assert program.report["buffer_peak_kib"] <= kib
    assert program.report["makespan_cycles"] == cimc.run(program, {"x": uniform(models.__dict__[builder](), 1, 0)}
                                                          ).stats["latency_cycles"]


@pytest.mark.parametrize("kib", [0.75, 1.0])
def test_cpsat_fits_tight_buffers_and_is_never_worse_than_clsa(kib):
    """CP-SAT models the buffers of the tiles it can (holds whose tiles are known before the
    solve) and the replay the rest: without a global memory to spill to, its schedule still fits
    every tile and is no longer than clsa's."""
    target = _chip(kib, memory=False)
    program = _compile("conv_chain_net", target, "cpsat")
    r = program.report
    assert r["buffer_peak_kib"] <= kib
    assert r["makespan_cycles"] <= r["comparison"]["clsa"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 20), st.integers(0, 9)), max_size=12))
def test_the_cpsat_buffer_check_finds_the_peak(spans):
    """The check that keeps the hint feasible for CP-SAT's buffer model, against a count at every cycle."""
    from cimc.passes.schedule.cpsat import _peak
    intervals = [(a, a + n, d) for a, n, d in spans]
    want = max((sum(d for a, b, d in intervals if a <= t < b) for t in range(80)), default=0)
    assert _peak(intervals) == want


# -- the buffers and copy assignment in CP-SAT's model --------------------------------------------

def _spread_problem(kib: float, builder: str = "residual_net"):
    """``builder`` with clsa's greedy copies spread over the tiles (copies send from several
    tiles), on tiles of ``kib``."""
    from cimc.passes.mapping import map_layers
    from cimc.passes.schedule.cost import CostModel
    from cimc.passes.schedule.duplication import greedy_copies
    from cimc.passes.schedule.problem import build_problem
    target = _chip(kib)
    g = _graph(getattr(models, builder)(), target)
    single = map_layers(g, target)
    copies = greedy_copies(build_problem(g, single, CostModel(target, g, single)), target.chip.pes_per_tile)
    mapping = map_layers(g, target, copies=copies, spread=True)
    return build_problem(g, mapping, CostModel(target, g, mapping)), target


@pytest.mark.parametrize("kib", [0.75, 2.0, 64.0])
def test_only_tiles_that_could_overflow_get_a_buffer_constraint(kib):
    """A tile is left out of CP-SAT's buffer model only when every row that may ever be read there
    fits it at once: then no schedule overflows it (checked on the layer-by-layer and clsa
    schedules, which hold the most, with the occupancy the validator counts)."""
    from cimc.passes.schedule.buffers import holds
    from cimc.passes.schedule.clsa import schedule_clsa
    from cimc.passes.schedule.cpsat import tight_tiles
    from cimc.passes.schedule.layer import schedule_layer_by_layer
    problem, target = _spread_problem(kib)
    tight = tight_tiles(problem, frozenset())
    assert bool(tight) == (kib < 64.0)
    capacity = kib * 1024
    for schedule in (schedule_layer_by_layer(problem), schedule_clsa(problem)):
        for tile in {h.tile for h in holds(problem, schedule)} - tight:
            mine = [h for h in holds(problem, schedule) if h.tile == tile]
            assert sum(h.bytes for h in mine) <= capacity        # all at once, let alone at one cycle


@pytest.mark.parametrize("kib", [1.0, 64.0])
def test_cpsat_decides_the_copy_of_each_set_where_it_decides_a_link_or_a_buffer(kib, monkeypatch):
    """Copies spread over tiles send from different links and hold rows on different tiles: CP-SAT
    picks each set's copy, its schedule is replayed with those copies (valid, and as short as the
    solver says: optimal), and it is no longer than with the copies pooled and given out after
    the solve, whose replay the links and buffers it left out can lengthen."""
    from cimc.driver import _clsa
    from cimc.passes.schedule import cpsat
    problem, target = _spread_problem(kib)
    hint = _clsa(problem)
    assigned = cpsat.assigned_layers(problem, cpsat.tight_tiles(problem, frozenset()))
    duplicated = {name for name, lm in problem.mapping.layers.items() if lm.copies > 1}
    assert assigned == duplicated and len(assigned) >= 2
    picked = cpsat.schedule_cpsat(problem, hint, 2.0, 60.0)
    validate(picked.schedule, problem.graph, problem.mapping, target)
    assert picked.status == "optimal" and picked.schedule.makespan < hint.makespan
    assert {t.copy for t in picked.schedule.tasks if t.node in assigned} != {0}
    monkeypatch.setattr(cpsat, "ASSIGN_MODEL_OPTIONS", 0)
    assert cpsat.assigned_layers(problem, set(range(target.chip.tiles))) == set()
    pooled = cpsat.schedule_cpsat(problem, hint, 2.0, 60.0)
    validate(pooled.schedule, problem.graph, problem.mapping, target)
    assert picked.schedule.makespan <= pooled.schedule.makespan


def test_cpsat_returns_the_hint_when_its_solution_cannot_fit_the_buffers(monkeypatch):
    """The replay of a solution whose order and copies overflow a tile whatever is held back is
    refused by the fitting; cpsat then returns the hint, never an invalid schedule."""
    from cimc.driver import _clsa
    from cimc.passes.schedule import cpsat
    problem, target = _spread_problem(64.0)
    hint = _clsa(problem)

    def refused(*args):
        raise CapacityError("no cpsat schedule within the tile buffers")
    monkeypatch.setattr(cpsat, "_rebuild", refused)
    solved = cpsat.schedule_cpsat(problem, hint, 2.0, 60.0)
    assert solved.schedule is hint and solved.status == "hint"
