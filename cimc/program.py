"""The ``.cimp`` program container: save, load, validate.

A ``.cimp`` file is a 40-byte header, the magic ``CIMP``, the format version
(uint32, little endian) and the SHA-256 of everything after the header, followed
by a zip archive written deterministically (fixed member order and timestamps,
sorted JSON keys), so one compile gives one byte sequence:

``manifest.json``   format name and version, cimc version, target, model hash, options
``program.json``    tensors, layers, vector operators, crossbars, per-tile instruction
                    streams, the schedule, the compile report
``arrays/*.npy``    crossbar contents as programmed (``xbar/<id>``: integer weights, or on a
                    bfloat16 target the weights' bfloat16 encodings as int16), the input gather and
                    output scatter of sorted blocks (``xbar_rows/<id>``, ``xbar_cols/<id>``),
                    each column's ADC resolution (``xbar_adc/<id>``, (polarity, slice,
                    column), 0 = ADC off), quantization scales, biases, constants

The hash covers every byte of the archive, headers included, so any edit or
truncation is caught. Loading checks the magic, the version, the hash, the
structure, and re-runs the schedule validator, so a truncated, edited or foreign
file fails with one clear message before anything executes.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError, ProgramError
from cimc.fsutil import atomic_path, check_writable
from cimc.ir import CROSSBAR_OPS, Graph, Node, Tensor
from cimc.passes.mapping import CrossbarSlot, LayerMapping, Mapping
from cimc.passes.schedule.model import Schedule
from cimc.passes.schedule.validator import ScheduleInvalid, validate
from cimc.targets import Target, target_from_dict
from cimc.targets.codegen import PRIORITY

FORMAT = "cimp"
#: 3: sorted blocks (SWS) carry their row and output indices (xbar_rows/, xbar_cols/).
#: 4: every block of an analog chip carries its columns' ADC resolutions (xbar_adc/).
#: 5: layer copies (weight duplication) and row sets.
#: 6: targets may compute in bfloat16 (precision.format); their layers (quant w_type "bfloat16")
#:    hold bfloat16 encodings as int16 words.
#: 7: schedules say when each set's rows enter the network (sends) and which links its partial
#:    sums use (task reductions): the network links are a scheduled resource.
#: 8: schedules spill rows to the target's global memory and load them back (stores, loads),
#:    carried out by the ``spill`` and ``fill`` instructions.
FORMAT_VERSION = 8
MAGIC = b"CIMP"
_HEADER = struct.Struct("<4sI32s")
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class Program:
    """A compiled program: everything the runtime needs, and nothing from the ONNX file."""

    manifest: dict[str, Any]
    target: Target
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]
    tensors: dict[str, list[int]]
    nodes: list[dict[str, Any]]               # topological order; crossbar layers carry quantization
    crossbars: list[dict[str, Any]]
    tiles: list[list[dict[str, Any]]]
    schedule: Schedule
    report: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: Element type of every model input and output (integer ones hold raw integers).
    dtypes: dict[str, str] = field(default_factory=dict)
    #: Wall time of each compile stage; not stored in the file (it would break determinism).
    pass_seconds: dict[str, float] = field(default_factory=dict, compare=False)

    # -- views the runtime and the tools share -----------------------------------
    def node(self, name: str) -> dict[str, Any]:
        return self._by_name()[name]

    def _by_name(self) -> dict[str, dict[str, Any]]:
        cache = self.__dict__.get("_nodes_by_name")
        if cache is None:
            cache = self.__dict__["_nodes_by_name"] = {n["name"]: n for n in self.nodes}
        return cache

    def graph(self) -> Graph:
        """The operator graph the program computes (shapes and attributes; weights stay in crossbars)."""
        g = Graph(self.manifest.get("model_name", "program"))
        for name, shape in self.tensors.items():
            g.add_tensor(Tensor(name, tuple(shape), np.dtype(np.float32)))
        for key, value in self.arrays.items():
            if key.startswith("const/"):
                g.add_constant(key[len("const/"):], value)
        g.inputs = list(self.inputs)
        for n in self.nodes:
            g.add_node(Node(n["name"], n["op"], list(n["inputs"]), list(n["outputs"]), dict(n["attrs"])))
        g.outputs = list(self.outputs)
        return g

    def block_rows(self, x: dict[str, Any]) -> np.ndarray:
        """Rows of the group's K on crossbar block ``x``'s wordlines: the input gather of a sorted
        (SWS) block, else its contiguous row range."""
        index = self.arrays.get(f"xbar_rows/{x['id']}")
        return np.arange(*x["rows"]) if index is None else index.astype(np.int64)

    def block_cols(self, x: dict[str, Any]) -> np.ndarray:
        """Output channels of block ``x``'s outputs: regrouped (SWS s3), else its contiguous range."""
        index = self.arrays.get(f"xbar_cols/{x['id']}")
        return np.arange(*x["cols"]) if index is None else index.astype(np.int64)

    def mapping(self) -> Mapping:
        layers: dict[str, list[CrossbarSlot]] = {}
        for x in self.crossbars:
            layers.setdefault(x["layer"], []).append(CrossbarSlot(**{
                **x, "rows": tuple(x["rows"]), "cols": tuple(x["cols"]), "offset": tuple(x["offset"]),
                "row_index": self.arrays.get(f"xbar_rows/{x['id']}"),
                "col_index": self.arrays.get(f"xbar_cols/{x['id']}")}))
        result = {}
        for n in self.nodes:
            if n["op"] in CROSSBAR_OPS:
                q = n["quant"]
                result[n["name"]] = LayerMapping(n["name"], q["k"], q["n"], n["attrs"].get("group", 1),
                                                 tuple(layers.get(n["name"], ())))
        return Mapping(result, self.target.total_crossbars)

    # -- persistence -------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "outputs": self.outputs, "dtypes": self.dtypes, "tensors": self.tensors,
                "nodes": self.nodes, "crossbars": self.crossbars, "tiles": self.tiles,
                "schedule": self.schedule.to_dict(), "report": self.report}

    def to_bytes(self) -> bytes:
        members: list[tuple[str, bytes]] = [
            ("manifest.json", _json({**self.manifest, "target": self.target.to_dict()})),
            ("program.json", _json(self._body())),
        ]
        for key in sorted(self.arrays):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(self.arrays[key]), allow_pickle=False)
            members.append((f"arrays/{key}.npy", buf.getvalue()))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
        payload = out.getvalue()
        return _HEADER.pack(MAGIC, FORMAT_VERSION, hashlib.sha256(payload).digest()) + payload

    def save(self, path: "str | Path") -> None:
        check_writable(path)
        data = self.to_bytes()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)

    @classmethod
    def load(cls, path: "str | Path") -> "Program":
        p = Path(path)
        if not p.is_file():
            raise ProgramError(f"program file {p} does not exist")
        return cls.from_bytes(p.read_bytes(), str(p))

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "program") -> "Program":
        try:
            members = _read_members(data)
        except ProgramError as exc:
            raise ProgramError(f"{where}: {exc}") from None
        try:
            program = _decode(members)
        except ProgramError as exc:
            raise ProgramError(f"{where}: {exc}") from None
        except CimcError as exc:
            raise ProgramError(f"{where}: embedded target is invalid: {exc}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ProgramError(f"{where} is not a well-formed cimc program ({type(exc).__name__}: {exc}); "
                               f"recompile it with cimc compile") from None
        try:
            _check_contents(program)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ProgramError(f"{where} is not a well-formed cimc program ({type(exc).__name__}: {exc}); "
                               f"recompile it with cimc compile") from None
        except ProgramError as exc:
            raise ProgramError(f"{where}: {exc}; recompile it with cimc compile") from None
        try:
            validate(program.schedule, program.graph(), program.mapping(), program.target)
        except ScheduleInvalid as exc:
            raise ProgramError(f"{where}: its schedule is invalid ({exc}); recompile it") from None
        return program


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, np.ndarray)):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a program")


