"""Shared fixtures: targets, generated models compiled once per session, input data."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import cimc
from cimc.targets import load_target, preset_text, target_from_dict

import models

settings.register_profile("cimc", deadline=None, max_examples=40, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("cimc")

TESTS = Path(__file__).resolve().parent


def preset_dict(name: str = "small") -> dict:
    return tomllib.loads(preset_text(name))


def narrow_dict() -> dict:
    """The small preset with 16 tiles of 2 crossbars: layers of 3+ crossbars span tiles."""
    data = preset_dict("small")
    data["name"] = "narrow"
    data["description"] = "16 tiles x 2 crossbars of 64x64 (tests: layers span tiles)"
    data["chip"] = {"tiles": 16, "pes_per_tile": 2}
    return data


@pytest.fixture(scope="session")
def small():
    return load_target("small")


@pytest.fixture(scope="session")
def narrow():
    return target_from_dict(narrow_dict(), "narrow")


def input_shape(model, index: int = 0) -> tuple[int, ...]:
    return tuple(d.dim_value for d in model.graph.input[index].type.tensor_type.shape.dim)


def uniform(model, count: int, seed: int, name: str = "x") -> np.ndarray:
    """``count`` samples in [0, 1) shaped like input ``name`` (leading sample axis)."""
    shape = next(input_shape(model, i) for i, vi in enumerate(model.graph.input) if vi.name == name)
    return np.random.default_rng(seed).random((count,) + shape).astype(np.float32)


def compile_model(model, target, *, calibration_samples: int = 256, seed: int = 1234, **kw):
    """Compile with calibration data drawn from the same distribution the tests feed."""
    calib = {"x": uniform(model, calibration_samples, seed)}
    return cimc.compile(model, target, calibration=calib, **kw)


class Compiled:
    """A generated model, its compiled program, and test inputs (cached per session)."""

    def __init__(self, model, program):
        self.model = model
        self.program = program


_CACHE: dict = {}


@pytest.fixture(scope="session")
def compiled(small, narrow):
    """``compiled(builder_name, target_name="small", **builder_kwargs) -> Compiled``, memoized."""
    targets = {"small": small, "narrow": narrow}

    def get(builder: str, target: str = "small", **kw) -> Compiled:
        key = (builder, target, tuple(sorted(kw.items())))
        if key not in _CACHE:
            model = getattr(models, builder)(**kw)
            with warnings.catch_warnings():
                warnings.simplefilter("error")       # calibrated compiles must not warn
                program = compile_model(model, targets[target])
            _CACHE[key] = Compiled(model, program)
        return _CACHE[key]
    return get


def no_leftovers(folder: Path) -> list[str]:
    """Program files or temporary files a failed command may have left in ``folder``."""
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix == ".cimp" or p.name.endswith(".tmp") or p.name.startswith("."))
