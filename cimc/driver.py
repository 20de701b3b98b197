"""The compile pipeline: frontend, passes, validation, code generation, program assembly.

Each stage is timed; ``--report-json`` gives those times next to what the stages
decided (crossbars per layer, scheduler, makespan), so a user sees where compile
time went and what the chip will do. The times stay out of the program file,
which must be the same bytes on every compile.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

import cimc
from cimc.errors import CapacityError, CimcError
from cimc.frontend import import_onnx, parse_input_shapes
from cimc.inputs import check_arrays, load_npz
from cimc.ir import PASS_ATTRS, Graph
from cimc.passes import adc_energy, sws as sws_pass
from cimc.passes.fuse import fold_batch_norm, fold_channel_affine
from cimc.passes.mapping import CrossbarSlot, Mapping, block_matrix, map_layers
from cimc.passes.quantize import quantize
from cimc.passes.schedule.buffers import buffer_peak
from cimc.passes.schedule.clsa import schedule_clsa
from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.cpsat import schedule_cpsat
from cimc.passes.schedule.duplication import greedy_copies, improve_copies, layer_work, surrogate
from cimc.passes.schedule.layer import schedule_layer_by_layer
from cimc.passes.schedule.memory import fit
from cimc.passes.schedule.model import Schedule
from cimc.passes.schedule.problem import Problem, build_problem, check_buffers, lower_bounds
from cimc.passes.schedule.validator import validate
from cimc.passes.split import split_oversized
from cimc.program import FORMAT, FORMAT_VERSION, Program
from cimc.targets import Target, load_target
from cimc.targets.codegen import generate

#: ``layer``: layer by layer, no duplication (the baseline); ``clsa``: CLSA-CIM's cross-layer
#: scheduling with greedy duplication; ``cpsat``: local search over copies, then CP-SAT.
SCHEDULERS = ("layer", "clsa", "cpsat")
#: The local search over copy counts may, per unit of ``solver_work``, try this many copy counts
#: or schedule this many sets, whichever allows more (counts, like CP-SAT's deterministic time, so
#: that the machine does not decide the result; clsa schedules some 20,000 sets a second here).
EVALUATIONS_PER_UNIT = 10
SETS_PER_UNIT = 20_000


@dataclass
class _Timer:
    seconds: dict[str, float]

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.seconds[stage] = round(time.perf_counter() - began, 6)


def _calibration_arrays(graph: Graph, calibration) -> dict[str, np.ndarray] | None:
    if calibration is None:
        return None
    data = load_npz(calibration, "calibration") if isinstance(calibration, (str, Path)) else calibration
    arrays, _ = check_arrays({n: graph.tensors[n].shape for n in graph.inputs}, data, "calibration data")
    return arrays


def compile(model: "str | Path | onnx.ModelProto", target: "str | Path | Target", *,
            scheduler: str = "layer", calibration=None,
            input_shapes: "list[str] | dict | None" = None,
            constants: dict[str, np.ndarray] | None = None, allow_reprogramming: bool = False,
            sws: "bool | str" = False, solver_work: float = 2.0, solver_time: float = 300.0,
            seed: int = 0, rows_per_set: int = 1) -> Program:
    """Compile an ONNX model for a target; see ``cimc compile --help`` for the options.

    ``constants`` fixes model inputs to given arrays: weights that a model takes as
    inputs (as the ONNX conformance cases do) must be known to be programmed.

    ``sws``: sorted weight sectioning (:mod:`cimc.passes.sws`). False: natural row
    order. True or ``"auto"``: per layer the cheapest legal scheme under the target's
    ADC energy model (s2 or s3, and s1 where the target routes inputs per group);
    ``"s1"``, ``"s2"``, ``"s3"``: that scheme on every layer (s1 needs
    ``crossbar.input_routing = "per_group"``). The report's ``adc`` section gives the
    ADC conversions, energy and crossbars of the result and of the baselines B1 and B2.

    ``scheduler``: see :data:`SCHEDULERS`. ``solver_work``: ``cpsat``'s budget in units of
    CP-SAT's deterministic time (about a second each on small models, 60 to 120 s on
    light_resnet50 on a 2-core machine), plus copy counts tried per unit (:data:`SETS_PER_UNIT`);
    counted work, not time, so the same options give the same program on any machine.
    ``solver_time``: a wall-clock cap in seconds on ``cpsat``; a compile it stops is reported
    (``solver_limit``) and may differ between machines. ``seed``: CP-SAT's random seed.
    ``rows_per_set``: output rows per set (1: the finest the scheduler cuts).
    """
    if scheduler not in SCHEDULERS:
        raise CimcError(f"unknown scheduler {scheduler!r}; available: {', '.join(SCHEDULERS)}")
    if not solver_time > 0:
        raise CimcError(f"the solver time limit must be a positive number of seconds, not {solver_time:g}")
    if not 0 < solver_work < float("inf"):
        raise CimcError(f"the solver work budget must be a positive number of units, not {solver_work:g}")
    if int(rows_per_set) != rows_per_set or rows_per_set < 1:
        raise CimcError(f"a set must hold a positive whole number of output rows, not {rows_per_set}")
    scheme = "auto" if sws is True else (sws or None)
    timer = _Timer({})
    target = load_target(target)
    if scheme is not None:
        sws_pass.check_scheme(scheme, target)
    with timer("frontend"):
        imported = import_onnx(model, input_shapes, constants)
    graph = imported.graph
    with timer("fuse"):
        folded = fold_batch_norm(graph) + fold_channel_affine(graph)
    calib = _calibration_arrays(graph, calibration)
    with timer("quantize"):
        quantize(graph, target, calib)
    split = {}
    if allow_reprogramming:
        with timer("split"):
            split = split_oversized(graph, target)
    plans = None
    if scheme is not None:
        with timer("sws"):
            plans = sws_pass.plan(graph, target, scheme)
    blocks = None if plans is None else {name: p.blocks for name, p in plans.items()}
    with timer("mapping"):
        mapping = map_layers(graph, target, allow_reprogramming, blocks)
    with timer("schedule"):
        problem, schedule, solver = _schedule(graph, target, mapping, blocks, scheduler, solver_work,
                                              solver_time, seed, int(rows_per_set))
        mapping, cost = problem.mapping, problem.cost
    with timer("validate"):
        validate(schedule, graph, mapping, target)
    with timer("codegen"):
        tiles = generate(graph, mapping, schedule, cost)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "cimc_version": cimc.__version__,
        "model_name": graph.name, "model_sha256": imported.model_hash,
        "options": {"scheduler": scheduler, "allow_reprogramming": allow_reprogramming, "sws": scheme,
                    "solver_work": solver_work if scheduler == "cpsat" else None,
                    "seed": seed if scheduler == "cpsat" else None, "rows_per_set": int(rows_per_set),
                    "calibration_samples": None if calib is None else int(len(next(iter(calib.values())))),
                    "input_shapes": {k: list(v) for k, v in parse_input_shapes(input_shapes).items()}},
    }
    report = _report(graph, target, mapping, schedule, cost, folded, manifest)
    report["split_layers"] = split
    report.update(_schedule_report(problem, schedule, solver, target))
    with timer("adc_accounting"):
        # Each column's ADC setting, computed once: programmed into the .cimp and costed in the report.
        # (per copy: every copy of a layer holds, and is set, the same)
        first = Mapping({name: lm.copy(0) for name, lm in mapping.layers.items()}, mapping.crossbars_available)
        settings = {} if target.adc is None else {
            node.name: adc_energy.column_bits(node.attrs["quant"].w_int, first.layers[node.name].crossbars,
                                              target) for node in graph.crossbar_nodes()}
        report["adc"] = adc_energy.report(graph, target, first, plans, settings)
    for entry, layer in zip(report["layers"], report["adc"]["layers"]):
        entry["sws"] = layer["scheme"]
    program = _assemble(graph, target, mapping, schedule, tiles, manifest, report, settings)
    if solver["seconds"] is not None:          # a time: kept out of the program, like the stage times
        timer.seconds["cpsat_solver"] = solver["seconds"]
    program.pass_seconds = timer.seconds
    return program


def _schedule(graph: Graph, target: Target, single: Mapping, blocks, scheduler: str, solver_work: float,
              solver_time: float, seed: int, rows_per_set: int) -> tuple[Problem, Schedule, dict]:
    """Duplicate (``clsa``, ``cpsat``), map the copies, and schedule; ``single`` maps each layer once.

    Also returns what the report compares against: the ``layer`` and ``clsa`` makespans of the
    final mapping, and layer by layer without duplication."""
    began = time.perf_counter()
    problem = build_problem(graph, single, CostModel(target, graph, single), rows_per_set)
    check_buffers(problem, target)
    solver: dict = {"status": None, "bound": None, "seconds": None, "work": None, "limit": None,
                    "placement": "packed"}
    if scheduler == "layer":
        baseline = _layer(problem)
        solver["comparison"] = {"layer": baseline.makespan, "clsa": _makespan(_clsa, problem),
                                "layer_one_copy": baseline.makespan}
        return problem, baseline, solver
    one_copy = _makespan(_layer, problem)
    per_tile = target.chip.pes_per_tile

    def duplicated(copies: dict[str, int], spread: bool = False) -> Problem:
        if all(c == 1 for c in copies.values()) and not spread:
            return problem
        mapping = map_layers(graph, target, single.segments > 1, blocks, copies, spread)
        return build_problem(graph, mapping, CostModel(target, graph, mapping), rows_per_set)

    copies = greedy_copies(problem, per_tile)
    final = duplicated(copies)
    hint = _clsa(final)
    if scheduler == "cpsat":
        # copy counts compared on the surrogate; the winner is kept only if it really is better
        evaluations = max(2, round(solver_work * max(EVALUATIONS_PER_UNIT, SETS_PER_UNIT / problem.size)))
        searched, _ = improve_copies(copies, layer_work(problem), problem.layer_sets(), single.copy_sizes(),
                                     single.segment_layers(), per_tile, single.crossbars_available,
                                     lambda c: schedule_clsa(surrogate(problem, c, per_tile)).makespan, evaluations)
        if searched != copies:
            trial = duplicated(searched)
            schedule = _clsa(trial)
            if schedule.makespan < hint.makespan:
                final, hint = trial, schedule
        # where the copies go: packed (as for clsa) or spread over the tiles, whichever schedules shorter
        try:
            spread = duplicated({name: lm.copies for name, lm in final.mapping.layers.items()}, spread=True)
        except CapacityError:                       # some copy does not fit a tile whole
            spread = None
        if spread is not None:
            schedule = _clsa(spread)
            if schedule.makespan < hint.makespan:
                final, hint, solver["placement"] = spread, schedule, "spread"
    solver["comparison"] = {"layer": one_copy if final is problem else _makespan(_layer, final),
                            "clsa": hint.makespan, "layer_one_copy": one_copy}
    if scheduler == "clsa":
        return final, hint, solver
    solved = schedule_cpsat(final, hint, solver_work, solver_time - (time.perf_counter() - began), seed)
    solver.update(status=solved.status, bound=solved.solver_bound, seconds=round(solved.seconds, 3),
                  work=round(solved.work, 3), limit="time" if solved.wall_capped else "work")
    return final, solved.schedule, solver


def _layer(problem: Problem) -> Schedule:
    """Layer by layer, within the tile buffers (spilling to the global memory, or holding rows
    back, where needed)."""
    return fit(problem, lambda fitting: schedule_layer_by_layer(problem, fitting))


def _clsa(problem: Problem) -> Schedule:
    """CLSA-CIM's schedule, within the tile buffers (spilling to the global memory, or holding rows
    back, where needed)."""
    return fit(problem, lambda fitting: schedule_clsa(problem, fitting=fitting))


def _makespan(scheduler, problem: Problem) -> int | None:
    """A comparison's makespan; None when that scheduler cannot fit the tile buffers (layer by
    layer holds whole tensors) and the target has no global memory to spill to."""
    try:
        return scheduler(problem).makespan
    except CapacityError:
        return None


def _schedule_report(problem: Problem, schedule: Schedule, solver: dict, target: Target) -> dict:
    """What the scheduler decided and how good it is: the bound holds for any schedule of the model
    on this chip, with any duplication the crossbar budget allows."""
    bounds = lower_bounds(problem, target.total_crossbars)
    bound = max(bounds.values())
    makespan = schedule.makespan
    peak = buffer_peak(problem, schedule)
    # rows spilled to the global memory (one inference), and what moving them costs
    stored = sum(problem.out_bytes(x.task) for x in schedule.stores)
    loaded = sum(problem.out_bytes(x.task) for x in schedule.loads)
    # copies that run no set: no set needed them (another copy finished each as early, or CP-SAT
    # picked others), or the buffer fitting left them idle (memory.py)
    running: dict[str, set[int]] = {}
    for t in schedule.tasks:
        running.setdefault(t.node, set()).add(t.copy)
    idle = {name: lm.copies - len(running.get(name, ())) for name, lm in problem.mapping.layers.items()}
    return {
        "lower_bound_cycles": int(bound), "lower_bounds": {k: int(v) for k, v in bounds.items()},
        "gap": (makespan - bound) / makespan if makespan else 0.0,
        "copies": {name: lm.copies for name, lm in problem.mapping.layers.items()},
        "idle_copies": {name: n for name, n in idle.items() if n},
        "placement": solver["placement"],
        "solver_status": solver["status"], "solver_bound_cycles": solver["bound"],
        "solver_work": solver["work"], "solver_limit": solver["limit"],
        "comparison": {k: None if v is None else int(v) for k, v in solver["comparison"].items()},
        "buffer_peak_kib": peak.bytes / 1024, "buffer_peak_tile": peak.tile, "buffer_peak_cycle": peak.cycle,
        "buffer_kib_per_tile": target.buffer.kib_per_tile,
        "memory": {"stored_kib": stored / 1024, "loaded_kib": loaded / 1024,
                   "energy_pj": None if target.memory is None else (stored + loaded) * target.memory.pj_per_byte},
    }


def _report(graph: Graph, target: Target, mapping: Mapping, schedule: Schedule, cost: CostModel,
            folded: int, manifest: dict) -> dict:
    used = mapping.crossbars_used
    makespan = schedule.makespan
    cells = sum((x.rows[1] - x.rows[0]) * (x.cols[1] - x.cols[0]) * target.columns_per_weight
                for lm in mapping.layers.values() for x in lm.crossbars)
    layers = []
    for node in graph.crossbar_nodes():
        lm = mapping.layers[node.name]
        layers.append({"name": node.name, "op": node.op, "k": lm.k, "n": lm.n, "group": lm.group,
                       "crossbars": len(lm.xbars), "tiles": list(lm.tiles), "copies": lm.copies,
                       "segment": lm.segment,
                       "sets": sum(1 for t in schedule.tasks if t.node == node.name),
                       "mvm_cycles": cost.mvm_cycles(lm)})
    return {
        "target": target.name, "model": manifest["model_name"], "model_sha256": manifest["model_sha256"],
        "scheduler": schedule.scheduler, "makespan_cycles": int(makespan),
        "makespan_us": makespan / target.timing.clock_mhz,
        "crossbars_used": used, "crossbars_available": target.total_crossbars,
        "tiles_used": mapping.tiles_used, "segments": mapping.segments,
        "crossbars_programmed": mapping.crossbars_programmed,
        "write_cycles": sum(w.duration for w in schedule.writes),
        "pe_utilization": schedule.busy_crossbar_cycles() / (used * makespan) if used and makespan else 0.0,
        "cells_programmed": cells,
        "cell_utilization": cells / (mapping.crossbars_programmed * target.crossbar.rows * target.crossbar.cols)
                            if cells else 0.0,
        "affine_ops_folded": folded, "layers": layers,
        "calibration_samples": manifest["options"]["calibration_samples"],
    }


def _adc_arrays(bits: np.ndarray, slots) -> dict[str, np.ndarray]:
    """A layer's column settings (:func:`adc_energy.column_bits`, columns of one copy's blocks in
    order) as one ``(polarity, slice, column)`` array per block of every copy: part of what is
    programmed."""
    out, first, per_block = {}, 0, []
    for x in slots:
        if x.copy == 0:
            width = x.cols[1] - x.cols[0]
            per_block.append(np.ascontiguousarray(bits[first:first + width].T.reshape(2, -1, width).astype(np.uint8)))
            first += width
    copies: dict[int, int] = {}
    for x in slots:                              # blocks of each copy come in the same order
        index = copies.get(x.copy, 0)
        out[f"xbar_adc/{x.id}"] = per_block[index]
        copies[x.copy] = index + 1
    return out


def _plain(obj):
    """Tuples and numpy scalars as JSON has them, so a program in memory equals one loaded from disk."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else list(o)))


