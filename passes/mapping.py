"""Tile each crossbar operator's weight matrix over crossbars and place them on tiles.

A layer's (K, N) integer matrix is cut into row blocks of ``crossbar.rows`` and
column blocks of ``outputs_per_crossbar`` outputs (each output takes a
differential pair of ``weight_slices`` columns). A column block never straddles
two convolution groups, because the columns of one crossbar share its rows and
so its inputs. Crossbars are placed tile by tile in layer order; a layer that
fits in one tile is kept in one tile, so its partial sums need no network.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.errors import CapacityError
from cimc.ir import Graph, Node
from cimc.targets import Target


@dataclass(frozen=True)
class CrossbarSlot:
    id: int
    layer: str
    tile: int
    pe: int
    group: int
    rows: tuple[int, int]     # row range within the group's K
    cols: tuple[int, int]     # output channels (columns of the (K, N) matrix)


@dataclass(frozen=True)
class LayerMapping:
    layer: str
    k: int                    # rows of one group's matrix
    n: int                    # all output channels
    group: int
    crossbars: tuple[CrossbarSlot, ...]

    @property
    def tiles(self) -> tuple[int, ...]:
        return tuple(sorted({x.tile for x in self.crossbars}))

    @property
    def home_tile(self) -> int:
        """Where partial sums are reduced and the layer's output lives."""
        return self.crossbars[0].tile

    @property
    def columns_used(self) -> int:
        """Most occupied output channels of any one crossbar (they all read in parallel)."""
        return max(x.cols[1] - x.cols[0] for x in self.crossbars)


@dataclass(frozen=True)
class Mapping:
    layers: dict[str, LayerMapping]
    crossbars_available: int

    @property
    def crossbars_used(self) -> int:
        return sum(len(m.crossbars) for m in self.layers.values())

    @property
    def tiles_used(self) -> int:
        return len({x.tile for m in self.layers.values() for x in m.crossbars})


def blocks(node: Node, graph: Graph, target: Target) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
    """(group, row range, column range) of every crossbar a layer needs."""
    quant = node.attrs["quant"]
    k, n = quant.w_int.shape
    group = node.attrs.get("group", 1)
    n_g = n // group
    rows, per = target.crossbar.rows, target.outputs_per_crossbar
    out = []
    for g in range(group):
        for c0 in range(g * n_g, (g + 1) * n_g, per):
            for r0 in range(0, k, rows):
                out.append((g, (r0, min(r0 + rows, k)), (c0, min(c0 + per, (g + 1) * n_g))))
    return out


def map_layers(graph: Graph, target: Target) -> Mapping:
    plans = {node.name: blocks(node, graph, target) for node in graph.crossbar_nodes()}
    needed = sum(len(p) for p in plans.values())
    if needed > target.total_crossbars:
        worst = max(plans, key=lambda name: len(plans[name]))
        raise CapacityError(
            f"the model needs {needed} crossbars and target {target.name} has {target.total_crossbars} "
            f"({target.chip.tiles} tiles x {target.chip.pes_per_tile}); the largest layer, {worst}, "
            f"needs {len(plans[worst])}. Choose a larger target or a target file with more tiles")
    order = [node.name for node in graph.crossbar_nodes()]
    # Keep each layer inside one tile where that still fits the chip; else pack densely.
    slots = _place(plans, order, target.chip.pes_per_tile, keep_layers_whole=True)
    ids = [s.id for layer in slots.values() for s in layer]
    if ids and max(ids) >= target.total_crossbars:
        slots = _place(plans, order, target.chip.pes_per_tile, keep_layers_whole=False)
    layers = {}
    for node in graph.crossbar_nodes():
        k, n = node.attrs["quant"].w_int.shape
        layers[node.name] = LayerMapping(node.name, k, n, node.attrs.get("group", 1),
                                         tuple(slots[node.name]))
    return Mapping(layers, target.total_crossbars)


def _place(plans: dict[str, list], order: list[str], per_tile: int,
           keep_layers_whole: bool) -> dict[str, list[CrossbarSlot]]:
    placed: dict[str, list[CrossbarSlot]] = {}
    next_slot = 0
    for name in order:
        plan = plans[name]
        free_here = per_tile - next_slot % per_tile
        if keep_layers_whole and free_here < len(plan) <= per_tile:
            next_slot += free_here
        placed[name] = [CrossbarSlot(id=next_slot + i, layer=name, tile=(next_slot + i) // per_tile,
                                     pe=(next_slot + i) % per_tile, group=g, rows=rows, cols=cols)
                        for i, (g, rows, cols) in enumerate(plan)]
        next_slot += len(plan)
    return placed
