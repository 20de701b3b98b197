"""Validation of user-supplied arrays (run inputs, calibration data) against a model's inputs.

Arrays are sized before they are read: an archive (or an in-memory batch) whose float32 copy
would not fit in the memory this process can still get is refused with the estimate, instead of
the process being killed halfway through.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from cimc.errors import CapacityError, InputError


def available_memory() -> int | None:
    """Bytes this process can still allocate: the least of the machine's available memory
    (``MemAvailable``), the cgroup's remaining limit and the address-space limit (``ulimit -v``)
    left after the process's current size; None where none of them can be read."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            limits.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as fh:
                size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limits.append(max(0, soft - size))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return min(limits) if limits else None


def gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:.1f} GiB" if nbytes >= 2 ** 28 else f"{nbytes / 2 ** 20:.1f} MiB"


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse up front ``what``, which needs ``needed`` bytes, when the process cannot get them."""
    available = available_memory()
    if available is not None and needed > available:
        raise CapacityError(f"{what} needs at least {gib(needed)} of memory and this machine has "
                            f"{gib(available)} available; {fix}")


def _member_sizes(path: "str | Path") -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an .npz archive, from the .npy headers alone."""
    sizes = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(fh)
            sizes[info.filename[:-len(".npy")]] = (tuple(shape), dtype)
    return sizes


def load_npz(path: "str | Path", what: str) -> dict[str, np.ndarray]:
    try:
        sizes = _member_sizes(path)
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except Exception as exc:
        raise InputError(f"{what} file {path} is not a readable .npz archive ({exc})") from None
    # The arrays as stored, and their float32 copies (check_arrays).
    needed = sum(math.prod(shape) * (dtype.itemsize + 4) for shape, dtype in sizes.values())
    shown = ", ".join(f"{k} {'x'.join(map(str, s))} {d}" for k, (s, d) in sizes.items())
    check_memory(needed, f"{what} file {path} ({shown})", "pass fewer samples per file")
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
    copies = sum(np.asarray(data[n]).size * 4 for n in specs if np.asarray(data[n]).dtype != np.float32)
    check_memory(copies, f"converting the {what} to float32", "pass fewer samples at a time")
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
        with np.errstate(over="ignore", invalid="ignore"):      # overflow is reported below
            given, arr = arr, arr.astype(np.float32)
        if not np.isfinite(arr).all():
            if np.isfinite(given).all():
                raise InputError(f"{what} array {name!r} holds values beyond float32's range (±3.4e38), "
                                 f"which cimc computes in")
            raise InputError(f"{what} array {name!r} contains NaN or Inf")
        out[name] = arr
        batched.add(was_batched)
        counts.add(arr.shape[0])
    if len(counts) > 1 or len(batched) > 1:
        raise InputError(f"{what} arrays disagree on the number of samples ({sorted(counts)})")
    return out, batched.pop() if batched else False
