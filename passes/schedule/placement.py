"""The resources a list scheduler books: layer copies, GPEUs and the tiles' network links.

A set occupies one copy of its layer (all that copy's crossbars) or its tile's
GPEUs for its compute time. When the crossbars stop, each other tile of a copy
spread over several tiles sends its partial sums home over its link; when the set
ends, its output rows leave over its own tile's link if another tile may read them.
Every tile has one link into the mesh, used by one message at a time: the network
capacity the schedulers respect and the validator checks.
"""

from __future__ import annotations

import bisect

from cimc.passes.schedule.model import Task
from cimc.passes.schedule.problem import Problem


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


def resource_key(task: Task) -> str:
    """What a set occupies: one copy of its layer (all that copy's crossbars), or its tile's GPEUs."""
    return f"{task.node}#{task.copy}" if task.kind == "mvm" else task.resources[0]


def link_key(tile: int) -> str:
    return f"link:{tile}"


class Placer:
    """The timelines of every resource of one schedule being built."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.lines: dict[str, Timeline] = {}

    def _line(self, key: str) -> Timeline:
        return self.lines.setdefault(key, Timeline())

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

    def place(self, task_id: int, options: list[Task], ready: int) -> tuple[int, Task, int]:
        """Put a set, ready at ``ready``, on the option on which it finishes first; book its
        resources and links. Returns its start, the option and when its rows leave."""
        best: tuple[int, Task] | None = None
        for option in options:
            s = self.earliest(option, ready)
            if best is None or s + option.duration < best[0] + best[1].duration:
                best = (s, option)
        start, option = best
        self.reserve(option, start)
        return start, option, self.send(task_id, option, start + option.duration)

    def send(self, task_id: int, option: Task, end: int) -> int:
        """Book the link of the set's tile for its output rows from ``end`` on; when they leave."""
        cycles = self.problem.send_cycles[task_id]
        if not cycles:
            return end
        line = self._line(link_key(option.tile))
        at = line.earliest(end, cycles)
        line.reserve(at, cycles)
        return at
