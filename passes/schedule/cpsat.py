"""Exact scheduling with OR-Tools CP-SAT, hinted with the ``clsa`` schedule.

The model, for one duplication (copies per layer) and one mapping:

- one start variable per set, its domain cut by the set's earliest start and the
  shortest time from it to the end (given the hint's makespan as the horizon);
- which copy of a duplicated layer runs each set, where the copy decides a shared
  resource (:func:`assigned_layers`: its copies send from more than one tile, or sit on a
  tile whose buffer could overflow; for models of at most :data:`LINK_MODEL_SETS` sets and
  :data:`ASSIGN_MODEL_OPTIONS` (set, copy) pairs): a Boolean per copy and set, an optional
  interval on that copy, no overlap per copy, its sends on the copy's home link and its
  partial sums on its other tiles' links; the copies of such a layer also form a pool (a
  cumulative of capacity ``copies``), a redundant constraint that prunes;
- the copies of any other duplicated layer are one pool only: they are alike to every
  constraint (a set's time does not depend on its copy, see
  :func:`~cimc.passes.schedule.model.set_options`), so a Boolean per copy and set would say
  the same with many times the variables, all symmetric; copies are given to sets after the
  solve, in order of start (intervals in order of start always find a free copy);
- a vector set picks one of the tiles its input is written on (a Boolean per
  tile, an optional interval on that tile's GPEUs);
- no overlap on each single-copy layer and on each tile's GPEUs (a vector set
  uses all of them, so their capacity is one set at a time);
- the network: a set whose rows other tiles may read has a send variable (at or
  after its end) and, where its tile is in the model, an interval on that tile's link;
  partial sums of a copy spread over tiles have intervals on those tiles' links when its
  crossbars stop; no overlap on each link (for models of at most :data:`LINK_MODEL_SETS`
  sets; above, the links are left to the replay below). A set of a pooled layer whose
  copies send from several tiles shares the layer's home tiles (a cumulative with one
  message per home tile), and its partial sums are left out. There CP-SAT solves a
  relaxation: its order and choices are replayed by the ``clsa`` list scheduler on every
  resource (:func:`_rebuild`), which gives back the solver's times when what was left out
  does not bind, and the status says ``feasible``, not ``optimal``, when it did;
- precedences from the set dependency graph: a set starts its edge's latency after
  its producer's send;
- a layer's sets start in row order (the intra-layer stage of CLSA-CIM, which
  the hardware's input streaming follows; it also breaks the symmetry between
  sets that would otherwise swap);
- for a model run in segments, one interval per segment write: a segment's sets
  start after its write, and a write starts after the previous segment's sets
  have stopped computing;
- the tile buffers (:mod:`.memory`): rows the hint spilled wherever their reader runs
  reach it no sooner than a store and a load after their producer ends; on each tile whose
  buffer could overflow (:func:`tight_tiles`), the rows of every set whose place and whose
  readers' places there are in the model (one place, or the copy the solver picks) are
  intervals from their arrival to their last reader's end, present when a reader runs
  there, in a cumulative of the buffer's bytes (for models of at most
  :data:`LINK_MODEL_SETS` sets, on the tiles where the hint fits that model,
  :func:`_buffers`); the rows of vector sets that pick a tile, the rows read by pooled
  copies and the memory channel are left to the replay, which spills more or holds rows
  back where the solver's order overflows a tile (status ``feasible`` when that lengthens
  it; the hint when it cannot fit at all);
- minimize the makespan.

Which copies each layer gets is decided outside, by :func:`improve_copies`: a
local search over copy counts that moves a copy's worth of crossbars from one
layer to another and keeps the move when the ``clsa`` schedule of the result
is shorter; then where the copies go, packed tile after tile as for ``clsa`` or spread
over the tiles (:func:`~cimc.passes.mapping.spread_crossbars`), whichever the ``clsa``
schedule finds shorter: spread, a small model's vector sets and messages use the GPEUs and
links of many tiles instead of queuing on the first few. CP-SAT then decides assignment and
order for that mapping. The solver's result, rebuilt, is kept only when it is shorter than the
hint; otherwise the hint is returned. Every result goes through the validator like any other.

The search is limited by work, not time: CP-SAT's deterministic time in its interleaved
parallel mode, the only mode in which its result does not depend on thread timing. A program
compiled with the same options is then the same on any machine under any load. The wall-clock
limit stays as a cap; a solve it ends is flagged (``Solved.wall_capped``). The price, measured on
the largest models: a unit of deterministic time costs 60 to 120 s of wall time on
light_resnet50 (CP-SAT under-counts its scheduling propagation), and the interleaved mode finds
less per second.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from cimc.errors import CapacityError
from cimc.passes.schedule.clsa import schedule_clsa
from cimc.passes.schedule.memory import fit
from cimc.passes.schedule.model import Schedule, task_tiles
from cimc.passes.schedule.placement import link_key, resource_key
from cimc.passes.schedule.problem import Problem, heads_tails

#: Share of CP-SAT's work budget for the full portfolio before large-neighbourhood search alone.
PORTFOLIO_SHARE = 0.3
#: The most sets whose network messages CP-SAT models. On light_densenet121 (9,809 sets) the
#: messages cost the solve 1.8x its time and 1.5x its memory and found nothing; light_resnet50
#: (3,182) pays a few seconds. Larger models leave the links to the replay of the solution.
LINK_MODEL_SETS = 5000
#: The most (set, copy) pairs of duplicated layers for which CP-SAT decides which copy runs each
#: set (a Boolean and an optional interval per pair, and the buffers of the rows their readers
#: need on the copies' tiles); above, a layer's copies are one pool and the copies are given to
#: sets after the solve.
ASSIGN_MODEL_OPTIONS = 20000
STATUS = {cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible", cp_model.INFEASIBLE: "infeasible",
          cp_model.MODEL_INVALID: "model_invalid", cp_model.UNKNOWN: "unknown"}


@dataclass
class Solved:
    schedule: Schedule
    status: str                     # CP-SAT's status, or "hint" when the hint was kept
    solver_bound: int               # CP-SAT's own bound for this duplication (0 if none)
    seconds: float                  # wall time
    work: float                     # CP-SAT's deterministic time used (machine-independent)
    wall_capped: bool               # stopped by the wall-clock limit, not the work budget


def _windows(problem: Problem, horizon: int) -> tuple[list[int], list[int]]:
    """Earliest start and latest start of each set in any schedule of at most ``horizon``."""
    head, tail = heads_tails(problem, [min(o.duration for o in opts) for opts in problem.options], latency=True)
    return head, [horizon - t for t in tail]


def schedule_cpsat(problem: Problem, hint: Schedule, budget: float, seconds: float, seed: int = 0,
                   workers: int = 2) -> Solved:
    """CP-SAT over ``problem`` from ``hint``, within ``budget`` units of CP-SAT's deterministic
    time (what makes the result the same on any machine) and ``seconds`` of wall time (a cap: a
    solve it stops is flagged, as the machine's speed then decides the result)."""
    began = time.perf_counter()
    horizon = hint.makespan
    lo, hi = _windows(problem, horizon)
    links = problem.size <= LINK_MODEL_SETS
    if any(a > b for a, b in zip(lo, hi)):          # the hint is shorter than a bound: nothing to do
        return Solved(hint, "hint", 0, time.perf_counter() - began, 0.0, False)
    m = cp_model.CpModel()
    start = [m.NewIntVar(lo[i], hi[i], f"s{i}") for i in range(problem.size)]
    end: list = []
    busy: dict[str, list] = {}                      # exclusive resources: GPEUs, single-copy layers
    pooled: dict[str, list] = {}                    # duplicated layer -> its sets' intervals
    picks: list[list] = []
    sends: dict[int, cp_model.IntVar] = {}          # set -> when its rows leave (sets with a send)
    pooled_links: dict[str, tuple[int, list]] = {}  # duplicated layer -> (its home tiles, its sends)
    spilled = frozenset((x.task, x.tile) for x in hint.loads)
    tight = tight_tiles(problem, spilled) if links else set()
    assigned = assigned_layers(problem, tight) if links else set()
    for i, opts in enumerate(problem.options):
        o = opts[0]
        picks.append([])
        end.append(start[i] + o.duration)              # the same for every option (set_options)
        cycles = problem.send_cycles[i] if links else 0
        if cycles:
            sends[i] = m.NewIntVar(lo[i] + o.duration, horizon, f"t{i}")
            m.Add(sends[i] >= end[i])
        if o.kind == "mvm" and len(opts) > 1:
            # The copies of a layer are one pool of capacity `copies`: with assignment below, a
            # redundant constraint that strengthens propagation; without, the copies are assigned
            # once times are known.
            pooled.setdefault(o.node, []).append(m.NewFixedSizeIntervalVar(start[i], o.compute, f"i{i}"))
            if o.node not in assigned:
                homes = {c.tile for c in opts}
                if cycles and len(homes) == 1:      # every copy sends from one tile: its link is known
                    busy.setdefault(link_key(o.tile), []).append(
                        m.NewFixedSizeIntervalVar(sends[i], cycles, f"l{i}"))
                elif cycles:                        # at most one message per home tile at once
                    pooled_links.setdefault(o.node, (len(homes), []))[1].append(
                        m.NewFixedSizeIntervalVar(sends[i], cycles, f"l{i}"))
                continue
        elif len(opts) == 1:
            busy.setdefault(resource_key(o), []).append(m.NewFixedSizeIntervalVar(start[i], o.compute, f"i{i}"))
            for tile, length in (o.reductions if links else ()):
                busy.setdefault(link_key(tile), []).append(
                    m.NewFixedSizeIntervalVar(start[i] + o.compute, length, f"r{i}_{tile}"))
            if cycles:
                busy.setdefault(link_key(o.tile), []).append(m.NewFixedSizeIntervalVar(sends[i], cycles, f"l{i}"))
            continue
        for k, o in enumerate(opts):                # a set picks one place: a copy of its layer, or a tile's GPEUs
            p = m.NewBoolVar(f"p{i}_{k}")
            busy.setdefault(resource_key(o), []).append(
                m.NewOptionalFixedSizeIntervalVar(start[i], o.compute, p, f"i{i}_{k}"))
            for tile, length in o.reductions:       # (only for assigned copies, with the links modelled)
                busy.setdefault(link_key(tile), []).append(
                    m.NewOptionalFixedSizeIntervalVar(start[i] + o.compute, length, p, f"r{i}_{k}_{tile}"))
            if cycles:
                busy.setdefault(link_key(o.tile), []).append(
                    m.NewOptionalFixedSizeIntervalVar(sends[i], cycles, p, f"l{i}_{k}"))
            picks[i].append(p)
        m.AddExactlyOne(picks[i])
    for node, intervals in pooled.items():
        m.AddCumulative(intervals, [1] * len(intervals), problem.mapping.layers[node].copies)
    for capacity, intervals in pooled_links.values():
        m.AddCumulative(intervals, [1] * len(intervals), capacity)
    for intervals in busy.values():
        if len(intervals) > 1:
            m.AddNoOverlap(intervals)
    for i, mine in enumerate(problem.edges):
        for p, lat in mine:
            m.Add(start[i] >= (sends[p] if p in sends else end[p]) + lat)
            if problem.cost.target.memory is not None and all(
                    (p, tile) in spilled for o in problem.options[i] for tile in task_tiles(o, problem.mapping)):
                # rows the hint spilled, wherever the set runs: their store, and their load (the
                # channel they share is left to the replay)
                m.Add(start[i] >= end[p] + _spill_cycles(problem, p))
    buffer_hints = _buffers(m, problem, hint, end, sends, picks, spilled, tight, horizon)
    previous: dict[str, int] = {}
    for i, opts in enumerate(problem.options):
        node = opts[0].node
        if node in previous:
            m.Add(start[i] >= start[previous[node]])
        previous[node] = i
    writes = []
    for seg, cycles in enumerate(problem.write_cycles):
        w = m.NewIntVar(0, horizon, f"w{seg}")
        writes.append(w)
        for i, opts in enumerate(problem.options):
            o = opts[0]
            if o.kind == "mvm" and o.segment == seg:
                m.Add(start[i] >= w + cycles)
            elif o.kind == "mvm" and o.segment == seg - 1:
                m.Add(w >= start[i] + o.compute)
        if seg:
            m.Add(w >= writes[seg - 1] + problem.write_cycles[seg - 1])
    makespan = m.NewIntVar(0, horizon, "makespan")
    has_successor = {p for mine in problem.edges for p, _ in mine}
    for i in range(problem.size):
        if i not in has_successor:
            m.Add(makespan >= end[i])
    for w, cycles in zip(writes, problem.write_cycles):
        m.Add(makespan >= w + cycles)
    m.Minimize(makespan)
    # (a duplicated layer's copy choice is not a variable: see _rebuild)
    hinted = dict(zip(start, hint.start))
    hinted.update((v, hint.send(i)) for i, v in sends.items())
    hinted.update((p, o == t) for i, t in enumerate(hint.tasks) for p, o in zip(picks[i], problem.options[i]))
    hinted.update(zip(writes, (w.start for w in hint.writes)))
    hinted.update(buffer_hints)
    hinted[makespan] = horizon
    for var, value in hinted.items():
        m.AddHint(var, value)
    # Two phases: the full portfolio (which proves small models optimal at once), then, if budget
    # is left, large-neighbourhood search only, from the best solution so far (the bound that
    # matters to the report is the analytic one; the LP worker rarely moves it on these models).
    # Both count CP-SAT's deterministic time with its interleaved (deterministic) parallel search.
    first = PORTFOLIO_SHARE * budget
    solver = _solver(seed, workers, first, seconds - (time.perf_counter() - began), False)
    code = solver.Solve(m)
    work, capped = solver.deterministic_time, _wall_capped(solver, code)
    bound = int(solver.BestObjectiveBound()) if code in (cp_model.OPTIMAL, cp_model.FEASIBLE) else 0
    left = seconds - (time.perf_counter() - began)
    if code in (cp_model.FEASIBLE, cp_model.UNKNOWN) and budget > work and left > 0 and not capped:
        if code == cp_model.FEASIBLE:          # continue from the best solution, else from the hint
            m.ClearHints()
            for var in hinted:
                m.AddHint(var, solver.Value(var))
        again = _solver(seed, workers, budget - work, left, True)
        code_again = again.Solve(m)
        work += again.deterministic_time
        capped = _wall_capped(again, code_again)
        if code_again in (cp_model.OPTIMAL, cp_model.FEASIBLE):     # else keep the first phase's result
            solver, code = again, code_again
    status = STATUS.get(code, "unknown")
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE) or solver.Value(makespan) >= horizon:
        seconds = time.perf_counter() - began
        return Solved(hint, "hint" if code != cp_model.OPTIMAL else "optimal", bound, seconds, work, capped)
    places = {i: next(k for k, p in enumerate(mine) if solver.Value(p)) for i, mine in enumerate(picks) if mine}
    try:
        made = _rebuild(problem, [solver.Value(v) for v in start], places, spilled)
    except CapacityError:           # the solver's order and places overflow a buffer whatever is held back
        made = hint
    seconds = time.perf_counter() - began
    if made.makespan >= horizon:
        return Solved(hint, "hint", bound, seconds, work, capped)
    if made.makespan > solver.Value(makespan):      # links left out of the relaxation bound
        status = "feasible"
    return Solved(made, status, bound, seconds, work, capped)