def _read_members(data: bytes) -> list[tuple[str, bytes]]:
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise ProgramError("not a cimc program (no CIMP header); compile the model with cimc compile")
    _, version, digest = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise ProgramError(f"program format version {version} is not supported by this cimc "
                           f"(it reads version {FORMAT_VERSION}); recompile the model with this cimc")
    payload = data[_HEADER.size:]
    if hashlib.sha256(payload).digest() != digest:
        raise ProgramError("checksum mismatch: the file is truncated, edited or damaged; recompile it")
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            return [(info.filename, zf.read(info)) for info in zf.infolist()]
    except Exception as exc:  # BadZipFile, zlib.error, CRC mismatch ...
        raise ProgramError(f"not a readable .cimp archive ({type(exc).__name__}: {exc})") from None


def _check_contents(program: Program) -> None:
    """Everything the instructions refer to exists, with the shape the tables promise."""
    if len(program.tiles) != program.target.chip.tiles:
        raise ProgramError(f"{len(program.tiles)} instruction streams for {program.target.chip.tiles} tiles")
    known_ops = set(PRIORITY)
    for stream in program.tiles:
        for ins in stream:
            if ins.get("op") not in known_ops or not isinstance(ins.get("t"), int):
                raise ProgramError(f"unknown or malformed instruction {str(ins)[:80]}")
    layers = {n["name"]: n for n in program.nodes if "quant" in n}
    for n in layers.values():
        if (n["quant"].get("w_type") == "bfloat16") != program.target.bf16:
            raise ProgramError(f"layer {n['name']} is {'not ' * program.target.bf16}a bfloat16 layer on target "
                               f"{program.target.name} (precision.format {program.target.precision.format})")
    for x in program.crossbars:
        cells = program.arrays.get(f"xbar/{x['id']}")
        want = (x["rows"][1] - x["rows"][0], x["cols"][1] - x["cols"][0])
        if cells is None or cells.shape != want or cells.dtype.kind != "i":
            raise ProgramError(f"crossbar {x['id']} has no contents of shape {want}")
        if program.target.bf16 and (cells.dtype != np.int16 or ((cells & 0x7F80) == 0x7F80).any()):
            raise ProgramError(f"crossbar {x['id']} does not hold finite bfloat16 words (int16)")
        q, group = layers[x["layer"]]["quant"], x["group"]
        n_g = q["n"] // layers[x["layer"]]["attrs"].get("group", 1)
        for key, size, lo, hi in (("xbar_rows", want[0], 0, q["k"]),
                                  ("xbar_cols", want[1], group * n_g, (group + 1) * n_g)):
            index = program.arrays.get(f"{key}/{x['id']}")
            if index is not None and (index.shape != (size,) or index.dtype.kind != "i" or index.size and (
                    index.min() < lo or index.max() >= hi) or np.unique(index).size != size):
                raise ProgramError(f"crossbar {x['id']} has a malformed {key} (it must hold {size} distinct "
                                   f"indices in {lo}..{hi - 1})")
        adc = program.arrays.get(f"xbar_adc/{x['id']}")
        if program.target.adc is not None and (
                adc is None or adc.ndim != 3 or adc.shape[0] != 2 or adc.shape[2] != want[1]
                or adc.dtype != np.uint8 or adc.size and adc.max() > program.target.adc.bits):
            raise ProgramError(f"crossbar {x['id']} has no ADC settings of shape (2, slices, {want[1]}) "
                               f"within the target's {program.target.adc.bits} bits")
    ids = {str(x["id"]) for x in program.crossbars}
    for key in program.arrays:
        if key.startswith(("xbar_rows/", "xbar_cols/", "xbar_adc/")) and key.split("/", 1)[1] not in ids:
            raise ProgramError(f"array {key} belongs to no crossbar")
    for n in program.nodes:
        if "quant" in n:
            for key, required in (("w_scale", True), ("bias", False)):
                arr = program.arrays.get(f"layer/{n['name']}/{key}")
                if (arr is None and required) or (arr is not None and arr.shape != (n["quant"]["n"],)):
                    raise ProgramError(f"layer {n['name']} has no {key} of {n['quant']['n']} channels")
        else:
            for t in n["inputs"]:
                if t and t not in program.tensors and f"const/{t}" not in program.arrays:
                    raise ProgramError(f"operator {n['name']} reads {t!r}, which the program lacks")


def _decode(members: list[tuple[str, bytes]]) -> Program:
    by_name = dict(members)
    try:
        manifest = json.loads(by_name["manifest.json"])
        body = json.loads(by_name["program.json"])
    except KeyError as exc:
        raise ProgramError(f"missing member {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ProgramError("not a cimc program (wrong format name)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ProgramError(f"program format version {version} is not supported by this cimc "
                           f"(it reads version {FORMAT_VERSION}); recompile the model with this cimc")
    arrays = {}
    for name, data in members:
        if name.startswith("arrays/") and name.endswith(".npy"):
            arrays[name[len("arrays/"):-len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
    target = target_from_dict(manifest.pop("target"), "embedded target")
    return Program(manifest=manifest, target=target, inputs=body["inputs"], outputs=body["outputs"],
                   tensors=body["tensors"], nodes=body["nodes"], crossbars=body["crossbars"],
                   tiles=body["tiles"], schedule=Schedule.from_dict(body["schedule"]),
                   report=body["report"], arrays=arrays, dtypes=body["dtypes"])
