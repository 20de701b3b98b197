"""Cross-layer scheduling: row sets through vector operators, weight duplication, the clsa and
cpsat schedulers, the lower bounds, and programs that execute those schedules."""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import example, given, settings, strategies as st
from onnx import helper

import cimc
from cimc.cli import main
from cimc.frontend import import_onnx
from cimc.errors import CapacityError
from cimc.passes.mapping import map_layers, spread_crossbars
from cimc.passes.quantize import quantize
from cimc.passes.schedule.clsa import schedule_clsa
from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.duplication import greedy_copies
from cimc.passes.schedule.layer import schedule_layer_by_layer
from cimc.passes.schedule.placement import Fitting, Placer
from cimc.passes.schedule.problem import build_problem, lower_bounds
from cimc.passes.schedule.sets import node_sets, row_granular
from cimc.passes.schedule.validator import ScheduleInvalid, validate
from cimc.runtime.interpreter import _window_slice
from cimc.runtime.kernels import VECTOR_KERNELS

import models
from conftest import compile_model, preset_dict, uniform
from test_cli import _fails, _toml


def _graph(model, target):
    g = import_onnx(model).graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize(g, target, {"x": uniform(model, 8, seed=0)})
    return g


# -- sets ---------------------------------------------------------------------------------------

def test_vector_operators_with_rows_are_cut_into_row_sets(small):
    g = _graph(models.vector_ops_net(), small)
    kinds = {n.name: row_granular(g, n) for n in g.nodes()}
    assert kinds["conv"] == "conv" and kinds["avg"] == "window"
    assert kinds["mul"] == kinds["sub"] == kinds["div"] == kinds["relu"] == "rows"
    assert kinds["transpose"] is None and kinds["softmax"] is None      # no row structure / not rank 4
    relu = g.node("relu")
    sets = node_sets(g, relu)
    assert len(sets) == g.tensors[relu.outputs[0]].shape[2]
    assert all(s.reads == (("div", s.out_rows[0], s.out_rows[1]),) for s in sets)
    pool = g.node("avg")
    # the 2x2 window with stride 1 reads two input rows per output row, one past the end as pad
    reads = [s.reads[0][1:] for s in node_sets(g, pool)]
    height = g.tensors["r"].shape[2]
    assert reads[0] == (0, 2) and reads[-1] == (height - 1, height)


def _single(op, shape, const=None, **attrs):
    inputs = ["x"] + (["c"] if const is not None else [])
    node = helper.make_node(op, inputs, ["y"], name="op", **attrs)
    conv = helper.make_node("Conv", ["y", "W"], ["z"], name="conv", kernel_shape=[1, 1])
    inits = {"W": np.ones((2, shape[1], 1, 1), np.float32)}
    if const is not None:
        inits["c"] = const
    return models.make_model([node, conv], [models.vinfo("x", shape)], ["z"], inits)


def test_a_constant_that_varies_over_rows_keeps_the_operator_whole(small):
    by_row = _single("Mul", [1, 2, 4, 4], np.arange(4, dtype=np.float32).reshape(4, 1))
    by_col = _single("Mul", [1, 2, 4, 4], np.arange(4, dtype=np.float32))
    assert row_granular(_graph(by_row, small), _graph(by_row, small).node("op")) is None
    assert row_granular(_graph(by_col, small), _graph(by_col, small).node("op")) == "rows"


@settings(max_examples=60, deadline=None)
@given(kh=st.integers(1, 4), sh=st.integers(1, 3), dh=st.integers(1, 2), pt=st.integers(0, 2),
       pb=st.integers(0, 2), height=st.integers(4, 11), ceil=st.booleans(), include=st.booleans(),
       op=st.sampled_from(["MaxPool", "AveragePool"]), first=st.integers(0, 20), count=st.integers(1, 3))