def tight_tiles(problem: Problem, spilled: frozenset) -> set[int]:
    """The tiles whose buffer could overflow: all the rows that may be read there (every set's
    rows on every tile where a reader of them may run, unless the hint spilled them there) exceed
    its capacity. On the other tiles the buffer constraint is redundant, and left out."""
    capacity = problem.cost.target.buffer.kib_per_tile * 1024
    places: dict[str, set[int]] = {}                # node -> every tile its sets may read on
    for opts in problem.options:
        if opts[0].node not in places:
            places[opts[0].node] = {t for o in opts for t in task_tiles(o, problem.mapping)}
    worst: dict[int, float] = {}
    for i, successors in enumerate(problem.successors):
        if problem.streamed[i]:
            continue
        tiles = {t for j, _ in successors if not problem.streamed[j] for t in places[problem.options[j][0].node]}
        size = problem.out_bytes(i)
        for t in tiles:
            if (i, t) not in spilled:
                worst[t] = worst.get(t, 0.0) + size
    return {t for t, held in worst.items() if held > capacity}


def assigned_layers(problem: Problem, tight: set[int]) -> set[str]:
    """The duplicated layers whose copy for each set CP-SAT decides: those whose copy decides a
    shared resource, that is whose copies send from more than one tile (the link a set's rows
    leave on) or sit on a tile whose buffer could overflow (the rows that tile holds), if their
    (set, copy) pairs number at most :data:`ASSIGN_MODEL_OPTIONS`; else none. The copies of
    the other layers are alike to every constraint, and stay one pool."""
    homes: dict[str, set[int]] = {}                 # duplicated layer -> its copies' home tiles
    for opts in problem.options:
        if len(opts) > 1 and opts[0].kind == "mvm" and opts[0].node not in homes:
            homes[opts[0].node] = {o.tile for o in opts}
    layers = {name for name, tiles in homes.items()
              if len(tiles) > 1 or tight.intersection(problem.mapping.layers[name].tiles)}
    pairs = sum(len(opts) for opts in problem.options if opts[0].node in layers)
    return layers if pairs <= ASSIGN_MODEL_OPTIONS else set()


