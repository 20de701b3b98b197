"""The resources a list scheduler books: layer copies, GPEUs, the tiles' network links and the
channel to the global memory.

A set occupies one copy of its layer (all that copy's crossbars) or its tile's
GPEUs for its compute time. When the crossbars stop, each other tile of a copy
spread over several tiles sends its partial sums home over its link; when the set
ends, its output rows leave over its own tile's link if another tile may read them.
Every tile has one link into the mesh, used by one message at a time: the network
capacity the schedulers respect and the validator checks.

Rows spilled to the global memory (a set of (producer, tile) pairs chosen by
:mod:`.memory`) are stored once from the producer's tile when it ends, and loaded into
each tile that reads them when its first reader there is placed; the channel carries one
transfer at a time. A tile reads spilled rows from its load, not from the network. What else
:mod:`.memory` imposes to keep the tile buffers (sets held back, copies left idle) the placer
applies too, so that every list scheduler honours it alike (:class:`Fitting`).
"""

from __future__ import annotations

import bisect

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cimc.passes.schedule.model import Load, Schedule, Store, Task, Write, serving_load, task_tiles
from cimc.passes.schedule.problem import Problem

MEMORY = "memory"
#: How many transfers' time before its reader a load may start: when the channel is busier, the
#: reader waits for its rows rather than the rows for their reader.
LOAD_LEAD = 2


