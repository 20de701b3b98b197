"""The target description: a TOML file, validated field by field.

A target is plain data. Every figure cimc reports (cycles, energy, capacity) is
derived from it, so the schema below is the single place where a chip's
parameters are named, typed and range-checked. Each field carries its accepted
range in its metadata; :func:`load_target` refuses unknown keys, wrong types and
out-of-range values with a message naming the field.

Digital chips may compute in bfloat16 (``precision.format = "bf16"``, 16-bit
weights and activations): weights stored as bfloat16, activations rounded to
bfloat16 at the crossbar inputs, products of significands on the chosen
multiplier, float32 accumulation; no quantization. Each MVM applies the 8-bit
significand in ``dac_bits`` steps (:attr:`Target.input_chunks`).

Digital chips (``crossbar.kind = "digital"``) may carry a ``[multipliers]``
table, the cost model of their multiply-accumulates (see :class:`Multipliers`)::

    [multipliers]
    mac_pj = 0.05                             # one multiply-accumulate, exact multiplier, in the
                                              # chip's number format (int8 or bf16)
    exact = { cycles = 1.0, energy = 1.0 }    # the reference (implied)
    or = { cycles = 0.57, energy = 0.75 }     # ratios to the exact multiplier

The runtime (``cimc run --multiplier NAME``) scales the crossbar compute cycles
by ``cycles`` and the multiply-accumulate energy (``mac_pj`` per MAC) by
``energy``. Ratios must be > 0, names known to the multiplier registry, and the
table is refused on analog chips, which have no multiplier to choose.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cimc.errors import TargetError


def _f(lo: float, hi: float, doc: str, default: Any = dataclasses.MISSING, choices: tuple = ()):
    return field(default=default, metadata={"range": (lo, hi), "doc": doc, "choices": choices})


@dataclass(frozen=True)
class Chip:
    tiles: int = _f(1, 1 << 20, "number of tiles")
    pes_per_tile: int = _f(1, 1 << 12, "crossbars (processing elements) per tile")


@dataclass(frozen=True)
class Crossbar:
    rows: int = _f(2, 1 << 16, "wordlines per crossbar")
    cols: int = _f(2, 1 << 16, "bitlines per crossbar")
    cell_bits: int = _f(1, 8, "bits stored per cell")
    dac_bits: int = _f(1, 16, "input bits applied per crossbar read")
    kind: str = _f(0, 0, "analog (column sums through ADCs) or digital (SRAM with exact adder trees)",
                   "analog", choices=("analog", "digital"))
    input_routing: str = _f(0, 0, "shared (all columns of a crossbar read the same wordline inputs) or "
                            "per_group (each output's columns can be fed their own inputs, which SWS "
                            "scheme s1 needs)", "shared", choices=("shared", "per_group"))


#: Bits of a bfloat16 significand, hidden bit included: what a bf16 chip's arrays multiply.
BF16_SIGNIFICAND_BITS = 8


@dataclass(frozen=True)
class Precision:
    weight_bits: int = _f(2, 16, "signed weight width, sign included")
    activation_bits: int = _f(2, 16, "activation width at crossbar inputs")
    format: str = _f(0, 0, "number format of crossbar operands: int (integer weights and activation codes, "
                     "exact integer sums) or bf16 (bfloat16 weights and activations, float32 accumulation; "
                     "digital chips, 16-bit widths)", "int", choices=("int", "bf16"))


@dataclass(frozen=True)
class Adc:
    bits: int = _f(1, 16, "ADC resolution")
    per_crossbar: int = _f(1, 1 << 16, "ADCs shared by the columns of one crossbar")
    energy_model: str = _f(0, 0, "energy per conversion model", choices=("walden", "floor", "sar"))
    fom_fj_per_step: float = _f(0.0, 1e6, "Walden figure of merit, fJ per conversion step", 6.1)
    floor_pj: float = _f(0.0, 1e6, "minimum energy of one conversion in pJ (floor model)", 0.27)
    sar_pj_per_bit: float = _f(0.0, 1e6, "energy per resolved bit in pJ (SAR model)", 0.2)

    def conversion_pj(self, bits: int) -> float:
        """Energy of one conversion at ``bits`` resolution under this ADC's model (0 bits: no ADC)."""
        if bits <= 0:
            return 0.0
        walden = self.fom_fj_per_step * (1 << bits) / 1000.0
        if self.energy_model == "walden":
            return walden
        if self.energy_model == "floor":
            return max(self.floor_pj, walden)
        return self.sar_pj_per_bit * bits


