"""The ``crossbar`` numerics level: bit slices, bit-serial inputs, per-column ADCs with clipping.

A program stores each crossbar's contents as the integer block of the layer's
(K, N) weight matrix that it holds; the cells actually programmed are a
deterministic function of that block and the target, computed here and only
here (the runtime and the tests use the same functions):

* **Weights.** Each signed weight is split into its positive and negative
  magnitudes (differential columns, polarity 0 and 1); each magnitude into
  ``slices`` slices of ``cell_bits`` bits, slice ``s`` holding bits
  ``cell_bits*s .. cell_bits*(s+1)-1`` (significance ``2**(cell_bits*s)``).
  :func:`slice_weights` returns the cells as a ``(polarity, slice, rows, cols)``
  array; :func:`physical_columns` lays them out as the crossbar's bitlines:
  output ``j`` of the block occupies the ``2*slices`` columns starting at
  ``j*2*slices``, its positive slices first, least significant first, then its
  negative slices in the same order.
* **Inputs.** The digital periphery applies *unsigned* DAC codes: the code of a
  zero-point-centred input ``x`` is ``u = x + (zero - lo)`` with ``lo`` the
  smallest code of the input type (0 for unsigned, ``-2**(bits-1)`` for signed
  inputs: offset binary), so ``0 <= u < 2**x_bits``. ``u`` is applied in
  ``ceil(x_bits / dac_bits)`` chunks of ``dac_bits`` bits, least significant
  first. The constant ``(lo - zero) * sum_k w[k, n]`` that undoes the offset is
  known when the crossbar is programmed and is added digitally.
* **ADC.** Every column sum of every chunk is converted by an ADC whose
  resolution is the column's own lossless one,
  ``b = ceil(log2(maxsum + 1))`` with
  ``maxsum = nonzero cells * (2**cell_bits - 1) * (2**dac_bits - 1)`` (0: an
  all-zero column, no ADC, no conversion), capped by the target's ``adc.bits``;
  a sum above ``2**b - 1`` clips there, as the hardware would.
* **Digital side.** Converted sums are shifted by their chunk and slice
  significance and added, negative polarity subtracted, and the row blocks of a
  layer (one crossbar each) accumulated.

A column whose lossless resolution fits under the cap can never clip, and then
its shifted-and-added sums equal the exact integer product; the runtime computes
such columns with the ``ideal`` level's exact products ("the cheapest level that
is provably equivalent") unless asked not to, and simulates the others chunk by
chunk, with chunks and columns as array axes of one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.errors import ProgramError


def slices_for(w_int: np.ndarray, cell_bits: int, target_slices: int) -> int:
    """Slices a block needs: the target's count, or more if a magnitude needs them (int8 -128)."""
    peak = int(np.abs(np.asarray(w_int, dtype=np.int64)).max(initial=0))
    return max(target_slices, -(-peak.bit_length() // cell_bits))


def slice_weights(w_int: np.ndarray, cell_bits: int, slices: int) -> np.ndarray:
    """Cells of a signed integer block, shaped ``(2, slices, rows, cols)`` (uint8 or wider)."""
    w = np.asarray(w_int, dtype=np.int64)
    mags = np.stack([np.maximum(w, 0), np.maximum(-w, 0)])
    if (mags >> (cell_bits * slices)).any():
        raise ProgramError(f"a weight magnitude of {int(mags.max())} does not fit {slices} slices of "
                           f"{cell_bits}-bit cells")
    shifts = cell_bits * np.arange(slices, dtype=np.int64)
    cells = (mags[:, None] >> shifts[None, :, None, None]) & ((1 << cell_bits) - 1)
    return cells.astype(np.uint8 if cell_bits <= 8 else np.uint16)


def physical_columns(cells: np.ndarray) -> np.ndarray:
    """The crossbar as programmed: ``(rows, cols * 2 * slices)``, bitline order as documented above."""
    polarities, slices, rows, cols = cells.shape
    return cells.transpose(2, 3, 0, 1).reshape(rows, cols * polarities * slices)


def _bit_length(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.int64).copy()
    bits = np.zeros(v.shape, dtype=np.int64)
    while (v > 0).any():
        bits += v > 0
        v >>= 1
    return bits


def resolution(nonzero: np.ndarray, cell_bits: int, dac_bits: int) -> np.ndarray:
    """Lossless ADC bits of columns with ``nonzero`` nonzero cells: ceil(log2(maxsum + 1)), with
    maxsum = nonzero * (2**cell_bits - 1) * (2**dac_bits - 1); 0 (no ADC) for an all-zero column.
    The one definition: the runtime and the compile-time energy accounting both use it."""
    return _bit_length(np.asarray(nonzero, dtype=np.int64) * ((1 << cell_bits) - 1) * ((1 << dac_bits) - 1))


def lossless_bits(cells: np.ndarray, cell_bits: int, dac_bits: int) -> np.ndarray:
    """Per column ``(polarity, slice, col)``: ceil(log2(maxsum + 1)), 0 for an all-zero column."""
    return resolution(np.count_nonzero(cells, axis=-2), cell_bits, dac_bits)


@dataclass(frozen=True)
class XbarCells:
    """One crossbar's cells and ADC resolutions, derived from its integer block and the target."""
    cells: np.ndarray        # (2, S, rows, cols)
    lossless: np.ndarray     # (2, S, cols) lossless resolution per column
    bits: np.ndarray         # (2, S, cols) resolution converted at (capped)

    @property
    def lossy(self) -> np.ndarray:
        """Columns whose sums can clip."""
        return self.lossless > self.bits


def xbar_cells(block: np.ndarray, target) -> XbarCells:
    cb, dac = target.crossbar.cell_bits, target.crossbar.dac_bits
    cells = slice_weights(block, cb, slices_for(block, cb, target.weight_slices))
    lossless = lossless_bits(cells, cb, dac)
    return XbarCells(cells, lossless, lossless if target.adc is None else np.minimum(lossless, target.adc.bits))


def adc_cost(xc: XbarCells, adc) -> tuple[int, float]:
    """Conversions and their energy in pJ for one read (one input chunk) of the crossbar."""
    if adc is None:
        return 0, 0.0
    used = xc.bits[xc.bits > 0]
    return int(used.size), float(sum(adc.conversion_pj(int(b)) * int(n)
                                     for b, n in zip(*np.unique(used, return_counts=True))))


@dataclass(frozen=True)
class LossyBlock:
    """The columns of one crossbar that are simulated conversion by conversion."""
    rows: np.ndarray         # indices of the crossbar's rows among the unfolded input's columns
    cells: np.ndarray        # (rows, nl) float32 cell values of the simulated columns
    caps: np.ndarray         # (nl,) float32: the largest sum each column's ADC can output
    combine: np.ndarray      # (nl, n_group) float64: slice significance and polarity sign per output
    offset: np.ndarray       # (n_group,) float64: (lo - zero) * sum of the simulated weights


def weighted(cells: np.ndarray, mask: np.ndarray, cell_bits: int) -> np.ndarray:
    """The integer weights that the columns selected by ``mask`` (polarity, slice, col) represent."""
    slices = cells.shape[1]
    scale = np.array([1, -1])[:, None] * (1 << (cell_bits * np.arange(slices)))[None, :]
    return np.einsum("psrc,psc->rc", cells.astype(np.int64), mask * scale[:, :, None])


def lossy_block(xc: XbarCells, mask: np.ndarray, cell_bits: int, rows: np.ndarray, outputs: np.ndarray,
                n_group: int, offset: int) -> LossyBlock | None:
    """The columns of ``mask`` as one matrix product's operands, or None if there are none.

    ``rows``: the crossbar's rows among the unfolded input's columns (the input gather);
    ``outputs``: the position among the group's ``n_group`` outputs of each block output.
    """
    p, s, c = np.nonzero(mask)
    if p.size == 0:
        return None
    cells = xc.cells[p, s, :, c].T.astype(np.float32)                      # (rows, nl)
    caps = ((1 << xc.bits[p, s, c]) - 1).astype(np.float32)
    combine = np.zeros((p.size, n_group), dtype=np.float64)
    combine[np.arange(p.size), np.asarray(outputs)[c]] = np.where(p == 0, 1.0, -1.0) * np.exp2(cell_bits * s)
    offset_vec = offset * cells.astype(np.float64).sum(axis=0) @ combine
    return LossyBlock(rows, cells, caps, combine, offset_vec)


def simulate(u: np.ndarray, blocks: list[LossyBlock], n_group: int, x_bits: int, dac_bits: int,
             budget: int = 1 << 25) -> tuple[np.ndarray, int]:
    """Shifted-and-added ADC outputs of the simulated columns for unsigned codes ``u`` (M, K).

    Chunks of every code are an array axis: the column sums of all chunks come out of one
    float32 product (exact: every sum is far below 2^24), clip at each column's cap, are
    weighted by their chunk's significance in one more product, then by slice and polarity
    into the outputs. Returns the (M, n_group) float64 sums and the count of clipped
    conversions.
    """
    m_total = u.shape[0]
    chunks = -(-x_bits // dac_bits)
    shifts = (dac_bits * np.arange(chunks)).astype(np.int32)
    chunk_weight = np.exp2(dac_bits * np.arange(chunks)).astype(np.float32)
    mask = (1 << dac_bits) - 1
    out = np.zeros((m_total, n_group), dtype=np.float64)
    clipped = 0
    for blk in blocks:
        kb, nl = blk.cells.shape
        # Column sums per chunk stay below 2^24, and so do their sums over chunks (below
        # 2^x_bits * cap): float32 is exact.
        exact32 = float(blk.caps.max(initial=0)) * (1 << x_bits) < 2 ** 24
        step = max(1, budget // (chunks * max(kb, nl) * 4))
        for m0 in range(0, m_total, step):
            ub = u[m0:m0 + step][:, blk.rows]                                   # (m, kb) int32
            planes = ((ub[None] >> shifts[:, None, None]) & mask).astype(np.float32)  # (C, m, kb)
            sums = planes.reshape(-1, kb) @ blk.cells                           # (C*m, nl)
            clipped += int(np.count_nonzero(sums > blk.caps))
            np.minimum(sums, blk.caps, out=sums)
            sums = sums.reshape(chunks, -1, nl)
            if exact32:
                shifted = np.tensordot(chunk_weight, sums, axes=(0, 0))          # (m, nl)
            else:
                shifted = np.tensordot(chunk_weight.astype(np.float64), sums.astype(np.float64), axes=(0, 0))
            out[m0:m0 + step] += shifted.astype(np.float64) @ blk.combine
        out += blk.offset
    return out, clipped
