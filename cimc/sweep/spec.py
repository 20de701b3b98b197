"""The sweep spec: a TOML file, validated like a target file, into frozen dataclasses.

Everything a sweep needs is checked here, before any point runs, so that a typo costs a
second and one clear message, not an hour of failed points: unknown keys and parameters,
empty ranges, values of the wrong type, a base target that does not validate, a model or
data file that does not exist, a corpus model without the corpus. Messages name the key
(``parameters.adc.bits``, ``models[1].path``) and say what would be accepted.

Layout (see ``examples/sweep_mnist_resnet8.toml``)::

    name = "..."                # optional, default: the file's stem
    target = "isaac"            # base target: a preset or a TOML file (relative to the spec)
    sampling = "grid"           # or "random", with points = N parameter combinations
    seed = 0                    # random sampling

    [[models]]                  # one table per model: corpus = NAME or path = FILE
    corpus = "mnist-8"
    samples = 1000              # accuracy on this many test samples (0: none)

    [parameters]                # what varies; every combination (grid) or a sample (random)
    "crossbar.size" = [64, 128, 256]           # target fields as SECTION.FIELD; size = rows = cols
    "adc.bits" = { range = [4, 9] }            # inclusive, optional step: [lo, hi, step]
    scheduler = ["layer", "clsa"]              # compile options; run options: level, multiplier, ...

    [compile]                   # compile options every point shares
    [run]                       # run options every point shares (level, arithmetic, multiplier)
    [objectives]                # name = "min" | "max" (or a list of names: default directions)
"""

from __future__ import annotations

import inspect
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cimc.errors import CimcError, SweepError

TOP_KEYS = ("name", "target", "sampling", "points", "seed", "models", "parameters", "compile", "run",
            "objectives")
MODEL_KEYS = ("name", "corpus", "path", "calibration", "data", "samples", "input_shapes")
SAMPLINGS = ("grid", "random")
#: Compile keywords a spec does not set: the model's own data come from its [[models]] entry.
NOT_OPTIONS = ("calibration", "input_shapes", "constants")
#: Compile options that decide when and where sets run, never what they compute: accuracy does not
#: depend on them (the runtime executes any valid schedule to the same outputs), so it is measured
#: once per combination of the other options.
SCHEDULE_OPTIONS = ("scheduler", "solver_work", "solver_time", "seed", "rows_per_set")
#: A target parameter that sets rows and columns together (square crossbars).
SIZE = "crossbar.size"
#: What a sweep reports that can be an objective, with the better direction.
OBJECTIVES = {
    "latency_cycles": "min", "latency_us": "min", "energy_pj": "min", "adc_energy_pj": "min",
    "crossbars": "min", "tiles": "min", "pe_utilization": "max", "cell_utilization": "max",
    "accuracy": "max", "ort_agreement": "max", "compile_seconds": "min",
}
DEFAULT_OBJECTIVES = ("latency_cycles", "energy_pj", "crossbars")
DISTRIBUTIONS = ("uniform", "log_uniform")


@dataclass(frozen=True)
class Parameter:
    """One varied parameter: a discrete set of values, or (random sampling only) a distribution."""
    name: str                                   # "adc.bits", "crossbar.size", "scheduler", "level"
    kind: str                                   # "target" | "compile" | "run"
    values: tuple = ()
    distribution: tuple[str, float, float] | None = None     # ("uniform" | "log_uniform", lo, hi)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    corpus: str | None                          # a corpus model name, or
    path: Path | None                           # an ONNX file
    calibration: Path | None                    # path models: calibration .npz (corpus: its set)
    data: Path | None                           # path models: .npz of inputs and `labels`
    samples: int                                # accuracy samples, 0: no accuracy run
    input_shapes: tuple[str, ...]


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str                              # "min" | "max"


@dataclass(frozen=True)
class SweepSpec:
    name: str
    folder: Path                                # relative paths in the spec are relative to it
    target: str                                 # preset name or absolute TOML path
    models: tuple[ModelSpec, ...]
    parameters: tuple[Parameter, ...]
    sampling: str
    points: int | None                          # random: parameter combinations to draw
    seed: int
    compile: dict                               # fixed compile options
    run: dict                                   # fixed run options
    objectives: tuple[Objective, ...]

    @property
    def accuracy(self) -> bool:
        return any(m.samples for m in self.models)


def compile_defaults() -> dict[str, Any]:
    """``cimc.compile``'s options and their defaults, read from its signature, so that a spec
    accepts exactly what the compiler of this checkout accepts."""
    from cimc.driver import compile as compile_
    return {name: p.default for name, p in inspect.signature(compile_).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in NOT_OPTIONS}