@dataclass(frozen=True)
class Timing:
    clock_mhz: float = _f(1e-3, 1e6, "clock frequency that all cycle counts refer to")
    crossbar_read_cycles: int = _f(1, 1 << 20, "cycles for one analog read (one DAC step)")
    write_cycles_per_row: int = _f(1, 1 << 30, "cycles to program one crossbar row")
    adc_cycles: int = _f(1, 1 << 20, "cycles per ADC conversion (analog chips)", 1)


@dataclass(frozen=True)
class Gpeu:
    per_tile: int = _f(1, 1 << 12, "general-purpose execution units per tile")
    elements_per_cycle: float = _f(1e-6, 1e9, "vector elements one GPEU processes per cycle")


@dataclass(frozen=True)
class Noc:
    bytes_per_cycle: float = _f(1e-6, 1e9, "link bandwidth")
    hop_cycles: int = _f(0, 1 << 20, "latency of one router hop")


@dataclass(frozen=True)
class Buffer:
    kib_per_tile: float = _f(1e-3, 1e9, "activation buffer per tile in KiB")


@dataclass(frozen=True)
class Memory:
    """The global memory behind the tiles (eDRAM, HBM or DRAM), reached through one channel that
    carries one transfer at a time. Rows a tile buffer cannot hold until they are read are
    spilled there and loaded back (optional table: without it, every schedule must fit the
    tile buffers as they are)."""
    bytes_per_cycle: float = _f(1e-6, 1e9, "bandwidth of the channel to the global memory")
    latency_cycles: int = _f(0, 1 << 20, "cycles from the end of a transfer until its data is usable")
    pj_per_byte: float = _f(0.0, 1e9, "energy per byte moved to or from the global memory")


@dataclass(frozen=True)
class Energy:
    crossbar_read_pj: float = _f(0.0, 1e9, "energy of one crossbar read (one DAC step, all rows)")
    cell_write_pj: float = _f(0.0, 1e9, "energy to program one cell")
    vector_op_pj: float = _f(0.0, 1e9, "energy per vector element processed by a GPEU")


@dataclass(frozen=True)
class MultiplierCost:
    """Cost of one multiplier relative to the exact one on the same chip (both ratios > 0)."""
    cycles: float   # crossbar (macro) compute cycles, relative to the exact multiplier's
    energy: float   # energy per multiply-accumulate, relative to the exact multiplier's


