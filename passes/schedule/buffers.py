"""Activation buffer occupancy of a schedule: rows held by each tile until their last consumer ran.

A set's output rows are written on its tile when it ends and stay there until every consumer of
those rows on that tile has finished; a consumer on another tile gets its own copy, held from
its arrival over the network until the last consumer on that tile has finished. Rows a schedule
spilled to the global memory (:class:`~cimc.passes.schedule.model.Load`) take space on a tile
only from the start of their load. Graph inputs (loaded by the host) and graph outputs (read by
the host as they are written) are not counted, nor are *streamed* rows: the inputs and output
of a set without row structure too large for a tile's buffer (:attr:`Problem.streamed`), which
go through the global memory as the set works. The schedulers keep every tile within
``[buffer] kib_per_tile`` (:mod:`.memory`); the validator checks it on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.passes.schedule.model import Load, Schedule, serving_load, task_tiles
from cimc.passes.schedule.problem import Problem


@dataclass(frozen=True)
class Hold:
    """The rows of set ``producer`` on ``tile``: in its buffer over [start, end), read by sets
    ``readers`` running over ``uses`` (in order of start); ``loaded``: brought back from the
    global memory (from the load's start)."""
    producer: int
    tile: int
    start: int
    end: int
    readers: tuple[int, ...]
    uses: tuple[tuple[int, int], ...]
    bytes: float
    loaded: bool

    def next_use(self, cycle: int) -> int | None:
        """When the rows are next read after ``cycle``; None while a reader is at work."""
        if any(a <= cycle < b for a, b in self.uses):
            return None
        return min((a for a, _ in self.uses if a > cycle), default=None)


@dataclass(frozen=True)
class BufferPeak:
    bytes: int          # the largest occupancy of any tile's buffer at any cycle
    tile: int           # the tile where it occurs (the lowest such tile)
    cycle: int          # the first cycle at which it occurs there


def holds(problem: Problem, schedule: Schedule) -> list[Hold]:
    """Every (set, tile) whose rows some consumer that is not streamed reads on that tile; one
    per load where the rows come from the global memory."""
    graph, mapping, cost = problem.graph, problem.mapping, problem.cost
    latency = 0 if cost.target.memory is None else cost.target.memory.latency_cycles
    loads: dict[tuple[int, int], list[Load]] = {}
    for x in schedule.loads:
        loads.setdefault((x.task, x.tile), []).append(x)
    out = []
    for i, successors in enumerate(problem.successors):
        if not successors or problem.streamed[i]:
            continue
        task = schedule.tasks[i]
        tensor = graph.node(task.node).outputs[0]
        rows = task.out_rows[1] - task.out_rows[0]
        size = cost.rows_bytes(tensor, rows)
        done, sent = schedule.end(i), schedule.send(i)
        readers: dict[tuple[int, int], list[int]] = {}      # (tile, load start or -1) -> readers
        for j, _ in successors:
            if problem.streamed[j]:
                continue
            for tile in task_tiles(schedule.tasks[j], mapping):
                load = serving_load(loads[(i, tile)], schedule.start[j], latency) if (i, tile) in loads else None
                readers.setdefault((tile, -1 if load is None else load.start), []).append(j)
        for (tile, loaded), mine in readers.items():
            last = max(schedule.end(j) for j in mine)
            if loaded >= 0:
                arrive = loaded
            else:
                arrive = done if tile == task.tile else sent + cost.tensor_transfer_cycles(tensor, rows, task.tile,
                                                                                          tile)
            if last > arrive:
                mine = sorted(mine, key=lambda j: (schedule.start[j], j))
                uses = tuple((schedule.start[j], schedule.end(j)) for j in mine)
                out.append(Hold(i, tile, arrive, last, tuple(mine), uses, size, loaded >= 0))
    return out


def buffer_peak(problem: Problem, schedule: Schedule) -> BufferPeak:
    found = holds(problem, schedule)
    if not found:
        return BufferPeak(0, 0, 0)
    tiles = np.array([h.tile for h in found])
    sizes = np.array([h.bytes for h in found])
    # Events: +size at the start, -size at the end (intervals are half-open, so at one cycle
    # releases come before acquisitions); occupancy is the running sum per tile.
    tile = np.concatenate([tiles, tiles])
    cycle = np.concatenate([[h.start for h in found], [h.end for h in found]])
    delta = np.concatenate([sizes, -sizes])
    order = np.lexsort((delta > 0, cycle, tile))
    tile, cycle, delta = tile[order], cycle[order], delta[order]
    running = np.cumsum(delta)
    first = np.flatnonzero(np.r_[True, tile[1:] != tile[:-1]])
    base = np.repeat(np.r_[0.0, running[first[1:] - 1]], np.diff(np.r_[first, len(tile)]))
    level = running - base
    at = int(np.argmax(level))
    return BufferPeak(int(round(level[at])), int(tile[at]), int(cycle[at]))
