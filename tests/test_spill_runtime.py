"""Spills to the global memory and loads back (schedule stores and loads): code generation and the
reference runtime, on schedules edited by hand (the schedulers are not asked to spill here)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import cimc
from cimc.errors import ProgramError
from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.model import Load, Store
from cimc.program import FORMAT_VERSION
from cimc.runtime.interpreter import ReadBeforeWrite
from cimc.targets.codegen import PRIORITY, generate
from cimc.targets.schema import Memory

from conftest import uniform

# residual_net on the narrow preset: relu0 (tensor h) runs on tile 0, conv1 reads h on tile 1,
# the residual Add on tile 2 (long after); flatten on tile 2 feeds fc on tile 3.
MODEL, TARGET = "residual_net", "narrow"


@pytest.fixture(scope="module")
def base(compiled):
    c = compiled(MODEL, TARGET)
    x = uniform(c.model, 3, seed=7)
    return c, x, cimc.run(c.program, {"x": x}, workers=1)


def _cost(program, target=None) -> CostModel:
    return CostModel(target or program.target, program.graph(), program.mapping())


def _with(program, stores=(), loads=(), target=None, edit=None):
    """The program with these stores and loads added to its schedule, its streams regenerated."""
    target = target or program.target
    schedule = dataclasses.replace(program.schedule, stores=list(stores), loads=list(loads))
    if edit is not None:
        schedule = edit(schedule)
    tiles = generate(program.graph(), program.mapping(), schedule, _cost(program, target))
    return dataclasses.replace(program, target=target, tiles=tiles, schedule=schedule)


def _task(program, node: str, index: int):
    return next(t for t in program.schedule.tasks if t.node == node and t.index == index)


def _transfer(program, tensor: str, rows: int) -> int:
    return math.ceil(_cost(program).rows_bytes(tensor, rows) / program.target.memory.bytes_per_cycle)


def _h_spilled(program):
    """Every set of relu0 (tensor h) spilled as it ends and loaded into tile 2 (the residual Add's),
    in order on the memory channel; tile 1 (conv1) still gets h over the network."""
    lat = program.target.memory.latency_cycles
    sets = [t for t in program.schedule.tasks if t.node == "relu0"]
    assert {t.tile for t in sets} == {0}
    stores, free = [], 0
    for t in sets:
        start = max(program.schedule.end(t.id), free)
        dur = _transfer(program, "h", t.out_rows[1] - t.out_rows[0])
        stores.append(Store(t.id, start, dur))
        free = start + dur
    loads = []
    start = max(s.start + s.duration + lat for s in stores)
    for t in sets:
        dur = _transfer(program, "h", t.out_rows[1] - t.out_rows[0])
        loads.append(Load(t.id, 2, start, dur))
        start += dur
    first_add = min(program.schedule.start[t.id] for t in program.schedule.tasks if t.node == "residual")
    assert max(x.start + x.duration + lat for x in loads) <= first_add     # in time for the Add
    return stores, loads


def test_regenerating_an_unchanged_schedule_gives_the_program(base):
    c, _, _ = base
    p = c.program
    assert p.target.memory is not None and not p.schedule.stores and not p.schedule.loads
    assert generate(p.graph(), p.mapping(), p.schedule, _cost(p)) == p.tiles
    assert PRIORITY["fill"] == PRIORITY["recv"] and PRIORITY["spill"] == PRIORITY["send"]
    assert FORMAT_VERSION == 8


def test_spill_and_fill_instructions(base):
    c, _, _ = base
    p = c.program
    stores, loads = _h_spilled(p)
    q = _with(p, stores, loads)
    lat = p.target.memory.latency_cycles
    spills = [ins for ins in q.tiles[0] if ins["op"] == "spill"]
    fills = [ins for ins in q.tiles[2] if ins["op"] == "fill"]
    assert not any(ins["op"] in ("spill", "fill") for i, s in enumerate(q.tiles) if i not in (0, 2) for ins in s)
    assert not any(ins["op"] == "fill" for ins in q.tiles[0])
    assert sorted(spills, key=lambda i: i["t"]) == [
        {"t": s.start, "op": "spill", "done": s.start + s.duration + lat, "tensor": "h",
         "rows": list(p.schedule.tasks[s.task].out_rows)} for s in stores]
    assert sorted(fills, key=lambda i: i["t"]) == [
        {"t": x.start, "op": "fill", "done": x.start + x.duration + lat, "tensor": "h",
         "rows": list(p.schedule.tasks[x.task].out_rows)} for x in loads]
    # h reaches tile 2 only from the global memory now; tile 1 still gets it over the network
    for stream in (p.tiles, q.tiles):
        assert sum(1 for i in stream[0] if i["op"] == "send" and i["tensor"] == "h" and i["dst"] == 1) == 8
    assert sum(1 for i in p.tiles[0] if i["op"] == "send" and i["tensor"] == "h" and i["dst"] == 2) == 8
    assert not any(i["op"] == "send" and i["tensor"] == "h" and i["dst"] == 2 for i in q.tiles[0])
    assert not any(i["op"] == "recv" and i["tensor"] == "h" for i in q.tiles[2])
    # everything else is unchanged
    def h_to_2(i: dict, k: int) -> bool:
        return i["op"] in ("send", "recv") and i["tensor"] == "h" and 2 in (i.get("dst"), k)
    rest = [[i for i in s if i["op"] not in ("spill", "fill") and not h_to_2(i, k)] for k, s in enumerate(q.tiles)]
    orig = [[i for i in s if not h_to_2(i, k)] for k, s in enumerate(p.tiles)]
    strip = lambda tiles: [[{k: v for k, v in i.items() if k != "msg"} for i in s] for s in tiles]  # noqa: E731
    assert strip(rest) == strip(orig)


def test_spilled_rows_give_the_same_outputs(base):
    c, x, ref = base
    p = c.program
    stores, loads = _h_spilled(p)
    got = cimc.run(_with(p, stores, loads), {"x": x}, workers=1)
    np.testing.assert_array_equal(got.outputs["y"], ref.outputs["y"])
    cost = _cost(p)
    rows = {t.id: t.out_rows[1] - t.out_rows[0] for t in p.schedule.tasks}
    expected = sum(cost.rows_bytes("h", rows[s.task]) for s in [*stores, *loads])
    assert expected == 2 * 8 * 8 * 8            # h is 8x8x8 at 8 bits, written once and read once
    assert got.stats["memory_bytes"] == pytest.approx(expected)
    assert got.stats["memory_energy_pj"] == pytest.approx(expected * p.target.memory.pj_per_byte)
    assert ref.stats["memory_bytes"] == 0 and ref.stats["memory_energy_pj"] == 0
    assert got.stats["energy_pj"] == pytest.approx(ref.stats["energy_pj"] + got.stats["memory_energy_pj"])
    assert got.stats["latency_cycles"] == ref.stats["latency_cycles"]      # all done before the end


def test_stats_are_per_inference(base):
    c, x, _ = base
    p = c.program
    q = _with(p, *_h_spilled(p))
    one = cimc.run(q, {"x": x[:1]}, workers=1).stats
    many = cimc.run(q, {"x": np.concatenate([x] * 3)}, workers=2).stats
    assert one["memory_bytes"] == many["memory_bytes"] > 0
    assert one["memory_energy_pj"] == many["memory_energy_pj"] > 0


def test_fill_before_the_store_lands_is_read_before_write(base):
    c, x, _ = base
    p = c.program
    stores, loads = _h_spilled(p)
    early = [dataclasses.replace(loads[0], start=stores[0].start + stores[0].duration
                                 + p.target.memory.latency_cycles - 1), *loads[1:]]
    with pytest.raises(ReadBeforeWrite, match="global memory"):
        cimc.run(_with(p, stores, early), {"x": x}, workers=1)
    # the fill is what brings the rows: without it, tile 2 reads h before it is there
    q = _with(p, stores, loads)
    q = dataclasses.replace(q, tiles=[[i for i in s if i["op"] != "fill"] for s in q.tiles])
    with pytest.raises(ReadBeforeWrite, match="tile 2"):
        cimc.run(q, {"x": x}, workers=1)


def test_spill_before_the_set_ends_is_read_before_write(base):
    c, x, _ = base
    p = c.program
    stores, loads = _h_spilled(p)
    t = p.schedule.tasks[stores[0].task]
    early = [dataclasses.replace(stores[0], start=p.schedule.end(t.id) - 1), *stores[1:]]
    with pytest.raises(ReadBeforeWrite, match="tile 0"):
        cimc.run(_with(p, early, loads), {"x": x}, workers=1)


def test_row_less_tensor_and_latency_includes_spills(base):
    """flatten's output (one row) loaded into fc's tile from the memory (latency 0 to fit the slack),
    and the graph output spilled after the last set: the run lasts until that spill lands."""
    c, x, ref = base
    p = c.program
    target = dataclasses.replace(p.target, memory=Memory(bytes_per_cycle=64.0, latency_cycles=0, pj_per_byte=2.0))
    flat, fc = _task(p, "flatten", 0), _task(p, "fc", 0)
    assert flat.tile != fc.tile
    end = p.schedule.end(flat.id)
    stores = [Store(flat.id, end, 1), Store(fc.id, p.schedule.end(fc.id), 5)]
    loads = [Load(flat.id, fc.tile, end + 1, 1)]
    assert end + 2 <= p.schedule.start[fc.id]
    q = _with(p, stores, loads, target)
    assert not any(i["op"] in ("send", "recv") and i["tensor"] == "flat" for s in q.tiles for i in s)
    got = cimc.run(q, {"x": x}, workers=1)
    np.testing.assert_array_equal(got.outputs["y"], ref.outputs["y"])
    assert got.stats["latency_cycles"] == p.schedule.end(fc.id) + 5 > ref.stats["latency_cycles"]
    cost = _cost(p, target)
    expected = 2 * cost.rows_bytes("flat", 1) + cost.rows_bytes("y", 1)
    assert got.stats["memory_bytes"] == pytest.approx(expected) and expected > 0
    assert got.stats["memory_energy_pj"] == pytest.approx(2.0 * expected)


def test_spill_on_a_target_without_memory_is_refused(base):
    c, x, _ = base
    p = c.program
    stores, loads = _h_spilled(p)
    q = _with(p, stores, loads)
    with pytest.raises(ProgramError, match="no \\[memory\\]"):
        cimc.run(dataclasses.replace(q, target=dataclasses.replace(p.target, memory=None)), {"x": x}, workers=1)
    with pytest.raises(ValueError, match="no \\[memory\\]"):
        _with(p, stores, loads, dataclasses.replace(p.target, memory=None))
