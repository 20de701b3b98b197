"""Sorted weight sectioning (SWS, PAPERS.md section 2): row orders and output groups that switch ADCs off.

A column's ADC resolution follows from its nonzero cells, and an all-zero column
needs no conversion at all. Laying out rows so that small weights share crossbars
leaves their high-order slice columns all zero (no conversion) and their other
columns at low resolution; rows that are zero for every output of a crossbar are
not programmed at all, which frees crossbars. The dot product is unchanged because
each crossbar reads its inputs through the same order (the input gather: each
block's ``row_index``, stored with the crossbar contents, see
:mod:`cimc.passes.mapping`).

Definitions (cimc's; the paper leaves them open):

* **Column block**: outputs of one convolution group that share crossbars, at most
  ``outputs_per_crossbar`` of them; all columns of a crossbar share its wordlines,
  hence its inputs, so a row order is legal per column block, not per output.
* **S2** (crossbar-legal): outputs in natural order, cut into column blocks as in
  the natural mapping. In each, the rows that are zero for every output of the block
  are dropped; the others are sorted by their largest magnitude across the block's
  outputs (non-decreasing, ties in row order) and cut into sections of
  ``crossbar.rows`` wordlines, aligned at the large end, so the one short section
  holds the smallest weights. Each section is one block.
* **S3**: the outputs of each group are first regrouped so that outputs with large
  weights on the same rows share a column block (:func:`output_groups`), then as S2.
* **S1**: every output sorted on its own: its nonzero rows by magnitude, in
  sections. Its blocks are one output wide and share a crossbar's wordlines side by
  side, each reading its own inputs, which only a target with
  ``crossbar.input_routing = "per_group"`` can do.
* **Packing**: blocks of S2/S3 fill crossbars block-diagonally (disjoint wordlines
  and outputs, as the natural mapping packs small groups), next-fit in order;
  blocks of S1 sit side by side, ``outputs_per_crossbar`` to a crossbar.
* A column block without a nonzero weight gets no block (its outputs are the bias
  alone); a layer without any nonzero weight keeps one single-row block.
* **auto** (``sws=True``): per layer, S2 and S3 (and S1 where the target routes
  inputs per group) and the natural layout are costed with the analytic ADC model
  (:mod:`cimc.passes.adc_energy`, the target's energy model) and the cheapest in
  energy kept; ties go to fewer crossbars, then to the order s2, s3, s1, natural.
  Under the pure 2^b model a sorted layout can cost a little more than the
  natural one (the sum of 2^b over columns tracks the nonzero cells, which a
  permutation keeps), and then the layer stays natural.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.errors import CimcError, TargetError
from cimc.ir import Graph
from cimc.passes.adc_energy import AdcCost, read_cost
from cimc.passes.mapping import Block, blocks as natural_blocks
from cimc.targets import Target

SCHEMES = ("s1", "s2", "s3")
CHOICES = ("auto",) + SCHEMES
#: S3 refines each output group among this many candidates per output slot.
POOL_PER_SLOT = 4


@dataclass(frozen=True)
class Section:
    """Rows of one column block (or of one output, S1) that go onto one crossbar block."""
    group: int
    rows: tuple[int, int]            # span of positions in the column block's sorted rows
    row_index: np.ndarray            # the group's K row on each wordline
    cols: tuple[int, int]            # span of output positions (absolute)
    col_index: np.ndarray | None     # output channels when regrouped (S3)


@dataclass(frozen=True)
class LayerPlan:
    """The blocks SWS chose for one layer, and the per-read ADC cost of every scheme it costed."""
    scheme: str
    blocks: list[Block]
    candidates: dict[str, AdcCost]


def check_scheme(scheme: str, target: Target) -> None:
    """Refuse an unknown scheme, and S1 on a chip that cannot route inputs per output group."""
    if scheme not in CHOICES:
        raise CimcError(f"unknown SWS scheme {scheme!r}; available: {', '.join(CHOICES)}")
    if scheme == "s1" and target.crossbar.input_routing != "per_group":
        raise TargetError(
            f"SWS scheme s1 sorts every output on its own, so outputs on one crossbar read different "
            f"inputs, and target {target.name} routes one input vector to all columns of a crossbar "
            f"(crossbar.input_routing = \"{target.crossbar.input_routing}\"). Set input_routing = "
            f"\"per_group\" in the target's [crossbar] table if the chip can route inputs per output, or "
            f"use scheme s2, s3 or auto, which are legal on any crossbar")


def shared_order(w: np.ndarray) -> np.ndarray:
    """Rows of ``w`` (K, outputs) that are nonzero for some output, in non-decreasing order of their
    largest magnitude across the outputs (ties in row order)."""
    key = np.abs(w).max(axis=1, initial=0)
    kept = np.flatnonzero(key)
    return kept[np.argsort(key[kept], kind="stable")]


def cut(length: int, rows: int) -> list[tuple[int, int]]:
    """Sections of at most ``rows`` positions covering ``0..length``, aligned at the end (the short
    section comes first, over the smallest keys)."""
    first = length - rows * ((length - 1) // rows) if length else 0
    return ([(0, first)] if first else []) + [(p, p + rows) for p in range(first, length, rows)]


def output_groups(w: np.ndarray, per: int) -> np.ndarray:
    """S3: an order of the outputs of ``w`` (K, n) whose consecutive runs of ``per`` share large rows.

    A shared row order costs, per row, the largest weight across the block's outputs:
    with ``b`` the bit length of each magnitude, the block's wordlines hold
    ``sum over rows of max over outputs of b`` (row, level) pairs, the count of rows
    that need each slice level. Greedily, the heaviest output left seeds a block;
    the outputs adding the fewest (row, level) pairs to the seed's profile form a
    candidate pool, from which the block grows one output at a time by the least
    increase of its profile. Profiles are bit sets, so the counts are popcounts.
    """
    n = w.shape[1]
    if n <= per:
        return np.arange(n)
    mags = np.abs(w)
    lengths = np.frexp(np.arange(int(mags.max(initial=0)) + 1))[1].astype(np.uint8)[mags].T   # (n, K)
    levels = int(lengths.max(initial=0))
    if levels == 0:
        return np.arange(n)
    packed = np.concatenate([np.packbits(lengths > t, axis=1) for t in range(levels)], axis=1)
    packed = np.ascontiguousarray(np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))).view(np.uint64)
    mass = np.bitwise_count(packed).sum(axis=1, dtype=np.int64)
    free = np.ones(n, dtype=bool)
    order: list[int] = []
    big = np.iinfo(np.int64).max
    alive = np.arange(n)              # outputs still in ``sub``: compacted as blocks take outputs
    sub = packed
    while free.any():
        if 4 * int(free[alive].sum()) < 3 * len(alive):
            alive = np.flatnonzero(free)
            sub = packed[alive]
        seed = int(np.argmax(np.where(free, mass, -1)))
        free[seed] = False
        block, profile = [seed], packed[seed].copy()
        left = int(free.sum())
        if left:
            extra = np.where(free[alive], np.bitwise_count(sub & ~profile).sum(axis=1, dtype=np.int64), big)
            size = min(POOL_PER_SLOT * per, left)
            pool = np.argpartition(extra, size - 1)[:size]
            pool = alive[pool[np.argsort(extra[pool], kind="stable")]]
            cand = packed[pool]
            taken = np.zeros(size, dtype=bool)
            for _ in range(min(per - 1, size)):
                grow = np.where(taken, big, np.bitwise_count(cand & ~profile).sum(axis=1, dtype=np.int64))
                i = int(np.argmin(grow))
                taken[i] = True
                profile |= cand[i]
                block.append(int(pool[i]))
            free[block] = False
        order.extend(block)
    return np.array(order, dtype=np.int64)


def _shared_sections(w: np.ndarray, group: int, per: int, rows: int, regroup: bool) -> list[Section]:
    """S2 (S3 with ``regroup``) sections of one group's (K, n_g) matrix."""
    n_g = w.shape[1]
    perm = output_groups(w, per) if regroup else None
    if perm is not None and np.array_equal(perm, np.arange(n_g)):
        perm = None                                   # natural order after all: no scatter to store
    out: list[Section] = []
    for c0 in range(0, n_g, per):
        c1 = min(c0 + per, n_g)
        channels = np.arange(c0, c1) if perm is None else perm[c0:c1]
        order = shared_order(w[:, channels])
        col_index = None if perm is None else (group * n_g + channels)
        for p0, p1 in cut(len(order), rows):
            out.append(Section(group, (p0, p1), order[p0:p1], (group * n_g + c0, group * n_g + c1), col_index))
    return out


