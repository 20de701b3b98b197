"""Activation buffer occupancy of a schedule: rows held by each tile until their last consumer ran.

A set's output rows are written on its tile when it ends and stay there until every consumer of
those rows on that tile has finished; a consumer on another tile gets its own copy, held from
its arrival (the edge latency after the producer's send) until the last consumer on that tile
has finished. Graph inputs (loaded by the host) and graph outputs (read by the host as they are
written) are not counted. The peak per tile is what an architect sizes ``[buffer] kib_per_tile``
against; schedules are not yet constrained by it (see the README's limitations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.passes.schedule.model import Schedule, task_tiles
from cimc.passes.schedule.problem import Problem


@dataclass(frozen=True)
class BufferPeak:
    bytes: int          # the largest occupancy of any tile's buffer at any cycle
    tile: int           # the tile where it occurs (the lowest such tile)
    cycle: int          # the first cycle at which it occurs there


def _held(problem: Problem, schedule: Schedule) -> tuple[list[int], list[int], list[int], list[float]]:
    """One (tile, from, to, bytes) per copy of a set's output rows that some consumer reads."""
    graph, mapping = problem.graph, problem.mapping
    tiles, starts, ends, sizes = [], [], [], []
    for i, successors in enumerate(problem.successors()):
        if not successors:
            continue
        task = schedule.tasks[i]
        size = problem.cost.rows_bytes(graph.node(task.node).outputs[0], task.out_rows[1] - task.out_rows[0])
        done, sent = schedule.end(i), schedule.send(i)
        arrive: dict[int, int] = {}         # tile -> when the rows are there
        until: dict[int, int] = {}          # tile -> when the last consumer there has finished
        for j, latency in successors:
            consumer = schedule.tasks[j]
            for tile in (task_tiles(consumer, mapping) if consumer.kind == "mvm" else (consumer.tile,)):
                ready = done if tile == task.tile else sent + latency
                arrive[tile] = min(arrive.get(tile, ready), ready)
                until[tile] = max(until.get(tile, ready), schedule.end(j))
        for tile, last in until.items():
            if last > arrive[tile]:
                tiles.append(tile)
                starts.append(arrive[tile])
                ends.append(last)
                sizes.append(size)
    return tiles, starts, ends, sizes


def buffer_peak(problem: Problem, schedule: Schedule) -> BufferPeak:
    tiles, starts, ends, sizes = (np.asarray(a) for a in _held(problem, schedule))
    if not len(tiles):
        return BufferPeak(0, 0, 0)
    # Events: +size at the start, -size at the end (intervals are half-open, so at one cycle
    # releases come before acquisitions); occupancy is the running sum per tile.
    tile = np.concatenate([tiles, tiles])
    cycle = np.concatenate([starts, ends])
    delta = np.concatenate([sizes, -sizes])
    order = np.lexsort((delta > 0, cycle, tile))
    tile, cycle, delta = tile[order], cycle[order], delta[order]
    running = np.cumsum(delta)
    first = np.flatnonzero(np.r_[True, tile[1:] != tile[:-1]])
    base = np.repeat(np.r_[0.0, running[first[1:] - 1]], np.diff(np.r_[first, len(tile)]))
    level = running - base
    at = int(np.argmax(level))
    return BufferPeak(int(round(level[at])), int(tile[at]), int(cycle[at]))
