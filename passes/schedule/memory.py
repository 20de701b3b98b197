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
reader. Spills and delays only grow; a tile that still overflows after :data:`MAX_ROUNDS`
rounds, or with nothing left to delay, is refused with the figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cimc.errors import CapacityError
from cimc.passes.schedule.buffers import Hold, holds
from cimc.passes.schedule.model import Schedule
from cimc.passes.schedule.problem import Problem

#: Rounds of spilling or delaying and rescheduling before giving up (each adds a spill or a delay).
MAX_ROUNDS = 200
#: Rounds a tile may stay over its buffer, its rows held back until just enough others have left,
#: before they are held back until all have (on rows read by many copies of a layer at once, each
#: round moves one reader and the next takes its place).
PATIENCE = 3

Spills = frozenset[tuple[int, int]]
Builder = Callable[[Spills, dict[int, int]], Schedule]


@dataclass(frozen=True)
class Overflow:
    """A tile over its buffer that spilling cannot help: the rows whose arrival overflowed it,
    and the first cycle after which enough other rows held there have left for them to fit
    (None: never)."""
    tile: int
    cycle: int
    bytes: float
    hold: Hold
    free: int | None
    empty: int | None       # when every other row held there at that moment has left


def fit(problem: Problem, build: Builder, spilled: Spills = frozenset()) -> Schedule:
    """The schedule ``build(spilled, not_before)`` makes with the spills and delays found to keep
    every tile within its buffer (starting from ``spilled`` and the rows that must stream)."""
    target = problem.cost.target
    if target.memory is not None:
        spilled = spilled | problem.forced_spills()
    not_before: dict[int, int] = {}
    stubborn: dict[int, int] = {}               # tile -> rounds in a row it overflowed anyway
    for _ in range(MAX_ROUNDS):
        schedule = build(spilled, not_before)
        more, stuck = _overflows(problem, schedule, spilled)
        if more:
            spilled = spilled | more
            continue
        if not stuck:
            return schedule
        tiles = {o.tile for o in stuck}
        stubborn = {t: stubborn.get(t, 0) + 1 for t in tiles}
        if not _delay(schedule, stuck, not_before, {t for t, n in stubborn.items() if n > PATIENCE}):
            first = stuck[0]
            raise CapacityError(f"the {schedule.scheduler} schedule needs {first.bytes / 1024:.1f} KiB of activation "
                                f"buffer on tile {first.tile} at cycle {first.cycle}, more than the "
                                f"{target.buffer.kib_per_tile:g} KiB of target {target.name}, and neither spilling"
                                f"{'' if target.memory else ' (it has no [memory])'} nor delaying rows helps; choose "
                                f"a larger [buffer] kib_per_tile")
    how = "spilling and delaying rows; choose" if target.memory else \
        "delaying rows (it has no [memory] to spill them to); add a [memory] table or choose"
    raise CapacityError(f"no {schedule.scheduler} schedule within the {target.buffer.kib_per_tile:g} KiB tile "
                        f"buffers of target {target.name} after {MAX_ROUNDS} rounds of {how} a larger [buffer] "
                        f"kib_per_tile")


def _delay(schedule: Schedule, stuck: list[Overflow], not_before: dict[int, int], stubborn: set[int]) -> bool:
    """Hold back the rows of the first overflow on each tile until enough others have left (on
    a ``stubborn`` tile, where that has not been enough for a few rounds, until all have): rows
    from the network by delaying the set that produces them (as flow control does), loaded rows
    by delaying their first reader (the load follows it). False when nothing could be delayed."""
    moved, seen = False, set()
    for o in stuck:
        if o.tile in seen:          # later overflows on a tile may follow from the first: one at a time
            continue
        seen.add(o.tile)
        until = o.empty if o.tile in stubborn else o.free
        if until is None:
            continue
        victim = o.hold.readers[0] if o.hold.loaded else o.hold.producer
        at = schedule.start[victim] + until - o.cycle          # the rows then come when others have left
        if at > not_before.get(victim, 0):
            not_before[victim] = at
            moved = True
    return moved


def _overflows(problem: Problem, schedule: Schedule, spilled: Spills) -> tuple[set[tuple[int, int]], list[Overflow]]:
    """Rows to spill so that no tile overflows where this schedule does, and the overflows that
    spilling cannot remove."""
    capacity = problem.cost.target.buffer.kib_per_tile * 1024
    memory = problem.cost.target.memory
    per_tile: dict[int, list[Hold]] = {}
    for h in holds(problem, schedule):
        per_tile.setdefault(h.tile, []).append(h)
    more: set[tuple[int, int]] = set()
    stuck: list[Overflow] = []
    for tile, mine in sorted(per_tile.items()):
        events = sorted([(h.start, 1, k) for k, h in enumerate(mine)] + [(h.end, 0, k) for k, h in enumerate(mine)])
        level, active = 0.0, set()
        for cycle, acquire, k in events:
            h = mine[k]
            if not acquire:
                if k in active:
                    level -= h.bytes
                    active.discard(k)
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
            if level > capacity:
                # when enough of the other rows held here have left for these to fit
                free, left = None, 0.0
                for end, size in sorted((mine[j].end, mine[j].bytes) for j in active if j != k):
                    left += size
                    if level - left <= capacity:
                        free = end
                        break
                others = max((mine[j].end for j in active if j != k), default=None)
                stuck.append(Overflow(tile, cycle, level, h, free, others))
    return more, stuck
