"""Tasks and schedules: the data every scheduler produces and the validator checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from cimc.ir import Graph
from cimc.passes.mapping import Mapping
from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.sets import node_sets


@dataclass(frozen=True)
class Task:
    """One set of one operator, placed on hardware.

    ``resources`` are busy for ``compute`` cycles from the start; the set's output
    rows exist ``duration`` cycles after the start (partial sums may still travel).
    ``reductions``: the partial sums the copy's other tiles send to its home tile when
    the crossbars stop, as (tile, cycles that tile's NoC link is busy sending them).
    """

    id: int
    node: str
    kind: str                                 # "mvm" or "vec"
    index: int
    out_rows: tuple[int, int]
    pixels: int
    tile: int
    resources: tuple[str, ...]
    compute: int
    duration: int
    reads: tuple[tuple[str, int, int], ...]
    segment: int = 0                          # crossbar contents it needs (see mapping)
    copy: int = 0                             # which copy of a duplicated layer runs it
    reductions: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Write:
    """Programming one segment's weights into the crossbars (reprogrammed models only)."""
    segment: int
    start: int
    duration: int

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass(frozen=True)
class Store:
    """A set's output rows written to the global memory (``[memory]``) over its channel, from
    the set's tile: they are there ``latency_cycles`` after the transfer ends."""
    task: int
    start: int
    duration: int


@dataclass(frozen=True)
class Load:
    """Rows of set ``task`` read back from the global memory into ``tile``'s buffer: they are
    there ``latency_cycles`` after the transfer ends, and take buffer space from its start."""
    task: int
    tile: int
    start: int
    duration: int


def serving_load(loads: list[Load], start: int, latency: int) -> Load | None:
    """The load of some rows that a reader starting at ``start`` reads: the last of them to
    arrive by then (None: none has). The list schedulers and the buffer count share this rule."""
    arrived = [x for x in loads if x.start + x.duration + latency <= start]
    return max(arrived, key=lambda x: (x.start + x.duration, x.start), default=None)


@dataclass
class Schedule:
    """Start of every set, and when each set's output rows enter the network on chip.

    ``sends[i]``: the cycle set i starts sending its rows to other tiles over its tile's
    link (at its end, or later when the link is busy); empty: every set sends as it ends.
    ``stores`` and ``loads``: the rows spilled to the global memory because a tile's buffer
    could not hold them until they are read (:mod:`.memory`); a tile reads those rows from a
    load, not from the network.
    """
    scheduler: str
    tasks: list[Task]
    start: list[int]
    writes: list[Write] = field(default_factory=list)
    sends: list[int] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)

    def end(self, task_id: int) -> int:
        return self.start[task_id] + self.tasks[task_id].duration

    def send(self, task_id: int) -> int:
        return self.sends[task_id] if self.sends else self.end(task_id)

    @property
    def makespan(self) -> int:
        return max([self.end(t.id) for t in self.tasks] + [w.end for w in self.writes], default=0)

    def busy_crossbar_cycles(self) -> int:
        return sum(t.compute * len(t.resources) for t in self.tasks if t.kind == "mvm")

    def to_dict(self) -> dict:
        return {"scheduler": self.scheduler, "start": list(self.start), "sends": list(self.sends),
                "tasks": [asdict(t) for t in self.tasks], "writes": [asdict(w) for w in self.writes],
                "stores": [asdict(s) for s in self.stores], "loads": [asdict(x) for x in self.loads]}

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        tasks = []
        for t in data["tasks"]:
            tasks.append(Task(**{**t, "out_rows": tuple(t["out_rows"]), "resources": tuple(t["resources"]),
                                 "reads": tuple(tuple(r) for r in t["reads"]),
                                 "reductions": tuple(tuple(r) for r in t["reductions"])}))
        return cls(data["scheduler"], tasks, [int(s) for s in data["start"]],
                   [Write(**w) for w in data["writes"]], [int(s) for s in data["sends"]],
                   [Store(**s) for s in data["stores"]], [Load(**x) for x in data["loads"]])


def set_options(graph: Graph, mapping: Mapping, cost: CostModel, rows_per_set: int = 1) -> list[list[Task]]:
    """Every set of every node (in topological order, the set's position is its task id), as one
    task per place that could run it: each copy of a crossbar layer; for a vector set, the GPEUs of
    each tile where its first input's rows are written (the home tiles of the producing layer's
    copies, through chains of vector operators), so vector work spreads with duplication.
    """
    options: list[list[Task]] = []
    homes: dict[str, tuple[int, ...]] = {}
    for node in graph.nodes():
        if node.is_crossbar:
            layer = mapping.layers[node.name]
            copies = [layer.copy(c) for c in range(layer.copies)]
            timing: dict[tuple[int, int], tuple[int, int, tuple]] = {}
            for s in node_sets(graph, node, rows_per_set):
                mine = []
                for c, lc in enumerate(copies):
                    if (c, s.pixels) not in timing:
                        timing[(c, s.pixels)] = cost.set_cycles(lc, s.pixels) + (cost.reductions(lc, s.pixels),)
                    compute, duration, reductions = timing[(c, s.pixels)]
                    mine.append(Task(len(options), node.name, "mvm", s.index, s.out_rows, s.pixels, lc.home_tile,
                                     tuple(f"xbar:{x}" for x in lc.xbars), compute, duration, s.reads,
                                     layer.segment, c, reductions))
                # A set's rows are taken to exist after its slowest copy's reduction, whichever
                # copy runs it: the schedulers then agree on every set's time before choosing copies.
                slowest = max(o.duration for o in mine)
                options.append([replace(o, duration=slowest) for o in mine])
            tiles = tuple(dict.fromkeys(lc.home_tile for lc in copies))
        else:
            tiles = next((homes[t] for t in node.inputs if t in homes), (0,))
            for s in node_sets(graph, node, rows_per_set):
                cycles = cost.vector_cycles(node, s.out_rows)
                options.append([Task(len(options), node.name, "vec", s.index, s.out_rows, s.pixels, tile,
                                     (f"gpeu:{tile}",), cycles, cycles, s.reads) for tile in tiles])
        homes[node.outputs[0]] = tiles
    return options


def task_tiles(task: Task, mapping: Mapping) -> tuple[int, ...]:
    """Tiles that need a task's inputs: every tile holding one of its copy's crossbars."""
    if task.kind == "mvm":
        return mapping.layers[task.node].copy_tiles[task.copy]
    return (task.tile,)


def producers(graph: Graph, tasks: list[Task]) -> list[list[int]]:
    """For each task, the tasks that produce rows it reads: the edges of the set dependency graph."""
    by_tensor: dict[str, list[Task]] = {}
    for task in tasks:
        by_tensor.setdefault(graph.node(task.node).outputs[0], []).append(task)
    edges: list[list[int]] = []
    for task in tasks:
        edges.append([p.id for tensor, a, b in task.reads for p in by_tensor.get(tensor, [])
                      if max(a, p.out_rows[0]) < min(b, p.out_rows[1])])
    return edges
