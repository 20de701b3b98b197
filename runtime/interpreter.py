"""The reference runtime: executes a program's per-tile instruction streams.

Each tile has its own buffer. Instructions issue at their cycle ``t`` in a
global event order and commit their results at ``done``; a read of rows that are
not committed in the reading tile's buffer at that moment is an error, so a
program whose schedule or data movement is wrong cannot produce an answer. The
whole batch (the leading axis of the inputs) moves through each instruction at
once. The chip's global memory (``spill`` writes rows there, ``fill`` reads them
back into a tile's buffer) keeps committed rows the same way.

Activation values are kept once per machine, not once per tile: every tile holding
rows of an activation tensor holds the values the producing tile wrote (messages,
spills and fills copy them), so the tiles share one array per tensor, each with its
own per-row commit counts, which alone decide what it may read. Rows are fixed by
their first write; a later write of different values (a program that computes the
same rows twice, differently) gives the writing tile its own copy, so every tile
still reads exactly what was written into its buffer. Partial sums (``acc:<layer>``)
are per tile; a convolution's hold only the rows that tile's instructions touch.

The ``ideal`` level computes crossbar sums as exact integer matrix products:
each tile's crossbars of a layer are assembled into one matrix (sums over row
blocks are exact, so the grouping cannot change a result) and multiplied with
float32 BLAS in row chunks short enough that every partial sum provably stays
below 2^24, the chunks being added in float64. Input rows are rounded to DAC
codes once per layer, however many sets read them.

The ``onnxruntime`` arithmetic (ideal level only) reproduces the int8 arithmetic
of the installed onnxruntime on this CPU instead of the specification's: on x86
without VNNI its u8 x s8 kernels saturate pair sums to int16, which the runtime
adds to the exact sums of the layers ORT runs that way, and average pools over
the whole image between two grids round as ORT's quantized pool does (see
:mod:`cimc.runtime.ort_arithmetic`). What cimc quantized itself is unaffected.

Layers of a bfloat16 program (a target with ``precision.format = "bf16"``; their
``w_type`` is ``bfloat16`` and their crossbars hold bfloat16 encodings) round their
inputs to bfloat16 once per row instead of quantizing them, and multiply by the
decoded weights in float32 BLAS (bfloat16 products are exact in float32) with a
float32 accumulator, partial sums of other tiles included; the periphery adds the
float32 bias. With no ADC and no bit slices to simulate, the ``crossbar`` level
computes them as ``ideal`` does.

A ``multiplier`` (programs for a digital target, ideal level; :func:`run`) replaces
every crossbar product by an approximate 8-bit multiplier's
(:mod:`cimc.runtime.multipliers`): on integer programs the sign-magnitude product of
the centred activation code and the integer weight (both magnitudes at most 255,
exact integer sums, :class:`~cimc.runtime.multipliers.IntProduct`), on bfloat16
programs the product of the significands with exact signs and exponents, float32
accumulation (:class:`~cimc.runtime.multipliers.Bf16Product`). Each tile's
assembled matrix is prepared once per run (its row tables built once, shared by the
batch chunks); the unchanged periphery follows. The exact product, which the run
computes anyway, gives the ``multiplier_error`` statistic.
"""

from __future__ import annotations

import heapq
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from cimc.errors import CimcError, ProgramError
from cimc.inputs import available_memory, check_arrays, check_memory
from cimc.passes.schedule.sets import ROW_WISE, WINDOWED, tensor_rows, window_input_rows
from cimc.program import Program
from cimc.runtime import crossbar as xb
from cimc.runtime import multipliers as mp
from cimc.runtime.kernels import VECTOR_KERNELS, lift_constant, patches_nhwc, to_nhwc, weights_khwc
from cimc.runtime.ort_arithmetic import (SaturatingPairs, global_average_requantized, onnxruntime_saturates,
                                         pair_saturation, requantized_pools, saturating_layer, saturating_pairs)
from cimc.targets.codegen import PRIORITY, accumulator

LEVELS = ("ideal", "crossbar")
#: ``exact``: the ONNX specification and the hardware; ``onnxruntime``: the installed onnxruntime's
#: int8 arithmetic on this CPU, for pre-quantized models.
ARITHMETICS = ("exact", "onnxruntime")
#: Memory the runtime aims to stay within per batch chunk.
MEMORY_BUDGET_BYTES = 1 << 30
_COMMIT = -1
#: Shortest float32 row chunk worth using; below it (16-bit operands) products run in float64.
MIN_FLOAT32_ROWS = 64


class ReadBeforeWrite(ProgramError):
    """The program reads data that is not (yet) in the tile's buffer."""


@dataclass
class Result:
    outputs: dict[str, np.ndarray]
    stats: dict


@dataclass
class _Storage:
    """An activation tensor's values, shared by the tiles (and the global memory) that hold rows of it."""
    data: np.ndarray             # float32, (batch,) + the tensor's shape
    fixed: np.ndarray            # per row: written, and never changed afterwards
    source: object = None        # a graph input: the array its rows were loaded from


@dataclass
class _Buffer:
    data: np.ndarray
    count: np.ndarray            # per row: writes committed (activations: 0/1; accumulators: crossbars)
    storage: _Storage | None = None      # activations: the shared values (``data`` is its array); None: own array
    lo: int = 0                  # a convolution's accumulator: the first row ``data`` holds (axis 1)


def _rows_of(data: np.ndarray, a: int, b: int) -> np.ndarray:
    """Rows ``a:b`` of an activation buffer (axis 3 of a rank-4 tensor's; all of any other)."""
    return data[:, :, :, a:b] if data.ndim == 5 else data


@dataclass
class _Tile:
    index: int
    buffers: dict[str, _Buffer] = field(default_factory=dict)


def _bf16(node: dict) -> bool:
    """Whether a crossbar layer computes in bfloat16 (compiled for a ``precision.format = "bf16"`` chip)."""
    return node["quant"].get("w_type") == "bfloat16"