def _assemble(graph: Graph, target: Target, mapping: Mapping, schedule: Schedule, tiles: list,
              manifest: dict, report: dict, settings: dict[str, np.ndarray]) -> Program:
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for node in graph.nodes():
        entry = {"name": node.name, "op": node.op, "outputs": node.outputs,
                 "attrs": {k: v for k, v in node.attrs.items() if k not in PASS_ATTRS}}
        if node.is_crossbar:
            q = node.attrs["quant"]
            entry["inputs"] = [node.inputs[0]]
            entry["quant"] = {"x_scale": q.x_scale, "x_bits": q.x_bits, "x_signed": q.x_signed,
                              "x_zero": q.x_zero, "k": int(q.w_int.shape[0]), "n": int(q.w_int.shape[1]),
                              "out": None if q.out is None else {
                                  "scale": float(q.out.scale), "zero": int(q.out.zero),
                                  "qmin": q.out.qmin, "qmax": q.out.qmax},
                              "w_type": q.w_type}
            arrays[f"layer/{node.name}/w_scale"] = q.w_scale.astype(np.float32)
            if q.bias is not None:
                arrays[f"layer/{node.name}/bias"] = q.bias.astype(np.float32)
            if q.bias_int is not None:
                arrays[f"layer/{node.name}/bias_int"] = q.bias_int.astype(np.int64)
            if q.w_zero is not None:
                arrays[f"layer/{node.name}/w_zero"] = q.w_zero.astype(np.int64)
            peak = int(np.abs(q.w_int).max(initial=0))
            wdtype = np.int8 if peak < 128 else np.int16 if peak < 1 << 15 else np.int32
            slots = mapping.layers[node.name].crossbars
            for x in slots:
                arrays[f"xbar/{x.id}"] = block_matrix(q.w_int, x).astype(wdtype)
                for key, index in (("xbar_rows", x.row_index), ("xbar_cols", x.col_index)):
                    if index is not None:
                        arrays[f"{key}/{x.id}"] = np.asarray(index, dtype=np.int32)
            if node.name in settings:
                arrays.update(_adc_arrays(settings[node.name], slots))
        else:
            entry["inputs"] = node.inputs
            for t in node.inputs:
                if t and graph.tensors[t].is_constant:
                    arrays[f"const/{t}"] = graph.tensors[t].data
        nodes.append(entry)
    # Index arrays are stored as arrays (above), not in the JSON table.
    table = [f.name for f in fields(CrossbarSlot) if f.name not in ("row_index", "col_index")]
    crossbars = [{k: getattr(x, k) for k in table} for lm in mapping.layers.values() for x in lm.crossbars]
    tensors = {name: list(t.shape) for name, t in graph.tensors.items() if not t.is_constant}
    return Program(
        manifest=_plain(manifest), target=target,
        inputs={n: list(graph.tensors[n].shape) for n in graph.inputs},
        outputs={n: list(graph.tensors[n].shape) for n in graph.outputs},
        tensors=tensors, nodes=_plain(nodes), crossbars=_plain(crossbars), tiles=_plain(tiles),
        schedule=Schedule.from_dict(_plain(schedule.to_dict())), report=_plain(report), arrays=arrays,
        dtypes={n: np.dtype(graph.tensors[n].dtype).name for n in graph.inputs + graph.outputs})
