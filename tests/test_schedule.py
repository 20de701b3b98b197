"""The layer-by-layer scheduler, the task model, and the independent schedule validator."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest

from cimc.frontend import import_onnx
from cimc.passes.fuse import fold_channel_affine
from cimc.passes.mapping import map_layers
from cimc.passes.quantize import quantize
from cimc.passes.schedule.clsa import schedule_clsa
from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.layer import schedule_layer_by_layer
from cimc.passes.schedule.model import Schedule
from cimc.passes.schedule.problem import build_problem
from cimc.passes.schedule.validator import ScheduleInvalid, validate

import models
from conftest import uniform


@dataclasses.dataclass
class Scheduled:
    graph: object
    mapping: object
    target: object
    cost: CostModel
    deps: list
    schedule: Schedule

    def validate(self, schedule: Schedule | None = None) -> None:
        validate(schedule or self.schedule, self.graph, self.mapping, self.target)

    def copy(self) -> Schedule:
        return Schedule(self.schedule.scheduler, list(self.schedule.tasks), list(self.schedule.start),
                        list(self.schedule.writes), list(self.schedule.sends))


def _schedule(model, target, allow_reprogramming: bool = False) -> Scheduled:
    g = import_onnx(model).graph
    fold_channel_affine(g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize(g, target, {"x": uniform(model, 8, seed=0)})
    mapping = map_layers(g, target, allow_reprogramming)
    cost = CostModel(target, g, mapping)
    problem = build_problem(g, mapping, cost)
    return Scheduled(g, mapping, target, cost, problem.edges, schedule_layer_by_layer(problem))


CASES = [("conv_net", "small"), ("mlp", "small"), ("residual_net", "small"), ("avgpool_net", "small"),
         ("transpose_net", "small"), ("wide_conv_net", "narrow"), ("conv_net", "narrow"),
         ("residual_net", "narrow"), ("mlp", "narrow"), ("conv_chain_net", "small"), ("conv_chain_net", "narrow"),
         ("grouped_conv_net", "narrow"), ("vector_ops_net", "small")]


@pytest.fixture(scope="module")
def scheduled(small, narrow):
    cache = {}

    def get(builder: str, target: str = "small") -> Scheduled:
        if (builder, target) not in cache:
            cache[builder, target] = _schedule(getattr(models, builder)(), {"small": small, "narrow": narrow}[target])
        return cache[builder, target]
    return get


@pytest.mark.parametrize("builder,target", CASES)
def test_layer_schedule_is_valid(scheduled, builder, target):
    s = scheduled(builder, target)
    s.validate()
    sched = s.schedule
    assert sched.scheduler == "layer"
    assert len(sched.start) == len(sched.tasks) > 0
    assert sched.makespan > 0
    # every dependency the scheduler was given is respected, transfer time included
    for t in sched.tasks:
        for p, move in s.deps[t.id]:
            assert sched.start[t.id] >= sched.end(p) + move


@pytest.mark.parametrize("builder,target", CASES)
def test_layers_do_not_overlap(scheduled, builder, target):
    s = scheduled(builder, target)
    spans = _spans(s)
    order = [n.name for n in s.graph.nodes()]
    for a, b in zip(order, order[1:]):
        assert spans[b][0] >= spans[a][1], (a, b, spans[a], spans[b])


def _spans(s: Scheduled) -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    for t in s.schedule.tasks:
        a, b = s.schedule.start[t.id], s.schedule.end(t.id)
        lo, hi = spans.get(t.node, (a, b))
        spans[t.node] = (min(lo, a), max(hi, b))
    return spans


@pytest.mark.parametrize("builder", ["conv_net", "mlp", "avgpool_net", "transpose_net"])
def test_makespan_is_sum_of_layer_spans_for_a_chain(scheduled, builder):
    s = scheduled(builder, "small")
    assert s.mapping.tiles_used == 1                      # no transfer gaps between layers
    spans = _spans(s)
    assert s.schedule.makespan == sum(b - a for a, b in spans.values())
    assert min(a for a, _ in spans.values()) == 0


def test_conv_sets_are_output_rows(scheduled):
    s = scheduled("conv_net")
    conv = [t for t in s.schedule.tasks if t.node == "conv"]
    assert [t.out_rows for t in conv] == [(r, r + 1) for r in range(8)]
    assert all(t.kind == "mvm" and t.pixels == 8 for t in conv)
    # output row r of a 3x3 pad-1 conv reads input rows r-1..r+1 (clipped)
    assert conv[0].reads == (("x", 0, 2),) and conv[3].reads == (("x", 2, 5),) and conv[7].reads == (("x", 6, 8),)
    lm = s.mapping.layers["conv"]
    assert all(t.resources == tuple(f"xbar:{x.id}" for x in lm.crossbars) for t in conv)
    # one set after the other on the same crossbar, no gaps
    starts = [s.schedule.start[t.id] for t in conv]
    assert starts == [i * conv[0].compute for i in range(8)]
    assert conv[0].compute == 8 * s.cost.mvm_cycles(lm)


def test_cost_model_mvm_cycles(small):
    s = _schedule(models.conv_net(), small)
    lm = s.mapping.layers["fc"]
    # 8 activation bits through a 1-bit DAC: 8 reads of 64 cycles; 64 columns on one ADC of 1 cycle
    assert small.input_chunks == 8
    assert s.cost.mvm_cycles(lm) == 8 * max(64, lm.columns_used * small.columns_per_weight * 1)


def test_multi_tile_layer_pays_for_partial_sums(scheduled):
    s = scheduled("wide_conv_net", "narrow")
    lm = s.mapping.layers["wide_conv"]
    assert len(lm.tiles) == 2
    conv = [t for t in s.schedule.tasks if t.node == "wide_conv"]
    assert all(t.duration > t.compute for t in conv)


def test_schedule_dict_round_trip(scheduled):
    sched = scheduled("residual_net").schedule
    again = Schedule.from_dict(copy.deepcopy(sched.to_dict()))
    assert again.tasks == sched.tasks and again.start == sched.start and again.makespan == sched.makespan


# -- the validator catches broken schedules ---------------------------------------------------

def test_validator_catches_set_started_before_its_inputs(scheduled):
    s = scheduled("conv_net")
    bad = s.copy()
    relu = next(t for t in bad.tasks if t.node == "relu")
    assert bad.start[relu.id] > 0
    bad.start[relu.id] = 0
    with pytest.raises(ScheduleInvalid, match="before the rows"):
        s.validate(bad)


def test_validator_catches_set_started_one_cycle_early(scheduled):
    s = scheduled("residual_net")
    bad = schedule_clsa(build_problem(s.graph, s.mapping, s.cost))    # as soon as possible
    s.validate(bad)
    conv2 = next(t for t in bad.tasks if t.node == "conv2" and t.index == 0)
    earliest = max(bad.end(p) for p, _ in s.deps[conv2.id])
    assert bad.start[conv2.id] == earliest                 # single tile: no transfer time
    bad.start[conv2.id] = earliest - 1                     # the first set: its crossbars are free
    with pytest.raises(ScheduleInvalid, match="before the rows"):
        s.validate(bad)


def test_validator_catches_two_sets_on_one_crossbar(scheduled):
    s = scheduled("conv_net")
    bad = s.copy()
    first, second = [t for t in bad.tasks if t.node == "conv"][:2]
    assert set(first.resources) & set(second.resources)
    bad.start[second.id] = bad.start[first.id] + first.compute - 1
    with pytest.raises(ScheduleInvalid, match="at the same time"):
        s.validate(bad)


def test_validator_catches_gpeu_overlap(small):
    from onnx import helper
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Mul", ["x", "c"], ["b"], name="mul"),          # independent of relu
             helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "W"], ["y"], name="conv", kernel_shape=[1, 1])]
    model = models.make_model(nodes, [models.vinfo("x", [1, 2, 4, 4])], ["y"],
                              {"c": np.float32([2.0]), "W": models.rng_weights(rng, (3, 2, 1, 1))})
    s = _schedule(model, small)
    s.validate()
    relu, mul = (next(t for t in s.schedule.tasks if t.node == n) for n in ("relu", "mul"))
    assert relu.resources == mul.resources == ("gpeu:0",)
    bad = s.copy()
    bad.start[mul.id] = bad.start[relu.id]
    with pytest.raises(ScheduleInvalid, match=r"gpeu:0 runs tasks .* at the same time"):
        s.validate(bad)


def test_validator_catches_a_missing_set(scheduled):
    s = scheduled("conv_net")
    bad = s.copy()
    victim = next(t for t in bad.tasks if t.node == "conv" and t.index == 5)
    keep = [t for t in bad.tasks if t.id != victim.id]
    starts = [bad.start[t.id] for t in keep]
    renumbered = [dataclasses.replace(t, id=i) for i, t in enumerate(keep)]
    with pytest.raises(ScheduleInvalid, match=r"conv: output rows \[5\] are never produced"):
        s.validate(Schedule("layer", renumbered, starts))


def test_validator_catches_a_duplicated_set(scheduled):
    s = scheduled("conv_net")
    bad = s.copy()
    victim = next(t for t in bad.tasks if t.node == "conv" and t.index == 2)
    later = bad.makespan + 10
    bad.tasks.append(dataclasses.replace(victim, id=len(bad.tasks)))
    bad.start.append(later)                               # no resource conflict, no dependency problem
    with pytest.raises(ScheduleInvalid, match="produced twice"):
        s.validate(bad)


def test_validator_catches_a_set_on_another_layers_crossbars(scheduled):
    s = scheduled("conv_net")
    bad = s.copy()
    fc_res = next(t for t in bad.tasks if t.node == "fc").resources
    i = next(t.id for t in bad.tasks if t.node == "conv")
    bad.tasks[i] = dataclasses.replace(bad.tasks[i], resources=fc_res)
    with pytest.raises(ScheduleInvalid, match="crossbars"):
        s.validate(bad)


def test_validator_catches_mismatched_lengths_and_ids(scheduled):
    s = scheduled("mlp")
    bad = s.copy()
    bad.start.pop()
    with pytest.raises(ScheduleInvalid):
        s.validate(bad)
    bad = s.copy()
    bad.tasks[0], bad.tasks[1] = bad.tasks[1], bad.tasks[0]
    with pytest.raises(ScheduleInvalid, match="ids"):
        s.validate(bad)


def test_validator_requires_network_latency_between_tiles(scheduled):
    s = scheduled("residual_net", "narrow")
    sched = s.schedule
    # a consumer on another tile than its producer: starting right at the producer's end is too early
    for t in sched.tasks:
        for p, move in s.deps[t.id]:
            ptask = sched.tasks[p]
            if ptask.tile != t.tile and s.target.hops(ptask.tile, t.tile) > 0:
                bad = s.copy()
                bad.start[t.id] = sched.end(p)
                with pytest.raises(ScheduleInvalid, match="arrive at"):
                    s.validate(bad)
                return
    pytest.fail("no cross-tile dependency in residual_net on the narrow target")


def test_validator_accepts_a_later_but_valid_schedule(scheduled):
    s = scheduled("conv_net")
    late = s.copy()
    late.start = [t + 1000 for t in late.start]
    late.sends = [t + 1000 for t in late.sends]
    s.validate(late)
    assert late.makespan == s.schedule.makespan + 1000
    assert np.all(np.array(late.start) >= 1000)


def test_unknown_scheduler_is_a_user_error(small):
    import cimc
    from cimc.errors import CimcError
    with pytest.raises(CimcError, match="layer"):
        cimc.compile(models.mlp(), small, scheduler="psychic", calibration={"x": uniform(models.mlp(), 4, 0)})