def _buffers(m: cp_model.CpModel, problem: Problem, hint: Schedule, end: list, sends: dict, picks: list[list],
             spilled: frozenset, tight: set[int], horizon: int) -> dict:
    """The buffers of the ``tight`` tiles as cumulative constraints, for the rows of every set
    whose place and whose readers' places there are in the model (one place, or the copy the
    solver picks), unless the hint spilled them there. The rows of a vector set that picks a tile
    are left to the replay: held on every tile it may pick, they cost a Boolean and an optional
    interval per tile (3.3 GB on light_squeezenet, whose vector sets have dozens of tiles each),
    and CP-SAT then found nothing better than the hint on light_vgg19 within its budget. The rows
    of set i on tile t are an interval from their arrival (i's end on its own tile; elsewhere its
    send, or its end where sends are not modelled, and the transfer from the farthest of i's
    places) to the end of the last reader on t, of the rows' bytes, present when some reader runs
    on t, against the tile's capacity. A tile on which the hint itself breaks this (the model's
    arrival can be earlier than the hint's) is left to the replay. Returns the hint's values of
    the new variables."""
    if not tight:
        return {}
    capacity = int(problem.cost.target.buffer.kib_per_tile * 1024)
    cost, graph, mapping = problem.cost, problem.graph, problem.mapping
    placed = [len(opts) == 1 or (opts[0].kind == "mvm" and bool(mine)) for opts, mine in zip(problem.options, picks)]
    chosen = [opts.index(task) for opts, task in zip(problem.options, hint.tasks)]     # the hint's places
    per_tile: dict[int, list] = {}
    for i, successors in enumerate(problem.successors):
        if problem.streamed[i] or not placed[i]:
            continue
        tensor, rows = graph.node(problem.options[i][0].node).outputs[0], problem.options[i][0].out_rows
        rows, demand = rows[1] - rows[0], math.ceil(problem.out_bytes(i))
        readers: dict[int, list[tuple[int, int]]] = {}      # tile -> (reader, its option) that read there
        for j, _ in successors:
            if problem.streamed[j]:
                continue
            tiles = [[t for t in task_tiles(option, mapping) if t in tight] for option in problem.options[j]]
            if not placed[j] and any(tiles):        # a pooled copy, or a vector set picking a tile: left out
                readers = {}
                break
            for k, mine in enumerate(tiles):
                for tile in mine:
                    readers.setdefault(tile, []).append((j, k))
        for tile, mine in readers.items():
            if (i, tile) in spilled:
                continue
            # the rows arrive when i ends if it runs on the tile, else the transfer after they leave
            # (from the farthest of its other places: a later arrival, a shorter hold, a relaxation)
            lag = max((cost.tensor_transfer_cycles(tensor, rows, o.tile, tile) for o in problem.options[i]
                       if o.tile != tile), default=0)
            sent, sent_hint = (sends[i], hint.send(i)) if i in sends else (end[i], hint.end(i))
            local = [k for k, o in enumerate(problem.options[i]) if o.tile == tile]
            hinted = hint.end(i) if chosen[i] in local else sent_hint + lag
            if len(local) == len(problem.options[i]):
                arrive = end[i]
            elif not local:
                arrive = sent + lag
            else:
                arrive, here = m.NewIntVar(0, horizon, f"a{i}_{tile}"), m.NewBoolVar(f"o{i}_{tile}")
                m.AddBoolOr([picks[i][k] for k in local]).OnlyEnforceIf(here)
                for k in local:
                    m.AddImplication(picks[i][k], here)
                m.Add(arrive == end[i]).OnlyEnforceIf(here)
                m.Add(arrive == sent + lag).OnlyEnforceIf(here.Not())
            until = m.NewIntVar(0, horizon, f"u{i}_{tile}")
            literals, always = [], False             # a reader with one place: the rows are always there
            for j, k in mine:
                if len(problem.options[j]) == 1:
                    m.Add(until >= end[j])
                    always = True
                else:
                    m.Add(until >= end[j]).OnlyEnforceIf(picks[j][k])
                    literals.append(picks[j][k])
            last = max([hint.end(j) for j, k in mine if chosen[j] == k] + [hinted])
            size = m.NewIntVar(0, horizon, f"z{i}_{tile}")
            if always:
                present, there = None, True
                interval = m.NewIntervalVar(arrive, size, until, f"b{i}_{tile}")
            else:
                present = m.NewBoolVar(f"h{i}_{tile}")
                for literal in literals:
                    m.AddImplication(literal, present)
                m.AddBoolOr(literals + [present.Not()])
                there = any(chosen[j] == k for j, k in mine)
                interval = m.NewOptionalIntervalVar(arrive, size, until, present, f"b{i}_{tile}")
            hints = {until: last, size: last - hinted} | ({} if present is None else {present: there})
            if 0 < len(local) < len(problem.options[i]):
                hints[arrive], hints[here] = hinted, chosen[i] in local
            per_tile.setdefault(tile, []).append((interval, demand,
                                                  (hinted, last) if there else None, hints))
    out: dict = {}
    for tile, held in per_tile.items():
        for _, _, _, hints in held:
            out.update(hints)
        if _peak([(*span, d) for _, d, span, _ in held if span is not None]) <= capacity:
            m.AddCumulative([h[0] for h in held], [h[1] for h in held], capacity)
    return out


