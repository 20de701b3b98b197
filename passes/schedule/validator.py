"""An independent check of any schedule.

It does not trust the tasks' own ``reads``: it recomputes from the operators'
geometry which rows each set needs by enumerating kernel taps, expects every
output row of every operator to be produced exactly once, and checks:

- no crossbar or GPEU serves two sets at once; crossbar sets run on all the
  crossbars of one copy of their own layer, vector sets on their tile's GPEU;
- a set starts only after the rows it needs exist on each tile that reads them:
  on its producer's tile at the producer's end; on another tile once they are
  sent (at or after that end), plus their time on the link and the hops;
- no tile's network link carries two messages at once (a set's output rows to
  other tiles; the partial sums a copy's other tiles send home when its crossbars
  stop), and a set lasts until its partial sums have arrived;
- rows spilled to the global memory are stored after their set ends and loaded
  after the store is done, each transfer as long as its bytes take on the
  channel, which carries one at a time; a tile with a load of some rows reads
  them from it, at the load's end plus the memory's latency;
- no tile's buffer holds more than ``[buffer] kib_per_tile`` at any cycle: the
  rows of each set on each tile that reads them, from their arrival (or the start
  of their load) until the last reader there ends; the inputs and output of a set
  without row structure too large for the buffer are streamed through the global
  memory instead (they must come from loads, and are not counted);
- only operators with a row structure (:func:`~cimc.passes.schedule.sets.row_granular`)
  are split into row sets;
- for a model run in segments, every segment is programmed once, for at least as
  long as its rows take to write, and a crossbar set runs only while its own
  segment's weights are in the crossbars.
"""

from __future__ import annotations

import math

from cimc.ir import Graph
from cimc.passes.mapping import Mapping
from cimc.passes.schedule.cost import PARTIAL_SUM_BYTES
from cimc.passes.schedule.model import Schedule
from cimc.passes.schedule.sets import ROW_WISE, WINDOWED, row_granular
from cimc.targets import Target


class ScheduleInvalid(Exception):
    """A schedule broke a rule. Produced by cimc itself, it is a bug; loaded from a file, a corrupt file."""


def _rows(shape: tuple[int, ...]) -> int:
    return shape[2] if len(shape) == 4 else 1


def _needed_rows(graph: Graph, node_name: str, tensor: str, out_rows: tuple[int, int]) -> set[int]:
    node = graph.node(node_name)
    in_rows = _rows(graph.tensors[tensor].shape)
    out_shape = graph.tensors[node.outputs[0]].shape
    if node.op in {"Conv"} | WINDOWED and len(out_shape) == 4 and tensor == node.inputs[0]:
        kh = node.attrs["kernel"][0]
        sh, dh, pt = node.attrs["strides"][0], node.attrs["dilations"][0], node.attrs["pads"][0]
        return {r * sh - pt + i * dh for r in range(*out_rows) for i in range(kh)
                if 0 <= r * sh - pt + i * dh < in_rows}
    if node.op in ROW_WISE and len(out_shape) == 4 and in_rows == out_shape[2] > 1 \
            and len(graph.tensors[tensor].shape) == 4:
        return set(range(*out_rows))
    return set(range(in_rows))


