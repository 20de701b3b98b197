"""Where the shared test corpus is, the one rule for using it, and access to the benchmark modules.

The corpus lives outside the repository: ``$CIMC_CORPUS``, else ``../shared/corpus``
next to the repository root. Absent in a fresh clone, tests that need it skip
with a message; if ``CIMC_CORPUS`` names a folder that does not exist, they fail.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"


def corpus_path() -> Path | None:
    """The corpus folder, or None when it is absent and not asked for (for parametrization)."""
    configured = os.environ.get("CIMC_CORPUS")
    if configured:
        return Path(configured)
    return DEFAULT_CORPUS if DEFAULT_CORPUS.is_dir() else None


def corpus_root() -> Path:
    """The corpus folder; skips the test when absent, fails it when CIMC_CORPUS points nowhere."""
    configured = os.environ.get("CIMC_CORPUS")
    if configured:
        root = Path(configured)
        if not root.is_dir():
            pytest.fail(f"CIMC_CORPUS={configured} does not exist")
        return root
    if not DEFAULT_CORPUS.is_dir():
        pytest.skip(f"test corpus absent ({DEFAULT_CORPUS}); set CIMC_CORPUS to run the corpus tests")
    return DEFAULT_CORPUS


def load_benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` as a module, so tests assert on the code that writes the results."""
    key = f"cimc_benchmarks_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