def _peak(intervals: list[tuple[int, int, int]]) -> int:
    """The largest sum of demands over half-open intervals (start, end, demand) at any point."""
    events = sorted([(a, 1, d) for a, b, d in intervals] + [(b, 0, -d) for a, b, d in intervals])
    level = peak = 0
    for _, _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def _rebuild(problem: Problem, starts: list[int], picks: dict[int, int], spilled: frozenset) -> Schedule:
    """The solver's schedule on every resource: its sets in order of start, with its GPEU
    picks, as soon as possible (each duplicated layer's set on the copy that finishes it first),
    spilling the hint's rows, and more or holding rows back if the tile buffers need it
    (:func:`~.memory.fit`).
    Sets then start no later than the solver said (copies being interval-coloured in order of
    start), unless links, the memory channel or buffers the relaxation left out bind."""
    order = sorted(range(problem.size), key=lambda i: (starts[i], i))
    return fit(problem, lambda fitting: schedule_clsa(problem, order, picks, "cpsat", fitting), spilled)


def _spill_cycles(problem: Problem, p: int) -> int:
    """Least time from the end of set p until its spilled rows are back on a tile."""
    cycles = problem.cost.memory_cycles(problem.out_bytes(p))
    return 2 * (cycles + problem.cost.target.memory.latency_cycles)


