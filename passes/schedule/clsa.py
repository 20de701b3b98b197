"""Cross-layer scheduling as in CLSA-CIM (Pelke et al., DATE 2024).

The paper's four stages: (1) cut every layer into sets (:mod:`.sets`, one output
row each); (2) find each set's dependencies, the producer sets of the rows its
receptive field reads, traced through vector operators (:mod:`.model`); (3)
intra-layer: a layer's sets issue in row order; (4) cross-layer: every set starts
as soon as possible, when its rows have arrived and a copy of its layer (or its
tile's GPEU) is free, instead of waiting for whole layers. Each set goes to the
copy of its layer on which it finishes first; a free gap on a crossbar or GPEU
before work already placed there is used when the set fits it.

With exclusive resources and a fixed order and assignment, as-soon-as-possible is
optimal; what it does not decide well (copies, assignment, order on shared
GPEUs) is what :mod:`.cpsat` improves.
"""

from __future__ import annotations

import bisect

from cimc.passes.schedule.model import Schedule, Task, Write
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


def schedule_clsa(problem: Problem) -> Schedule:
    n = problem.size
    start, chosen = [0] * n, [None] * n
    lines: dict[str, Timeline] = {}
    writes: list[Write] = []
    barrier = 0                                     # crossbar sets start after their segment's write
    crossbars_done = 0                              # when every crossbar set placed so far stops computing
    previous: dict[str, int] = {}                   # node -> start of its last set (row order)
    for k in range(n):
        first = problem.options[k][0]
        if first.kind == "mvm" and len(writes) < len(problem.write_cycles) and first.segment == len(writes):
            at = max(crossbars_done, writes[-1].end if writes else 0)
            writes.append(Write(first.segment, at, problem.write_cycles[first.segment]))
            barrier = writes[-1].end
        ready = max((start[p] + chosen[p].duration + lat for p, lat in problem.edges[k]), default=0)
        ready = max(ready, previous.get(first.node, 0), barrier if first.kind == "mvm" else 0)
        best: tuple[int, Task] | None = None
        for option in problem.options[k]:
            s = lines.setdefault(resource_key(option), Timeline()).earliest(ready, option.compute)
            if best is None or s + option.duration < best[0] + best[1].duration:
                best = (s, option)
        start[k], chosen[k] = best
        lines[resource_key(chosen[k])].reserve(start[k], chosen[k].compute)
        previous[first.node] = start[k]
        if first.kind == "mvm":
            crossbars_done = max(crossbars_done, start[k] + chosen[k].compute)
    return Schedule("clsa", chosen, start, writes)
