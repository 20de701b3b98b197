"""Code generation: a scheduled, mapped graph -> one instruction stream per tile.

Instructions are plain dicts (they go to JSON unchanged), each with the cycle
``t`` at which it issues and, for those that take time, ``done``: the cycle at
which its result is committed. The set:

``load``       host writes graph input ``tensor`` into this tile's buffer
``mvm``        crossbars ``xbars`` (all on this tile, all of one copy of a duplicated
               layer) compute output rows ``rows`` of ``layer``; partial sums accumulate into the tile's ``acc:<layer>``. Each
               block reads its inputs through its row gather: the input rows of its
               wordlines, in order, are the contiguous range of its ``rows`` or, for a
               block laid out by SWS, the indices ``xbar_rows/<id>`` stored with the
               crossbar contents; its sums go to the channels of its ``cols``, or to
               ``xbar_cols/<id>`` for regrouped outputs (a fixed routing, programmed with
               the crossbar, not an instruction)
``send``       rows ``rows`` of ``tensor`` leave for tile ``dst`` (message ``msg``)
``recv``       message ``msg`` lands; ``reduce`` adds partial sums instead of writing
``writeback``  the digital periphery scales ``acc:<layer>`` rows, adds the bias and
               writes the layer's output activation rows (on the home tile of the copy
               that computed them)
``vec``        the GPEU computes output rows ``rows`` of vector operator ``node`` (all
               of them for an operator without row structure)
``store``      host reads rows ``rows`` of graph output ``tensor``
``spill``      rows ``rows`` of ``tensor`` (a set's output rows, on the set's tile), read from
               this tile's buffer at ``t``, are committed to the chip's global memory at
               ``done`` (transfer end plus the memory's latency; a schedule ``Store``)
``fill``       rows ``rows`` of ``tensor``, read from the global memory at ``t`` (they must be
               committed there by then), are committed into this tile's buffer at ``done``
               (a schedule ``Load``: the tile gets those rows from it, not over the network)
``write``      blocks ``xbars`` of segment ``segment`` are programmed into this tile's
               crossbars (models run in segments only; they replace what was there)
"""

from __future__ import annotations

from cimc.ir import Graph
from cimc.passes.mapping import Mapping
from cimc.passes.schedule.cost import PARTIAL_SUM_BYTES, CostModel
from cimc.passes.schedule.model import Schedule, task_tiles

#: Issue order of instructions that share a cycle: data arrives before it is used.
PRIORITY = {"load": 0, "write": 0, "recv": 1, "fill": 1, "writeback": 2, "mvm": 3, "vec": 3, "send": 4,
            "spill": 4, "store": 5}


def accumulator(layer: str) -> str:
    return f"acc:{layer}"


def generate(graph: Graph, mapping: Mapping, schedule: Schedule, cost: CostModel) -> list[list[dict]]:
    tiles: list[list[dict]] = [[] for _ in range(cost.target.chip.tiles)]
    messages = 0

    def message(tensor: str, rows: tuple[int, int], src: int, dst: int, at: int, arrive: int,
                reduce: bool = False) -> None:
        nonlocal messages
        tiles[src].append({"t": at, "op": "send", "msg": messages, "tensor": tensor,
                           "rows": list(rows), "dst": dst})
        tiles[dst].append({"t": arrive, "op": "recv", "msg": messages, "tensor": tensor,
                           "rows": list(rows), "src": src, "reduce": reduce})
        messages += 1

    for w in schedule.writes:
        by_tile: dict[int, list[int]] = {}
        for layer in mapping.layers.values():
            for x in layer.crossbars:
                if x.segment == w.segment:
                    by_tile.setdefault(x.tile, []).append(x.id)
        for tile, ids in sorted(by_tile.items()):
            tiles[tile].append({"t": w.start, "op": "write", "done": w.end, "segment": w.segment,
                                "xbars": sorted(ids)})
    producers: dict[str, list] = {}
    for task in schedule.tasks:
        producers.setdefault(graph.node(task.node).outputs[0], []).append(task)
    if (schedule.stores or schedule.loads) and cost.target.memory is None:
        raise ValueError(f"schedule spills rows to a global memory, but target {cost.target.name} has no [memory]")
    latency = 0 if cost.target.memory is None else cost.target.memory.latency_cycles
    for s in schedule.stores:
        p = schedule.tasks[s.task]
        tiles[p.tile].append({"t": s.start, "op": "spill", "done": s.start + s.duration + latency,
                              "tensor": graph.node(p.node).outputs[0], "rows": list(p.out_rows)})
    for x in schedule.loads:
        p = schedule.tasks[x.task]
        tiles[x.tile].append({"t": x.start, "op": "fill", "done": x.start + x.duration + latency,
                              "tensor": graph.node(p.node).outputs[0], "rows": list(p.out_rows)})
    loaded: set[tuple[str, int]] = set()
    # (producer task, destination tile): rows already on their way; a tile that loads a set's
    # rows from the global memory gets no message for them
    sent: set[tuple[int, int]] = {(x.task, x.tile) for x in schedule.loads}
    for task in schedule.tasks:
        start = schedule.start[task.id]
        node = graph.node(task.node)
        for dst in task_tiles(task, mapping):
            for tensor, a, b in task.reads:
                if tensor in graph.inputs:
                    if (tensor, dst) not in loaded:
                        tiles[dst].append({"t": 0, "op": "load", "tensor": tensor})
                        loaded.add((tensor, dst))
                    continue
                for p in producers[tensor]:
                    if max(a, p.out_rows[0]) < min(b, p.out_rows[1]) and p.tile != dst \
                            and (p.id, dst) not in sent:
                        at = schedule.send(p.id)
                        rows = p.out_rows[1] - p.out_rows[0]
                        message(tensor, p.out_rows, p.tile, dst, at,
                                at + cost.tensor_transfer_cycles(tensor, rows, p.tile, dst))
                        sent.add((p.id, dst))
        if task.kind == "vec":
            tiles[task.tile].append({"t": start, "op": "vec", "done": start + task.duration,
                                     "node": node.name, "rows": list(task.out_rows)})
            continue
        layer = mapping.layers[node.name].copy(task.copy)
        compute_end = start + task.compute
        for tile in layer.tiles:
            xbars = [x.id for x in layer.crossbars if x.tile == tile]
            tiles[tile].append({"t": start, "op": "mvm", "done": compute_end, "layer": node.name,
                                "set": task.index, "rows": list(task.out_rows), "xbars": xbars})
            if tile != layer.home_tile:
                nbytes = task.pixels * cost.partial_outputs(layer, tile) * PARTIAL_SUM_BYTES
                arrive = compute_end + cost.transfer_cycles(nbytes, tile, layer.home_tile)
                message(accumulator(node.name), task.out_rows, tile, layer.home_tile, compute_end,
                        arrive, reduce=True)
        tiles[layer.home_tile].append({"t": start + task.duration, "op": "writeback",
                                       "layer": node.name, "rows": list(task.out_rows)})
    for out in graph.outputs:
        for task in producers[out]:
            tiles[task.tile].append({"t": schedule.end(task.id), "op": "store", "tensor": out,
                                     "rows": list(task.out_rows)})
    for stream in tiles:
        stream.sort(key=lambda ins: (ins["t"], PRIORITY[ins["op"]]))
    return tiles
