"""Cross-layer scheduling as in CLSA-CIM (Pelke et al., DATE 2024).

The paper's four stages: (1) cut every layer into sets (:mod:`.sets`, one output
row each); (2) find each set's dependencies, the producer sets of the rows its
receptive field reads, traced through vector operators (:mod:`.model`); (3)
intra-layer: a layer's sets issue in row order; (4) cross-layer: every set starts
as soon as possible, when its rows have arrived and a copy of its layer (or its
tile's GPEU) is free, instead of waiting for whole layers. Each set goes to the
copy of its layer on which it finishes first; a free gap on a crossbar or GPEU
before work already placed there is used when the set fits it. Messages wait for
their tile's network link (:mod:`.placement`), first come, first served.

With exclusive resources and a fixed order and assignment, as-soon-as-possible is
optimal; what it does not decide well (copies, assignment, order on shared
GPEUs) is what :mod:`.cpsat` improves.
"""

from __future__ import annotations

from collections.abc import Sequence

from cimc.passes.schedule.model import Schedule, Write
from cimc.passes.schedule.placement import Fitting, Placer
from cimc.passes.schedule.problem import Problem


def schedule_clsa(problem: Problem, order: Sequence[int] | None = None, fixed: dict[int, int] | None = None,
                  name: str = "clsa", fitting: Fitting = Fitting()) -> Schedule:
    """As soon as possible, set by set in ``order`` (by default the sets' ids, a topological
    order; any order must list producers before their consumers and a layer's sets in row
    order), each on the option ``fixed[set]`` or else the one on which it finishes first,
    within the ``fitting`` that keeps the tile buffers (:mod:`.memory`).
    :mod:`.cpsat` uses the order and choices to rebuild its solution on every resource."""
    n = problem.size
    start, chosen, sends = [0] * n, [None] * n, [0] * n
    placer = Placer(problem, fitting)
    fixed = fixed or {}
    writes: list[Write] = []
    barrier = 0                                     # crossbar sets start after their segment's write
    crossbars_done = 0                              # when every crossbar set placed so far stops computing
    previous: dict[str, int] = {}                   # node -> start of its last set (row order)
    for k in (range(n) if order is None else order):
        first = problem.options[k][0]
        if first.kind == "mvm" and len(writes) < len(problem.write_cycles) and first.segment == len(writes):
            at = max(crossbars_done, writes[-1].end if writes else 0)
            writes.append(Write(first.segment, at, problem.write_cycles[first.segment]))
            barrier = writes[-1].end
        after = max(previous.get(first.node, 0), barrier if first.kind == "mvm" else 0)
        options = [problem.options[k][fixed[k]]] if k in fixed else problem.options[k]
        start[k], chosen[k], sends[k] = placer.place(k, options, after, sends)
        previous[first.node] = start[k]
        if first.kind == "mvm":
            crossbars_done = max(crossbars_done, start[k] + chosen[k].compute)
    return placer.schedule(name, chosen, start, writes, sends)
