"""Tile each crossbar operator's weight matrix over crossbars and place them on tiles.

A layer's (K, N) integer matrix is cut into *blocks*: row ranges of at most
``crossbar.rows`` and column ranges of at most ``outputs_per_crossbar`` outputs
(each output takes ``columns_per_weight`` bitlines). A block never straddles two
convolution groups, because the columns of one crossbar share its rows and so
its inputs. Groups small enough are packed block-diagonally, several to one
crossbar (a depthwise 3x3 layer puts 14 channels on a 128x128 crossbar instead of
one): each group gets its own rows and columns, the cells between them stay
erased, and one read serves every group on the crossbar.

Crossbars are placed tile by tile in layer order; a layer that fits in one tile
is kept in one tile, so its partial sums need no network. A model larger than
the chip is refused unless reprogramming is allowed: then the layers are cut,
in topological order, into *segments* that each fit the chip and are programmed
one after another, every segment reusing the crossbars from the first. A layer
larger than the whole chip fits no segment: the compile first cuts it by output
channels into parts that do (:mod:`cimc.passes.split`).

**Rows and outputs of a block.** ``rows`` and ``cols`` are spans of *positions* in
the order in which the layer group's matrix rows and outputs are laid out. In the
natural order a position is the row (or output channel) itself, and the block
holds a contiguous piece of the matrix. Sorted weight sectioning
(:mod:`cimc.passes.sws`) lays rows out in its own order per crossbar and may
group outputs out of order: such a block also carries ``row_index`` (the row of
the group's K on each of its wordlines) and, for regrouped outputs,
``col_index`` (the output channel of each of its outputs). The span's length is
the block's height or width either way; :func:`row_indices` and
:func:`col_indices` give the matrix rows and channels of any block.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from cimc.errors import CapacityError
from cimc.ir import Graph, Node
from cimc.targets import Target


@dataclass(frozen=True)
class CrossbarSlot:
    """One block of a layer's matrix on one physical crossbar."""
    id: int                   # the block (its contents are stored under this id)
    layer: str
    xbar: int                 # physical crossbar: tile * pes_per_tile + pe
    tile: int
    pe: int
    group: int
    rows: tuple[int, int]     # span of row positions (natural order: rows of the group's K)
    cols: tuple[int, int]     # span of output positions (natural order: output channels)
    offset: tuple[int, int] = (0, 0)   # first wordline and first output position on the crossbar
    segment: int = 0
    copy: int = 0             # which copy of a duplicated layer the block belongs to
    # SWS: the group's K row on each wordline, and the channel of each output when regrouped.
    row_index: np.ndarray | None = field(default=None, compare=False, repr=False)
    col_index: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LayerMapping:
    layer: str
    k: int                    # rows of one group's matrix
    n: int                    # all output channels
    group: int
    crossbars: tuple[CrossbarSlot, ...]       # every block of every copy

    @property
    def copies(self) -> int:
        return 1 + max(x.copy for x in self.crossbars)

    def copy(self, index: int) -> "LayerMapping":
        """One copy of the layer on its own: each copy holds the whole matrix and computes sets alone."""
        return LayerMapping(self.layer, self.k, self.n, self.group,
                            tuple(x for x in self.crossbars if x.copy == index))

    @property
    def tiles(self) -> tuple[int, ...]:
        return tuple(sorted({x.tile for x in self.crossbars}))

    @cached_property
    def copy_tiles(self) -> tuple[tuple[int, ...], ...]:
        """The tiles of each copy: what the schedulers ask for each set they place, every round."""
        tiles: list[set[int]] = [set() for _ in range(self.copies)]
        for x in self.crossbars:
            tiles[x.copy].add(x.tile)
        return tuple(tuple(sorted(t)) for t in tiles)

    @property
    def xbars(self) -> tuple[int, ...]:
        """The physical crossbars the layer occupies."""
        return tuple(sorted({x.xbar for x in self.crossbars}))

    @property
    def segment(self) -> int:
        return self.crossbars[0].segment

    @property
    def home_tile(self) -> int:
        """Where partial sums are reduced and the layer's output is written (of the first copy,
        for a duplicated layer: take :meth:`copy` for another's)."""
        return self.crossbars[0].tile

    @property
    def columns_used(self) -> int:
        """Most outputs held by any one crossbar (they all read in parallel)."""
        per: dict[int, int] = {}
        for x in self.crossbars:          # (copies sit on crossbars of their own)
            per[x.xbar] = per.get(x.xbar, 0) + x.cols[1] - x.cols[0]
        return max(per.values())


