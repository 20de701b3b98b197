"""Atomic file output: a failed command never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from cimc.errors import CimcError


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work is done, an output path that cannot become a file."""
    target = Path(path)
    if target.is_dir():
        raise CimcError(f"cannot write {target}: it is a folder; give a file name")
    if not target.resolve().parent.is_dir():
        raise CimcError(f"cannot write {target}: folder {target.parent} does not exist")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    check_writable(path)
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_durably(path: str | os.PathLike, data: bytes) -> None:
    """Write atomically and to disk (the file, then its folder, synced): after a power cut or a
    SIGKILL the file exists whole or not at all, which a record marking finished work needs."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    folder = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
