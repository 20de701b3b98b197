"""Keeping every tile's buffer within its capacity: which rows wait in the global memory.

A schedule holds a set's output rows on each tile that reads them, from their arrival until
the last reader there has finished (:mod:`.buffers`). Layer by layer, a tile holds whole
tensors while the next layer works through them (up to 6 MiB on the 224x224 models against
a 256 KiB buffer); across layers, rows for a skip connection wait while the other branch
computes. :func:`fit` schedules with some rows *spilled*: stored to the global memory
(``[memory]``) when they are produced and loaded into the tile shortly before a reader
there needs them (one load serves the readers that follow within the time of another), over
one shared channel, at the time and energy the target gives.

Which rows: the schedule is built, each tile's occupancy swept in time, and wherever it
exceeds the capacity the rows held there whose next read is furthest away are spilled
until it fits (Belady's rule, which minimizes misses for a cache of fixed size); the
schedule is rebuilt with those rows spilled, and so on until no tile overflows. Rows about to
be read cannot wait elsewhere: where those alone overflow a tile (a cross-layer schedule
running several layers at once on it, many copies on one tile), or where the target has no
global memory, the rows that overflowed it are held back instead, until other rows there
have left: the set producing them starts later (flow control), or for loaded rows their
reader. The sweep goes on as if they came then, with that set's other rows on the tile, so
every overflow of a tile is answered in the same round. Where the rows being read at that
moment overflow the tile alone, because it runs more copies of a layer at once than its buffer
can feed (super-resolution-10's 224 copies of a layer, 18 to a tile, each reading three 14 KiB
rows), holding rows back only moves the overflow: instead one of those copies is *retired*,
left idle for the whole schedule, and its sets go to the layer's other copies. Spills, delays
and retired copies only grow; a tile that still overflows after :data:`MAX_ROUNDS` rounds, or
with nothing left to delay or retire, is refused with the figures.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, replace

from cimc.errors import CapacityError
from cimc.passes.schedule.buffers import Hold, holds
from cimc.passes.schedule.model import Schedule, task_tiles
from cimc.passes.schedule.placement import Fitting
from cimc.passes.schedule.problem import Problem

#: Rounds of spilling, delaying or retiring copies and rescheduling before giving up (each adds one or more;
#: super-resolution-10's layer-by-layer schedule of its 896 copies takes 256).
MAX_ROUNDS = 300
#: Rounds a tile may stay over its buffer, its rows held back until just enough others have left,
#: before they are held back until all have (on rows read by many copies of a layer at once, the
#: readers held back can take each other's place round after round).
PATIENCE = 3

Spills = frozenset[tuple[int, int]]
Builder = Callable[[Fitting], Schedule]


@dataclass(frozen=True)
class Overflow:
    """A tile over its buffer that spilling cannot help: the rows ``hold`` whose arrival at
    ``cycle`` overflowed it (``bytes`` held then), and when they fit once held back (None:
    never) until enough of the other rows there have left, or on a stubborn tile all of them;
    ``reading``: with the rows being read there then, they overflow it alone."""
    tile: int
    cycle: int
    bytes: float
    hold: Hold
    until: int | None
    reading: bool


def fit(problem: Problem, build: Builder, spilled: Spills = frozenset()) -> Schedule:
    """The schedule ``build(fitting)`` makes with the spills, delays and retired copies found to
    keep every tile within its buffer (starting from ``spilled`` and the rows that must stream)."""
    target = problem.cost.target
    if target.memory is not None:
        spilled = spilled | problem.forced_spills()
    not_before: dict[int, int] = {}
    retired: frozenset[tuple[str, int]] = frozenset()
    stubborn: dict[int, int] = {}               # tile -> rounds in a row it overflowed anyway
    for _ in range(MAX_ROUNDS):
        schedule = build(Fitting(spilled, dict(not_before), retired))
        more, stuck = _overflows(problem, schedule, spilled, {t for t, n in stubborn.items() if n > PATIENCE})
        if more:
            spilled = spilled | more
            continue
        if not stuck:
            return schedule
        stubborn = {t: stubborn.get(t, 0) + 1 for t in {o.tile for o in stuck}}
        idle = _retire(problem, schedule, [o for o in stuck if o.reading])
        retired = retired | set(idle.values())
        delayed = _delay(schedule, [o for o in stuck if o.tile not in idle], not_before)
        if not idle and not delayed:
            first = stuck[0]
            raise CapacityError(f"the {schedule.scheduler} schedule needs {first.bytes / 1024:.1f} KiB of activation "
                                f"buffer on tile {first.tile} at cycle {first.cycle}, more than the "
                                f"{target.buffer.kib_per_tile:g} KiB of target {target.name}, and neither spilling"
                                f"{'' if target.memory else ' (it has no [memory])'} nor delaying rows nor leaving "
                                f"copies idle helps; choose a larger [buffer] kib_per_tile")
    how = "spilling, delaying rows and leaving copies idle; choose" if target.memory else \
        "delaying rows and leaving copies idle (it has no [memory] to spill rows to); add a [memory] table or choose"
    raise CapacityError(f"no {schedule.scheduler} schedule within the {target.buffer.kib_per_tile:g} KiB tile "
                        f"buffers of target {target.name} after {MAX_ROUNDS} rounds of {how} a larger [buffer] "
                        f"kib_per_tile")


def _victim(hold: Hold) -> int:
    """The set whose delay holds rows back: rows from the network come later when their producer
    starts later (as flow control does); loaded rows, when their first reader does (the load
    follows it)."""
    return hold.readers[0] if hold.loaded else hold.producer


def _retire(problem: Problem, schedule: Schedule, reading: list[Overflow]) -> dict[int, tuple[str, int]]:
    """A copy to leave idle on each tile where rows being read overflow it, read by copies of a
    layer running there at once: of the layer with the most copies running there then (at
    least two, so it keeps one), the copy of the set that started last."""
    first: dict[int, Overflow] = {}
    for o in reading:
        first.setdefault(o.tile, o)
    running: dict[int, dict[str, list[tuple[int, int]]]] = {tile: {} for tile in first}
    for k, task in enumerate(schedule.tasks):
        if task.kind != "mvm":
            continue
        for tile in task_tiles(task, problem.mapping):
            o = first.get(tile)
            if o is not None and schedule.start[k] <= o.cycle < schedule.end(k):
                running[tile].setdefault(task.node, []).append((schedule.start[k], task.copy))
    idle = {}
    for tile, o in first.items():
        readers = {schedule.tasks[r].node for r in o.hold.readers}
        layers = [(len({c for _, c in sets}), node) for node, sets in running[tile].items() if node in readers]
        count, node = max(layers, default=(0, ""))
        if count > 1:
            idle[tile] = (node, max(running[tile][node])[1])
    return idle


def _delay(schedule: Schedule, stuck: list[Overflow], not_before: dict[int, int]) -> bool:
    """Hold back the rows of every overflow as long as the sweep held them, by delaying their
    victim. False when nothing could be delayed."""
    moved = False
    for o in stuck:
        if o.until is None:
            continue
        victim = _victim(o.hold)
        at = schedule.start[victim] + o.until - o.hold.start
        if at > not_before.get(victim, 0):
            not_before[victim] = at
            moved = True
    return moved


def _overflows(problem: Problem, schedule: Schedule, spilled: Spills,
               stubborn: set[int]) -> tuple[set[tuple[int, int]], list[Overflow]]:
    """Rows to spill so that no tile overflows where this schedule does, and the overflows that
    spilling cannot remove.

    Each tile's occupancy is swept in time. Where rows overflow it that spilling others cannot
    make room for, the sweep admits them later, once enough of the other rows have left (on a
    ``stubborn`` tile, all of them), and goes on as if they came then: every overflow of a tile is
    answered in one round, not only its first."""
    capacity = problem.cost.target.buffer.kib_per_tile * 1024
    memory = problem.cost.target.memory
    per_tile: dict[int, list[Hold]] = {}
    for h in holds(problem, schedule):
        per_tile.setdefault(h.tile, []).append(h)
    more: set[tuple[int, int]] = set()
    stuck: list[Overflow] = []
    for tile, mine in sorted(per_tile.items()):
        original = list(mine)                   # each hold as the schedule has it (held back ones are added)
        by_victim: dict[int, list[int]] = {}
        for k, h in enumerate(mine):
            by_victim.setdefault(_victim(h), []).append(k)
        gone: set[int] = set()                  # holds moved later, with their victim
        events = [(h.start, 1, k) for k, h in enumerate(mine)] + [(h.end, 0, k) for k, h in enumerate(mine)]
        heapq.heapify(events)
        level, active = 0.0, set()
        while events:
            cycle, acquire, k = heapq.heappop(events)
            h = mine[k]
            if not acquire:
                if k in active:
                    level -= h.bytes
                    active.discard(k)
                continue
            if k in gone:
                continue
            level += h.bytes
            active.add(k)
            if level <= capacity:
                continue
            # spill the rows read again furthest in the future, if they can be away until then
            # (they come back one load and the memory's latency before they are read)
            waiting = []
            for j in active if memory is not None else ():
                held = mine[j]
                later = held.next_use(cycle)
                if (held.loaded or (held.producer, tile) in spilled or later is None
                        or later <= cycle + problem.cost.memory_cycles(held.bytes) + memory.latency_cycles):
                    continue
                waiting.append((-later, j))
            for _, j in sorted(waiting):
                if level <= capacity:
                    break
                more.add((mine[j].producer, tile))
                level -= mine[j].bytes
                active.discard(j)
            if level <= capacity:
                continue
            # hold these rows back until enough of the others have left (or all, on a stubborn tile)
            ends = sorted((mine[j].end, mine[j].bytes) for j in active if j != k)
            if tile in stubborn:
                until = ends[-1][0] if ends else None
            else:
                until, left = None, 0.0
                for end, size in ends:
                    left += size
                    if level - left <= capacity:
                        until = end
                        break
            reading = h.bytes + sum(mine[j].bytes for j in active if j != k and mine[j].next_use(cycle) is None)
            stuck.append(Overflow(tile, cycle, level, original[k], until, reading > capacity))
            if until is None:
                continue
            # the victim's other rows here, arrived or to come, move with it
            victim, shift = _victim(h), until - cycle
            for j in [j for j in by_victim[victim] if j not in gone and (j in active or mine[j].start >= cycle)]:
                if j in active:
                    level -= mine[j].bytes
                    active.discard(j)
                gone.add(j)
                mine.append(_held_back(mine[j], mine[j].start + shift))
                original.append(original[j])
                by_victim[victim].append(len(mine) - 1)
                heapq.heappush(events, (mine[-1].start, 1, len(mine) - 1))
                heapq.heappush(events, (mine[-1].end, 0, len(mine) - 1))
    return more, stuck


def _held_back(hold: Hold, until: int) -> Hold:
    """The rows as if they came at ``until``, their readers as much later."""
    shift = until - hold.start
    return replace(hold, start=until, end=hold.end + shift, uses=tuple((a + shift, b + shift) for a, b in hold.uses))