@dataclass(frozen=True)
class Mapping:
    layers: dict[str, LayerMapping]
    crossbars_available: int

    @property
    def crossbars_used(self) -> int:
        """Physical crossbars holding weights at any time (segments reuse the same ones)."""
        return len({x.xbar for m in self.layers.values() for x in m.crossbars})

    @property
    def crossbars_programmed(self) -> int:
        """Crossbar contents over all segments: what a full programming of the model writes."""
        return len({(x.segment, x.xbar) for m in self.layers.values() for x in m.crossbars})

    @property
    def segments(self) -> int:
        return 1 + max((m.segment for m in self.layers.values()), default=0)

    def segment_layers(self) -> list[list[str]]:
        """Each segment's layers in layer order (one list when the model fits the chip): what
        shares the chip's crossbars, copies included."""
        out: list[list[str]] = [[] for _ in range(self.segments)]
        for name, lm in self.layers.items():
            out[lm.segment].append(name)
        return out

    def copy_sizes(self) -> dict[str, int]:
        """Crossbars one copy of each layer occupies, in layer order."""
        return {name: len(lm.copy(0).xbars) for name, lm in self.layers.items()}

    @property
    def tiles_used(self) -> int:
        return len({x.tile for m in self.layers.values() for x in m.crossbars})


@dataclass(frozen=True)
class Block:
    """Where one block of a layer goes, relative to the layer's own crossbars."""
    local: int                # the layer's n-th crossbar
    group: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    offset: tuple[int, int]
    row_index: np.ndarray | None = field(default=None, compare=False, repr=False)
    col_index: np.ndarray | None = field(default=None, compare=False, repr=False)


def row_indices(block: "Block | CrossbarSlot") -> np.ndarray:
    """Rows of the group's (K, N_group) matrix on the block's wordlines, in wordline order."""
    return np.arange(*block.rows) if block.row_index is None else block.row_index


def col_indices(block: "Block | CrossbarSlot") -> np.ndarray:
    """Output channels (columns of the layer's (K, N) matrix) of the block's outputs, in order."""
    return np.arange(*block.cols) if block.col_index is None else block.col_index


def block_matrix(w_int: np.ndarray, block: "Block | CrossbarSlot") -> np.ndarray:
    """The block's weights, ``(wordlines, outputs)``, out of its layer's (K, N) matrix."""
    if block.col_index is not None:
        return w_int[np.ix_(row_indices(block), block.col_index)]
    columns = w_int[:, block.cols[0]:block.cols[1]]                     # a view: gather rows from it
    return columns[block.rows[0]:block.rows[1]] if block.row_index is None else columns[block.row_index]


