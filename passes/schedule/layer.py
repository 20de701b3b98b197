"""Layer-by-layer scheduling: the baseline the CLSA-CIM paper compares against.

Each operator starts only when the previous operator (in topological order) has
finished every set; within a crossbar layer the sets run one after another on
the layer's crossbars, and the next set starts as soon as the crossbars are free.
A model run in segments writes each segment's weights when its first layer is
due, after everything before it has finished.
"""

from __future__ import annotations

from cimc.ir import Graph
from cimc.passes.schedule.model import Schedule, Task, Write


def schedule_layer_by_layer(graph: Graph, tasks: list[Task], deps: list[list[tuple[int, int]]],
                            write_cycles: list[int]) -> Schedule:
    start = [0] * len(tasks)
    by_node: dict[str, list[Task]] = {}
    for task in tasks:
        by_node.setdefault(task.node, []).append(task)
    writes: list[Write] = []
    clock = 0
    for node in graph.nodes():
        segment = by_node[node.name][0].segment
        if node.is_crossbar and len(writes) < len(write_cycles) and segment == len(writes):
            writes.append(Write(segment, clock, write_cycles[segment]))
            clock = writes[-1].end
        free = clock
        layer_end = clock
        for task in sorted(by_node[node.name], key=lambda t: t.index):
            ready = max((start[p] + tasks[p].duration + move for p, move in deps[task.id]), default=0)
            start[task.id] = max(free, ready)
            free = start[task.id] + task.compute
            layer_end = max(layer_end, start[task.id] + task.duration)
        clock = layer_end
    return Schedule("layer", tasks, start, writes)