@dataclass(frozen=True)
class Multipliers:
    """The ``[multipliers]`` table of a digital chip: the multiply-accumulate cost model.

    ``mac_pj`` is the energy of one multiply-accumulate with the exact multiplier;
    every other key is a multiplier name known to :func:`cimc.runtime.multipliers.get_multiplier`
    (``table`` stands for any table file) mapped to ``{ cycles = r, energy = r }``,
    its ratios to the exact multiplier. ``exact`` is the reference: 1 and 1 whether
    listed or not. A multiplier the table does not list can still be run; its cost
    figures are then unknown (reported as null).
    """
    mac_pj: float
    costs: tuple[tuple[str, MultiplierCost], ...]

    def cost(self, name: str) -> MultiplierCost | None:
        if name == "exact":
            return MultiplierCost(1.0, 1.0)
        return dict(self.costs).get(name)

    def to_dict(self) -> dict:
        return {"mac_pj": self.mac_pj, **{n: dataclasses.asdict(c) for n, c in self.costs}}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    chip: Chip
    crossbar: Crossbar
    precision: Precision
    adc: Adc | None           # None on digital chips: adder trees, nothing to convert
    timing: Timing
    gpeu: Gpeu
    noc: Noc
    buffer: Buffer
    energy: Energy
    multipliers: Multipliers | None = None   # digital chips only: MAC energy and multiplier cost ratios
    memory: Memory | None = None             # the global memory rows spill to (optional)

    # Derived quantities: the mapping and the cost model read these, never raw constants.
    @property
    def total_crossbars(self) -> int:
        return self.chip.tiles * self.chip.pes_per_tile

    @property
    def digital(self) -> bool:
        return self.crossbar.kind == "digital"

    @property
    def weight_slices(self) -> int:
        """Columns one weight magnitude occupies (sign is carried by the differential pair)."""
        return math.ceil((self.precision.weight_bits - 1) / self.crossbar.cell_bits)

    @property
    def columns_per_weight(self) -> int:
        """Analog: a differential pair of magnitude slices. Digital: the two's-complement word."""
        if self.digital:
            return math.ceil(self.precision.weight_bits / self.crossbar.cell_bits)
        return 2 * self.weight_slices

    @property
    def outputs_per_crossbar(self) -> int:
        return self.crossbar.cols // self.columns_per_weight

    @property
    def bf16(self) -> bool:
        return self.precision.format == "bf16"

    @property
    def input_chunks(self) -> int:
        """Reads per MVM: the input bits in ``dac_bits`` steps. A bf16 chip applies only the
        activation's significand to its arrays (sign and exponent go to the periphery's adders)."""
        bits = BF16_SIGNIFICAND_BITS if self.bf16 else self.precision.activation_bits
        return math.ceil(bits / self.crossbar.dac_bits)

    @property
    def mesh_width(self) -> int:
        return math.ceil(math.sqrt(self.chip.tiles))

    def hops(self, a: int, b: int) -> int:
        w = self.mesh_width
        return abs(a % w - b % w) + abs(a // w - b // w)

    def to_dict(self) -> dict:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.multipliers is not None:
            data["multipliers"] = self.multipliers.to_dict()
        return data


SECTIONS = {
    "chip": Chip, "crossbar": Crossbar, "precision": Precision, "adc": Adc, "timing": Timing,
    "gpeu": Gpeu, "noc": Noc, "buffer": Buffer, "energy": Energy, "memory": Memory,
}


def _check_value(where: str, f: dataclasses.Field, value: Any) -> Any:
    expected = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str}[f.type]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, expected):
        raise TargetError(f"{where}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    choices = f.metadata["choices"]
    if choices:
        if value not in choices:
            raise TargetError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value
    lo, hi = f.metadata["range"]
    if expected in (int, float) and not (lo <= value <= hi and math.isfinite(value)):
        raise TargetError(f"{where}: {value!r} is outside the accepted range [{lo:g}, {hi:g}]"
                          f" ({f.metadata['doc']})")
    return value


def _build_section(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise TargetError(f"{where}: expected a table [{where}], got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TargetError(f"{where}: unknown key {unknown[0]!r}; accepted keys: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _check_value(f"{where}.{name}", f, data[name])
        elif f.default is dataclasses.MISSING:
            raise TargetError(f"{where}.{name} is missing ({f.metadata['doc']})")
    return cls(**values)


def _check_consistency(t: Target, where: str) -> None:
    """Combinations that no chip can have, named by field."""
    if t.crossbar.cell_bits > t.precision.weight_bits - 1:
        raise TargetError(f"{where}: crossbar.cell_bits ({t.crossbar.cell_bits}) exceeds the weight "
                          f"magnitude bits (precision.weight_bits - 1 = {t.precision.weight_bits - 1})")
    if t.crossbar.dac_bits > t.precision.activation_bits:
        raise TargetError(f"{where}: crossbar.dac_bits ({t.crossbar.dac_bits}) exceeds "
                          f"precision.activation_bits ({t.precision.activation_bits})")
    if t.adc is not None and t.adc.per_crossbar > t.crossbar.cols:
        raise TargetError(f"{where}: adc.per_crossbar ({t.adc.per_crossbar}) exceeds crossbar.cols "
                          f"({t.crossbar.cols}): a crossbar has at most one ADC per column")
    if t.bf16 and not t.digital:
        raise TargetError(f"{where}: precision.format = \"bf16\" needs a digital chip (crossbar.kind = "
                          f"\"digital\"): analog columns add currents and cannot hold floating-point numbers")
    if t.bf16 and (t.precision.weight_bits, t.precision.activation_bits) != (16, 16):
        raise TargetError(f"{where}: precision.format = \"bf16\" stores 16-bit words; set precision.weight_bits "
                          f"and precision.activation_bits to 16 (got {t.precision.weight_bits} and "
                          f"{t.precision.activation_bits})")
    if t.outputs_per_crossbar < 1:
        raise TargetError(f"{where}: crossbar.cols ({t.crossbar.cols}) cannot hold one weight, which "
                          f"needs {t.columns_per_weight} columns (differential pair of "
                          f"{t.weight_slices} slices)")


def _build_multipliers(data: Any, where: str) -> Multipliers:
    """``[multipliers]``: ``mac_pj`` and ``NAME = { cycles = r, energy = r }`` per known multiplier."""
    from cimc.errors import MultiplierError
    from cimc.runtime.multipliers import KNOWN_NAMES, get_multiplier
    if not isinstance(data, dict):
        raise TargetError(f"{where}: expected a table [multipliers], got {type(data).__name__}")
    if "mac_pj" not in data:
        raise TargetError(f"{where}.mac_pj is missing (energy of one multiply-accumulate with the exact "
                          f"multiplier, pJ)")
    mac = data["mac_pj"]
    if isinstance(mac, bool) or not isinstance(mac, (int, float)) or not (0 <= mac <= 1e9 and math.isfinite(mac)):
        raise TargetError(f"{where}.mac_pj: expected a number in [0, 1e+09] (pJ per multiply-accumulate with "
                          f"the exact multiplier), got {mac!r}")
    costs = []
    for name, entry in data.items():
        if name == "mac_pj":
            continue
        if name != "table":
            try:
                get_multiplier(name)
            except MultiplierError:
                raise TargetError(f"{where}.{name}: unknown multiplier {name!r}; known: {KNOWN_NAMES}; "
                                  f"other keys: mac_pj") from None
        if not isinstance(entry, dict) or set(entry) != {"cycles", "energy"}:
            raise TargetError(f"{where}.{name}: expected {{ cycles = ratio, energy = ratio }} (relative to the "
                              f"exact multiplier), got {entry!r}")
        ratios = {}
        for key in ("cycles", "energy"):
            r = entry[key]
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0 < r <= 1e6 and math.isfinite(r)):
                raise TargetError(f"{where}.{name}.{key}: expected a ratio > 0 (relative to the exact "
                                  f"multiplier), got {r!r}")
            ratios[key] = float(r)
        if name == "exact" and ratios != {"cycles": 1.0, "energy": 1.0}:
            raise TargetError(f"{where}.exact: the exact multiplier is the reference, its ratios are 1; "
                              f"got {entry!r}")
        costs.append((name, MultiplierCost(**ratios)))
    return Multipliers(float(mac), tuple(costs))


def target_from_dict(data: dict, where: str = "target") -> Target:
    if not isinstance(data, dict):
        raise TargetError(f"{where}: expected a TOML document")
    allowed = {"name", "description", "multipliers", *SECTIONS}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise TargetError(f"{where}: unknown key {unknown[0]!r}; accepted keys: {', '.join(sorted(allowed))}")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str):
            raise TargetError(f"{where}: '{key}' must be a string")
    try:
        sections = {key: _build_section(cls, data[key], key) if key in data else None
                    for key, cls in SECTIONS.items()}
    except TargetError as exc:
        raise TargetError(f"{where}: {exc}") from None
    digital = sections["crossbar"] is not None and sections["crossbar"].kind == "digital"
    if digital and sections["adc"] is not None:
        raise TargetError(f"{where}: [adc] given for a digital chip (crossbar.kind = \"digital\"), whose "
                          f"adder trees convert nothing; remove the table or make the crossbar analog")
    missing = [k for k, v in sections.items() if v is None and not (k == "adc" and digital) and k != "memory"]
    if missing:
        raise TargetError(f"{where}: missing table [{missing[0]}]")
    multipliers = None
    if "multipliers" in data:
        if not digital:
            raise TargetError(f"{where}: [multipliers] given for an analog chip (crossbar.kind = \"analog\"), "
                              f"whose crossbars add currents and have no multiplier to choose; remove the table "
                              f"or make the crossbar digital")
        try:
            multipliers = _build_multipliers(data["multipliers"], "multipliers")
        except TargetError as exc:
            raise TargetError(f"{where}: {exc}") from None
    target = Target(name=data["name"], description=data["description"], multipliers=multipliers, **sections)
    _check_consistency(target, where)
    return target


def preset_names() -> list[str]:
    folder = resources.files("cimc.targets") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_text(name: str) -> str:
    return (resources.files("cimc.targets") / "presets" / f"{name}.toml").read_text(encoding="utf-8")


def load_target(spec: "str | Path | Target") -> Target:
    """A preset name, a path to a TOML file, or an already loaded :class:`Target`."""
    if isinstance(spec, Target):
        return spec
    text_name = str(spec)
    if text_name in preset_names():
        text, where = preset_text(text_name), f"preset {text_name}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise TargetError(f"target {text_name!r} is neither a preset ({', '.join(preset_names())}) "
                              f"nor a readable file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TargetError(f"cannot read target file {path}: {exc}") from None
        where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{where} is not valid TOML: {exc}") from None
    return target_from_dict(data, where)
