"""The one cost model every scheduler shares, derived from the target file only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cimc.ir import Graph, Node
from cimc.passes.mapping import LayerMapping, Mapping
from cimc.passes.schedule.sets import tensor_rows
from cimc.targets import Target

#: Bytes of one partial sum sent between tiles (32-bit accumulators).
PARTIAL_SUM_BYTES = 4


@dataclass(frozen=True)
class CostModel:
    target: Target
    graph: Graph
    mapping: Mapping

    @property
    def activation_bytes(self) -> float:
        return self.target.precision.activation_bits / 8

    def mvm_cycles(self, layer: LayerMapping) -> int:
        """Cycles of one MVM (one output pixel): every input chunk is one read, then its conversions
        (none on a digital chip, whose adder trees finish within the read)."""
        t, xb = self.target.timing, self.target
        columns = layer.columns_used * xb.columns_per_weight
        convert = 0 if xb.adc is None else math.ceil(columns / xb.adc.per_crossbar) * t.adc_cycles
        return xb.input_chunks * max(t.crossbar_read_cycles, convert)

    def link_cycles(self, nbytes: float) -> int:
        """Cycles a message holds its source tile's link into the network: every tile has one,
        of ``[noc] bytes_per_cycle``; a router passes a message on to several tiles at once."""
        return math.ceil(nbytes / self.target.noc.bytes_per_cycle)

    def transfer_cycles(self, nbytes: float, src: int, dst: int) -> int:
        """From the first byte sent to the last arrived, on a free link."""
        if src == dst:
            return 0
        return self.target.hops(src, dst) * self.target.noc.hop_cycles + self.link_cycles(nbytes)

    @staticmethod
    def partial_outputs(layer: LayerMapping, tile: int) -> int:
        """Distinct output channels a tile holds partial sums for (its row blocks add up locally)."""
        return len({c for x in layer.crossbars if x.tile == tile for c in range(*x.cols)})

    def reduce_cycles(self, layer: LayerMapping, pixels: int) -> int:
        """Time to bring partial sums of remote tiles to the layer's home tile (``layer``: one copy)."""
        home = layer.home_tile
        return max(self.transfer_cycles(pixels * self.partial_outputs(layer, tile) * PARTIAL_SUM_BYTES,
                                        tile, home) for tile in layer.tiles)

    def reductions(self, layer: LayerMapping, pixels: int) -> tuple[tuple[int, int], ...]:
        """(tile, link cycles) of the partial sums each of a copy's other tiles sends home."""
        return tuple((tile, self.link_cycles(pixels * self.partial_outputs(layer, tile) * PARTIAL_SUM_BYTES))
                     for tile in layer.tiles if tile != layer.home_tile)

    def set_cycles(self, layer: LayerMapping, pixels: int) -> tuple[int, int]:
        """(crossbar busy cycles, total cycles until the set's output rows are written) on one copy."""
        compute = pixels * self.mvm_cycles(layer)
        return compute, compute + self.reduce_cycles(layer, pixels)

    def write_cycles(self) -> list[int]:
        """Cycles to program each segment of a model run in segments (none for one that fits):
        crossbars are written in parallel, each one wordline at a time."""
        if self.mapping.segments == 1:
            return []
        rows = [0] * self.mapping.segments
        for layer in self.mapping.layers.values():
            for x in layer.crossbars:      # (copies are written at once, with their segment)
                rows[x.segment] = max(rows[x.segment], x.offset[0] + x.rows[1] - x.rows[0])
        return [r * self.target.timing.write_cycles_per_row for r in rows]

    def vector_elements(self, node: Node) -> int:
        sizes = [self.graph.tensors[t].size for t in node.inputs + node.outputs
                 if t and not self.graph.tensors[t].is_constant]
        window = int(np.prod(node.attrs["kernel"])) if "kernel" in node.attrs else 1
        return max(sizes) * window

    def vector_cycles(self, node: Node, rows: tuple[int, int] | None = None) -> int:
        """GPEU cycles of a vector operator, or of its output rows ``rows``: all of a tile's GPEUs
        work on one set."""
        g = self.target.gpeu
        elements = self.vector_elements(node)
        if rows is not None:
            elements = elements * (rows[1] - rows[0]) / tensor_rows(self.graph.tensors[node.outputs[0]].shape)
        return max(1, math.ceil(elements / (g.per_tile * g.elements_per_cycle)))

    def rows_bytes(self, tensor: str, rows: int) -> float:
        """Bytes of ``rows`` rows of an activation tensor (what a set moves or a buffer holds)."""
        per_row = self._row_bytes.get(tensor)
        if per_row is None:
            t = self.graph.tensors[tensor]
            per_row = self._row_bytes[tensor] = t.size * self.activation_bytes / max(1, tensor_rows(t.shape))
        return per_row * rows

    @cached_property
    def _row_bytes(self) -> dict[str, float]:
        """Bytes of one row of each tensor asked for (the schedulers ask for them every round)."""
        return {}

    def memory_cycles(self, nbytes: float) -> int:
        """Cycles a transfer holds the channel to the global memory (``[memory]``)."""
        return math.ceil(nbytes / self.target.memory.bytes_per_cycle)

    def tensor_transfer_cycles(self, tensor: str, rows: int, src: int, dst: int) -> int:
        return self.transfer_cycles(self.rows_bytes(tensor, rows), src, dst)
