"""What the benchmark scripts share: where the repository and the corpus are, which commit measured,
and how to take a subset of a data set."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"


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


def spread(total: int, count: int | None) -> np.ndarray:
    """Indices of ``count`` samples spread evenly over ``total`` (all of them for None).

    The corpus's CIFAR-10 test set and both calibration sets are sorted by class
    (the first 1,000 CIFAR-10 test images are all airplanes), so a leading slice is
    a biased sample; evenly spaced indices cover every class.
    """
    if count is None or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).astype(np.int64))