def validate(schedule: Schedule, graph: Graph, mapping: Mapping, target: Target) -> None:
    tasks = schedule.tasks
    if len(schedule.start) != len(tasks):
        raise ScheduleInvalid("schedule has a different number of start times and tasks")
    if [t.id for t in tasks] != list(range(len(tasks))):
        raise ScheduleInvalid(f"task ids are not 0..{len(tasks) - 1} in order")
    produced: dict[str, dict[int, int]] = {}          # tensor -> row -> task id
    for t in tasks:
        if schedule.start[t.id] < 0 or t.compute < 1 or t.duration < t.compute:
            raise ScheduleInvalid(f"task {t.id} ({t.node}) has start {schedule.start[t.id]}, compute "
                                  f"{t.compute}, duration {t.duration}")
        try:
            node = graph.node(t.node)
        except KeyError:
            raise ScheduleInvalid(f"task {t.id} runs unknown node {t.node!r}") from None
        rows = produced.setdefault(node.outputs[0], {})
        for r in range(*t.out_rows):
            if r in rows:
                raise ScheduleInvalid(f"row {r} of {node.outputs[0]} is produced twice (tasks {rows[r]} "
                                      f"and {t.id})")
            rows[r] = t.id
        height = _rows(graph.tensors[node.outputs[0]].shape)
        if tuple(t.out_rows) != (0, height) and row_granular(graph, node) is None:
            raise ScheduleInvalid(f"task {t.id} computes rows {t.out_rows} of {node.op} {node.name}, which has "
                                  f"no row structure")
        if node.is_crossbar:
            layer = mapping.layers[node.name]
            if not 0 <= t.copy < layer.copies:
                raise ScheduleInvalid(f"task {t.id} runs on copy {t.copy} of layer {node.name}, which has "
                                      f"{layer.copies}")
            own = layer.copy(t.copy)
            if t.kind != "mvm" or set(t.resources) != {f"xbar:{x}" for x in own.xbars} \
                    or t.tile != own.home_tile:
                raise ScheduleInvalid(f"task {t.id} of layer {node.name} does not run on the crossbars of "
                                      f"that layer's copy {t.copy}")
        elif t.kind != "vec" or t.resources != (f"gpeu:{t.tile}",):
            raise ScheduleInvalid(f"task {t.id} ({node.op} {node.name}) does not run on its tile's GPEU")
    for node in graph.nodes():
        want = _rows(graph.tensors[node.outputs[0]].shape)
        have = produced.get(node.outputs[0], {})
        if len(have) != want:
            missing = sorted(set(range(want)) - set(have))
            raise ScheduleInvalid(f"{node.name}: output rows {missing[:5]} are never produced")
    _check_writes(schedule, mapping, target)
    # Resources: no overlap of busy intervals.
    busy: dict[str, list[tuple[int, int, int]]] = {}
    for t in tasks:
        for r in t.resources:
            busy.setdefault(r, []).append((schedule.start[t.id], schedule.start[t.id] + t.compute, t.id))
    for r, intervals in busy.items():
        intervals.sort()
        for (s0, e0, a), (s1, _, b) in zip(intervals, intervals[1:]):
            if s1 < e0:
                raise ScheduleInvalid(f"{r} runs tasks {a} and {b} at the same time ({s1} < {e0})")
    _check_network(schedule, graph, mapping, target, produced)