def _single_sections(w: np.ndarray, group: int, rows: int) -> list[Section]:
    """S1 sections of one group's (K, n_g) matrix: every output's nonzero rows, sorted on their own."""
    mags = np.abs(w)
    order = np.argsort(mags, axis=0, kind="stable")                         # zeros first
    nonzero = np.count_nonzero(mags, axis=0)
    out: list[Section] = []
    for j in range(w.shape[1]):
        mine = order[w.shape[0] - nonzero[j]:, j]
        col = group * w.shape[1] + j
        for p0, p1 in cut(len(mine), rows):
            out.append(Section(group, (p0, p1), mine[p0:p1], (col, col + 1), None))
    return out


def pack_shared(sections: list[Section], rows: int, per: int) -> list[Block]:
    """Blocks on crossbars, block-diagonally: each takes the next free wordlines and outputs of the
    current crossbar, or a new crossbar when either would overflow (next-fit, in order)."""
    out: list[Block] = []
    local, used_rows, used_outs = -1, rows, per
    for s in sections:
        h, width = s.rows[1] - s.rows[0], s.cols[1] - s.cols[0]
        if used_rows + h > rows or used_outs + width > per:
            local, used_rows, used_outs = local + 1, 0, 0
        out.append(Block(local, s.group, s.rows, s.cols, (used_rows, used_outs), s.row_index, s.col_index))
        used_rows += h
        used_outs += width
    return out


