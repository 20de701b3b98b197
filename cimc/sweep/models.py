"""A spec's models resolved to content: file hashes for the point keys, arrays for the workers.

The parent process resolves each model once (:func:`resolve`): it hashes the model file
and the data files, so that a point's key changes when a file's content does and not
when it moves. Workers load what a task needs (:func:`load`) once per process; the Ray
executor loads it once in the driver and ships it through Ray's object store, so cluster
nodes need no shared file system.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from cimc.errors import SweepError
from cimc.sweep import corpus
from cimc.sweep.spec import ModelSpec

LABELS = "labels"


@dataclass(frozen=True)
class DataRef:
    """An .npz the tasks read: where it is, its content hash, and which of its samples."""
    path: str
    sha256: str
    count: int | None                # samples spread evenly over the file; None: all of them
    prepare: str | None = None       # corpus files: how raw images become inputs, and
    input: str | None = None         # the model input they feed; None: arrays named like the inputs

    def identity(self) -> dict:
        return {"sha256": self.sha256, "count": self.count, "prepare": self.prepare, "input": self.input}


@dataclass(frozen=True)
class ModelRef:
    name: str
    path: str
    sha256: str
    input_shapes: tuple[str, ...]
    calibration: DataRef | None
    test: DataRef | None             # accuracy data; None: no accuracy run

    def identity(self) -> dict:
        """What a compiled program depends on, for the point keys."""
        return {"model": self.sha256, "input_shapes": list(self.input_shapes),
                "calibration": None if self.calibration is None else self.calibration.identity()}


@dataclass
class ModelData:
    """What a task reads, in memory."""
    model: bytes
    calibration: dict[str, np.ndarray] | None
    inputs: dict[str, np.ndarray] | None
    labels: np.ndarray | None
    input_shapes: tuple[str, ...]


def file_sha256(path: "str | Path") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(spec: ModelSpec, where: str) -> ModelRef:
    if spec.corpus is not None:
        root = corpus.corpus_root()
        entry = corpus.MODELS[spec.corpus]
        dataset = corpus.DATASETS[entry.dataset]
        path = root / entry.path
        calibration = DataRef(str(root / dataset.calibration), file_sha256(root / dataset.calibration),
                              corpus.CALIBRATION_SAMPLES, dataset.prepare, entry.input)
        test = (DataRef(str(root / dataset.test), file_sha256(root / dataset.test), spec.samples,
                        dataset.prepare, entry.input) if spec.samples else None)
        return ModelRef(spec.name, str(path), file_sha256(path), spec.input_shapes or entry.input_shapes,
                        calibration, test)
    inputs = _model_inputs(spec.path, where)
    calibration = test = None
    if spec.calibration is not None:
        _check_npz(spec.calibration, inputs, False, f"{where}.calibration")
        calibration = DataRef(str(spec.calibration), file_sha256(spec.calibration), None)
    if spec.samples:
        _check_npz(spec.data, inputs, True, f"{where}.data")
        test = DataRef(str(spec.data), file_sha256(spec.data), spec.samples)
    return ModelRef(spec.name, str(spec.path), file_sha256(spec.path), spec.input_shapes, calibration, test)


def _model_inputs(path: Path, where: str) -> list[str]:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:            # protobuf raises its own DecodeError, and more
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SweepError(f"{where}.path: {path} is not an ONNX model ({reason})") from None
    constants = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in constants]


def _check_npz(path: Path, inputs: list[str], labelled: bool, where: str) -> None:
    """The arrays a task will read are there, with one sample count, before any point runs."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            counts = {n: npz[n].shape[0] if npz[n].ndim else None for n in names}
    except Exception as exc:            # zipfile, pickle and format errors alike
        raise SweepError(f"{where}: {path} is not a readable .npz archive ({exc})") from None
    wanted = set(inputs) | ({LABELS} if labelled else set())
    missing = sorted(wanted - names)
    if missing:
        raise SweepError(f"{where}: {path} lacks array {missing[0]!r}; it needs one array per model input "
                         f"({', '.join(inputs)})" + (f" and `{LABELS}`" if labelled else ""))
    if labelled and len({counts[n] for n in wanted}) != 1:
        raise SweepError(f"{where}: {path}: the arrays {', '.join(sorted(wanted))} must hold the same number "
                         f"of samples (leading axis), got {', '.join(f'{n}: {counts[n]}' for n in sorted(wanted))}")


@functools.lru_cache(maxsize=4)
def load(ref: ModelRef) -> ModelData:
    """The model's bytes and its data, read once per process."""
    calibration = _arrays(ref.calibration)[0] if ref.calibration is not None else None
    inputs, labels = _arrays(ref.test) if ref.test is not None else (None, None)
    return ModelData(Path(ref.path).read_bytes(), calibration, inputs, labels, ref.input_shapes)


def _arrays(ref: DataRef) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    with np.load(ref.path, allow_pickle=False) as npz:
        if ref.prepare is not None:
            x = npz["x"]
            pick = corpus.spread(len(x), ref.count)
            labels = npz["y"][pick].astype(np.int64) if "y" in npz.files else None
            return {ref.input: corpus.prepare(ref.prepare, x[pick])}, labels
        arrays = {n: npz[n] for n in npz.files}
    labels = arrays.pop(LABELS, None)
    total = len(next(iter(arrays.values())))
    pick = corpus.spread(total, ref.count)
    return ({n: a[pick] for n, a in arrays.items()},
            None if labels is None else labels[pick].astype(np.int64))