def _check_network(schedule: Schedule, graph: Graph, mapping: Mapping, target: Target,
                   produced: dict[str, dict[int, int]]) -> None:
    """Dependencies recomputed from geometry, with the rows' way over the network."""
    tasks = schedule.tasks
    hop, width = target.noc.hop_cycles, target.noc.bytes_per_cycle
    if schedule.sends and len(schedule.sends) != len(tasks):
        raise ScheduleInvalid("schedule has a different number of send times and tasks")
    readers: dict[int, dict[int, set[int]]] = {}       # producer -> consumer -> tiles reading there
    for t in tasks:
        node = graph.node(t.node)
        where = set(mapping.layers[t.node].copy(t.copy).tiles) if t.kind == "mvm" else {t.tile}
        for tensor in node.inputs:
            if not tensor or graph.tensors[tensor].is_constant or tensor in graph.inputs:
                continue
            for row in _needed_rows(graph, t.node, tensor, t.out_rows):
                readers.setdefault(produced[tensor][row], {}).setdefault(t.id, set()).update(where)
    loads, latency = _check_memory(schedule, graph, target)
    links: dict[int, list[tuple[int, int, str]]] = {}   # tile -> (from, to, what)
    held: dict[int, list[tuple[int, int, float]]] = {}  # tile -> (from, to, bytes) of rows in its buffer
    streamed = [_streamed(graph, t, target) for t in tasks]
    for p, consumers in sorted(readers.items()):
        task, end, sent = tasks[p], schedule.end(p), schedule.send(p)
        if sent < end:
            raise ScheduleInvalid(f"task {p} ({task.node} set {task.index}) sends its rows at {sent}, before "
                                  f"it ends at {end}")
        nbytes = _rows_bytes(graph, task, target)
        cycles = math.ceil(nbytes / width)

        def network(tile: int) -> int:
            """When the rows are on ``tile`` without a load: at the end on their own tile, else
            after their send, their time on the link and the hops."""
            return end if tile == task.tile else sent + cycles + target.hops(task.tile, tile) * hop

        if any(tile != task.tile and (p, tile) not in loads for tiles in consumers.values() for tile in tiles):
            links.setdefault(task.tile, []).append((sent, sent + cycles, f"the rows of task {p}"))
        until: dict[tuple[int, int], int] = {}          # (tile, load start or -1) -> last reader's end
        for c, tiles in consumers.items():
            arrival = 0
            for tile in tiles:
                load = -1
                if (p, tile) in loads:
                    arrived = [x for x in loads[(p, tile)] if x.start + x.duration + latency <= schedule.start[c]]
                    if not arrived:
                        raise ScheduleInvalid(f"task {c} ({tasks[c].node} set {tasks[c].index}) starts at "
                                              f"{schedule.start[c]} on tile {tile} before any load of the rows of "
                                              f"task {p} ({task.node} set {task.index}) has arrived there")
                    load = max(arrived, key=lambda x: (x.start + x.duration, x.start)).start
                elif streamed[p] or streamed[c]:
                    raise ScheduleInvalid(f"task {c} ({tasks[c].node} set {tasks[c].index}) reads the rows of "
                                          f"task {p} on tile {tile} from its buffer, but they are streamed (too "
                                          f"large for it) and must come from the global memory")
                else:
                    arrival = max(arrival, network(tile))
                if not streamed[p] and not streamed[c]:
                    until[(tile, load)] = max(until.get((tile, load), 0), schedule.end(c))
            if schedule.start[c] < arrival:
                raise ScheduleInvalid(f"task {c} ({tasks[c].node} set {tasks[c].index}) starts at "
                                      f"{schedule.start[c]} before the rows of task {p} ({task.node} set "
                                      f"{task.index}) arrive at {arrival}")
        for (tile, load), last in until.items():
            held.setdefault(tile, []).append((load if load >= 0 else network(tile), last, nbytes))
    _check_buffers(held, target)
    for t in tasks:
        if t.kind != "mvm":
            continue
        own = mapping.layers[t.node].copy(t.copy)
        stop = schedule.start[t.id] + t.compute
        for tile in own.tiles:
            if tile == own.home_tile:
                continue
            outputs = len({c for x in own.crossbars if x.tile == tile for c in range(*x.cols)})
            cycles = math.ceil(t.pixels * outputs * PARTIAL_SUM_BYTES / width)
            links.setdefault(tile, []).append((stop, stop + cycles, f"the partial sums of task {t.id}"))
            if t.duration < t.compute + cycles + target.hops(tile, own.home_tile) * hop:
                raise ScheduleInvalid(f"task {t.id} ({t.node} set {t.index}) ends before the partial sums of "
                                      f"tile {tile} reach tile {own.home_tile}")
    for tile, messages in links.items():
        messages.sort()
        for (s0, e0, a), (s1, _, b) in zip(messages, messages[1:]):
            if s1 < e0:
                raise ScheduleInvalid(f"the network link of tile {tile} carries {a} and {b} at the same time "
                                      f"({s1} < {e0})")


def _rows_bytes(graph: Graph, task, target: Target) -> float:
    out = graph.tensors[graph.node(task.node).outputs[0]]
    return out.size * target.precision.activation_bits / 8 * (task.out_rows[1] - task.out_rows[0]) / _rows(out.shape)


def _streamed(graph: Graph, task, target: Target) -> bool:
    """A set without row structure whose whole inputs and output exceed a tile's buffer."""
    node = graph.node(task.node)
    if row_granular(graph, node) is not None or target.memory is None:
        return False
    size = sum(graph.tensors[t].size for t in node.inputs + node.outputs[:1]
               if t and not graph.tensors[t].is_constant)
    return size * target.precision.activation_bits / 8 > target.buffer.kib_per_tile * 1024


