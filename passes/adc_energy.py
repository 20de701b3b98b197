"""ADC conversions and energy of a mapping, computed at compile time, and the baselines B1 and B2.

The runtime converts, on every read of a crossbar (one input chunk of one output
pixel), each column of each block that has a nonzero cell, at the column's own
resolution: its lossless one (:func:`cimc.runtime.crossbar.resolution`, from the
column's nonzero cells, the cell bits and the DAC bits) capped by the target's
``adc.bits``. A column's cells are fixed when the crossbar is programmed, so the
conversions of a read, and their energy under the target's ADC model
(:meth:`cimc.targets.schema.Adc.conversion_pj`), are known at compile time; this
module computes them from the layer's integer matrix and the mapping's blocks,
vectorized over every column of a layer. They agree with the runtime's
``adc_conversions`` and ``adc_energy_pj`` (tests check it), because both use the same
resolution rule on the same cells.

Per inference, a layer is read ``pixels x input_chunks`` times (``pixels``: the
output positions of one inference, i.e. the output's size over its channels).

Baselines, on the natural mapping (:func:`cimc.passes.mapping.blocks`), as
PAPERS.md section 2 defines them:

* **B1**: every column of every block (``2 x slices`` per output, all-zero ones
  included) converted at the fixed worst-case lossless resolution of a full
  crossbar column (``crossbar.rows`` nonzero cells), capped by ``adc.bits`` like
  every ADC of the target;
* **B2**: each column at its own lossless resolution (capped), all-zero columns
  skipped: what the runtime does for a program compiled without SWS.

Costs are kept as conversions per resolution (``by_bits``), so any ADC energy
model can be applied to them afterwards (the SWS benchmark does, for the Walden
and the floor models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir import Graph
from cimc.passes.mapping import Block, CrossbarSlot, Mapping, block_matrix, blocks as natural_blocks
from cimc.runtime.crossbar import resolution
from cimc.targets import Target

#: Histogram length: no column needs 64 bits (rows < 2^16, cells < 2^8, DAC codes < 2^16).
MAX_BITS = 64
#: Weights gathered at once when counting nonzero cells (bounds memory on the largest layers).
BATCH_CELLS = 1 << 22


@dataclass(frozen=True)
class AdcCost:
    """Conversions by resolution (``by_bits[b]``: conversions at ``b`` bits) and the crossbars used."""
    by_bits: np.ndarray
    crossbars: int

    @property
    def conversions(self) -> int:
        return int(self.by_bits[1:].sum())

    def energy_pj(self, adc) -> float:
        """Energy of these conversions under ``adc``'s model (a target's ``[adc]`` table; None: 0)."""
        if adc is None:
            return 0.0
        used = np.flatnonzero(self.by_bits[1:]) + 1
        return float(sum(int(self.by_bits[b]) * adc.conversion_pj(int(b)) for b in used))

    def scaled(self, reads: int) -> "AdcCost":
        return AdcCost(self.by_bits * reads, self.crossbars)

    def __add__(self, other: "AdcCost") -> "AdcCost":
        return AdcCost(self.by_bits + other.by_bits, self.crossbars + other.crossbars)

    def to_dict(self, adc) -> dict:
        used = np.flatnonzero(self.by_bits[1:]) + 1
        return {"conversions": self.conversions, "energy_pj": self.energy_pj(adc), "crossbars": self.crossbars,
                "conversions_by_bits": {str(int(b)): int(self.by_bits[b]) for b in used}}


def zero_cost() -> AdcCost:
    return AdcCost(np.zeros(MAX_BITS, dtype=np.int64), 0)


def layer_slices(w_int: np.ndarray, target: Target) -> int:
    """Slices per weight magnitude: the target's, or more for a magnitude that needs them (-128)."""
    peak = max(int(w_int.max(initial=0)), -int(w_int.min(initial=0)))
    cb = target.crossbar.cell_bits
    return max(target.weight_slices, -(-peak.bit_length() // cb))


def column_cells(w_int: np.ndarray, blocks: "list[Block] | list[CrossbarSlot]", target: Target) -> np.ndarray:
    """Nonzero cells of every column of every block: ``(outputs of all blocks, 2 * slices)``, positive
    slices first, as :func:`cimc.runtime.crossbar.slice_weights` programs them.

    The blocks' weights are gathered column by column into one vector, in batches that bound
    memory, and each column's run of rows is summed in 64-bit words: a table maps every weight
    value to the nonzero-cell indicators of its slices and polarity, spread over 16-bit lanes
    (32-bit ones for crossbars of 65,536 rows), so one integer sum counts four columns at once.
    """
    lane_bits = 16 if target.crossbar.rows < 1 << 16 else 32
    lanes, mask = 64 // lane_bits, np.uint64((1 << lane_bits) - 1)
    cb = target.crossbar.cell_bits
    slices = layer_slices(w_int, target)
    peak = max(int(w_int.max(initial=0)), -int(w_int.min(initial=0)))
    words = -(-2 * slices // lanes)
    values = np.arange(-peak, peak + 1, dtype=np.int64)         # table column: weight value + peak
    mags = np.abs(values)
    spread = np.zeros((words, values.size), dtype=np.uint64)
    for column in range(2 * slices):                            # polarity-major, as slice_weights
        polarity, j = divmod(column, slices)
        nonzero = (((mags >> (cb * j)) & ((1 << cb) - 1)) != 0) & ((values > 0) if polarity == 0 else (values < 0))
        spread[column // lanes] |= nonzero.astype(np.uint64) << np.uint64(lane_bits * (column % lanes))
    out, batch, size = [], [], 0

    def flush() -> None:
        index = np.concatenate([c for c, _ in batch]) + peak
        starts = np.concatenate([[0], np.cumsum(np.concatenate([n for _, n in batch]))[:-1]])
        sums = [np.add.reduceat(np.take(spread[k], index), starts) for k in range(words)]
        out.append(np.stack([(sums[c // lanes] >> np.uint64(lane_bits * (c % lanes))) & mask
                             for c in range(2 * slices)], axis=1).astype(np.int64))
        batch.clear()

    for b in blocks:
        cells = block_matrix(w_int, b)
        batch.append((cells.T.ravel(), np.full(cells.shape[1], cells.shape[0])))
        size += cells.size
        if size >= BATCH_CELLS:
            flush()
            size = 0
    if batch:
        flush()
    return np.concatenate(out) if out else np.zeros((0, 2 * slices), dtype=np.int64)


def column_bits(w_int: np.ndarray, blocks: "list[Block] | list[CrossbarSlot]", target: Target) -> np.ndarray:
    """The resolution every column's ADC is set to, shaped as :func:`column_cells`: the column's
    lossless one, capped by the target's ADC; 0 for an all-zero column (ADC off). Analog chips only."""
    c = target.crossbar
    return np.minimum(resolution(column_cells(w_int, blocks, target), c.cell_bits, c.dac_bits), target.adc.bits)


def crossbar_count(blocks: "list[Block] | list[CrossbarSlot]") -> int:
    return len({(b.local if isinstance(b, Block) else b.xbar) for b in blocks})


def bits_cost(bits: np.ndarray, crossbars: int) -> AdcCost:
    """Conversions of one read of columns set to ``bits`` (0: off, no conversion)."""
    return AdcCost(np.bincount(bits.ravel(), minlength=MAX_BITS)[:MAX_BITS].astype(np.int64), crossbars)


def read_cost(w_int: np.ndarray, blocks: "list[Block] | list[CrossbarSlot]", target: Target) -> AdcCost:
    """Conversions of one read of every block of a layer's (K, N) matrix: per-column lossless
    resolution, capped; all-zero columns skipped. ``blocks``: natural or sorted."""
    blocks = list(blocks)
    if target.adc is None or not blocks:
        return AdcCost(zero_cost().by_bits, crossbar_count(blocks))
    return bits_cost(column_bits(w_int, blocks, target), crossbar_count(blocks))


def worst_case_bits(target: Target) -> int:
    """B1's fixed resolution: a full column of ``crossbar.rows`` nonzero cells, capped by ``adc.bits``."""
    if target.adc is None:
        return 0
    c = target.crossbar
    return int(min(resolution(np.array(c.rows), c.cell_bits, c.dac_bits), target.adc.bits))


def b1_cost(w_int: np.ndarray, blocks: list[Block], target: Target) -> AdcCost:
    """Conversions of one read under B1: every column of every block at the worst-case resolution."""
    crossbars = len({b.local for b in blocks})
    by_bits = zero_cost().by_bits
    if target.adc is not None:
        columns = 2 * layer_slices(w_int, target) * sum(b.cols[1] - b.cols[0] for b in blocks)
        by_bits[worst_case_bits(target)] = columns
    return AdcCost(by_bits, crossbars)


def reads_per_inference(output_size: int, channels: int, target: Target) -> int:
    """Crossbar reads of a layer per inference: one per output position and input chunk."""
    return output_size // channels * target.input_chunks


def report(graph: Graph, target: Target, mapping: Mapping, plans: dict | None,
           settings: dict[str, np.ndarray]) -> dict:
    """The compile report's ``adc`` section: per layer and in total, per inference, the ADC
    conversions, energy and crossbars of the compiled mapping (``chosen``, what the runtime will
    measure, from ``settings``: each layer's :func:`column_bits` as programmed, none on a digital
    chip), of B1 and B2, and of every SWS candidate the pass costed (``plans``: the
    :class:`cimc.passes.sws.LayerPlan` of each layer, or None without SWS)."""
    adc = target.adc
    layers, totals = [], {"chosen": zero_cost(), "b1": zero_cost(), "b2": zero_cost()}
    for node in graph.crossbar_nodes():
        w = node.attrs["quant"].w_int
        natural = natural_blocks(node, target)
        out = graph.tensors[node.outputs[0]]
        reads = reads_per_inference(out.size, w.shape[1], target)
        plan = (plans or {}).get(node.name)
        slots = mapping.layers[node.name].crossbars
        chosen = bits_cost(settings[node.name], crossbar_count(slots)) if node.name in settings \
            else read_cost(w, slots, target)
        # Without SWS the compiled blocks are the natural ones: B2 is what the chip does.
        costs = {"chosen": chosen, "b1": b1_cost(w, natural, target),
                 "b2": chosen if plan is None else read_cost(w, natural, target)}
        entry = {"name": node.name, "scheme": plan.scheme if plan else "natural", "reads": reads}
        for key, cost in costs.items():
            entry[key] = cost.scaled(reads).to_dict(adc)
            totals[key] = totals[key] + cost.scaled(reads)
        if plan:
            entry["candidates"] = {k: c.scaled(reads).to_dict(adc) for k, c in plan.candidates.items()}
        layers.append(entry)
    return {"energy_model": None if adc is None else adc.energy_model,
            "adc": None if adc is None else {"bits": adc.bits, "fom_fj_per_step": adc.fom_fj_per_step,
                                             "floor_pj": adc.floor_pj, "sar_pj_per_bit": adc.sar_pj_per_bit},
            "b1_bits": worst_case_bits(target), "input_chunks": target.input_chunks,
            "per": "inference", "layers": layers,
            "total": {k: v.to_dict(adc) for k, v in totals.items()}}