def bf16_values(cells: np.ndarray) -> np.ndarray:
    """The float32 weights a bfloat16 crossbar block holds (its cells store the bfloat16 encodings,
    kept as int16 words in the program)."""
    return (cells.astype(np.int16).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _code_range(q: dict) -> tuple[int, int]:
    """DAC code range of a layer's inputs."""
    if q["x_signed"]:
        return -(1 << (q["x_bits"] - 1)), (1 << (q["x_bits"] - 1)) - 1
    return 0, (1 << q["x_bits"]) - 1


def _code_peak(q: dict) -> int:
    """Largest magnitude of a zero-point-centred code: what bounds every partial sum."""
    lo, hi = _code_range(q)
    return max(abs(lo - q["x_zero"]), abs(hi - q["x_zero"]))


class Machine:
    """One execution of a program over one batch chunk."""

    def __init__(self, program: Program, inputs: dict[str, np.ndarray], level: str = "ideal",
                 shortcut: bool = True, cells: dict | None = None, arithmetic: str = "exact",
                 multiplier: mp.Multiplier | None = None, products: dict | None = None) -> None:
        self.p = program
        self.level = level
        self.multiplier = multiplier          # ideal level, digital chips: emulated crossbar products
        ort = arithmetic == "onnxruntime"
        self.saturate_pairs = ort and onnxruntime_saturates()   # on a CPU whose int8 kernels saturate
        self.shortcut = shortcut              # crossbar level: exact products for unclippable columns
        self.cells = {} if cells is None else cells   # xbar id -> XbarCells, shared by the chunks
        self.inputs = inputs
        self.batch = next(iter(inputs.values())).shape[0]
        self.tiles = [_Tile(i) for i in range(len(program.tiles))]
        self.memory = _Tile(-1)                       # the global memory: buffers, no compute
        self.storage: dict[str, _Storage] = {}        # activation tensor -> values shared by the tiles
        self.acc_rows = _accumulator_rows(program)     # (tile, acc tensor) -> rows its buffer holds
        # message -> (rows it carries, partial sums: their counts, activations: _origin)
        self.messages: dict[int, tuple[np.ndarray, np.ndarray | None, tuple | None]] = {}
        self.outputs: dict[str, np.ndarray] = {}
        self._stored: dict[str, np.ndarray] = {}      # output -> rows the host has read
        self.layer_xbars = {}
        for x in program.crossbars:
            self.layer_xbars.setdefault(x["layer"], []).append(x)
        self.slots = {x["id"]: x for x in program.crossbars}
        # Every copy of a layer holds all its blocks: the partial sums a set's rows must collect.
        self.blocks_per_copy = {name: sum(1 for x in xs if x["copy"] == 0) for name, xs in self.layer_xbars.items()}
        # Which segment's weights each physical crossbar holds. A model that fits is programmed
        # once, before any inference; one run in segments starts empty and writes each in turn.
        segmented = any(x["segment"] for x in program.crossbars)
        self.holding: dict[int, int | None] = {} if segmented else {x["xbar"]: 0 for x in program.crossbars}
        self._weights: dict[tuple[str, int, int], tuple[list[tuple[int, np.ndarray]], int, list]] = {}
        # With a multiplier: (first row of K, the tile's matrix in unfolded order prepared for it),
        # shared by the chunks like the cells (preparing builds the multiplier's row tables)
        self.products: dict[tuple[str, int, int, int], tuple[int, mp.IntProduct | mp.Bf16Product]] = \
            {} if products is None else products
        self._pairs: dict[tuple[str, int, tuple[int, int]], SaturatingPairs | None] = {}
        self._codes: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._read_costs: dict[tuple[str, tuple[int, ...]], tuple[int, float]] = {}
        self.constants = {k[len("const/"):]: v for k, v in program.arrays.items() if k.startswith("const/")}
        self.requantized_pools = requantized_pools(program.nodes, self.constants, program.tensors) if ort else {}

    # -- buffers -------------------------------------------------------------------
    def _shape(self, tensor: str) -> tuple[int, ...]:
        return tuple(self.p.tensors[tensor])

    def _buffer(self, tile: _Tile, tensor: str) -> _Buffer:
        buf = tile.buffers.get(tensor)
        if buf is None:
            if tensor.startswith("acc:"):
                node = self.p.node(tensor[4:])
                shape = self._acc_shape(node)
                rows = tensor_rows(self._shape(node["outputs"][0]))
                lo = 0
                if node["op"] == "Conv":              # only the rows this tile's instructions touch
                    lo, hi = self.acc_rows.get((tile.index, tensor), (0, shape[1]))
                    shape = (shape[0], hi - lo) + shape[2:]
                buf = _Buffer(np.zeros(shape, dtype=self._acc_dtype(node)), np.zeros(rows, dtype=np.int64), lo=lo)
            else:
                st = self.storage.get(tensor)
                if st is None:
                    shape = self._shape(tensor)
                    st = self.storage[tensor] = _Storage(np.zeros((self.batch,) + shape, dtype=np.float32),
                                                         np.zeros(tensor_rows(shape), dtype=bool))
                buf = _Buffer(st.data, np.zeros(len(st.fixed), dtype=np.int64), st)
            tile.buffers[tensor] = buf
        return buf

    def _acc_rows(self, buf: _Buffer, node: dict, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` of a tile's accumulator (all of it for a layer other than a convolution)."""
        if node["op"] != "Conv":
            return buf.data
        if a < buf.lo or b > buf.lo + buf.data.shape[1]:
            raise ProgramError(f"rows {a}..{b - 1} of the accumulator of {node['name']} lie outside the rows "
                               f"{buf.lo}..{buf.lo + buf.data.shape[1] - 1} the tile's instructions name")
        return buf.data[:, a - buf.lo:b - buf.lo]

    def _origin(self, tile: _Tile, tensor: str, rows: tuple[int, int]) -> tuple | None:
        """Where a copy of rows ``rows`` of ``tensor`` read from ``tile`` comes from: the shared
        values and those rows (fixed there, since the tile has them), or None (its own array)."""
        buf = tile.buffers.get(tensor)
        return None if buf is None or buf.storage is None else (buf.storage, tuple(rows))

    def _put(self, tile: _Tile, tensor: str, rows: tuple[int, int], values, origin: tuple | None = None) -> None:
        """Commit ``values`` as rows ``rows`` of activation ``tensor`` in ``tile``'s buffer (``origin``:
        see :meth:`_origin`, for values copied from a buffer)."""
        def fill(dst: np.ndarray) -> None:
            dst[...] = values
        self._produce(tile, tensor, rows, fill, values, origin)

    def _produce(self, tile: _Tile, tensor: str, rows: tuple[int, int], fill, values=None,
                 origin: tuple | None = None) -> None:
        """Commit rows ``rows`` of activation ``tensor`` in ``tile``'s buffer, ``fill(dst)`` writing
        their values into ``dst`` (shaped like those rows of the buffer).

        Rows no tile has written yet are written in the shared array; rows already written there
        are compared, bit for bit, with the new values, and if they differ the tile gets its own
        copy of the array (what it wrote before is the shared values), written as before. Values
        copied from these very rows of the shared array (``origin``; fixed rows never change) or
        loaded from the same input array as they were are those bits already."""
        if tensor.startswith("acc:"):
            raise ProgramError(f"tile {tile.index} writes partial sums {tensor} as activation rows; "
                               f"recompile the program")
        buf = self._buffer(tile, tensor)
        a, b = rows
        st = buf.storage
        if st is None:
            fill(_rows_of(buf.data, a, b))
        elif not st.fixed[a:b].any():
            fill(_rows_of(st.data, a, b))
            st.fixed[a:b] = True
        elif ((origin is not None and origin[0] is st and origin[1] == (a, b))
              or (values is not None and values is st.source)) and st.fixed[a:b].all():
            pass
        else:
            old = _rows_of(st.data, a, b)
            if isinstance(values, np.ndarray) and values.dtype == old.dtype and values.shape == old.shape:
                new = values
            else:
                new = np.empty_like(old)
                fill(new)
            fixed = st.fixed[a:b]
            if fixed.all():
                same = np.array_equal(old.view(np.uint32), new.view(np.uint32))
            else:                                  # one row: fixed; rows only exist on axis 3
                which = np.flatnonzero(fixed)
                same = np.array_equal(old[:, :, :, which].view(np.uint32), new[:, :, :, which].view(np.uint32))
            if same:
                if not fixed.all():
                    todo = np.flatnonzero(~fixed)
                    old[:, :, :, todo] = new[:, :, :, todo]
                    st.fixed[a:b] = True
            else:
                buf.data, buf.storage = st.data.copy(), None
                _rows_of(buf.data, a, b)[...] = new
        buf.count[a:b] = 1

    def _acc_dtype(self, node: dict) -> type:
        """float32 when no sum of the layer can reach 2^24 (then it is exact), float64 otherwise;
        float32 for a bfloat16 layer, whose accumulator is float32 by definition."""
        q = node["quant"]
        if _bf16(node):
            return np.float32
        w_peak = max((float(np.abs(self.p.arrays[f"xbar/{x['id']}"]).max(initial=0))
                      for x in self.layer_xbars[node["name"]]), default=0.0)
        bias_peak = float(np.abs(self.p.arrays.get(f"layer/{node['name']}/bias_int", np.zeros(1))).max())
        x_peak = _code_peak(q)
        if self.level == "crossbar" or self._saturates(node):   # plus the offset or saturation term
            x_peak += (1 << q["x_bits"]) - 1
        peak = q["k"] * x_peak * w_peak + bias_peak
        if self.multiplier is not None:       # approximate products may exceed the exact ones
            table = self.multiplier.table()[:x_peak + 1, :int(w_peak) + 1]
            peak = max(peak, q["k"] * float(table.max(initial=0)) + bias_peak)
        return np.float32 if peak < 2 ** 24 else np.float64

    def _acc_shape(self, node: dict) -> tuple[int, ...]:
        out = self._shape(node["outputs"][0])
        if node["op"] == "Conv" and len(out) == 4:
            return (self.batch * out[0], out[2], out[3], out[1])      # channels last
        if node["op"] == "Conv":
            return (self.batch * out[0], 1, out[2], out[1])
        return (self.batch,) + out

    def _read(self, tile: _Tile, tensor: str, rows: tuple[int, int], need: int = 1) -> np.ndarray:
        if tensor in self.constants:
            return lift_constant(self.constants[tensor])
        buf = tile.buffers.get(tensor)
        a, b = rows
        if buf is None or (buf.count[a:b] < need).any():
            where = "the global memory" if tile is self.memory else f"tile {tile.index}"
            raise ReadBeforeWrite(f"{where} reads rows {a}..{b - 1} of {tensor} before they are "
                                  f"written there; the program is inconsistent, recompile it")
        return buf.data

    # -- execution -----------------------------------------------------------------
    def execute(self) -> dict:
        events: list[tuple[int, int, int, int, object]] = []
        seq = 0
        for tile, stream in zip(self.tiles, self.p.tiles):
            for ins in stream:
                events.append((ins["t"], PRIORITY[ins["op"]], seq, tile.index, ins))
                seq += 1
        heapq.heapify(events)
        stats = {"busy_crossbar_cycles": 0, "crossbar_reads": 0, "adc_conversions": 0, "adc_energy_pj": 0.0,
                 "adc_clipped": 0, "vector_elements": 0, "latency_cycles": 0, "cells_written": 0, "macs": 0,
                 "mvm_intervals": [], "mult_abs_diff": 0.0, "mult_diff": 0.0, "mult_abs_exact": 0.0,
                 "memory_bytes": 0.0}
        while events:
            t, prio, _, tile_index, item = heapq.heappop(events)
            tile = self.tiles[tile_index]
            stats["latency_cycles"] = max(stats["latency_cycles"], t)
            if prio == _COMMIT:
                item()
                continue
            commit = getattr(self, "_" + item["op"])(tile, item, stats)
            if commit is not None:
                heapq.heappush(events, (item["done"], _COMMIT, seq, tile_index, commit))
                seq += 1
        missing = [o for o in self.p.outputs if o not in self.outputs or not self._stored[o].all()]
        if missing:
            raise ProgramError(f"the program never stores output {missing[0]!r}; recompile it")
        return stats

    def _load(self, tile: _Tile, ins: dict, stats: dict) -> None:
        tensor = ins["tensor"]
        values = self.inputs[tensor]
        self._put(tile, tensor, (0, tensor_rows(self._shape(tensor))), values)
        st = tile.buffers[tensor].storage
        if st is not None:                       # (still shared: the values are those of the array)
            st.source = values                   # later loads of the same array need no comparison

    def _write(self, tile: _Tile, ins: dict, stats: dict):
        per_cell = self.p.target.columns_per_weight
        blocks = [self.slots[i] for i in ins["xbars"]]
        if any(x["tile"] != tile.index or x["segment"] != ins["segment"] for x in blocks):
            raise ProgramError(f"tile {tile.index} writes blocks of another tile or segment; recompile it")
        for x in blocks:
            self.holding[x["xbar"]] = None                  # mid-write: unreadable until done
            stats["cells_written"] += (x["rows"][1] - x["rows"][0]) * (x["cols"][1] - x["cols"][0]) * per_cell

        def commit() -> None:
            for x in blocks:
                self.holding[x["xbar"]] = x["segment"]
        return commit

    def _store(self, tile: _Tile, ins: dict, stats: dict) -> None:
        """The host reads rows of a graph output from the tile that wrote them (a duplicated or
        row-split last layer leaves its rows on several tiles)."""
        tensor = ins["tensor"]
        a, b = ins["rows"]
        data = self._read(tile, tensor, (a, b))
        if tensor not in self.outputs:
            self.outputs[tensor] = np.zeros_like(data)
            self._stored[tensor] = np.zeros(tensor_rows(self._shape(tensor)), dtype=bool)
        if data.ndim == 5:
            self.outputs[tensor][:, :, :, a:b] = data[:, :, :, a:b]
        else:
            self.outputs[tensor][...] = data
        self._stored[tensor][a:b] = True

    def _send(self, tile: _Tile, ins: dict, stats: dict) -> None:
        a, b = ins["rows"]
        tensor = ins["tensor"]
        if tensor.startswith("acc:"):
            buf = tile.buffers.get(tensor)
            if buf is None or (buf.count[a:b] == 0).any():
                raise ReadBeforeWrite(f"tile {tile.index} sends partial sums of {tensor} rows {a}..{b - 1} "
                                      f"it has not computed")
            piece = self._acc_rows(buf, self.p.node(tensor[4:]), a, b)
            self.messages[ins["msg"]] = (piece.copy(), buf.count[a:b].copy(), None)
        else:
            data = self._read(tile, tensor, (a, b))
            piece = data[:, :, :, a:b] if data.ndim == 5 else data
            self.messages[ins["msg"]] = (piece.copy(), None, self._origin(tile, tensor, (a, b)))

    def _recv(self, tile: _Tile, ins: dict, stats: dict) -> None:
        if ins["msg"] not in self.messages:
            raise ReadBeforeWrite(f"tile {tile.index} receives message {ins['msg']} before it was sent")
        piece, counts, origin = self.messages.pop(ins["msg"])
        a, b = ins["rows"]
        tensor = ins["tensor"]
        if not tensor.startswith("acc:"):
            if ins["reduce"]:
                raise ProgramError(f"tile {tile.index} adds message {ins['msg']} to activation {tensor}, "
                                   f"not to partial sums; recompile the program")
            self._put(tile, tensor, (a, b), piece, origin)
            return
        buf = self._buffer(tile, tensor)
        if ins["reduce"]:
            self._acc_rows(buf, self.p.node(tensor[4:]), a, b)[...] += piece
            buf.count[a:b] += counts
        else:
            buf.data[...] = piece
            buf.count[a:b] = 1

    def _rows_bytes(self, tensor: str, rows: tuple[int, int]) -> float:
        """Bytes of rows of an activation tensor, for one inference (as the cost model counts them)."""
        shape = self._shape(tensor)
        return (math.prod(shape) * self.p.target.precision.activation_bits / 8 * (rows[1] - rows[0])
                / max(1, tensor_rows(shape)))

    def _move(self, src: _Tile, dst: _Tile, ins: dict, stats: dict):
        """Rows ``ins["rows"]`` of ``ins["tensor"]`` read from ``src``'s buffers now and committed
        into ``dst``'s at ``done`` (one of them the global memory)."""
        if self.p.target.memory is None:
            raise ProgramError(f"the program moves rows of {ins['tensor']} to or from a global memory, but "
                               f"target {self.p.target.name} has no [memory]; recompile it")
        a, b = ins["rows"]
        tensor = ins["tensor"]
        data = self._read(src, tensor, (a, b))
        piece = (data[:, :, :, a:b] if data.ndim == 5 else data).copy()
        origin = self._origin(src, tensor, (a, b))
        stats["memory_bytes"] += self._rows_bytes(tensor, (a, b))

        def commit() -> None:
            if tensor.startswith("acc:"):         # (whole buffers: see _accumulator_rows)
                buf = self._buffer(dst, tensor)
                buf.data[...] = piece
                buf.count[a:b] = 1
            else:
                self._put(dst, tensor, (a, b), piece, origin)
        return commit

    def _spill(self, tile: _Tile, ins: dict, stats: dict):
        return self._move(tile, self.memory, ins, stats)

    def _fill(self, tile: _Tile, ins: dict, stats: dict):
        return self._move(self.memory, tile, ins, stats)

    def _vec(self, tile: _Tile, ins: dict, stats: dict):
        node = self.p.node(ins["node"])
        out = node["outputs"][0]
        height = tensor_rows(self._shape(out))
        r0, r1 = ins["rows"]
        if (r0, r1) != (0, height):
            return self._vec_rows(tile, node, (r0, r1), stats)
        args = [self._read(tile, t, (0, tensor_rows(self._shape(t)))) if t not in self.constants
                else lift_constant(self.constants[t]) for t in node["inputs"]]
        pool = self.requantized_pools.get(node["name"])
        if pool is not None:
            result = global_average_requantized(args[0], pool)
        else:
            result = VECTOR_KERNELS[node["op"]](node["attrs"], *args)
        stats["vector_elements"] += max(a.size for a in args + [result]) // self.batch

        def commit() -> None:
            # Activations are written once, so the result array itself becomes the values (a view
            # of another buffer, as Reshape returns, or an input itself, is copied to keep buffers
            # apart). A result that is not float32 values of the tensor's shape is the tile's own.
            own = result.base is None and not any(result is a for a in args)
            buf = tile.buffers.get(out)
            shared = result.dtype == np.float32 and result.shape == (self.batch,) + self._shape(out)
            if shared and buf is None and out not in self.storage:
                st = self.storage[out] = _Storage(result if own else result.copy(), np.ones(height, dtype=bool))
                tile.buffers[out] = _Buffer(st.data, np.ones(height, dtype=np.int64), st)
            elif shared and (buf is None or buf.storage is not None):
                self._put(tile, out, (0, height), result)
            else:
                tile.buffers[out] = _Buffer(result if own else result.copy(), np.ones(height, dtype=np.int64))
        return commit

    def _vec_rows(self, tile: _Tile, node: dict, rows: tuple[int, int], stats: dict):
        """Output rows ``rows`` of a row-wise or pooling operator, from the input rows they need:
        a pool gets the slice of rows under its windows and the pads that slice still needs."""
        r0, r1 = rows
        attrs, args = node["attrs"], []
        out = node["outputs"][0]
        if node["op"] not in ROW_WISE | WINDOWED or len(self._shape(out)) != 4:
            raise ProgramError(f"tile {tile.index} computes rows {r0}..{r1 - 1} of {node['op']} {node['name']}, "
                               f"which has no row structure; recompile the program")
        for i, t in enumerate(node["inputs"]):
            if t in self.constants:
                args.append(lift_constant(self.constants[t]))
                continue
            shape = self._shape(t)
            if node["op"] in WINDOWED and i == 0:
                a, b = window_input_rows(attrs, shape[2], rows)
                args.append(self._read(tile, t, (a, b))[:, :, :, a:b])
                attrs = _window_slice(attrs, shape[2], rows, (a, b))
            elif len(shape) == 4 and shape[2] == self._shape(out)[2]:
                args.append(self._read(tile, t, rows)[:, :, :, r0:r1])
            else:                            # broadcast over rows: all of it
                args.append(self._read(tile, t, (0, tensor_rows(shape))))
        result = VECTOR_KERNELS[node["op"]](attrs, *args)
        stats["vector_elements"] += max(a.size for a in args + [result]) // self.batch

        def commit() -> None:
            self._put(tile, out, (r0, r1), result)
        return commit

    def xbar_cells(self, xbar: dict) -> xb.XbarCells:
        """A crossbar's cells, and the resolution its ADCs are set to as the program configures them
        (computed once per program run)."""
        cells = self.cells.get(xbar["id"])
        if cells is None:
            derived = xb.xbar_cells(self.p.arrays[f"xbar/{xbar['id']}"], self.p.target)
            stored = self.p.arrays.get(f"xbar_adc/{xbar['id']}")
            if stored is not None:
                # the program's setting; slices the block does not need are all-zero columns
                derived = xb.XbarCells(derived.cells, derived.lossless,
                                       stored[:, :derived.cells.shape[1]].astype(np.int64))
            cells = self.cells[xbar["id"]] = derived
        return cells

    def _read_cost(self, layer: str, xbar_ids: tuple[int, ...]) -> tuple[int, float]:
        """ADC conversions and energy of one read of these crossbars: fixed by what is programmed,
        so computed once per crossbar set, not per instruction."""
        key = (layer, xbar_ids)
        if self.p.target.adc is None:            # a digital chip: adder trees, no conversions
            return 0, 0.0
        if key not in self._read_costs:
            wanted = set(xbar_ids)
            costs = [xb.adc_cost(self.xbar_cells(x), self.p.target.adc)
                     for x in self.layer_xbars[layer] if x["id"] in wanted]
            self._read_costs[key] = (sum(c for c, _ in costs), sum(e for _, e in costs))
        return self._read_costs[key]

    def _tile_weights(self, layer: str, tile: int, group: int, copy: int = 0) -> tuple[list, int, list, tuple[int, int]]:
        """The tile's crossbars of one layer copy and group as row chunks of one matrix, the part of the
        (K, N_group) matrix the tile holds, and the group-relative column span it covers.

        Sums over a layer's row blocks are exact, so assembling its crossbars cannot
        change a result. Each block's rows land at the rows of K its wordlines read (its
        input gather: a contiguous range, or a sorted block's ``xbar_rows``) and its
        outputs at their channels, so a sorted layout gives the very same matrix. Each
        chunk is short enough that every partial sum stays below 2^24 and float32 BLAS
        computes it exactly; chunks are then added in float64.

        At the ``crossbar`` level the columns that can clip (all used columns without the
        shortcut) are taken out of that matrix and returned as :class:`LossyBlock` s, one
        per crossbar, simulated conversion by conversion.
        """
        key = (layer, tile, group, copy)
        if key not in self._weights:
            node = self.p.node(layer)
            q = node["quant"]
            n_group = q["n"] // node["attrs"].get("group", 1)
            xbars = [x for x in self.layer_xbars[layer]
                     if x["tile"] == tile and x["group"] == group and x["copy"] == copy]
            # Only the rows and columns this tile holds: a fully connected layer spread over
            # hundreds of tiles must not cost each of them the whole matrix. (A convolution keeps
            # all rows, which the channels-last reordering needs; its K is small.)
            # Each block's rows of the group's K and its group-relative outputs: contiguous ranges,
            # or a sorted (SWS) block's input gather and output scatter.
            rows = {x["id"]: self.p.block_rows(x) for x in xbars}
            cols = {x["id"]: self.p.block_cols(x) - group * n_group for x in xbars}
            c_lo = min(int(c.min()) for c in cols.values())
            c_hi = max(int(c.max()) for c in cols.values()) + 1
            r_lo, r_hi = (0, q["k"]) if node["op"] == "Conv" else \
                (min(int(r.min()) for r in rows.values()), max(int(r.max()) for r in rows.values()) + 1)
            w = np.zeros((r_hi - r_lo, c_hi - c_lo), dtype=np.float64)
            bf16 = _bf16(node)
            for x in xbars:
                cells = self.p.arrays[f"xbar/{x['id']}"]
                w[np.ix_(rows[x["id"]] - r_lo, cols[x["id"]] - c_lo)] += bf16_values(cells) if bf16 else cells
            unfold = lambda m: m                     # noqa: E731
            if node["op"] == "Conv":                 # match the channels-last unfolding
                kernel = tuple(node["attrs"]["kernel"])
                unfold = lambda m: weights_khwc(m, q["k"] // (kernel[0] * kernel[1]), kernel)  # noqa: E731
            blocks = []
            if self.level == "crossbar" and not bf16:
                # Crossbar rows (the program's K order) among the unfolded input's columns.
                where = np.argsort(unfold(np.arange(q["k"], dtype=np.float64)[:, None])[:, 0].astype(np.int64))
                lo, _ = _code_range(q)
                cb = self.p.target.crossbar.cell_bits
                for x in xbars:
                    r, c = rows[x["id"]], cols[x["id"]]
                    xc = self.xbar_cells(x)
                    mask = xc.lossy if self.shortcut else xc.bits > 0
                    blk = xb.lossy_block(xc, mask, cb, where[r], c, n_group, lo - q["x_zero"])
                    if blk is not None:
                        blocks.append(blk)
                        w[np.ix_(r - r_lo, c - c_lo)] -= xb.weighted(xc.cells, mask, cb)
            w = unfold(w)
            if self.multiplier is not None and key not in self.products:     # ideal level
                self.products[key] = (r_lo, self._prepared(w, q, bf16))
            if bf16:                                 # one float32 product: a float32 accumulator
                self._weights[key] = ([(r_lo, w.astype(np.float32))], len(xbars), blocks, (c_lo, c_hi))
                return self._weights[key]
            x_peak = _code_peak(q)
            w_peak = max(float(np.abs(w).max(initial=0)), 1.0)
            step = int((2 ** 24 - 1) // (x_peak * w_peak))
            dtype = np.float32
            if step < min(q["k"], MIN_FLOAT32_ROWS):      # wide operands: float64 is exact to 2^53
                step, dtype = int((2 ** 53 - 1) // (x_peak * w_peak)), np.float64
            if step < 1:
                raise ProgramError(f"layer {layer}: {q['x_bits']}-bit inputs times weights up to {w_peak:g} "
                                   f"cannot be summed exactly")
            chunks = [(r_lo + k0, w[k0:k0 + step].astype(dtype)) for k0 in range(0, r_hi - r_lo, step)
                      if w[k0:k0 + step].any() or not blocks]
            self._weights[key] = (chunks, len(xbars), blocks, (c_lo, c_hi))
        return self._weights[key]

    def _prepared(self, w: np.ndarray, q: dict, bf16: bool) -> "mp.IntProduct | mp.Bf16Product":
        """A tile's matrix prepared for the run's multiplier: bfloat16 values, or integer weights
        against the layer's centred code range."""
        if bf16:
            return mp.Bf16Product(w, self.multiplier)
        lo, hi = _code_range(q)
        return mp.IntProduct(w.astype(np.int64), self.multiplier, (lo - q["x_zero"], hi - q["x_zero"]))

    def _saturates(self, node: dict) -> bool:
        """Whether this layer's pair sums saturate as in onnxruntime's kernels (onnxruntime arithmetic)."""
        return self.saturate_pairs and saturating_layer(node["op"], node["quant"],
                                                        self.p.arrays.get(f"layer/{node['name']}/w_zero"),
                                                        node["attrs"].get("group", 1))

    def _saturating_pairs(self, layer: str, tile: int, span: tuple[int, int],
                          copy: int = 0) -> SaturatingPairs | None:
        """The weight pairs of an (ungrouped) layer whose int16 saturation this tile adds to its
        columns ``span``, in the unfolded input's K order, which is onnxruntime's.

        A pair may straddle crossbars or tiles; the tile holding its first weight corrects
        it, so every pair is corrected once (within the copy that computes the set).
        """
        key = (layer, tile, span, copy)
        if key not in self._pairs:
            node = self.p.node(layer)
            q = node["quant"]
            c_lo, c_hi = span
            w = np.zeros((q["k"], c_hi - c_lo), dtype=np.int32)
            owned = np.zeros(w.shape, dtype=bool)
            for x in self.layer_xbars[layer]:
                if x["copy"] != copy:
                    continue
                cols = self.p.block_cols(x)
                inside = (cols >= c_lo) & (cols < c_hi)
                where = np.ix_(self.p.block_rows(x), cols[inside] - c_lo)
                w[where] = self.p.arrays[f"xbar/{x['id']}"][:, inside]
                owned[where] = x["tile"] == tile
            if node["op"] == "Conv":
                kernel = tuple(node["attrs"]["kernel"])
                channels = q["k"] // (kernel[0] * kernel[1])
                w, owned = weights_khwc(w, channels, kernel), weights_khwc(owned, channels, kernel)
            self._pairs[key] = saturating_pairs(w, owned)
        return self._pairs[key]

    def _quantized(self, tile: _Tile, node: dict, tensor: str, rows: tuple[int, int]) -> np.ndarray:
        """DAC codes of ``tensor`` for this layer (a bfloat16 layer: its values rounded to bfloat16),
        each row rounded once however many sets read it.

        Convolution inputs are kept channels-last, (B*N, H, W, C), for the unfolding.
        """
        q = node["quant"]
        x = self._read(tile, tensor, rows)
        # Codes of shared values are shared too: the rows read are fixed there (committed here).
        buf = tile.buffers.get(tensor)
        key = (None if buf is not None and buf.storage is not None else tile.index, node["name"])
        conv = node["op"] == "Conv"
        if key not in self._codes:
            shape = to_nhwc(x, node["attrs"].get("rank", 2)).shape if conv else x.shape
            self._codes[key] = (np.zeros(shape, dtype=np.float32), np.zeros(tensor_rows(self._shape(tensor)), bool))
        codes, done = self._codes[key]
        a, b = rows
        todo = np.flatnonzero(~done[a:b])
        if todo.size:
            lo, hi = _code_range(q)
            first, last = a + todo[0], a + todo[-1] + 1
            if conv and x.ndim == 5:
                src, dst = to_nhwc(x[:, :, :, first:last], 2), codes[:, first:last]
            elif conv:
                src, dst = to_nhwc(x, node["attrs"].get("rank", 2)), codes
            else:
                src, dst = x, codes
            dst[...] = src                    # the one layout change, then in-place passes
            if _bf16(node):                   # bfloat16 at the crossbar input (inf and NaN kept)
                dst[...] = mp.bf16_round(dst, finite=False)
                done[first:last] = True
                return codes
            # QuantizeLinear's arithmetic (float32 division, round half to even, saturate), then
            # the zero point taken off: crossbars see centred codes, padding included.
            np.divide(dst, np.float32(q["x_scale"]), out=dst)
            np.rint(dst, out=dst)
            z = q["x_zero"]
            np.maximum(dst, np.float32(lo - z), out=dst)
            np.minimum(dst, np.float32(hi - z), out=dst)
            done[first:last] = True
        return codes

    def _mvm(self, tile: _Tile, ins: dict, stats: dict):
        node = self.p.node(ins["layer"])
        q, attrs = node["quant"], node["attrs"]
        x_name = node["inputs"][0]
        r0, r1 = ins["rows"]
        x_shape = self._shape(x_name)
        if node["op"] == "Conv" and len(x_shape) == 4:
            sh, dh, pt, kh = attrs["strides"][0], attrs["dilations"][0], attrs["pads"][0], attrs["kernel"][0]
            need = (max(r0 * sh - pt, 0), min((r1 - 1) * sh - pt + (kh - 1) * dh + 1, x_shape[2]))
        else:
            need = (0, tensor_rows(x_shape))
        codes = self._quantized(tile, node, x_name, need)
        group = attrs.get("group", 1)
        n_group = q["n"] // group
        acc_parts = []
        xbar_ids = set(ins["xbars"])
        saturates = self._saturates(node)
        for i in xbar_ids:
            x = self.slots[i]
            if self.holding.get(x["xbar"]) != x["segment"]:
                raise ProgramError(f"tile {tile.index} reads crossbar {x['xbar']} for layer {x['layer']} at "
                                   f"cycle {ins['t']}, when it does not hold that layer's weights; "
                                   f"recompile the program")
        physical = len({self.slots[i]["xbar"] for i in xbar_ids})
        copies = {self.slots[i]["copy"] for i in xbar_ids}
        if len(copies) != 1 or any(self.slots[i]["layer"] != node["name"] for i in xbar_ids):
            raise ProgramError(f"mvm on tile {tile.index} names crossbars of several copies or layers; "
                               f"recompile the program")
        copy = copies.pop()
        used = 0
        for g in sorted({x["group"] for x in self.layer_xbars[node["name"]] if x["id"] in xbar_ids}):
            chunks, count, blocks, (c_lo, c_hi) = self._tile_weights(node["name"], tile.index, g, copy)
            used += count
            if node["op"] == "Conv":                  # each group unfolds its own channels
                c_group = codes.shape[-1] // group
                xq = patches_nhwc(codes[..., g * c_group:(g + 1) * c_group], attrs,
                                  rows=(r0, r1) if len(x_shape) == 4 else None)
            else:
                xq = codes
            rows = xq.reshape(-1, xq.shape[-1])       # one large GEMM, not one per leading index
            part = None
            with np.errstate(over="ignore", invalid="ignore"):    # bfloat16 sums may leave float32, as on the chip
                for k0, w in chunks:
                    piece = rows[:, k0:k0 + w.shape[0]].astype(w.dtype, copy=False) @ w
                    part = piece if part is None else part.astype(np.float64) + piece
            if self.multiplier is not None:
                part = self._multiplied(node["name"], tile.index, g, copy, rows, part, stats)
            pairs = self._saturating_pairs(node["name"], tile.index, (c_lo, c_hi), copy) if saturates else None
            if pairs is not None:
                part = part + pair_saturation(rows, pairs, q["x_zero"])
            if blocks:
                lo, _ = _code_range(q)
                u = (rows + np.float32(q["x_zero"] - lo)).astype(np.int32)    # unsigned DAC codes
                sim, clipped = xb.simulate(u, blocks, n_group, q["x_bits"], self.p.target.crossbar.dac_bits)
                stats["adc_clipped"] += clipped
                sim = sim[:, c_lo:c_hi]
                part = sim if part is None else part + sim
            part = part.reshape(xq.shape[:-1] + (part.shape[-1],))
            acc_parts.append((g * n_group + c_lo, part))
        if used != len(xbar_ids):
            raise ProgramError(f"mvm on tile {tile.index} names crossbars of layer {node['name']} "
                               f"that are not on that tile")
        pixels = int(np.prod(xq.shape[:-1])) // self.batch
        chunks_in = self.p.target.input_chunks
        stats["macs"] += pixels * sum((self.slots[i]["rows"][1] - self.slots[i]["rows"][0]) *
                                      (self.slots[i]["cols"][1] - self.slots[i]["cols"][0]) for i in xbar_ids)
        stats["mvm_intervals"].append((ins["t"], ins["done"]))
        stats["busy_crossbar_cycles"] += (ins["done"] - ins["t"]) * physical
        stats["crossbar_reads"] += pixels * chunks_in * physical
        conversions, energy = self._read_cost(node["name"], tuple(ins["xbars"]))
        stats["adc_conversions"] += pixels * chunks_in * conversions
        stats["adc_energy_pj"] += pixels * chunks_in * energy

        def commit() -> None:
            buf = self._buffer(tile, accumulator(node["name"]))
            target = self._acc_rows(buf, node, r0, r1)
            for c0, part in acc_parts:
                target[..., c0:c0 + part.shape[-1]] += part.reshape(target.shape[:-1] + (part.shape[-1],))
            buf.count[r0:r1] += len(xbar_ids)
        return commit

    def _multiplied(self, layer: str, tile: int, group: int, copy: int, rows: np.ndarray, exact: np.ndarray,
                    stats: dict) -> np.ndarray:
        """The tile's crossbar sums with every product taken by the multiplier, and their error.

        Integer layers: ``rows`` holds centred activation codes (integer-valued float32,
        |code| <= 255) and the tile's integer matrix has |w| <= 255 (checked before the run),
        so its :class:`~cimc.runtime.multipliers.IntProduct` gives the sums of sign-magnitude
        products ``sign(x) sign(w) T[|x|, |w|]`` exactly. bfloat16 layers: ``rows`` holds
        bfloat16 values and :class:`~cimc.runtime.multipliers.Bf16Product` multiplies their
        significands, float32 sums. The exact multiplier's products are the exact ones:
        ``exact``, the product the caller already has (also for the error), is returned.
        """
        if self.multiplier.name == "exact":
            approx = exact
        else:
            r_lo, product = self.products[(layer, tile, group, copy)]
            x = rows[:, r_lo:r_lo + product.shape[0]]
            if isinstance(product, mp.IntProduct):
                approx = product(x.astype(np.int16)).astype(np.float64)
            else:
                approx = product(x, rounded=True)          # rounded to bfloat16 by _quantized
        with np.errstate(invalid="ignore"):            # inf - inf where a bf16 input was infinite
            diff = approx.astype(np.float64) - exact
        stats["mult_abs_diff"] += float(np.abs(diff).sum())
        stats["mult_diff"] += float(diff.sum())
        stats["mult_abs_exact"] += float(np.abs(exact).sum(dtype=np.float64))
        return approx

    def _writeback(self, tile: _Tile, ins: dict, stats: dict) -> None:
        node = self.p.node(ins["layer"])
        r0, r1 = ins["rows"]
        name = accumulator(node["name"])
        self._read(tile, name, (r0, r1), need=self.blocks_per_copy[node["name"]])
        acc = self._acc_rows(tile.buffers[name], node, r0, r1)
        out_name = node["outputs"][0]
        out_shape = self._shape(out_name)
        if node["op"] == "Conv":
            acc = acc.reshape((self.batch, out_shape[0], r1 - r0) + acc.shape[2:])
            acc = acc.transpose(0, 1, 4, 2, 3)                          # (B, N, C, R, W) view
            channel = (slice(None), None, None)
        else:
            if (r0, r1) != (0, tensor_rows(out_shape)):
                raise ProgramError(f"tile {tile.index} writes back rows {r0}..{r1 - 1} of {node['op']} "
                                   f"{node['name']}, whose sums have no row structure; recompile the program")
            channel = (slice(None),)

        def fill(rows: np.ndarray) -> None:       # rows r0:r1 of the output (all of a rank-3 one)
            dst = rows[:, :, :, None, :] if node["op"] == "Conv" and len(out_shape) != 4 else rows
            self._periphery(node, acc, dst, channel)
        self._produce(tile, out_name, (r0, r1), fill)

    def _periphery(self, node: dict, acc: np.ndarray, dst: np.ndarray, channel: tuple) -> None:
        """Digital periphery: exact sums -> output activations, written straight into ``dst``."""
        q = node["quant"]
        arrays = self.p.arrays
        w_scale = arrays[f"layer/{node['name']}/w_scale"]
        out = q.get("out")
        if out is None:
            # One float32 factor per channel, then the float32 bias.
            scale = (q["x_scale"] * w_scale.astype(np.float64)).astype(np.float32)
            np.multiply(acc, scale[channel], out=dst, casting="unsafe")
            bias = arrays.get(f"layer/{node['name']}/bias")
            if bias is not None:
                np.add(dst, bias[channel], out=dst)
            return
        # onnxruntime's requantization: float32(acc + bias) * float32(sx * sw / sy), rounded half to
        # even, saturated to the output type, then represented by its dequantized value.
        bias_int = arrays.get(f"layer/{node['name']}/bias_int")
        total = acc if bias_int is None else acc + bias_int[channel]
        factor = (np.float32(q["x_scale"]) * w_scale.astype(np.float32)) / np.float32(out["scale"])
        y = total.astype(np.float32) * factor[channel]
        np.rint(y, out=y)
        np.clip(y, out["qmin"] - out["zero"], out["qmax"] - out["zero"], out=y)
        np.multiply(y, np.float32(out["scale"]), out=dst, casting="unsafe")


def _accumulator_rows(program: Program) -> dict[tuple[int, str], tuple[int, int]]:
    """For each tile and partial-sum tensor its instructions name: the rows they touch (a buffer
    holding only those suffices; any other row is never committed there, so never read). A
    partial-sum tensor moved to or from the global memory is held whole everywhere."""
    spans: dict[tuple[int, str], tuple[int, int]] = {}
    whole: set[str] = set()
    for index, stream in enumerate(program.tiles):
        for ins in stream:
            op = ins["op"]
            if op in ("mvm", "writeback"):
                tensor = accumulator(ins["layer"])
            elif op in ("send", "recv"):
                tensor = ins["tensor"]
            else:
                if str(ins.get("tensor", "")).startswith("acc:"):
                    whole.add(ins["tensor"])
                continue
            if not tensor.startswith("acc:"):
                continue
            a, b = ins["rows"]
            lo, hi = spans.get((index, tensor), (a, b))
            spans[(index, tensor)] = (min(lo, a), max(hi, b))
    return {k: v for k, v in spans.items() if k[1] not in whole}


def _window_slice(attrs: dict, height: int, rows: tuple[int, int], span: tuple[int, int]) -> dict:
    """A 2-D pool's attributes for input rows ``span`` computing output rows ``rows``: the
    explicit pads the slice still touches stay explicit pads (average pools count them or not
    as before), and what lies beyond them is ceil_mode overhang, as in the whole operator."""
    sh, dh, kh = attrs["strides"][0], attrs["dilations"][0], attrs["kernel"][0]
    pt, pl, pb, pr = attrs["pads"]
    top = rows[0] * sh - pt
    bottom = (rows[1] - 1) * sh - pt + (kh - 1) * dh + 1
    pads = [span[0] - top, pl, min(pb, max(0, bottom - height)), pr]
    return {**attrs, "pads": pads, "output_hw": [rows[1] - rows[0], attrs["output_hw"][1]]}


def _sample_bytes(program: Program, multiplier: bool = False) -> int:
    """What one inference of a batch chunk holds at most: buffers, codes and unfolded inputs
    (with a multiplier, also the emulation's int64 operands, signs and gathered blocks)."""
    per_sample = 3 * 8 * sum(math.prod(s) for s in program.tensors.values())
    unfolded = 8 if not multiplier else 40
    for n in program.nodes:
        if n["op"] == "Conv":
            out = program.tensors[n["outputs"][0]]
            per_sample += unfolded * n["quant"]["k"] * n["attrs"].get("group", 1) * out[-1] * out[0]
    return max(per_sample, 1)


def _chunk_size(program: Program, total: int, workers: int, multiplier: bool = False) -> int:
    """Inferences per batch chunk: within the runtime's budget and what this machine has free (a
    request that cannot run even one inference per chunk is refused up front, not killed)."""
    per_sample = _sample_bytes(program, multiplier)
    check_memory(per_sample, "one inference of this program",
                 "run it on a machine with more memory")
    budget = MEMORY_BUDGET_BYTES
    free = available_memory()
    if free is not None:
        budget = min(budget, free // workers)
    return max(1, min(4096, budget // per_sample, math.ceil(total / workers)))


def resolve_multiplier(program: Program, multiplier: "str | mp.Multiplier | None",
                       multiplier_table: "str | os.PathLike | None" = None, level: str = "ideal",
                       arithmetic: str = "exact") -> mp.Multiplier | None:
    """The multiplier a run of ``program`` uses, or a :class:`CimcError` saying why it cannot.

    A table file alone means the ``table`` multiplier. Refused: any multiplier on an analog
    target (its crossbars add currents), at the ``crossbar`` level (which simulates the exact
    bit-sliced arithmetic of the arrays; the multiplier is emulated at the ``ideal`` level),
    with the ``onnxruntime`` arithmetic (a CPU's kernels, not the chip's), unknown names and
    malformed tables (:class:`cimc.errors.MultiplierError`, which lists the known names), and
    layers whose operands exceed 8-bit magnitudes (activation codes or weights above 255).
    """
    if multiplier is None and multiplier_table is None:
        return None
    name = multiplier.name if isinstance(multiplier, mp.Multiplier) else (multiplier or "table")
    target = program.target
    if not target.digital:
        raise CimcError(f"target {target.name} is analog: its crossbars add currents, there is no multiplier "
                        f"to choose (--multiplier {name}); compile for a digital target such as sram")
    if level != "ideal":
        raise CimcError(f"a multiplier is emulated at the ideal level; level {level} simulates the crossbars' "
                        f"exact bit-sliced arithmetic, drop --level {level} or the multiplier")
    if arithmetic != "exact":
        raise CimcError(f"arithmetic {arithmetic} reproduces a CPU's int8 kernels, not the chip's multiplier; "
                        f"use the exact arithmetic with --multiplier {name}")
    mult = multiplier if isinstance(multiplier, mp.Multiplier) else mp.get_multiplier(name, multiplier_table)
    peaks: dict[str, float] = {}
    for x in program.crossbars:
        peak = float(np.abs(program.arrays[f"xbar/{x['id']}"]).max(initial=0))
        peaks[x["layer"]] = max(peaks.get(x["layer"], 0.0), peak)
    for node in program.nodes:
        if node["name"] not in peaks or _bf16(node):      # bfloat16 significands are 8 bits wide
            continue
        q = node["quant"]
        x_peak, w_peak = _code_peak(q), peaks[node["name"]]
        if x_peak >= mp.SIZE or w_peak >= mp.SIZE:
            raise CimcError(f"layer {node['name']} has {q['x_bits']}-bit activations (codes up to {x_peak}) and "
                            f"weights up to {w_peak:g}: the multipliers take 8-bit magnitudes (0..{mp.SIZE - 1}); "
                            f"run it without a multiplier or compile for an 8-bit digital target such as sram")
    return mult


def run(program: Program, inputs: dict[str, np.ndarray], level: str = "ideal",
        workers: int | None = None, shortcut: bool = True, arithmetic: str = "exact",
        multiplier: "str | mp.Multiplier | None" = None,
        multiplier_table: "str | os.PathLike | None" = None) -> Result:
    """Execute ``program`` on ``inputs`` (arrays shaped like the model inputs, optionally with a
    leading batch axis) and return its outputs and per-inference statistics.

    ``level``: ``ideal`` (exact integer products: lossless ADCs) or ``crossbar`` (bit slices,
    bit-serial inputs, per-column ADCs that clip; see :mod:`cimc.runtime.crossbar`). At the
    crossbar level, columns whose ADC provably cannot clip are computed with exact products
    unless ``shortcut`` is false (the results are the same; tests use it to check so).

    ``arithmetic``: ``exact`` (the ONNX specification's integer arithmetic, which is the
    hardware's) or ``onnxruntime``: reproduce the int8 arithmetic of the installed
    onnxruntime on this CPU, so that a model quantized by onnxruntime gives onnxruntime's
    outputs. On x86 CPUs without VNNI its u8 x s8 kernels saturate pair sums to int16
    (probed once per process, see :mod:`cimc.runtime.ort_arithmetic`); elsewhere the two
    modes agree; either way, global average pools between two grids round as ORT's quantized
    pool does. It changes only what the model quantized, and only at the ``ideal`` level: the
    ``crossbar`` level simulates the chip, which has no CPU kernels.

    ``multiplier`` (a name from :func:`cimc.runtime.multipliers.get_multiplier`, or a
    :class:`~cimc.runtime.multipliers.Multiplier`; ``multiplier_table``: the 256x256 table file of
    the ``table`` multiplier, which a table alone implies): programs compiled for a digital target
    only, at the ideal level. On an integer chip (``sram``) every crossbar product becomes the
    multiplier's sign-magnitude product ``sign(x) sign(w) T[|x|, |w|]`` of the centred
    activation code and the integer weight (int8 domain: both magnitudes at most 255, else
    refused), summed exactly in integers (:class:`~cimc.runtime.multipliers.IntProduct`); on a
    bfloat16 chip (``sram-bf16``) the product of the bfloat16 operands with the multiplier on
    their 8-bit significands, signs and exponents exact, summed in float32
    (:class:`~cimc.runtime.multipliers.Bf16Product`). Neither gathers a table entry per
    multiply-accumulate; scaling and bias are unchanged. ``exact`` gives the
    very outputs of a run without a multiplier. Statistics added (see :func:`_summarize`):
    ``multiplier``, ``multiplier_error``, ``multiplier_bias``, the target's cost ratios, and the
    scaled MAC energy and latency estimate.

    The batch is cut into chunks that bound memory and keep ``workers`` threads (default: one per
    core, at most 4) busy; numpy releases the GIL in its array work, so chunks run in parallel.
    """
    if level not in LEVELS:
        raise CimcError(f"unknown runtime level {level!r}; available: {', '.join(LEVELS)}")
    if arithmetic not in ARITHMETICS:
        raise CimcError(f"unknown arithmetic {arithmetic!r}; available: {', '.join(ARITHMETICS)}")
    if arithmetic == "onnxruntime" and level != "ideal":
        raise CimcError(f"arithmetic onnxruntime reproduces a CPU's int8 kernels and applies to the ideal "
                        f"level only; level {level} simulates the chip's crossbars and ADCs")
    mult = resolve_multiplier(program, multiplier, multiplier_table, level, arithmetic)
    if arithmetic == "onnxruntime":
        onnxruntime_saturates()           # probe once, before the worker threads ask for it
    arrays, batched = check_arrays({k: tuple(v) for k, v in program.inputs.items()}, inputs, "input")
    total = next(iter(arrays.values())).shape[0]
    workers = max(1, min(workers or os.cpu_count() or 1, 4))
    chunk = _chunk_size(program, total, workers, mult is not None)
    starts = list(range(0, total, chunk))
    started = time.perf_counter()
    cells: dict = {}
    products: dict = {}

    def one(begin: int) -> tuple[dict[str, np.ndarray], dict]:
        machine = Machine(program, {k: v[begin:begin + chunk] for k, v in arrays.items()}, level,
                          shortcut, cells, arithmetic, mult, products)
        stats = machine.execute()
        return machine.outputs, stats

    if workers == 1 or len(starts) == 1:
        done = [one(b) for b in starts]
    else:
        # One BLAS thread per worker: BLAS threads on top of ours oversubscribe the cores, and
        # OpenBLAS's spinning threads make small products an order of magnitude slower.
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(one, starts))
    outputs = {name: _as_model_type(np.concatenate([d[0][name] for d in done]), program.dtypes.get(name))
               for name in program.outputs}
    if not batched:
        outputs = {k: v[0] for k, v in outputs.items()}
    summed = ("adc_clipped", "mult_abs_diff", "mult_diff", "mult_abs_exact")
    raw = dict(done[-1][1], **{k: sum(d[1][k] for d in done) for k in summed})
    stats = _summarize(program, raw, level, total, time.perf_counter() - started, mult)
    return Result(outputs, {**stats, "arithmetic": arithmetic})


def _as_model_type(values: np.ndarray, dtype: str | None) -> np.ndarray:
    """Outputs in the model's own element type (the runtime computes in float32; integer and bool
    values are exact there)."""
    if dtype is None:
        return values
    if np.dtype(dtype).kind == "b":
        return values != 0
    if np.dtype(dtype).kind not in "iu":
        return values.astype(dtype, copy=False)
    info = np.iinfo(np.dtype(dtype))
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def _busy_cycles(intervals: list[tuple[int, int]]) -> int:
    """Cycles covered by at least one of the ``[t, done)`` intervals."""
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total, end = total + b - a, b
        elif b > end:
            total, end = total + b - end, b
    return total


def _summarize(program: Program, raw: dict, level: str, batch: int, seconds: float,
               mult: mp.Multiplier | None = None) -> dict:
    """Per-inference statistics.

    Multiply-accumulate figures (every run): ``macs``, the products the crossbars compute per
    inference (for each crossbar read set, block rows x block columns x output pixels: a layer's
    K x N x pixels); ``mac_energy_pj`` = ``macs`` x the target's ``[multipliers] mac_pj`` x the
    multiplier's energy ratio (0 on a target without ``[multipliers]``), part of ``energy_pj``;
    ``mvm_cycles``, the cycles of the schedule during which at least one crossbar computes.

    Global memory: ``memory_bytes``, the bytes spills and fills move to and from it per inference
    (rows x row bytes at the target's activation width, as the cost model counts them);
    ``memory_energy_pj`` = ``memory_bytes`` x ``[memory] pj_per_byte`` (0 without ``[memory]``),
    part of ``energy_pj``.

    With a multiplier (null without one): ``multiplier`` (its name), ``multiplier_error`` =
    sum |approximate - exact| / sum |exact| over every crossbar sum of the run (the sums each
    tile's crossbars produce for a layer, all inferences), ``multiplier_bias`` = the same with
    signed differences, ``multiplier_cycle_ratio`` and ``multiplier_energy_ratio`` from the
    target's ``[multipliers]`` table, and ``multiplier_latency_cycles`` = ``latency_cycles`` -
    ``mvm_cycles`` x (1 - cycle ratio): an estimate, since ``latency_cycles`` stays the compiled
    schedule's, made for the exact multiplier (nothing is rescheduled). A multiplier the target
    lists no ratios for has null ratios, MAC energy, latency estimate and ``energy_pj``.
    """
    target = program.target
    used = len({x["xbar"] for x in program.crossbars})
    latency = raw["latency_cycles"]
    conversions = raw["adc_conversions"]
    adc_pj = raw["adc_energy_pj"]
    read_pj = raw["crossbar_reads"] * target.energy.crossbar_read_pj
    vector_pj = raw["vector_elements"] * target.energy.vector_op_pj
    # Weight-stationary: the cells programmed once, before any inference. In segments: the cells
    # every inference writes (each segment, once), which also cost energy and time.
    written = raw["cells_written"]
    write_pj = written * target.energy.cell_write_pj
    macs = int(raw["macs"])
    memory_bytes = raw["memory_bytes"]
    memory_pj = 0.0 if target.memory is None else memory_bytes * target.memory.pj_per_byte
    mvm_cycles = _busy_cycles(raw["mvm_intervals"])
    costs = target.multipliers
    cost = None if costs is None else costs.cost("exact" if mult is None else mult.name)
    if costs is None:
        mac_pj = 0.0
    else:
        mac_pj = None if cost is None else macs * costs.mac_pj * cost.energy
    multiplier = {"multiplier": None, "multiplier_error": None, "multiplier_bias": None,
                  "multiplier_cycle_ratio": None, "multiplier_energy_ratio": None, "multiplier_latency_cycles": None}
    if mult is not None:
        exact = raw["mult_abs_exact"]
        multiplier.update(multiplier=mult.name,
                          multiplier_error=raw["mult_abs_diff"] / exact if exact else 0.0,
                          multiplier_bias=raw["mult_diff"] / exact if exact else 0.0)
        if cost is not None:
            multiplier.update(multiplier_cycle_ratio=cost.cycles, multiplier_energy_ratio=cost.energy,
                              multiplier_latency_cycles=latency - mvm_cycles * (1 - cost.cycles))
    return {
        "level": level,
        "batch": batch,
        "latency_cycles": int(latency),
        "latency_us": latency / target.timing.clock_mhz,
        "crossbars_used": used,
        "crossbars_available": target.total_crossbars,
        "pe_utilization": raw["busy_crossbar_cycles"] / (used * latency) if used and latency else 0.0,
        "crossbar_reads": int(raw["crossbar_reads"]),
        "adc_conversions": int(conversions),
        "adc_energy_pj": adc_pj,
        "crossbar_read_energy_pj": read_pj,
        "vector_energy_pj": vector_pj,
        "write_energy_pj": write_pj,
        "macs": macs,
        "mac_energy_pj": mac_pj,
        "memory_bytes": memory_bytes,
        "memory_energy_pj": memory_pj,
        "energy_pj": None if mac_pj is None else adc_pj + read_pj + vector_pj + write_pj + mac_pj + memory_pj,
        "mvm_cycles": int(mvm_cycles),
        **multiplier,
        "segments": int(program.report["segments"]),
        "crossbar_writes": int(written or program.report["cells_programmed"]),
        "cell_utilization": float(program.report["cell_utilization"]),
        # Conversions whose column sum exceeded the ADC's range (all conversions of the batch);
        # the ideal level has lossless ADCs by definition.
        "clipped_fraction": (raw["adc_clipped"] / (conversions * batch) if conversions and batch else 0.0)
                            if level == "crossbar" else 0.0,
        "wall_seconds": seconds,
    }