def test_a_pool_computed_by_row_ranges_equals_the_whole_pool(kh, sh, dh, pt, pb, height, ceil, include, op,
                                                             first, count):
    """The runtime's slice of rows with adjusted pads gives exactly the whole operator's rows."""
    pt, pb = min(pt, kh - 1), min(pb, kh - 1)
    span = (kh - 1) * dh + 1
    if height + pt + pb < span or (op == "MaxPool" and dh > 1 and include):
        return
    rounding = np.ceil if ceil else np.floor
    ho = int(rounding((height + pt + pb - span) / sh)) + 1
    if ceil and (ho - 1) * sh >= height + pt:      # ONNX drops a window that starts in the bottom pad
        ho -= 1
    attrs = {"kernel": [kh, 2], "strides": [sh, 1], "dilations": [dh, 1], "pads": [pt, 0, pb, 1],
             "output_hw": [ho, 5], "count_include_pad": int(include), "rank": 2}
    x = np.random.default_rng(first).standard_normal((2, 1, 3, height, 5)).astype(np.float32)
    whole = VECTOR_KERNELS[op](attrs, x)
    r0 = first % ho
    r1 = min(ho, r0 + count)
    a = max(r0 * sh - pt, 0)
    b = min((r1 - 1) * sh - pt + (kh - 1) * dh + 1, height)
    part = VECTOR_KERNELS[op](_window_slice(attrs, height, (r0, r1), (a, b)), x[:, :, :, a:b])
    np.testing.assert_array_equal(part, whole[:, :, :, r0:r1])


# -- duplication --------------------------------------------------------------------------------

def test_copies_hold_every_block_on_crossbars_of_their_own(small):
    g = _graph(models.conv_chain_net(), small)
    once = map_layers(g, small)
    name = next(iter(once.layers))
    twice = map_layers(g, small, copies={name: 3})
    layer = twice.layers[name]
    assert layer.copies == 3
    blocks = [sorted((x.group, x.rows, x.cols) for x in layer.copy(c).crossbars) for c in range(3)]
    assert blocks[0] == blocks[1] == blocks[2]
    xbars = [set(layer.copy(c).xbars) for c in range(3)]
    assert not (xbars[0] & xbars[1]) and not (xbars[1] & xbars[2]) and not (xbars[0] & xbars[2])
    # first copies stay where they were without duplication
    for other, lm in once.layers.items():
        assert [x.xbar for x in twice.layers[other].copy(0).crossbars] == [x.xbar for x in lm.crossbars]


