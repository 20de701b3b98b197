"""Models larger than the chip run in segments (--allow-reprogramming); grouped layers share crossbars."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

import cimc
from cimc.errors import CapacityError, ProgramError
from cimc.passes.schedule.model import Write
from cimc.passes.schedule.validator import ScheduleInvalid, validate
from cimc.targets import target_from_dict

import models
from conftest import compile_model, preset_dict, uniform

SIZES = (64, 48, 48, 32)          # matmul0..2 on the small preset's 64x64 crossbars: 6 + 6 + 4


def _chip(tiles: int, pes: int):
    d = preset_dict("small")
    d["name"] = f"chip{tiles}x{pes}"
    d["chip"] = {"tiles": tiles, "pes_per_tile": pes}
    return target_from_dict(d)


@pytest.fixture(scope="module")
def segmented():
    """The MLP on 8 crossbars (it needs 16), and on a chip where it fits."""
    model = models.mlp(sizes=SIZES)
    return (model, compile_model(model, _chip(1, 8), allow_reprogramming=True),
            compile_model(model, _chip(4, 8)))


def test_too_large_without_the_option_names_both_counts_and_the_option():
    with pytest.raises(CapacityError) as info:
        compile_model(models.mlp(sizes=SIZES), _chip(1, 8))
    msg = str(info.value)
    assert "needs 16 crossbars" in msg and "has 8" in msg and "--allow-reprogramming" in msg


def test_layers_are_cut_into_segments_that_each_fit(segmented):
    _, program, _ = segmented
    mapping = program.mapping()
    assert mapping.segments == 3
    assert [mapping.layers[f"matmul{i}"].segment for i in range(3)] == [0, 1, 2]
    assert mapping.crossbars_used == 6 and mapping.crossbars_programmed == 16
    # every segment starts again from the first crossbar
    assert {mapping.layers[f"matmul{i}"].xbars[0] for i in range(3)} == {0}
    r = program.report
    assert r["segments"] == 3 and r["crossbars_programmed"] == 16
    # each segment's crossbars are written in parallel, one 64-cycle wordline after another
    rows, per_row = [64, 48, 48], program.target.timing.write_cycles_per_row
    assert [w.duration for w in program.schedule.writes] == [r * per_row for r in rows]
    assert r["write_cycles"] == sum(rows) * per_row


def test_segments_compute_what_the_whole_model_computes(segmented):
    model, program, whole = segmented
    x = uniform(model, 16, seed=7)
    got = cimc.run(program, {"x": x})
    want = cimc.run(whole, {"x": x})
    np.testing.assert_array_equal(got.outputs["y"], want.outputs["y"])
    # ... and pay for the writes in time and energy
    s, w = got.stats, want.stats
    assert s["segments"] == 3 and w["segments"] == 1
    assert s["latency_cycles"] == program.report["makespan_cycles"]
    writes = program.schedule.writes
    assert writes[0].start == 0 and s["latency_cycles"] > sum(x.duration for x in writes)
    assert min(program.schedule.start[t.id] for t in program.schedule.tasks if t.node == "matmul0") \
        == writes[0].end
    assert s["crossbar_writes"] == w["crossbar_writes"] == program.report["cells_programmed"]
    assert s["write_energy_pj"] == pytest.approx(s["crossbar_writes"] * program.target.energy.cell_write_pj)
    assert w["write_energy_pj"] == 0.0
    assert s["crossbars_used"] == 6


def test_validator_requires_each_segment_in_the_crossbars_while_it_runs(segmented):
    _, program, _ = segmented
    graph, mapping, target = program.graph(), program.mapping(), program.target
    sched = program.schedule
    validate(sched, graph, mapping, target)
    first = next(t for t in sched.tasks if t.node == "matmul1")
    early = copy.deepcopy(sched)
    early.start[first.id] = sched.writes[1].start - 1          # before its weights are written
    with pytest.raises(ScheduleInvalid, match="outside the time segment 1"):
        validate(early, graph, mapping, target)
    short = copy.deepcopy(sched)
    short.writes[2] = dataclasses.replace(short.writes[2], duration=short.writes[2].duration - 1)
    with pytest.raises(ScheduleInvalid, match="segment 2 is written in"):
        validate(short, graph, mapping, target)
    missing = copy.deepcopy(sched)
    missing.writes.pop()
    with pytest.raises(ScheduleInvalid, match="3 segments"):
        validate(missing, graph, mapping, target)
    overlap = copy.deepcopy(sched)
    overlap.writes[1] = Write(1, sched.writes[0].end - 1, sched.writes[1].duration)
    with pytest.raises(ScheduleInvalid, match="before segment 0"):
        validate(overlap, graph, mapping, target)


def test_runtime_refuses_to_read_a_crossbar_holding_another_segment(segmented):
    model, program, _ = segmented
    broken = copy.deepcopy(program)
    stream = broken.tiles[0]
    stream.remove(next(i for i in stream if i["op"] == "write" and i["segment"] == 1))
    with pytest.raises(ProgramError, match="does not hold that layer's weights"):
        cimc.run(broken, {"x": uniform(model, 2, seed=1)})


def test_listing_shows_segments(segmented):
    from cimc.listing import render_listing
    text = render_listing(segmented[1])
    assert "3 segments programmed in turn" in text and "segment 2" in text
    assert "write" in text


def test_depthwise_channels_share_crossbars(compiled):
    program = compiled("grouped_conv_net", "narrow").program
    mapping = program.mapping()
    depthwise = mapping.layers["depthwise"]
    target = program.target
    per = min(target.crossbar.rows // 9, target.outputs_per_crossbar)
    assert len(depthwise.crossbars) == 24                       # one block per channel
    assert len(depthwise.xbars) == -(-24 // per) < 24
    layer = next(row for row in program.report["layers"] if row["name"] == "depthwise")
    assert layer["crossbars"] == len(depthwise.xbars)