def blocks(node: Node, target: Target) -> list[Block]:
    """Every block a layer needs, on the fewest crossbars its group structure allows."""
    quant = node.attrs["quant"]
    k, n = quant.w_int.shape
    group = node.attrs.get("group", 1)
    n_g = n // group
    rows, per = target.crossbar.rows, target.outputs_per_crossbar
    pack = min(rows // k, per // n_g, group) if k <= rows and n_g <= per else 1
    out: list[Block] = []
    if pack > 1:
        for g in range(group):
            slot = g % pack
            out.append(Block(g // pack, g, (0, k), (g * n_g, (g + 1) * n_g), (slot * k, slot * n_g)))
        return out
    for g in range(group):
        for c0 in range(g * n_g, (g + 1) * n_g, per):
            for r0 in range(0, k, rows):
                out.append(Block(len(out), g, (r0, min(r0 + rows, k)), (c0, min(c0 + per, (g + 1) * n_g)),
                                 (0, 0)))
    return out


def layer_plans(graph: Graph, target: Target, plans: dict[str, list[Block]] | None = None) -> dict[str, list[Block]]:
    """Every layer's blocks: ``plans`` (from SWS) where given, else the natural :func:`blocks`."""
    return {node.name: (plans or {}).get(node.name) or blocks(node, target) for node in graph.crossbar_nodes()}


def plan_size(plan: list[Block]) -> int:
    """Crossbars one copy of a layer occupies."""
    return 1 + max(b.local for b in plan)


def map_layers(graph: Graph, target: Target, allow_reprogramming: bool = False,
               plans: dict[str, list[Block]] | None = None, copies: dict[str, int] | None = None,
               spread: bool = False) -> Mapping:
    """Place every layer's blocks (``plans`` from SWS where given), ``copies[layer]`` times
    (default once; duplicated layers are placed copy after copy, each kept within a tile
    where it fits one). Segments are cut as if every layer had one copy (the fewest writes);
    a segment's copies then take the crossbars its layers leave free.

    ``spread`` places each copy that fits a tile on the tile with the most free crossbars (larger
    ones on tiles of their own) instead of packing copies tile after tile
    (:func:`spread_crossbars`): a model much smaller than the chip then writes its outputs on
    many tiles, whose GPEUs and network links work in parallel, where packing leaves them on the
    first few. ``cpsat`` decides between the two."""
    plans = layer_plans(graph, target, plans)
    copies = {name: (copies or {}).get(name, 1) for name in plans}
    sizes = {name: plan_size(plan) for name, plan in plans.items()}
    order = [node.name for node in graph.crossbar_nodes()]
    needed, total = sum(sizes.values()), target.total_crossbars
    where = f"target {target.name} has {total} ({target.chip.tiles} tiles x {target.chip.pes_per_tile})"
    worst = max(order, key=lambda name: sizes[name], default=None)
    if worst is not None and sizes[worst] > total:
        remedy = ("it cannot be cut into parts that fit (grouped, or larger than the chip one column of "
                  "crossbars wide). Choose a larger target or a target file with more tiles"
                  if allow_reprogramming else "pass --allow-reprogramming to cut it by output channels into "
                  "parts that run in segments, or choose a larger target")
        raise CapacityError(f"layer {worst} alone needs {sizes[worst]} crossbars and {where}; {remedy}")
    if needed > total and not allow_reprogramming:
        raise CapacityError(
            f"the model needs {needed} crossbars and {where}; the largest layer, {worst}, needs "
            f"{sizes[worst]}. Choose a larger target, or pass --allow-reprogramming to run it in "
            f"segments that are programmed one after another (extra writes and time are counted)")
    segments = _segments(order, sizes, total)
    for segment, names in enumerate(segments):
        need = sum(sizes[n] * copies[n] for n in names)
        if need > total and any(copies[n] > 1 for n in names):
            whose = "the layers' copies" if len(segments) == 1 else f"the layer copies of segment {segment}"
            raise CapacityError(f"{whose} need {need} crossbars and {where}; ask for fewer copies")
    slots: dict[str, list[CrossbarSlot]] = {}
    next_id = 0
    for segment, names in enumerate(segments):
        if spread:
            placed = _place(plans, copies, names, target.chip.pes_per_tile, segment, next_id,
                            keep_layers_whole=True, tiles=target.chip.tiles)
        else:
            # Keep each layer inside one tile where that still fits the chip; else pack densely.
            placed = _place(plans, copies, names, target.chip.pes_per_tile, segment, next_id, keep_layers_whole=True)
            if max((x.xbar for layer in placed.values() for x in layer), default=0) >= total:
                placed = _place(plans, copies, names, target.chip.pes_per_tile, segment, next_id,
                                keep_layers_whole=False)
        slots.update(placed)
        next_id += sum(len(layer) for layer in placed.values())
    layers = {}
    for node in graph.crossbar_nodes():
        k, n = node.attrs["quant"].w_int.shape
        layers[node.name] = LayerMapping(node.name, k, n, node.attrs.get("group", 1), tuple(slots[node.name]))
    return Mapping(layers, total)


def _segments(order: list[str], sizes: dict[str, int], total: int) -> list[list[str]]:
    """Consecutive layers, as many per segment as fit the chip (one segment when the model fits)."""
    out: list[list[str]] = [[]]
    used = 0
    for name in order:
        if used + sizes[name] > total:
            out.append([])
            used = 0
        out[-1].append(name)
        used += sizes[name]
    return out


def _place(plans: dict[str, list[Block]], copies: dict[str, int], order: list[str], per_tile: int,
           segment: int, first_id: int, keep_layers_whole: bool, tiles: int = 0) -> dict[str, list[CrossbarSlot]]:
    """Blocks of every copy, packed tile after tile, or spread over ``tiles`` tiles when given."""
    placed: dict[str, list[CrossbarSlot]] = {name: [] for name in order}
    next_id = first_id
    sequence = placement_order(order, copies)
    sizes = [plan_size(plans[name]) for name, _ in sequence]
    if tiles:
        spread = spread_crossbars(sizes, per_tile, tiles)
        if spread is None:
            raise CapacityError(f"the layer copies do not fit whole on {tiles} tiles of {per_tile} crossbars "
                                f"when spread (the largest needs {max(sizes)}); place them packed")
        firsts = spread
    else:
        firsts = first_crossbars(sizes, per_tile, keep_layers_whole)
    for (name, copy), next_xbar in zip(sequence, firsts):
        for b in plans[name]:
            xbar = next_xbar + b.local
            placed[name].append(CrossbarSlot(next_id, name, xbar, xbar // per_tile, xbar % per_tile, b.group,
                                             b.rows, b.cols, b.offset, segment, copy, b.row_index,
                                             b.col_index))
            next_id += 1
    return placed


def placement_order(order: list[str], copies: dict[str, int]) -> list[tuple[str, int]]:
    """(layer, copy) in the order they are placed: every first copy in layer order, so that first
    copies sit where they would without duplication, then the extra copies."""
    return [(n, 0) for n in order] + [(n, c) for n in order for c in range(1, copies.get(n, 1))]


def first_crossbars(sizes: list[int], per_tile: int, keep_whole: bool) -> list[int]:
    """Where each of a sequence of layer copies starts; with ``keep_whole`` one that fits a tile
    never straddles two."""
    out, next_xbar = [], 0
    for size in sizes:
        free_here = per_tile - next_xbar % per_tile
        if keep_whole and free_here < size <= per_tile:
            next_xbar += free_here
        out.append(next_xbar)
        next_xbar += size
    return out


def spread_crossbars(sizes: list[int], per_tile: int, tiles: int) -> list[int] | None:
    """Where each of a sequence of layer copies starts when copies are spread over the tiles: a
    copy larger than a tile on tiles of its own, from the first tile on; every other copy, whole,
    on the tile with the most free crossbars (the lowest such tile), the largest first, so that
    copies of one layer land on different tiles while there is room. None when some copy finds
    no room."""
    out = [0] * len(sizes)
    order = sorted(range(len(sizes)), key=lambda k: -sizes[k])
    next_tile, free = 0, []                         # free: a heap of (-room, tile), most room first
    for k in (k for k in order if sizes[k] > per_tile):
        out[k] = next_tile * per_tile
        next_tile += -(-sizes[k] // per_tile)
        if sizes[k] % per_tile:                     # the copy's last tile keeps the rest
            free.append((sizes[k] % per_tile - per_tile, next_tile - 1))
    if next_tile > tiles:
        return None
    free += [(-per_tile, tile) for tile in range(next_tile, tiles)]
    heapq.heapify(free)
    for k in (k for k in order if sizes[k] <= per_tile):
        if not free or sizes[k] > -free[0][0]:
            return None
        room, tile = heapq.heappop(free)
        out[k] = tile * per_tile + per_tile + room
        heapq.heappush(free, (room + sizes[k], tile))
    return out


def crossbars_spanned(sizes: list[int], per_tile: int) -> int:
    """Crossbars (including those skipped to keep copies within tiles) a sequence of layer copies
    spans when placed as :func:`map_layers` places a model that fits."""
    if not sizes:
        return 0
    return first_crossbars(sizes, per_tile, True)[-1] + sizes[-1]