def _check_memory(schedule: Schedule, graph: Graph, target: Target) -> tuple[dict, int]:
    """Stores and loads: each after what it moves exists, as long as its bytes take, one at a
    time on the channel. Returns the loads of each (task, tile) and the memory's latency."""
    if not schedule.stores and not schedule.loads:
        return {}, 0
    if target.memory is None:
        raise ScheduleInvalid(f"the schedule moves rows to a global memory and target {target.name} has none")
    tasks, memory = schedule.tasks, target.memory
    stores, loads, channel = {}, {}, []
    for x in schedule.stores:
        if not 0 <= x.task < len(tasks) or x.task in stores:
            raise ScheduleInvalid(f"a store of task {x.task}: no such task, or stored twice")
        stores[x.task] = x
        channel.append((x.start, x.start + x.duration, f"the store of task {x.task}"))
        if x.start < schedule.end(x.task):
            raise ScheduleInvalid(f"task {x.task} is stored from {x.start}, before it ends at {schedule.end(x.task)}")
    for x in schedule.loads:
        if x.task not in stores or not 0 <= x.tile < target.chip.tiles:
            raise ScheduleInvalid(f"a load of task {x.task} into tile {x.tile}: never stored, or no such tile")
        loads.setdefault((x.task, x.tile), []).append(x)
        channel.append((x.start, x.start + x.duration, f"the load of task {x.task} into tile {x.tile}"))
        there = stores[x.task].start + stores[x.task].duration + memory.latency_cycles
        if x.start < there:
            raise ScheduleInvalid(f"the rows of task {x.task} are loaded into tile {x.tile} from {x.start}, before "
                                  f"their store is in memory at {there}")
    for x in list(schedule.stores) + list(schedule.loads):
        need = math.ceil(_rows_bytes(graph, tasks[x.task], target) / memory.bytes_per_cycle)
        if x.duration < need:
            raise ScheduleInvalid(f"a transfer of the rows of task {x.task} to or from the global memory takes "
                                  f"{x.duration} cycles; their bytes take {need}")
    channel.sort()
    for (s0, e0, a), (s1, _, b) in zip(channel, channel[1:]):
        if s1 < e0:
            raise ScheduleInvalid(f"the channel to the global memory carries {a} and {b} at the same time "
                                  f"({s1} < {e0})")
    return loads, memory.latency_cycles


def _check_buffers(held: dict[int, list[tuple[int, int, float]]], target: Target) -> None:
    capacity = target.buffer.kib_per_tile * 1024
    for tile, intervals in sorted(held.items()):
        # releases before acquisitions at one cycle (intervals are half-open)
        events = sorted([(a, 1, size) for a, b, size in intervals if b > a] +
                        [(b, 0, -size) for a, b, size in intervals if b > a])
        level = 0.0
        for cycle, _, delta in events:
            level += delta
            if level > capacity * (1 + 1e-12):
                raise ScheduleInvalid(f"tile {tile} holds {level / 1024:.1f} KiB of rows at cycle {cycle}, more "
                                      f"than its {target.buffer.kib_per_tile:g} KiB buffer")


def _check_writes(schedule: Schedule, mapping: Mapping, target: Target) -> None:
    """Segments are written one after another, and each is in the crossbars while its sets run."""
    segments = mapping.segments
    writes = sorted(schedule.writes, key=lambda w: w.segment)
    if segments == 1:
        if writes:
            raise ScheduleInvalid("the schedule reprograms crossbars of a model that fits the chip")
        return
    if [w.segment for w in writes] != list(range(segments)):
        raise ScheduleInvalid(f"the model has {segments} segments but the schedule writes segments "
                              f"{[w.segment for w in writes]}")
    for a, b in zip(writes, writes[1:]):
        if b.start < a.end:
            raise ScheduleInvalid(f"segment {b.segment} is written from {b.start}, before segment "
                                  f"{a.segment} is written at {a.end}")
    rows: dict[tuple[int, int], int] = {}          # (segment, crossbar) -> wordlines programmed
    for lm in mapping.layers.values():
        for x in lm.crossbars:
            key = (x.segment, x.xbar)
            rows[key] = max(rows.get(key, 0), x.offset[0] + x.rows[1] - x.rows[0])
    for w in writes:
        need = max(r for (s, _), r in rows.items() if s == w.segment) * target.timing.write_cycles_per_row
        if w.start < 0 or w.duration < need:
            raise ScheduleInvalid(f"segment {w.segment} is written in {w.duration} cycles from {w.start}; "
                                  f"its rows take {need}")
    for t in schedule.tasks:
        if t.kind != "mvm":
            continue
        segment = mapping.layers[t.node].segment
        start, stop = schedule.start[t.id], schedule.start[t.id] + t.compute
        later = writes[segment + 1].start if segment + 1 < segments else None
        if start < writes[segment].end or (later is not None and stop > later):
            raise ScheduleInvalid(f"task {t.id} ({t.node} set {t.index}) runs from {start} to {stop}, "
                                  f"outside the time segment {segment}'s weights are in the crossbars")
