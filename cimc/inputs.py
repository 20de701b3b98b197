"""Validation of user-supplied arrays (run inputs, calibration data) against a model's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cimc.errors import InputError


def load_npz(path: "str | Path", what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except Exception as exc:
        raise InputError(f"{what} file {path} is not a readable .npz archive ({exc})") from None


def check_arrays(specs: dict[str, tuple[int, ...]], data: dict[str, np.ndarray],
                 what: str) -> tuple[dict[str, np.ndarray], bool]:
    """Arrays as float32 with a leading batch axis, and whether the user gave one.

    Each array is either shaped exactly like its model input (one inference) or
    has one extra leading axis (that many inferences at once).
    """
    missing = [n for n in specs if n not in data]
    extra = [n for n in data if n not in specs]
    if missing or extra:
        problem = f"has no array {missing[0]!r}" if missing else f"has an array {extra[0]!r} the model does not take"
        raise InputError(f"{what} {problem}; it holds {', '.join(sorted(data)) or 'nothing'}, "
                         f"the model's inputs are {', '.join(specs)}")
    out, batched, counts = {}, set(), set()
    for name, shape in specs.items():
        arr = np.asarray(data[name])
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{what} array {name!r} has dtype {arr.dtype}; expected real numbers")
        if arr.shape == tuple(shape):
            arr, was_batched = arr[None], False
        elif arr.shape[1:] == tuple(shape) and arr.shape[0] >= 1:
            was_batched = True
        else:
            raise InputError(f"{what} array {name!r} has shape {arr.shape}; expected {tuple(shape)} "
                             f"or (N, {', '.join(map(str, shape))}) for N inferences")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"{what} array {name!r} contains NaN or Inf")
        out[name] = arr
        batched.add(was_batched)
        counts.add(arr.shape[0])
    if len(counts) > 1 or len(batched) > 1:
        raise InputError(f"{what} arrays disagree on the number of samples ({sorted(counts)})")
    return out, batched.pop() if batched else False
