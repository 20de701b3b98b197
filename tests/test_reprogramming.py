"""Models larger than the chip run in segments (--allow-reprogramming); grouped layers share crossbars."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

import cimc
from cimc.errors import CapacityError, ProgramError
from cimc.passes.mapping import map_layers
from cimc.passes.schedule.clsa import schedule_clsa
from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.layer import schedule_layer_by_layer
from cimc.passes.schedule.model import Write
from cimc.passes.schedule.problem import build_problem, lower_bounds
from cimc.passes.schedule.validator import ScheduleInvalid, validate
from cimc.targets import target_from_dict

import models
from conftest import compile_model, preset_dict, uniform
from test_cross_layer import _graph

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


# -- duplication within segments ----------------------------------------------------------------

@pytest.fixture(scope="module")
def duplicated_segments():
    """conv_chain_net (conv0 4 crossbars, conv1 6, conv2 1) on one tile of 8 crossbars: segment 0
    holds conv0 and four free crossbars, segment 1 conv1, conv2 and one free; and on a chip where
    it fits."""
    model = models.conv_chain_net()
    small = _chip(1, 8)
    return (model, small, {s: compile_model(model, small, allow_reprogramming=True, scheduler=s)
                           for s in ("layer", "clsa", "cpsat")},
            compile_model(model, _chip(2, 8), scheduler="layer"))


def test_a_segment_duplicates_into_the_crossbars_it_leaves_free(duplicated_segments):
    _, small, programs, _ = duplicated_segments
    assert programs["layer"].mapping().layers["conv0"].copies == 1
    for scheduler in ("clsa", "cpsat"):
        program = programs[scheduler]
        mapping = program.mapping()
        assert mapping.segments == 2 and mapping.segment_layers() == [["conv0"], ["conv1", "conv2"]]
        conv0 = mapping.layers["conv0"]
        assert conv0.copies == 2 and program.report["copies"] == {"conv0": 2, "conv1": 1, "conv2": 2}
        assert not set(conv0.copy(0).xbars) & set(conv0.copy(1).xbars)
        for seg in range(2):
            held = [x.xbar for lm in mapping.layers.values() for x in lm.crossbars if x.segment == seg]
            assert len(held) == len(set(held)) <= small.total_crossbars
        # copies are written with their segment, in the time of its longest crossbar write
        assert [w.duration for w in program.schedule.writes] == \
            [w.duration for w in programs["layer"].schedule.writes]
        assert program.report["cells_programmed"] > programs["layer"].report["cells_programmed"]
        assert program.report["makespan_cycles"] < program.report["comparison"]["layer_one_copy"]


def test_duplicated_segments_compute_what_the_whole_model_computes(duplicated_segments):
    model, _, programs, whole = duplicated_segments
    x = uniform(model, 4, seed=3)
    want = cimc.run(whole, {"x": x}).outputs["y"]
    for scheduler, program in programs.items():
        got = cimc.run(program, {"x": x})
        np.testing.assert_array_equal(got.outputs["y"], want, err_msg=scheduler)
        assert got.stats["latency_cycles"] == program.report["makespan_cycles"]
        assert got.stats["crossbar_writes"] == program.report["cells_programmed"]
    onnx_out = models.ort_batch(model, "x", x)
    assert models.normalized_error(want, onnx_out) < 0.05


def test_the_segments_bound_holds_below_every_schedule_and_counts_compute(duplicated_segments):
    _, small, programs, _ = duplicated_segments
    for program in programs.values():
        r = program.report
        bounds = r["lower_bounds"]
        assert sum(w.duration for w in program.schedule.writes) < bounds["segments"] == r["lower_bound_cycles"]
        assert r["lower_bound_cycles"] <= r["makespan_cycles"]
    assert programs["cpsat"].report["makespan_cycles"] <= programs["clsa"].report["makespan_cycles"]
    # and on every duplication the segments allow, for every scheduler
    g = _graph(models.conv_chain_net(), small)
    single = map_layers(g, small, True)
    problem = build_problem(g, single, CostModel(small, g, single))
    bound = max(lower_bounds(problem, small.total_crossbars).values())
    for copies in ({"conv0": 1}, {"conv0": 2}, {"conv2": 2}, {"conv0": 2, "conv2": 2}):
        mapping = map_layers(g, small, True, copies=copies)
        p = build_problem(g, mapping, CostModel(small, g, mapping))
        assert max(lower_bounds(p, small.total_crossbars).values()) == bound
        for schedule in (schedule_layer_by_layer(p), schedule_clsa(p)):
            validate(schedule, g, mapping, small)
            assert schedule.makespan >= bound


def test_copies_that_overfill_a_segment_are_refused(duplicated_segments):
    _, small, _, _ = duplicated_segments
    g = _graph(models.conv_chain_net(), small)
    with pytest.raises(CapacityError, match="layer copies of segment 0 need 12 crossbars"):
        map_layers(g, small, True, copies={"conv0": 3})


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
