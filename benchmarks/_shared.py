"""What the benchmark scripts share: where the repository and the corpus are, which commit measured,
and how to take a subset of a data set."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cimc.sweep.corpus import DEFAULT_CORPUS, spread

__all__ = ["DEFAULT_CORPUS", "ROOT", "corpus_root", "git_commit", "spread"]

ROOT = Path(__file__).resolve().parents[1]


def corpus_root() -> Path | None:
    """``$CIMC_CORPUS`` (must exist), else ``../shared/corpus`` next to the repository, else None."""
    configured = os.environ.get("CIMC_CORPUS")
    if configured:
        root = Path(configured)
        if not root.is_dir():
            raise FileNotFoundError(f"CIMC_CORPUS={configured} does not exist")
        return root
    return DEFAULT_CORPUS if DEFAULT_CORPUS.is_dir() else None


def git_commit() -> str:
    """The short commit hash, with ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "-"
