"""Tasks and schedules: the data every scheduler produces and the validator checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cimc.ir import Graph
from cimc.passes.mapping import Mapping
from cimc.passes.schedule.cost import CostModel
from cimc.passes.schedule.sets import node_sets


@dataclass(frozen=True)
class Task:
    """One set of one operator, placed on hardware.

    ``resources`` are busy for ``compute`` cycles from the start; the set's output
    rows exist ``duration`` cycles after the start (partial sums may still travel).
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


@dataclass(frozen=True)
class Write:
    """Programming one segment's weights into the crossbars (reprogrammed models only)."""
    segment: int
    start: int
    duration: int

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass
class Schedule:
    scheduler: str
    tasks: list[Task]
    start: list[int]
    writes: list[Write] = field(default_factory=list)

    def end(self, task_id: int) -> int:
        return self.start[task_id] + self.tasks[task_id].duration

    @property
    def makespan(self) -> int:
        return max([self.end(t.id) for t in self.tasks] + [w.end for w in self.writes], default=0)

    def busy_crossbar_cycles(self) -> int:
        return sum(t.compute * len(t.resources) for t in self.tasks if t.kind == "mvm")

    def to_dict(self) -> dict:
        return {"scheduler": self.scheduler, "start": list(self.start),
                "tasks": [asdict(t) for t in self.tasks], "writes": [asdict(w) for w in self.writes]}

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        tasks = []
        for t in data["tasks"]:
            tasks.append(Task(**{**t, "out_rows": tuple(t["out_rows"]), "resources": tuple(t["resources"]),
                                 "reads": tuple(tuple(r) for r in t["reads"])}))
        return cls(data["scheduler"], tasks, [int(s) for s in data["start"]],
                   [Write(**w) for w in data["writes"]])


def build_tasks(graph: Graph, mapping: Mapping, cost: CostModel) -> list[Task]:
    """Every set of every node, with the hardware it runs on and its cost."""
    tasks: list[Task] = []
    home: dict[str, int] = {}
    for node in graph.nodes():
        if node.is_crossbar:
            layer = mapping.layers[node.name]
            tile = layer.home_tile
            resources = tuple(f"xbar:{x}" for x in layer.xbars)
            for s in node_sets(graph, node):
                compute, duration = cost.set_cycles(layer, s.pixels)
                tasks.append(Task(len(tasks), node.name, "mvm", s.index, s.out_rows, s.pixels, tile,
                                  resources, compute, duration, s.reads, layer.segment))
        else:
            producers = [home[t] for t in node.inputs if t in home]
            tile = producers[0] if producers else 0
            cycles = cost.vector_cycles(node)
            for s in node_sets(graph, node):
                tasks.append(Task(len(tasks), node.name, "vec", s.index, s.out_rows, s.pixels, tile,
                                  (f"gpeu:{tile}",), cycles, cycles, s.reads))
        home[node.outputs[0]] = tile
    return tasks


def task_tiles(task: Task, mapping: Mapping) -> tuple[int, ...]:
    """Tiles that need a task's inputs: every tile holding one of its crossbars."""
    if task.kind == "mvm":
        return mapping.layers[task.node].tiles
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


def dependencies(graph: Graph, tasks: list[Task], mapping: Mapping,
                 cost: CostModel) -> list[list[tuple[int, int]]]:
    """For each task: (producer task, cycles to bring that task's rows here) for every row it reads.

    A producer set's rows travel as one message, whichever rows of it a consumer needs.
    """
    deps: list[list[tuple[int, int]]] = []
    for task, sources in zip(tasks, producers(graph, tasks)):
        mine = []
        for pid in sources:
            p = tasks[pid]
            tensor = graph.node(p.node).outputs[0]
            move = max(cost.tensor_transfer_cycles(tensor, p.out_rows[1] - p.out_rows[0], p.tile, dst)
                       for dst in task_tiles(task, mapping))
            mine.append((pid, move))
        deps.append(mine)
    return deps
