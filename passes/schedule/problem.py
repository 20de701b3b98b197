"""The scheduling problem every scheduler solves, and the lower bounds any schedule of it obeys.

A problem is the sets of a mapped model (each with one option per layer copy that
could run it), the set dependency edges with their latency, the cycles each set's
output rows hold its tile's link into the network on chip, and the write time of
each segment of a model run in segments. An edge's latency is the worst case,
over the copies of producer and consumer, of bringing the producer's rows to the
consumer's tiles once they start leaving (``Schedule.sends``; at the producer's
end when its link is free): schedulers choose copies without re-deriving
latencies, and every schedule they produce stays valid whichever copies they pick.
A set whose consumers might be on another tile sends its rows once (the mesh's
routers copy a message to every tile that reads it), holding its link for
``send_cycles``; the link is the NoC resource schedulers share (:mod:`.placement`).

The bounds (:func:`lower_bounds`) hold for every schedule of the model on the
chip, whatever copies of each layer the crossbar budget allows and whatever
assignment and order the sets get:

``critical_path``  the longest chain of sets, each at its compute time
``layer``          for each layer: the earliest any of its sets can start, plus its
                   crossbar work spread over the most copies the budget leaves room
                   for, plus the shortest time from its end to the end of the model
``gpeu``           the same for each vector operator, its work spread over the most
                   tiles its input can be written on (one per copy of the layer
                   behind it), and all vector work over all tiles' GPEUs
``budget``         the crossbar budget: to finish by T, each layer needs at least
                   work / (T - its head and tail) copies, and all those copies must fit
                   the chip's crossbars (each segment's, for a model run in segments);
                   the least T for which they fit
``segments``       a model run in segments computes one segment at a time, a write
                   before each: all the writes, plus for each segment the least time T
                   that holds its longest chain from a crossbar set of the segment to
                   another and in which the copies its layers need to do their work
                   within T fit the chip, plus the least time left after any crossbar
                   set of the last segment

For a model run in segments the bounds hold for its segments as the mapping cut them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from cimc.errors import CapacityError
from cimc.ir import Graph
from cimc.passes.mapping import Mapping
from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.model import Task, producers, set_options, task_tiles
from cimc.passes.schedule.sets import row_granular
from cimc.targets import Target


@dataclass
class Problem:
    graph: Graph
    mapping: Mapping
    cost: CostModel
    options: list[list[Task]]               # per set: one task per copy that could run it
    edges: list[list[tuple[int, int]]]      # per set: (producer set, latency from its send)
    send_cycles: list[int]                  # per set: link cycles of its rows (0: all read on its tile)
    write_cycles: list[int]                 # per segment (empty for a model that fits)
    streamed: list[bool]                    # per set: its rows in and out go through the global memory

    def out_bytes(self, i: int) -> float:
        """Bytes of set i's output rows."""
        task = self.options[i][0]
        return self.cost.rows_bytes(self.graph.node(task.node).outputs[0], task.out_rows[1] - task.out_rows[0])

    def forced_spills(self) -> frozenset[tuple[int, int]]:
        """(producer, tile) pairs that must go through the global memory: every input of a
        streamed set, on each tile it may run on, and every output of one."""
        forced = set()
        succ = self.successors
        for i, opts in enumerate(self.options):
            if self.streamed[i]:
                places = {tile for o in opts for tile in task_tiles(o, self.mapping)}
                forced.update((p, tile) for p, _ in self.edges[i] for tile in places)
                forced.update((i, tile) for j, _ in succ[i] for o in self.options[j]
                              for tile in task_tiles(o, self.mapping))
        return frozenset(forced)

    @property
    def size(self) -> int:
        return len(self.options)

    def layer_sets(self) -> dict[str, int]:
        """Sets of each operator."""
        sets: dict[str, int] = {}
        for opts in self.options:
            sets[opts[0].node] = sets.get(opts[0].node, 0) + 1
        return sets

    @cached_property
    def successors(self) -> list[list[tuple[int, int]]]:
        """For each set, the sets that read its rows, with their edges' latency: built once, as
        the buffer count of every fitting round and the CP-SAT model walk it."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.options]
        for i, mine in enumerate(self.edges):
            for p, lat in mine:
                out[p].append((i, lat))
        return out


def build_problem(graph: Graph, mapping: Mapping, cost: CostModel, rows_per_set: int = 1) -> Problem:
    options = set_options(graph, mapping, cost, rows_per_set)
    firsts = [opts[0] for opts in options]
    # Latencies depend only on where producer and consumer may be: the distinct tiles of each.
    places: dict[tuple[str, int], tuple[int, ...]] = {}
    for opts in options:
        for o in opts:
            if (o.node, o.copy) not in places:
                places[(o.node, o.copy)] = task_tiles(o, mapping)
    sources = [tuple(sorted({o.tile for o in opts})) for opts in options]
    destinations = [sorted({places[(o.node, o.copy)] if o.kind == "mvm" else (o.tile,) for o in opts})
                    for opts in options]
    transfer: dict[tuple, int] = {}
    edges = []
    sends = [0] * len(options)
    for i, mine in enumerate(producers(graph, firsts)):
        row = []
        for p in mine:
            tensor = graph.node(firsts[p].node).outputs[0]
            rows = firsts[p].out_rows[1] - firsts[p].out_rows[0]
            worst = 0
            for src in sources[p]:
                for where in destinations[i]:
                    for dst in where:
                        key = (tensor, rows, src, dst)
                        if key not in transfer:
                            transfer[key] = cost.tensor_transfer_cycles(tensor, rows, src, dst)
                        worst = max(worst, transfer[key])
            if worst:
                sends[p] = cost.link_cycles(cost.rows_bytes(tensor, rows))
            row.append((p, worst))
        edges.append(row)
    streamed = [_set_bytes(graph, cost, opts[0]) > cost.target.buffer.kib_per_tile * 1024
                and row_granular(graph, graph.node(opts[0].node)) is None for opts in options]
    return Problem(graph, mapping, cost, options, edges, sends, cost.write_cycles(), streamed)


def _set_bytes(graph: Graph, cost: CostModel, task: Task) -> float:
    """Bytes of the activation rows a set reads and writes."""
    node = graph.node(task.node)
    rows = [(t, b - a) for t, a, b in task.reads] + [(node.outputs[0], task.out_rows[1] - task.out_rows[0])]
    return sum(cost.rows_bytes(t, r) for t, r in rows)


def check_buffers(problem: Problem, target: Target) -> None:
    """Refuse a chip whose tile buffer cannot hold even one row set's input and output rows.

    A set without row structure (one set over whole tensors) that does not fit is streamed
    through the global memory instead, if the target has one (``[memory]``)."""
    capacity = target.buffer.kib_per_tile * 1024
    graph = problem.graph
    worst, where = 0.0, None
    for i, opts in enumerate(problem.options):
        if problem.streamed[i] and target.memory is not None:
            continue
        need = _set_bytes(graph, problem.cost, opts[0])
        if need > worst:
            worst, where = need, opts[0]
    if worst > capacity:
        whole = row_granular(graph, graph.node(where.node)) is None
        raise CapacityError(f"{'' if whole else f'set {where.index} of '}{where.node} needs {worst / 1024:.1f} KiB "
                            f"of activation buffer for its input and output rows and a tile of target "
                            f"{target.name} has {target.buffer.kib_per_tile:g} KiB; choose a target with a larger "
                            f"[buffer] kib_per_tile{' or a [memory] table to stream it through' if whole else ''}")


def heads_tails(problem: Problem, times: list[int], latency: bool) -> tuple[list[int], list[int]]:
    """Earliest start of each set and least time from its start to the end of any schedule, when
    set i takes ``times[i]`` and edges take their latency (or nothing, without ``latency``)."""
    n = problem.size
    head = [0] * n
    for i in range(n):                          # ids are topological
        head[i] = max((head[p] + times[p] + (lat if latency else 0) for p, lat in problem.edges[i]), default=0)
    tail = [0] * n
    succ = problem.successors
    for i in reversed(range(n)):
        tail[i] = times[i] + max(((lat if latency else 0) + tail[j] for j, lat in succ[i]), default=0)
    return head, tail


def max_copies(problem: Problem, budget: int) -> dict[str, int]:
    """The most copies of each layer the crossbar budget leaves room for, next to one copy of
    every other layer of its segment (at most one per set: more could never be busy)."""
    sizes = problem.mapping.copy_sizes()
    sets = problem.layer_sets()
    out = {}
    for names in problem.mapping.segment_layers():
        one_each = sum(sizes[n] for n in names)
        out.update((n, max(1, min(sets[n], (budget - one_each + sizes[n]) // sizes[n]))) for n in names)
    return out


def lower_bounds(problem: Problem, budget: int) -> dict[str, int]:
    # Only compute time counts: partial-sum reduction and transfers depend on where copies are
    # placed, so they are left out to keep the bounds valid for every duplication.
    compute = [opts[0].compute for opts in problem.options]
    head, tail = heads_tails(problem, compute, latency=False)
    bounds = {"critical_path": max((h + t for h, t in zip(head, tail)), default=0)}
    limit = max_copies(problem, budget)
    tiles = problem.cost.target.chip.tiles
    graph = problem.graph
    root: dict[str, str | None] = {}              # tensor -> crossbar layer whose copies place it
    for node in graph.nodes():
        root[node.outputs[0]] = node.name if node.is_crossbar else \
            next((root[t] for t in node.inputs if t in root), None)
    groups: dict[str, list[int]] = {}
    for i, opts in enumerate(problem.options):
        groups.setdefault(opts[0].node, []).append(i)
    best = {"layer": 0, "gpeu": 0}
    vector_work = 0
    windows: dict[str, tuple[int, int, int]] = {}     # layer -> (work, head + tail, largest set)
    for name, ids in groups.items():
        work = sum(problem.options[i][0].compute for i in ids)
        first = min(head[i] for i in ids)
        # after the last set of the group ends its compute: the rest of its own time and its successors'
        last = min(tail[i] - problem.options[i][0].compute for i in ids)
        if problem.options[ids[0]][0].kind == "mvm":
            best["layer"] = max(best["layer"], first + math.ceil(work / limit[name]) + last)
            windows[name] = (work, first + last, max(problem.options[i][0].compute for i in ids))
        else:
            # a vector set runs on a tile where its input is written: one per copy of the layer behind it
            owner = root[graph.node(name).outputs[0]]
            places = 1 if owner is None else min(limit[owner], tiles)
            best["gpeu"] = max(best["gpeu"], first + math.ceil(work / places) + last)
            vector_work += work
    best["gpeu"] = max(best["gpeu"], math.ceil(vector_work / tiles))
    bounds.update(best)
    bounds["budget"] = _budget_bound(problem, budget, windows, max(bounds.values()))
    if problem.write_cycles:
        bounds["segments"] = _segments_bound(problem, budget, windows, compute, tail)
    return bounds


def _segments_bound(problem: Problem, budget: int, windows: dict[str, tuple[int, int, int]], compute: list[int],
                    tail: list[int]) -> int:
    """The writes of a model run in segments and, between them, each segment's crossbar sets
    (they run only while its weights are in the crossbars: after its write, before the next):
    at least its longest chain, and at least the least time in which the copies its layers then
    need fit the chip."""
    segment = [problem.mapping.layers[opts[0].node].segment if opts[0].kind == "mvm" else -1
               for opts in problem.options]
    spans = []
    for s, names in enumerate(problem.mapping.segment_layers()):
        chain: list[int | None] = [None] * problem.size     # longest from a crossbar set of s to this one's end
        longest = 0
        for i, mine in enumerate(problem.edges):             # ids are topological
            reach = max((chain[p] for p, _ in mine if chain[p] is not None), default=None)
            if segment[i] == s:
                reach = max(reach or 0, 0)
                longest = max(longest, reach + compute[i])
            if reach is not None:
                chain[i] = reach + compute[i]
        own = {name: (work, 0, largest) for name, (work, _, largest) in windows.items() if name in names}
        spans.append(_budget_bound(problem, budget, own, longest))
    after = min(t - c for t, c, s in zip(tail, compute, segment) if s == len(spans) - 1)
    return sum(problem.write_cycles) + sum(spans) + after


def _budget_bound(problem: Problem, budget: int, windows: dict[str, tuple[int, int, int]], low: int) -> int:
    """Least makespan T (at least ``low``) for which the copies every layer of ``windows`` needs
    to do its work between its head and tail fit the budget (binary search: the copies needed
    shrink as T grows)."""
    sizes = problem.mapping.copy_sizes()
    sets = problem.layer_sets()

    def fits(t: int) -> bool:
        used = [0] * problem.mapping.segments      # a segment's copies share the chip
        for name, (work, around, largest) in windows.items():
            room = t - around
            if room < largest:
                return False
            need = math.ceil(work / room)
            if need > sets[name]:
                return False
            used[problem.mapping.layers[name].segment] += need * sizes[name]
        return max(used) <= budget

    if not windows or budget <= 0:
        return 0
    hi = max(low, 1)
    while not fits(hi):
        hi *= 2
    lo = low
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
