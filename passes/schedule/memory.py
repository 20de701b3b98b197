"""Keeping every tile's buffer within its capacity: which rows wait in the global memory.

A schedule holds a set's output rows on each tile that reads them, from their arrival until
the last reader there has finished (:mod:`.buffers`). Layer by layer, a tile holds whole
tensors while the next layer works through them (up to 6 MiB on the 224x224 models against
a 256 KiB buffer); across layers, rows for a skip connection wait while the other branch
computes. :func:`fit` schedules with some rows *spilled*: stored to the global memory
(``[memory]``) when they are produced and loaded into the tile shortly before their first
reader there, over one shared channel, at the time and energy the target gives.

Which rows: the schedule is built, each tile's occupancy swept in time, and wherever it
exceeds the capacity the rows held there whose first read is furthest away are spilled
until it fits (Belady's rule, which minimizes misses for a cache of fixed size); the
schedule is rebuilt with those rows spilled, and so on until no tile overflows. Spills only
grow, so this ends. Rows whose first reader is about to start cannot wait elsewhere: a tile
that overflows with those alone (many copies at work on one tile) cannot be helped by
spilling, and the compile is refused with the figures.
"""

from __future__ import annotations

from collections.abc import Callable

from cimc.errors import CapacityError
from cimc.passes.schedule.buffers import Hold, buffer_peak, holds
from cimc.passes.schedule.model import Schedule
from cimc.passes.schedule.problem import Problem

#: Rounds of spilling and rescheduling before giving up (each adds at least one spill).
MAX_ROUNDS = 64

Spills = frozenset[tuple[int, int]]


def fit(problem: Problem, build: Callable[[Spills], Schedule], spilled: Spills = frozenset()) -> Schedule:
    """The schedule ``build`` makes with the spills this rule finds to keep every tile within its
    buffer (starting from ``spilled`` and the rows that must stream)."""
    target = problem.cost.target
    if target.memory is None:                   # nothing to spill to (and nothing streams: check_buffers)
        schedule = build(spilled)
        peak = buffer_peak(problem, schedule)
        if peak.bytes > target.buffer.kib_per_tile * 1024:
            raise CapacityError(f"the {schedule.scheduler} schedule needs {peak.bytes / 1024:.1f} KiB of "
                                f"activation buffer on tile {peak.tile} at cycle {peak.cycle} and target "
                                f"{target.name} has {target.buffer.kib_per_tile:g} KiB a tile and no global "
                                f"memory to spill rows to; add a [memory] table or a larger [buffer] kib_per_tile")
        return schedule
    spilled = spilled | problem.forced_spills()
    for _ in range(MAX_ROUNDS):
        schedule = build(spilled)
        more, stuck = _overflow_spills(problem, schedule, spilled)
        if not more:
            if stuck:
                tile, cycle, level = stuck[0]
                raise CapacityError(f"the {schedule.scheduler} schedule needs {level / 1024:.1f} KiB of activation "
                                    f"buffer on tile {tile} at cycle {cycle} for rows its sets are about to read, "
                                    f"more than the {target.buffer.kib_per_tile:g} KiB of target {target.name}; "
                                    f"choose a larger [buffer] kib_per_tile or fewer rows per set")
            return schedule
        spilled = spilled | more
    raise CapacityError(f"no {schedule.scheduler} schedule within the {target.buffer.kib_per_tile:g} KiB tile "
                        f"buffers of target {target.name} after {MAX_ROUNDS} rounds of spilling rows to the "
                        f"global memory; choose a larger [buffer] kib_per_tile")


def _overflow_spills(problem: Problem, schedule: Schedule,
                     spilled: Spills) -> tuple[set[tuple[int, int]], list[tuple[int, int, float]]]:
    """Rows to spill so that no tile overflows where this schedule does, and the overflows
    (tile, cycle, bytes) that spilling cannot remove."""
    capacity = problem.cost.target.buffer.kib_per_tile * 1024
    latency = problem.cost.target.memory.latency_cycles
    per_tile: dict[int, list[Hold]] = {}
    for h in holds(problem, schedule):
        per_tile.setdefault(h.tile, []).append(h)
    more: set[tuple[int, int]] = set()
    stuck: list[tuple[int, int, float]] = []
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
            for j in active:
                held = mine[j]
                later = held.next_use(cycle)
                if (held.loaded or (held.producer, tile) in spilled or later is None
                        or later <= cycle + problem.cost.memory_cycles(held.bytes) + latency):
                    continue
                waiting.append((-later, j))
            for _, j in sorted(waiting):
                if level <= capacity:
                    break
                more.add((mine[j].producer, tile))
                level -= mine[j].bytes
                active.discard(j)
            if level > capacity:
                stuck.append((tile, cycle, level))
    return more, stuck