class Timeline:
    """Busy intervals of one resource, sorted; finds the earliest gap that fits."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def earliest(self, ready: int, length: int) -> int:
        t = ready
        k = bisect.bisect_right(self.ends, t)       # first interval ending after t
        while k < len(self.starts) and self.starts[k] < t + length:
            t = max(t, self.ends[k])
            k += 1
        return t

    def reserve(self, start: int, length: int) -> None:
        k = bisect.bisect_left(self.starts, start)
        self.starts.insert(k, start)
        self.ends.insert(k, start + length)

    def latest(self, ready: int, deadline: int, length: int) -> int | None:
        """The latest start from ``ready`` of a gap of ``length`` ending by ``deadline``, or None."""
        t = deadline - length
        k = bisect.bisect_left(self.starts, deadline)     # intervals starting before the deadline
        while t >= ready:
            k -= 1
            if k < 0 or self.ends[k] <= t:
                # intervals are disjoint and sorted, so earlier ones end earlier still
                return t
            t = min(t, self.starts[k] - length)
        return None

    def release(self, start: int, length: int) -> None:
        k = bisect.bisect_left(self.starts, start)
        while self.ends[k] != start + length:
            k += 1
        del self.starts[k], self.ends[k]


@dataclass(frozen=True)
class Fitting:
    """What a list schedule is built with to keep every tile within its buffer (:mod:`.memory`
    finds it): the (producer, tile) rows ``spilled`` to the global memory, no set starting
    before ``not_before[set]``, and the ``retired`` (layer, copy) pairs that run no set (a tile
    whose buffer cannot feed all its copies of a layer at once). A set fixed to a retired copy
    goes to the copy of its layer on which it finishes first."""
    spilled: frozenset[tuple[int, int]] = frozenset()
    not_before: Mapping[int, int] = field(default_factory=dict)
    retired: frozenset[tuple[str, int]] = frozenset()


def resource_key(task: Task) -> str:
    """What a set occupies: one copy of its layer (all that copy's crossbars), or its tile's GPEUs."""
    return f"{task.node}#{task.copy}" if task.kind == "mvm" else task.resources[0]


def link_key(tile: int) -> str:
    return f"link:{tile}"


class Placer:
    """The timelines of every resource of one schedule being built, within the ``fitting``."""

    def __init__(self, problem: Problem, fitting: Fitting = Fitting()) -> None:
        self.problem = problem
        self.lines: dict[str, Timeline] = {}
        self.fitting = fitting
        self.spilled = fitting.spilled
        self.stored = {p for p, _ in fitting.spilled}
        self.stores: dict[int, Store] = {}
        self.loads: dict[tuple[int, int], list[Load]] = {}     # (producer, tile) -> its loads
        self.used: dict[tuple[int, int, int], int] = {}        # (producer, tile, load start) -> last reader's end
        self.serving: dict[int, list[tuple[int, int, int]]] = {}  # set being placed -> the loads it reads

    def _line(self, key: str) -> Timeline:
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = Timeline()
        return line

    def earliest(self, option: Task, ready: int) -> int:
        """The first start from ``ready`` at which the option's copy or GPEU is free for its
        compute and every tile of its partial sums has its link free when they leave."""
        t = ready
        while True:
            t = self._line(resource_key(option)).earliest(t, option.compute)
            later = max((self._line(link_key(tile)).earliest(t + option.compute, cycles) - option.compute
                         for tile, cycles in option.reductions), default=t)
            if later == t:
                return t
            t = later

    def reserve(self, option: Task, start: int) -> None:
        self._line(resource_key(option)).reserve(start, option.compute)
        for tile, cycles in option.reductions:
            self._line(link_key(tile)).reserve(start + option.compute, cycles)

    def place(self, task_id: int, options: list[Task], after: int, sends: Sequence[int]) -> tuple[int, Task, int]:
        """Put a set, free to start from ``after`` (and its ``not_before``) once its inputs are
        there (its producers' rows leave at ``sends``), on the option that is not retired on
        which it finishes first; book its resources, links and loads. Returns its start, the
        option and when its rows leave."""
        retired = self.fitting.retired
        if retired:
            options = ([o for o in options if (o.node, o.copy) not in retired]
                       or [o for o in self.problem.options[task_id] if (o.node, o.copy) not in retired])
        # rows that were not spilled come over the network, wherever the set runs
        ready, stored = max(after, self.fitting.not_before.get(task_id, 0)), []
        for p, latency in self.problem.edges[task_id]:
            if p in self.stored:
                stored.append((p, latency))
            else:
                ready = max(ready, sends[p] + latency)
        chosen, start, finish = None, 0, 0
        idle: set[tuple] = set()
        for option in options:
            if chosen is not None and ready + option.duration >= finish:
                continue            # it starts at ``ready`` at the earliest: it cannot finish first
            # copies idle from ``ready`` on, on the same tiles, start alike: only the first is tried
            # (a layer with a copy per set has hundreds of options)
            line = self._line(resource_key(option))
            if not line.ends or line.ends[-1] <= ready:
                tiles = task_tiles(option, self.problem.mapping) if stored else option.tile    # where loads go
                alike = (tiles, option.reductions, option.compute, option.duration)
                if alike in idle:
                    continue
                idle.add(alike)
            elif chosen is not None and line.earliest(ready, option.compute) + option.duration >= finish:
                continue            # its copy alone keeps it from finishing first
            s = self._start(task_id, option, ready, stored, sends, book=False)
            if chosen is None or s + option.duration < finish:
                chosen, start, finish = option, s, s + option.duration
        option = chosen
        self._start(task_id, option, ready, stored, sends, book=True)
        self.reserve(option, start)
        end = start + option.duration
        for key in self.serving.pop(task_id, ()):
            self.used[key] = max(self.used[key], end)
        if task_id in self.stored:
            self._store(task_id, end)
        return start, option, self.send(task_id, option, end)

    def schedule(self, name: str, tasks: list[Task], start: list[int], writes: list[Write],
                 sends: list[int]) -> Schedule:
        """The schedule built, with its stores and loads."""
        loads = sorted((x for mine in self.loads.values() for x in mine), key=lambda x: (x.task, x.tile, x.start))
        return Schedule(name, tasks, start, writes, sends, [self.stores[p] for p in sorted(self.stores)], loads)

    def _start(self, task_id: int, option: Task, ready: int, stored: list[tuple[int, int]], sends: Sequence[int],
               book: bool) -> int:
        """The option's earliest start from ``ready`` once the rows of the ``stored`` producers
        (with their edges' latency) are on its tiles: over the network (the latency after the
        producer's send) or, where spilled, from a load booked on the memory channel to end just
        in time, or an earlier load still held on that tile. Loads are released unless ``book``."""
        spilled = []
        tiles = task_tiles(option, self.problem.mapping) if stored else ()
        for p, latency in stored:
            mine = [tile for tile in tiles if (p, tile) in self.spilled]
            if len(mine) < len(tiles):
                ready = max(ready, sends[p] + latency)
            spilled += [(p, tile) for tile in mine]
        start = self.earliest(option, ready)
        tried: list[Load] = []
        for key in spilled:         # each load as late as the channel allows before the reader
            arrive = self._load(key, start, tried)
            if arrive > start:
                start = self.earliest(option, arrive)
        if book:
            for load in tried:
                self.loads.setdefault((load.task, load.tile), []).append(load)
                self.used[(load.task, load.tile, load.start)] = 0
            for key in spilled:
                self.serving.setdefault(task_id, []).append(self._serving(key, start))
        else:
            for load in tried:
                self._line(MEMORY).release(load.start, load.duration)
        return start

    def _serving(self, key: tuple[int, int], start: int) -> tuple[int, int, int]:
        """The load that serves a reader starting at ``start``."""
        load = serving_load(self.loads[key], start, self.problem.cost.target.memory.latency_cycles)
        return (*key, load.start)

    def _load(self, key: tuple[int, int], start: int, tried: list[Load]) -> int:
        """When spilled rows (producer, tile) can be on the tile for a reader starting at
        ``start``: an earlier load still held (its last reader ended less than a reload ago),
        or a new load ending as late as the channel allows by then (starting at most
        :data:`LOAD_LEAD` transfers earlier), else as early as it can after that."""
        producer, tile = key
        latency = self.problem.cost.target.memory.latency_cycles
        cycles = self.problem.cost.memory_cycles(self.problem.out_bytes(producer))
        last = serving_load(self.loads.get(key, []), start, latency)
        if last is not None:
            arrival = last.start + last.duration + latency
            if start <= max(self.used[(*key, last.start)], arrival) + cycles + latency:
                return arrival
        store = self.stores[producer]
        line = self._line(MEMORY)
        # not long before the reader: rows loaded early wait in the buffer they were spilled to spare
        ready = max(store.start + store.duration + latency, start - latency - LOAD_LEAD * cycles)
        at = line.latest(ready, start - latency, cycles)
        if at is None:
            at = line.earliest(ready, cycles)
        line.reserve(at, cycles)
        tried.append(Load(producer, tile, at, cycles))
        return at + cycles + latency

    def _store(self, task_id: int, end: int) -> None:
        cycles = self.problem.cost.memory_cycles(self.problem.out_bytes(task_id))
        line = self._line(MEMORY)
        at = line.earliest(end, cycles)
        line.reserve(at, cycles)
        self.stores[task_id] = Store(task_id, at, cycles)

    def send(self, task_id: int, option: Task, end: int) -> int:
        """Book the link of the set's tile for its output rows from ``end`` on; when they leave."""
        cycles = self.problem.send_cycles[task_id]
        if not cycles:
            return end
        line = self._line(link_key(option.tile))
        at = line.earliest(end, cycles)
        line.reserve(at, cycles)
        return at
