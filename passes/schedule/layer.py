"""Layer-by-layer scheduling: the baseline the CLSA-CIM paper compares against.

Each operator starts only when the previous operator (in topological order) has
finished every set; within a crossbar layer the sets run in order, each on the
layer copy on which it finishes first, as soon as that copy is free (and the
links of its partial sums and output rows, as in :mod:`.clsa`). A model run in
segments writes each segment's weights when its first layer is due, after
everything before it has finished.
"""

from __future__ import annotations

from cimc.passes.schedule.model import Schedule, Write
from cimc.passes.schedule.placement import Fitting, Placer
from cimc.passes.schedule.problem import Problem


def schedule_layer_by_layer(problem: Problem, fitting: Fitting = Fitting()) -> Schedule:
    """Layer by layer, within the ``fitting`` that keeps the tile buffers (:mod:`.memory`)."""
    n = problem.size
    start, chosen, sends = [0] * n, [None] * n, [0] * n
    placer = Placer(problem, fitting)
    writes: list[Write] = []
    clock = 0
    i = 0
    while i < n:
        node = problem.options[i][0].node
        j = i
        while j < n and problem.options[j][0].node == node:
            j += 1
        first = problem.options[i][0]
        if first.kind == "mvm" and len(writes) < len(problem.write_cycles) and first.segment == len(writes):
            writes.append(Write(first.segment, clock, problem.write_cycles[first.segment]))
            clock = writes[-1].end
        layer_end = clock
        for k in range(i, j):
            start[k], chosen[k], sends[k] = placer.place(k, problem.options[k], clock, sends)
            layer_end = max(layer_end, start[k] + chosen[k].duration)
        clock = layer_end
        i = j
    return placer.schedule("layer", chosen, start, writes, sends)