def test_greedy_duplication_fills_the_budget_from_the_bottleneck(small):
    g = _graph(models.conv_chain_net(), small)
    mapping = map_layers(g, small)
    problem = build_problem(g, mapping, CostModel(small, g, mapping))
    copies = greedy_copies(problem, small.chip.pes_per_tile)
    work = {}
    for opts in problem.options:
        if opts[0].kind == "mvm":
            work[opts[0].node] = work.get(opts[0].node, 0) + opts[0].compute
    heaviest = max(work, key=work.get)
    assert copies[heaviest] > 1
    used = sum(len(mapping.layers[n].xbars) * c for n, c in copies.items())
    assert sum(copies.values()) > len(copies) and used <= small.total_crossbars


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=40), st.integers(1, 8))
@example([16, 1], 2)                                # large copies fill the chip: no tile left for the small
@example([12, 3, 4, 1], 3)                          # small copies share the tail of a large one
def test_spread_puts_each_copy_whole_on_a_least_filled_tile(sizes, tiles):
    per_tile = 8
    firsts = spread_crossbars(sizes, per_tile, tiles)
    large = [s for s in sizes if s > per_tile]
    if sum(-(-s // per_tile) for s in large) > tiles:
        assert firsts is None                       # the copies larger than a tile alone need more
        return
    if not large:                                   # then exactly: the largest first, on the least filled
        free, expected = [per_tile] * tiles, [0] * len(sizes)
        for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
            tile = free.index(max(free))            # (the lowest such tile)
            if sizes[k] > free[tile]:               # no tile has room for all of it
                expected = None
                break
            expected[k] = tile * per_tile + per_tile - free[tile]          # next to what is there
            free[tile] -= sizes[k]
        assert firsts == expected
    if firsts is None:
        return
    taken = [x for first, size in zip(firsts, sizes) for x in range(first, first + size)]
    assert len(taken) == len(set(taken)) and max(taken) < tiles * per_tile   # no crossbar twice, on chip
    for first, size in zip(firsts, sizes):
        if size <= per_tile:
            assert first // per_tile == (first + size - 1) // per_tile    # whole, on one tile
        else:
            assert first % per_tile == 0                                   # on tiles of its own


def test_spread_copies_of_a_layer_land_on_different_tiles(small):
    g = _graph(models.conv_chain_net(), small)
    name = next(iter(map_layers(g, small).layers))
    packed = map_layers(g, small, copies={name: 3})
    spread = map_layers(g, small, copies={name: 3}, spread=True)
    layer = spread.layers[name]
    assert len({layer.copy(c).home_tile for c in range(3)}) == 3
    assert len(packed.layers[name].tiles) < 3
    for lm, other in zip(spread.layers.values(), packed.layers.values()):   # the same blocks, elsewhere
        assert sorted((x.copy, x.group, x.rows, x.cols) for x in lm.crossbars) == \
            sorted((x.copy, x.group, x.rows, x.cols) for x in other.crossbars)
    assert len({x.xbar for lm in spread.layers.values() for x in lm.crossbars}) == spread.crossbars_used == \
        sum(len(lm.crossbars) for lm in spread.layers.values())


def test_spread_gives_a_copy_larger_than_a_tile_tiles_of_its_own(narrow):
    g = _graph(models.conv_chain_net(), narrow)            # conv0 4 crossbars, conv1 6: tiles hold 2
    mapping = map_layers(g, narrow, copies={"conv1": 2}, spread=True)
    per_tile = narrow.chip.pes_per_tile
    for lm in mapping.layers.values():
        for c in range(lm.copies):
            xbars = lm.copy(c).xbars
            assert xbars == tuple(range(xbars[0], xbars[0] + len(xbars)))
            if len(xbars) > per_tile:
                assert xbars[0] % per_tile == 0
            else:
                assert len(lm.copy(c).tiles) == 1
    problem = build_problem(g, mapping, CostModel(narrow, g, mapping))
    validate(schedule_clsa(problem), g, mapping, narrow)


def test_spread_refuses_copies_that_only_fit_packed(small):
    g = _graph(models.conv_chain_net(), small)              # 4 tiles of 8: four copies of 6 leave 2 each
    assert map_layers(g, small, copies={"conv1": 4}).layers["conv1"].copies == 4
    with pytest.raises(CapacityError, match="spread"):
        map_layers(g, small, copies={"conv1": 4}, spread=True)


# -- schedulers end to end ----------------------------------------------------------------------

CASES = [("conv_chain_net", "small"), ("residual_net", "small"), ("vector_ops_net", "small"),
         ("grouped_conv_net", "narrow"), ("residual_net", "narrow"), ("avgpool_net", "small")]


@pytest.fixture(scope="module")
def compiled_all(small, narrow):
    targets = {"small": small, "narrow": narrow}
    cache = {}

    def get(builder, target, scheduler):
        key = (builder, target, scheduler)
        if key not in cache:
            model = getattr(models, builder)()
            cache[key] = (model, compile_model(model, targets[target], scheduler=scheduler, solver_work=1.0))
        return cache[key]
    return get


@pytest.mark.parametrize("builder,target", CASES)
def test_cross_layer_programs_compute_what_layer_by_layer_computes_in_the_scheduled_cycles(compiled_all, builder,
                                                                                          target):
    model, base = compiled_all(builder, target, "layer")
    feeds = {n: np.random.default_rng(3).random((4,) + tuple(s)).astype(np.float32) for n, s in base.inputs.items()}
    expected = cimc.run(base, feeds).outputs
    spans = {}
    for scheduler in ("clsa", "cpsat"):
        _, program = compiled_all(builder, target, scheduler)
        result = cimc.run(program, feeds)
        for name in expected:
            np.testing.assert_array_equal(result.outputs[name], expected[name])
        assert result.stats["latency_cycles"] == program.report["makespan_cycles"]
        spans[scheduler] = program.report["makespan_cycles"]
    assert spans["cpsat"] <= spans["clsa"] < base.report["makespan_cycles"]


@pytest.mark.parametrize("builder,target", CASES)
def test_report_gives_bound_gap_copies_and_comparison(compiled_all, builder, target):
    _, program = compiled_all(builder, target, "cpsat")
    r = program.report
    assert 0 < r["lower_bound_cycles"] <= r["makespan_cycles"]
    assert r["gap"] == pytest.approx((r["makespan_cycles"] - r["lower_bound_cycles"]) / r["makespan_cycles"])
    assert r["lower_bound_cycles"] == max(r["lower_bounds"].values())
    assert set(r["copies"]) == {layer["name"] for layer in r["layers"]}
    assert r["solver_status"] in ("optimal", "feasible", "hint")
    assert r["makespan_cycles"] <= r["comparison"]["clsa"] <= r["comparison"]["layer"]
    assert r["comparison"]["layer"] <= r["comparison"]["layer_one_copy"]
    assert 0 < r["pe_utilization"] <= 1


def test_cpsat_spreads_copies_over_tiles_when_that_schedules_shorter(compiled_all):
    # vector_ops_net's row-wise operators run on the GPEU of a tile their input is written on:
    # with the copies packed on tile 0 they queue there; spread, they run on several tiles at once
    _, clsa = compiled_all("vector_ops_net", "small", "clsa")
    _, cpsat = compiled_all("vector_ops_net", "small", "cpsat")
    assert clsa.report["placement"] == "packed" and cpsat.report["placement"] == "spread"
    assert cpsat.report["makespan_cycles"] < clsa.report["comparison"]["clsa"] == clsa.report["makespan_cycles"]

    def gpeus(program):
        return {t.tile for t in program.schedule.tasks if t.kind == "vec"}
    assert len(gpeus(cpsat)) > len(gpeus(clsa))


def test_the_bound_holds_below_every_scheduler_on_every_duplication(small):
    g = _graph(models.residual_net(), small)
    single = map_layers(g, small)
    problem = build_problem(g, single, CostModel(small, g, single))
    bound = max(lower_bounds(problem, small.total_crossbars).values())
    copies = greedy_copies(problem, small.chip.pes_per_tile)
    for scale in (0.0, 0.5, 1.0):
        trial = {n: max(1, round(1 + (c - 1) * scale)) for n, c in copies.items()}
        mapping = map_layers(g, small, copies=trial)
        p = build_problem(g, mapping, CostModel(small, g, mapping))
        assert max(lower_bounds(p, small.total_crossbars).values()) == bound      # it is the chip's bound
        for schedule in (schedule_layer_by_layer(p), schedule_clsa(p)):
            validate(schedule, g, mapping, small)
            assert schedule.makespan >= bound


# -- the validator on duplicated schedules ------------------------------------------------------

@pytest.fixture(scope="module")
def duplicated(small):
    g = _graph(models.conv_chain_net(), small)
    single = map_layers(g, small)
    problem = build_problem(g, single, CostModel(small, g, single))
    mapping = map_layers(g, small, copies=greedy_copies(problem, small.chip.pes_per_tile))
    p = build_problem(g, mapping, CostModel(small, g, mapping))
    return g, mapping, p, schedule_clsa(p)


def test_validator_catches_a_set_on_the_crossbars_of_another_copy(duplicated, small):
    g, mapping, p, schedule = duplicated
    validate(schedule, g, mapping, small)
    i = next(k for k, t in enumerate(schedule.tasks) if t.kind == "mvm" and len(p.options[k]) > 1)
    other = p.options[i][1 - schedule.tasks[i].copy]
    tasks = list(schedule.tasks)
    tasks[i] = dataclasses.replace(schedule.tasks[i], resources=other.resources)
    with pytest.raises(ScheduleInvalid, match="copy"):
        validate(dataclasses.replace(schedule, tasks=tasks), g, mapping, small)


def test_validator_catches_two_sets_on_one_copy(duplicated, small):
    g, mapping, p, schedule = duplicated
    ids = [k for k, t in enumerate(schedule.tasks) if t.kind == "mvm" and len(p.options[k]) > 1]
    a, b = ids[0], ids[1]
    tasks, start = list(schedule.tasks), list(schedule.start)
    tasks[b] = p.options[b][tasks[a].copy]
    start[b] = start[a]
    with pytest.raises(ScheduleInvalid):
        validate(dataclasses.replace(schedule, tasks=tasks, start=start), g, mapping, small)


@pytest.mark.parametrize("spread", [False, True])
@pytest.mark.parametrize("spill", [False, True])
def test_each_set_goes_to_the_copy_on_which_it_finishes_first(small, spill, spread):
    """The placer skips copies it can tell will lose (idle ones alike, busy ones whose own
    timeline is too late); what it picks is what trying every copy on its own picks, with rows
    from the network or loaded from the global memory. Sets are placed with no row order, so
    that copies are busy when the next set comes."""
    g = _graph(models.conv_chain_net(), small)
    mapping = map_layers(g, small, copies={"conv0": 3, "conv1": 2, "conv2": 4}, spread=spread)
    p = build_problem(g, mapping, CostModel(small, g, mapping))
    spilled = frozenset((i, t) for i in range(p.size) for t in range(mapping.tiles_used)) if spill else frozenset()
    placer, sends, choices = Placer(p, Fitting(spilled)), [0] * p.size, 0
    for k, options in enumerate(p.options):
        finishes = []
        for option in options:
            alone = copy.deepcopy(placer, {id(p): p})
            start, _, _ = alone.place(k, [option], 0, sends)
            finishes.append(start + option.duration)
        start, option, sends[k] = placer.place(k, options, 0, sends)
        assert start + option.duration == min(finishes)
        assert option is options[finishes.index(min(finishes))]
        choices += len(set(finishes)) > 1
    assert choices > 5, "some sets must finish at different times on different copies"


def test_validator_refuses_rows_of_an_operator_without_row_structure(small):
    g = _graph(models.vector_ops_net(), small)
    mapping = map_layers(g, small)
    p = build_problem(g, mapping, CostModel(small, g, mapping))
    schedule = schedule_clsa(p)
    i = next(k for k, t in enumerate(schedule.tasks) if t.node == "transpose")
    tasks = list(schedule.tasks)
    tasks[i] = dataclasses.replace(tasks[i], out_rows=(0, 1))
    with pytest.raises(ScheduleInvalid):
        validate(dataclasses.replace(schedule, tasks=tasks), g, mapping, small)


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("option,words", [("--solver-time", "solver time"), ("--solver-work", "work budget")])
@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_solver_limits_must_be_positive(tmp_path, capsys, option, words, value):
    onnx.save(models.conv_net(), tmp_path / "m.onnx")
    line = _fails(capsys, ["compile", tmp_path / "m.onnx", "-t", "small", "-o", tmp_path / "m.cimp",
                           "--scheduler", "cpsat", option, value], tmp_path)
    assert words in line


def test_a_buffer_too_small_for_one_set_is_refused(tmp_path, capsys):
    data = preset_dict("small")
    data["buffer"] = {"kib_per_tile": 0.01}
    (tmp_path / "tiny.toml").write_text(_toml(data))
    onnx.save(models.conv_net(), tmp_path / "m.onnx")
    line = _fails(capsys, ["compile", tmp_path / "m.onnx", "-t", tmp_path / "tiny.toml", "-o",
                           tmp_path / "m.cimp", "--scheduler", "clsa"], tmp_path)
    assert "buffer" in line and "kib_per_tile" in line


def test_cli_cpsat_report_and_schedule_views(tmp_path, capsys):
    model = models.residual_net()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=uniform(model, 16, seed=1))
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "small", "-o", str(tmp_path / "m.cimp"),
                 "--calibration", str(tmp_path / "c.npz"), "--scheduler", "cpsat", "--solver-work", "1",
                 "--report-json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "lower bound" in out and "CP-SAT" in out
    r = json.loads((tmp_path / "r.json").read_text())
    for key in ("makespan_cycles", "lower_bound_cycles", "gap", "pe_utilization", "copies", "solver_status",
                "comparison", "solver_work"):
        assert key in r
    assert r["solver_limit"] == "work" and 0 < r["solver_work"]
    assert main(["inspect", str(tmp_path / "m.cimp"), "--schedule", "--format", "json"]) == 0
    sets = json.loads(capsys.readouterr().out)["sets"]
    used = {(s["operator"], s["copy"]) for s in sets if s["kind"] == "mvm"}
    assert len(used) <= sum(r["copies"].values()) and max(s["copy"] for s in sets) > 0
    assert main(["inspect", str(tmp_path / "m.cimp"), "--schedule"]) == 0
    assert "gap" in capsys.readouterr().out.splitlines()[0]


def test_cpsat_leaves_ctrl_c_to_python(tmp_path):
    """After a CP-SAT solve, SIGINT must still raise KeyboardInterrupt (a sweep or a notebook
    stops cleanly on Ctrl-C): OR-Tools' catch_sigint_signal would leave the default action behind
    at the C level, unseen by signal.getsignal, so a real SIGINT is sent, in a child process."""
    import subprocess
    import sys
    onnx.save(models.residual_net(), tmp_path / "m.onnx")
    script = (
        "import os, signal, sys, time, numpy as np, cimc\n"
        "x = np.random.default_rng(0).random((4, 1, 4, 8, 8), dtype=np.float32)\n"
        f"cimc.compile({str(tmp_path / 'm.onnx')!r}, 'small', calibration={{'x': x}}, scheduler='cpsat',"
        " solver_work=0.2)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(10)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "interrupted" in proc.stdout, (proc.returncode, proc.stderr[-500:])


@pytest.mark.parametrize("scheduler", ["clsa", "cpsat"])
def test_segmented_models_schedule_and_run_across_layers(scheduler):
    """An MLP run in segments (one set a layer: nothing to duplicate); its writes bound the crossbar sets."""
    from test_reprogramming import SIZES, _chip
    model = models.mlp(sizes=SIZES)
    whole = compile_model(model, _chip(4, 8))
    program = compile_model(model, _chip(1, 8), allow_reprogramming=True, scheduler=scheduler, solver_work=1.0)
    assert program.report["segments"] == 3 and set(program.report["copies"].values()) == {1}
    x = uniform(model, 8, seed=7)
    got = cimc.run(program, {"x": x})
    np.testing.assert_array_equal(got.outputs["y"], cimc.run(whole, {"x": x}).outputs["y"])
    assert got.stats["latency_cycles"] == program.report["makespan_cycles"] >= program.report["lower_bound_cycles"]


# -- buffer occupancy ---------------------------------------------------------------------------

@pytest.mark.parametrize("builder,target", CASES)
def test_buffer_peak_equals_a_cycle_by_cycle_count(compiled_all, small, narrow, builder, target):
    """The vectorized sweep against a plain count at every cycle where something changes."""
    from cimc.passes.fuse import fold_batch_norm, fold_channel_affine
    from cimc.passes.schedule.buffers import buffer_peak, holds
    model, program = compiled_all(builder, target, "cpsat")
    chip = {"small": small, "narrow": narrow}[target]
    g = import_onnx(model).graph
    fold_batch_norm(g) + fold_channel_affine(g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize(g, chip, {"x": uniform(model, 8, seed=0)})
    mapping = map_layers(g, chip, False, None, program.report["copies"], program.report["placement"] == "spread")
    problem = build_problem(g, mapping, CostModel(chip, g, mapping))
    assert [(t.node, t.out_rows) for t in program.schedule.tasks] == \
        [(o[0].node, o[0].out_rows) for o in problem.options]
    held = [(h.tile, h.start, h.end, h.bytes) for h in holds(problem, program.schedule)]
    assert held, "every case has rows consumed by another set"
    best = (0.0, 0, 0)
    for tile, cycle in sorted({(tile, t) for tile, t, _, _ in held}):
        level = sum(size for where, t0, t1, size in held if where == tile and t0 <= cycle < t1)
        if level > best[0] + 1e-9:
            best = (level, tile, cycle)
    peak = buffer_peak(problem, program.schedule)
    assert (peak.bytes, peak.tile, peak.cycle) == (round(best[0]), best[1], best[2])
    assert program.report["buffer_peak_kib"] == peak.bytes / 1024 > 0
