"""The ``.cimp`` program container: save, load, validate.

A ``.cimp`` file is a zip archive written deterministically (fixed member order
and timestamps, sorted JSON keys), so one compile gives one byte sequence:

``manifest.json``   format name and version, cimc version, target, model hash, options
``program.json``    tensors, layers, vector operators, crossbars, per-tile instruction
                    streams, the schedule, the compile report
``arrays/*.npy``    crossbar contents as programmed, quantization scales, biases, constants
``checksum``        SHA-256 over every other member's name and bytes

Loading checks the format and version, the checksum, the structure, and re-runs
the schedule validator, so a truncated, edited or foreign file fails with one
clear message before anything executes.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError, ProgramError
from cimc.fsutil import atomic_path
from cimc.ir import CROSSBAR_OPS, Graph, Node, Tensor
from cimc.passes.mapping import CrossbarSlot, LayerMapping, Mapping
from cimc.passes.schedule.model import Schedule
from cimc.passes.schedule.validator import ScheduleInvalid, validate
from cimc.targets import Target, target_from_dict

FORMAT = "cimp"
FORMAT_VERSION = 1
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

    def mapping(self) -> Mapping:
        layers: dict[str, list[CrossbarSlot]] = {}
        for x in self.crossbars:
            layers.setdefault(x["layer"], []).append(CrossbarSlot(
                x["id"], x["layer"], x["tile"], x["pe"], x["group"], tuple(x["rows"]), tuple(x["cols"])))
        result = {}
        for n in self.nodes:
            if n["op"] in CROSSBAR_OPS:
                q = n["quant"]
                result[n["name"]] = LayerMapping(n["name"], q["k"], q["n"], n["attrs"].get("group", 1),
                                                 tuple(layers.get(n["name"], ())))
        return Mapping(result, self.target.total_crossbars)

    # -- persistence -------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "outputs": self.outputs, "tensors": self.tensors,
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
        members.append(("checksum", _checksum(members).encode()))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
        return out.getvalue()

    def save(self, path: "str | Path") -> None:
        data = self.to_bytes()
        parent = Path(path).parent
        if not parent.is_dir():
            raise CimcError(f"cannot write {path}: folder {parent} does not exist")
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


def _checksum(members: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in members:
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _read_members(data: bytes) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    except Exception as exc:  # BadZipFile, zlib.error, CRC mismatch, truncated data ...
        raise ProgramError(f"not a readable .cimp file ({type(exc).__name__}: {exc}); it is truncated, "
                           f"edited or not a cimc program") from None
    if not members or members[-1][0] != "checksum":
        raise ProgramError("not a .cimp file (no checksum member)")
    if _checksum(members[:-1]).encode() != members[-1][1]:
        raise ProgramError("checksum mismatch: the file was edited or damaged; recompile it")
    return members[:-1]


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
                   report=body["report"], arrays=arrays)