def compile_choices() -> dict[str, tuple]:
    from cimc.driver import SCHEDULERS
    from cimc.passes.sws import CHOICES
    return {"scheduler": SCHEDULERS, "sws": (False, True, *CHOICES)}


def run_choices() -> dict[str, tuple | None]:
    """Run options a spec may set; None: any name the multiplier registry knows."""
    from cimc.runtime.interpreter import ARITHMETICS, LEVELS
    return {"level": LEVELS, "arithmetic": ARITHMETICS, "multiplier": None}


RUN_DEFAULTS = {"level": "ideal", "arithmetic": "exact", "multiplier": None}


def target_fields() -> list[str]:
    from cimc.targets.schema import SECTIONS
    return [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)] + [SIZE]


def load_spec(spec: "str | Path | dict", folder: "str | Path | None" = None) -> SweepSpec:
    """A spec file (or its parsed TOML as a dict, paths relative to ``folder`` or the working
    folder), validated; :class:`SweepError` names the first thing wrong."""
    if isinstance(spec, dict):
        return parse_spec(spec, Path(folder or ".").resolve(), "spec")
    path = Path(spec)
    if not path.is_file():
        raise SweepError(f"sweep spec {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"cannot read sweep spec {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path} is not valid TOML: {exc}") from None
    return parse_spec(data, path.resolve().parent, path.stem)


def parse_spec(data: dict, folder: Path, default_name: str) -> SweepSpec:
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise SweepError(f"spec: unknown key {unknown[0]!r}; accepted keys: {', '.join(TOP_KEYS)}")
    name = _typed(data.get("name", default_name), str, "name")
    target = _base_target(data.get("target"), folder)
    sampling = _typed(data.get("sampling", "grid"), str, "sampling")
    if sampling not in SAMPLINGS:
        raise SweepError(f"sampling: {sampling!r} is not one of {', '.join(SAMPLINGS)}")
    points = data.get("points")
    if sampling == "random":
        if points is None:
            raise SweepError("points: random sampling needs points = N, the parameter combinations to draw")
        if _typed(points, int, "points") < 1:
            raise SweepError(f"points: expected a positive number of parameter combinations, got {points}")
    elif points is not None:
        raise SweepError("points: only random sampling draws a number of points; the grid runs every "
                         "combination (set sampling = \"random\" to draw a subset)")
    seed = _typed(data.get("seed", 0), int, "seed")
    models = _models(data.get("models"), folder)
    parameters = _parameters(_table(data.get("parameters", {}), "parameters"), target, sampling)
    compile_ = _options(_table(data.get("compile", {}), "compile"), "compile")
    run = _options(_table(data.get("run", {}), "run"), "run")
    varied = {p.name for p in parameters}
    for key in list(compile_) + list(run):
        if key in varied:
            raise SweepError(f"parameters.{key}: also fixed in [{'compile' if key in compile_ else 'run'}]; "
                             f"vary it or fix it, not both")
    objectives = _objectives(data.get("objectives"), any(m.samples for m in models))
    return SweepSpec(name, folder, target, models, parameters, sampling, points, seed, compile_, run, objectives)


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise SweepError(f"{where}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise SweepError(f"{where}: expected a table [{where}], got {type(value).__name__} {value!r}")
    return value


def _base_target(value: Any, folder: Path) -> str:
    from cimc.targets import load_target, preset_names
    if value is None:
        raise SweepError(f"target: missing; give the base target every point modifies: a preset "
                         f"({', '.join(preset_names())}) or a TOML file")
    _typed(value, str, "target")
    resolved = value if value in preset_names() else str((folder / value).resolve())
    try:
        load_target(resolved)
    except CimcError as exc:
        raise SweepError(f"target: {exc}") from None
    return resolved


def _file(value: Any, folder: Path, where: str) -> Path:
    path = (folder / _typed(value, str, where)).resolve()
    if not path.is_file():
        raise SweepError(f"{where}: no such file {path}")
    return path


def _models(value: Any, folder: Path) -> tuple[ModelSpec, ...]:
    from cimc.sweep.corpus import MODELS, corpus_root
    if not isinstance(value, list) or not value:
        raise SweepError("models: expected at least one [[models]] table with corpus = NAME or path = FILE")
    out, names = [], set()
    for i, entry in enumerate(value):
        where = f"models[{i}]"
        entry = _table(entry, where)
        unknown = sorted(set(entry) - set(MODEL_KEYS))
        if unknown:
            raise SweepError(f"{where}: unknown key {unknown[0]!r}; accepted keys: {', '.join(MODEL_KEYS)}")
        if ("corpus" in entry) == ("path" in entry):
            raise SweepError(f"{where}: give exactly one of corpus = NAME (one of {', '.join(MODELS)}) "
                             f"or path = FILE.onnx")
        samples = _typed(entry.get("samples", 0), int, f"{where}.samples")
        if samples < 0:
            raise SweepError(f"{where}.samples: expected a number of test samples >= 0, got {samples}")
        shapes = entry.get("input_shapes", [])
        if not isinstance(shapes, list) or not all(isinstance(s, str) for s in shapes):
            raise SweepError(f"{where}.input_shapes: expected a list of strings like \"x=1x3x32x32\"")
        if "corpus" in entry:
            corpus = _typed(entry["corpus"], str, f"{where}.corpus")
            if corpus not in MODELS:
                raise SweepError(f"{where}.corpus: unknown corpus model {corpus!r}; known: {', '.join(MODELS)}")
            for key in ("calibration", "data"):
                if key in entry:
                    raise SweepError(f"{where}.{key}: a corpus model comes with its own calibration and test "
                                     f"sets; give path = FILE.onnx to use your own data")
            try:
                model_file = corpus_root() / MODELS[corpus].path
            except CimcError as exc:
                raise SweepError(f"{where}: model {corpus!r}: {exc}") from None
            if not model_file.is_file():
                raise SweepError(f"{where}.corpus: {model_file} is missing from the corpus")
            spec = ModelSpec(entry.get("name", corpus), corpus, None, None, None, samples, tuple(shapes))
        else:
            path = _file(entry["path"], folder, f"{where}.path")
            calibration = _file(entry["calibration"], folder, f"{where}.calibration") \
                if "calibration" in entry else None
            data = _file(entry["data"], folder, f"{where}.data") if "data" in entry else None
            if samples and data is None:
                raise SweepError(f"{where}.samples: accuracy needs data = FILE.npz (one array per model input "
                                 f"named like it, plus `labels`)")
            spec = ModelSpec(entry.get("name", path.stem), None, path, calibration, data, samples, tuple(shapes))
        _typed(spec.name, str, f"{where}.name")
        if spec.name in names:
            raise SweepError(f"{where}.name: {spec.name!r} names two models; give each its own name")
        names.add(spec.name)
        out.append(spec)
    return tuple(out)


def _flatten(table: dict) -> dict[str, Any]:
    """``adc.bits = ...`` written as a dotted TOML key arrives as {"adc": {"bits": ...}}; so does
    ``[parameters.adc]``. Both mean "adc.bits", as does the quoted key ``"adc.bits"``."""
    from cimc.targets.schema import SECTIONS
    flat = {}
    for key, value in table.items():
        if key in SECTIONS and isinstance(value, dict) and not set(value) & {"range", *DISTRIBUTIONS}:
            for field, inner in value.items():
                flat[f"{key}.{field}"] = inner
        else:
            flat[key] = value
    return flat


def _kind(name: str) -> str:
    if name in target_fields():
        return "target"
    if name in compile_defaults():
        return "compile"
    if name in run_choices():
        return "run"
    raise SweepError(f"parameters: unknown parameter {name!r}; target fields: {', '.join(target_fields())}; "
                     f"compile options: {', '.join(compile_defaults())}; run options: {', '.join(run_choices())}")


def _parameters(table: dict, target: str, sampling: str) -> tuple[Parameter, ...]:
    flat = _flatten(table)
    if SIZE in flat and ({"crossbar.rows", "crossbar.cols"} & set(flat)):
        raise SweepError(f"parameters.{SIZE}: sets crossbar.rows and crossbar.cols together; do not also vary "
                         f"them on their own")
    out = []
    for name, value in flat.items():
        where = f"parameters.{name}"
        kind = _kind(name)
        param = _values(name, kind, value, where)
        if param.distribution is not None and sampling == "grid":
            raise SweepError(f"{where}: a {param.distribution[0]} distribution has no grid; use a list or a "
                             f"range, or sampling = \"random\"")
        for v in param.values:
            _check_value(name, kind, v, target, where)
        if param.distribution is not None:            # both ends drawn: real numbers it must accept
            kind_, lo, hi = param.distribution
            for v in (lo, hi):
                try:
                    _check_value(name, kind, v, target, where)
                except SweepError as exc:
                    raise SweepError(f"{exc} (the {kind_} distribution over [{lo:g}, {hi:g}] draws real numbers; "
                                     f"{name} must accept both ends)") from None
        out.append(param)
    return tuple(out)


def _values(name: str, kind: str, value: Any, where: str) -> Parameter:
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{where}: empty list of values; give at least one")
        unique = {(type(v).__name__, repr(v)): v for v in value}       # 1 and true stay apart
        return Parameter(name, kind, tuple(unique.values()))
    if not isinstance(value, dict):
        return Parameter(name, kind, (value,))
    keys = sorted(value)
    if len(keys) != 1 or keys[0] not in ("range", *DISTRIBUTIONS):
        raise SweepError(f"{where}: expected a list of values, a single value, {{ range = [lo, hi] }} or "
                         f"{{ range = [lo, hi, step] }} (inclusive integers), or for random sampling "
                         f"{{ uniform = [lo, hi] }} or {{ log_uniform = [lo, hi] }}; got {value!r}")
    key, bounds = keys[0], value[keys[0]]
    if key == "range":
        if (not isinstance(bounds, list) or len(bounds) not in (2, 3)
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
            raise SweepError(f"{where}.range: expected [lo, hi] or [lo, hi, step], integers, got {bounds!r}")
        lo, hi, step = (*bounds, 1) if len(bounds) == 2 else bounds
        if step <= 0:
            raise SweepError(f"{where}.range: the step must be positive, got {step}")
        values = tuple(range(lo, hi + 1, step))
        if not values:
            raise SweepError(f"{where}.range: empty range {bounds!r} (from {lo} to {hi} holds no value); give "
                             f"lo <= hi")
        return Parameter(name, kind, values)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
        raise SweepError(f"{where}.{key}: expected [lo, hi], numbers, got {bounds!r}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (key == "log_uniform" and lo <= 0):
        raise SweepError(f"{where}.{key}: empty or invalid interval [{lo:g}, {hi:g}]; give finite lo < hi"
                         + (", lo > 0" if key == "log_uniform" else ""))
    return Parameter(name, kind, (), (key, lo, hi))


def _check_value(name: str, kind: str, value: Any, target: str, where: str) -> None:
    """One value on its own: a target field applied alone to the base target must validate; an
    option must have the type (and be one of the choices) the compiler or runtime accepts."""
    if kind == "target":
        from cimc.sweep.points import target_data
        from cimc.targets import target_from_dict
        base = Path(target).stem if target.endswith(".toml") else target
        try:
            target_from_dict(target_data(target, {name: value}), f"{base} with {name} = {value!r}")
        except CimcError as exc:
            raise SweepError(f"{where}: {exc}") from None
    elif kind == "compile":
        _check_compile(name, value, where)
    else:
        _check_run(name, value, where)


def _check_compile(name: str, value: Any, where: str) -> Any:
    choices = compile_choices().get(name)
    if choices is not None:
        if not any(type(value) is type(c) and value == c for c in choices):
            raise SweepError(f"{where}: {value!r} is not one of {', '.join(map(_toml, choices))}")
        return value
    default = compile_defaults()[name]
    return _typed(value, type(default), where)


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _check_run(name: str, value: Any, where: str) -> Any:
    choices = run_choices()[name]
    if choices is not None:
        if value not in choices:
            raise SweepError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value
    from cimc.runtime.multipliers import get_multiplier
    try:
        get_multiplier(_typed(value, str, where))
    except CimcError as exc:
        raise SweepError(f"{where}: {exc}") from None
    return value


def _options(table: dict, section: str) -> dict:
    known = compile_defaults() if section == "compile" else run_choices()
    out = {}
    for key, value in table.items():
        where = f"{section}.{key}"
        if key not in known:
            raise SweepError(f"{where}: unknown {section} option; accepted: {', '.join(known)}")
        out[key] = _check_compile(key, value, where) if section == "compile" else _check_run(key, value, where)
    return out


def _objectives(value: Any, accuracy: bool) -> tuple[Objective, ...]:
    if value is None:
        names = DEFAULT_OBJECTIVES + (("accuracy",) if accuracy else ())
        return tuple(Objective(n, OBJECTIVES[n]) for n in names)
    if isinstance(value, list):
        value = {_typed(n, str, "objectives"): None for n in value}
    table = _table(value, "objectives")
    out = []
    for name, direction in table.items():
        if name not in OBJECTIVES:
            raise SweepError(f"objectives: unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
        if direction not in (None, "min", "max"):
            raise SweepError(f"objectives.{name}: expected \"min\" or \"max\", got {direction!r}")
        if name in ("accuracy", "ort_agreement") and not accuracy:
            raise SweepError(f"objectives.{name}: no model measures accuracy; give a model samples = N "
                             f"(and data for a model given by path)")
        out.append(Objective(name, direction or OBJECTIVES[name]))
    if len(out) < 2:
        raise SweepError(f"objectives: a Pareto front needs at least two objectives, got {len(out)}")
    return tuple(out)