def pack_side_by_side(sections: list[Section], per: int) -> list[Block]:
    """Blocks that read their own inputs on shared wordlines: ``per`` to a crossbar, from wordline 0."""
    return [Block(i // per, s.group, s.rows, s.cols, (0, i % per), s.row_index, s.col_index)
            for i, s in enumerate(sections)]


def scheme_blocks(w_int: np.ndarray, group: int, target: Target, scheme: str) -> list[Block]:
    """The blocks of a layer's (K, N) matrix with ``group`` convolution groups under one scheme."""
    k, n = w_int.shape
    n_g = n // group
    rows, per = target.crossbar.rows, target.outputs_per_crossbar
    sections: list[Section] = []
    for g in range(group):
        wg = w_int[:, g * n_g:(g + 1) * n_g]
        sections += _single_sections(wg, g, rows) if scheme == "s1" else \
            _shared_sections(wg, g, per, rows, regroup=scheme == "s3")
    if not sections:                  # an all-zero layer still needs a crossbar to produce its outputs
        sections = [Section(0, (0, 1), np.zeros(1, dtype=np.int64), (0, min(per, n_g)), None)]
    return pack_side_by_side(sections, per) if scheme == "s1" else pack_shared(sections, rows, per)


def plan_layer(w_int: np.ndarray, group: int, target: Target, scheme: str,
               natural: list[Block] | None = None) -> LayerPlan:
    """The blocks of one layer under ``scheme``; ``auto`` costs the legal schemes, and the
    ``natural`` layout when given, and keeps the cheapest (so SWS never costs more than B2)."""
    names = [scheme] if scheme != "auto" else \
        ["s2", "s3"] + (["s1"] if target.crossbar.input_routing == "per_group" else [])
    if scheme == "auto" and w_int.shape[1] // group <= target.outputs_per_crossbar:
        names.remove("s3")                           # one column block per group: nothing to regroup
    plans = {name: scheme_blocks(w_int, group, target, name) for name in names}
    if scheme == "auto" and natural is not None:
        names.append("natural")
        plans["natural"] = natural
    costs = {name: read_cost(w_int, blocks, target) for name, blocks in plans.items()}
    best = min(names, key=lambda name: (costs[name].energy_pj(target.adc), costs[name].crossbars,
                                        names.index(name)))
    return LayerPlan(best, plans[best], costs)


def plan(graph: Graph, target: Target, scheme: str) -> dict[str, LayerPlan]:
    """SWS blocks for every crossbar layer of ``graph`` (quantized) under ``scheme`` (see module doc)."""
    check_scheme(scheme, target)
    layers = graph.crossbar_nodes()
    if not layers:
        raise CimcError(f"SWS (--sws) sorts the weights of crossbar operators, and model {graph.name!r} has "
                        f"none (Conv, ConvTranspose, Gemm or MatMul with a constant operand); compile it "
                        f"without --sws")
    return {node.name: plan_layer(node.attrs["quant"].w_int, node.attrs.get("group", 1), target, scheme,
                                  natural_blocks(node, target)) for node in layers}