def _solver(seed: int, workers: int, budget: float, seconds: float, lns_only: bool) -> cp_model.CpSolver:
    """A solver whose result depends only on the model and these arguments, unless ``seconds``
    runs out first: interleaved search (OR-Tools' deterministic parallel mode), a fixed seed, and
    a limit in deterministic time."""
    solver = cp_model.CpSolver()
    solver.parameters.random_seed = seed
    solver.parameters.num_workers = workers
    solver.parameters.interleave_search = True
    # one task per worker between synchronizations (the default, three, holds a copy of the model
    # per task: 3.5 GB against 2.5 GB on light_densenet121)
    solver.parameters.interleave_batch_size = workers
    solver.parameters.max_deterministic_time = budget
    solver.parameters.max_time_in_seconds = max(0.01, seconds)
    solver.parameters.use_lns_only = lns_only
    # OR-Tools' own SIGINT handling would leave SIGINT at its default action after the solve, so a
    # later Ctrl-C (a sweep, a notebook) would kill the process instead of raising KeyboardInterrupt
    solver.parameters.catch_sigint_signal = False
    return solver


def _wall_capped(solver: cp_model.CpSolver, code: int) -> bool:
    """Whether the wall-clock limit, not the work budget, ended an unfinished solve."""
    limit = solver.parameters.max_time_in_seconds
    return code != cp_model.OPTIMAL and solver.wall_time >= limit - 0.05 and \
        solver.deterministic_time < solver.parameters.max_deterministic_time
