"""Approximate 8-bit multipliers: one interface, exhaustive characterization, fast emulated products.

A multiplier is an unsigned function of two 8-bit magnitudes ``a, b`` in 0..255
that approximates ``a * b``. It is defined elementwise (vectorized numpy) and
represented by its 256x256 table ``T[a, b]``, computed from that definition.
Two operand domains use it:

* **bfloat16 significands**: 8 bits with the hidden bit (128..255 for normal
  numbers); sign and exponent are handled exactly by the caller, as a floating
  point multiplier does (see :func:`bf16_matmul`).
* **signed 8-bit integers**, sign-magnitude: the multiplier sees ``|x|`` and
  ``|w|`` (``|-128| = 128`` fits) and the sign ``sign(x) * sign(w)`` is applied
  exactly, so a zero operand always gives 0 whatever ``T[., 0]`` holds.

Operand order matters for the asymmetric members (``pc<k>``, tables from files):
the first operand is the activation, the second the weight, so in
:func:`matmul` the product of ``x[m, k]`` and ``w[k, n]`` is ``T[|x|, |w|]``.

The family and its names (:func:`get_multiplier`):

==================  ==================================================================
``exact``           ``a * b``
``or``              DAISM (PAPERS.md section 3): the partial products ``a << i`` for the
                    set bits ``i`` of ``b`` are ORed instead of added
``pc<k>``           DAISM precomputed multiples, k = 2..7: ``b`` is cut into k-bit groups
                    from the least significant bit; each group's product with ``a`` is
                    exact, the shifted group products are ORed
``or-t<t>``,        the same with the ``t`` low bits of the result dropped (set to 0),
``pc<k>-t<t>``      t = 1..15; OR is bitwise, so this equals never computing those bit
                    columns of the partial products
``mitchell``        Mitchell's logarithmic multiplier (1962): ``log2`` approximated by the
                    leading-one position plus the remaining bits as a linear fraction
``drum<k>``         DRUM-k (Hashemi, Bahar, Reda, ICCAD 2015), k = 2..7: an operand of more
                    than k bits keeps its k bits from the leading one with the lowest kept
                    bit forced to 1 (unbiasing), the rest dropped; operands of at most k
                    bits are used as they are
``table``           a 256x256 table of products loaded from a file (EvoApproxLib-style
                    unsigned 8x8 circuits), ``T[first operand, second operand]``
==================  ==================================================================

The parameter ranges stop where a member would duplicate another: ``pc1`` is
``or``, and ``pc8`` and ``drum8`` are ``exact`` on 8-bit operands.

OR-based members never exceed the exact product (``x | y <= x + y``), and
dropping result bits only lowers it further; Mitchell never exceeds it either.

Emulated matrix products (:func:`matmul`, :func:`bf16_matmul`) never gather a
table entry per multiply-accumulate: they split the weights by magnitude
(significand) value ``v`` and run one BLAS product per distinct value,
``Y = sum_v (s_x * T[|x|, v]) @ (s_w * [|w| == v])``, which is exactly the
elementwise-table definition ``Y[m, n] = sum_k s_x s_w T[|x_mk|, |w_kn|]``.
The cost is one dense BLAS product plus one table gather over the activations
per distinct weight value. ``benchmarks/multipliers.py`` measures it against the
best per-product gather we could write in numpy: on 2 cores the decomposition is
several times faster for 4-bit weights (7 magnitudes) and roughly on par with,
or slower than, the gather for full-range int8 weights (~120 magnitudes).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Callable

import numpy as np

from cimc.errors import MultiplierError

OPERAND_BITS = 8
SIZE = 1 << OPERAND_BITS                 # 256 magnitudes 0..255
MAX_ENTRY = (1 << 2 * OPERAND_BITS) - 1  # a table entry is a 16-bit unsigned product
STANDARD_NAMES = ("exact", "or", "pc2", "pc3", "pc4", "or-t4", "pc4-t4", "mitchell", "drum4", "drum6")
KNOWN_NAMES = ("exact, or, pc<k> (k = 2..7), or-t<t> and pc<k>-t<t> (t = 1..15), mitchell, "
               "drum<k> (k = 2..7), table (with a table file)")
DOMAINS = ("bf16", "int8")
CHUNK_ELEMENTS = 1 << 22                 # elements of one gathered activation block (32 MiB in float64)

Product = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class Multiplier:
    """One member of the family: what it is called and its elementwise definition.

    ``product`` takes int64 magnitudes in 0..255 (broadcastable) and returns the
    int64 approximate products; everything else (the table, signed products, the
    emulated matrix products, the characterization) derives from it.
    """

    name: str
    description: str
    parameters: dict[str, object]
    product: Product = field(repr=False)
    #: When the product factors as ``f(a) * f(b)`` (exact, DRUM), the map ``f`` on magnitudes: an
    #: emulated matrix product is then one exact BLAS product of mapped operands.
    operand: "Callable[[np.ndarray], np.ndarray] | None" = field(default=None, repr=False)

    def multiply(self, a, b) -> np.ndarray:
        """Elementwise approximate products of unsigned 8-bit magnitudes."""
        return self.product(_magnitudes(a), _magnitudes(b))

    def multiply_signed(self, x, w) -> np.ndarray:
        """Elementwise sign-magnitude products: ``sign(x) sign(w) T[|x|, |w|]`` (|x|, |w| <= 255)."""
        x, w = _integers(x), _integers(w)
        return np.sign(x) * np.sign(w) * self.multiply(np.abs(x), np.abs(w))

    def table(self) -> np.ndarray:
        """``T[a, b]`` for a, b in 0..255, int64, read-only (computed once from the definition)."""
        return self._table

    @cached_property
    def _table(self) -> np.ndarray:
        a = np.arange(SIZE, dtype=np.int64)
        table = np.ascontiguousarray(np.broadcast_to(self.product(a[:, None], a[None, :]), (SIZE, SIZE)))
        table.flags.writeable = False
        return table


def _integers(a) -> np.ndarray:
    """Integer operands as int64; floats are refused rather than silently truncated."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"multiplier operands must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def _magnitudes(a) -> np.ndarray:
    """Operands as int64, refused outside 0..255: the tables and definitions stop there."""
    a = _integers(a)
    if a.size and (a.min() < 0 or a.max() >= SIZE):
        raise ValueError(f"multiplier operands must be magnitudes in 0..{SIZE - 1}, got {a.min()}..{a.max()}")
    return a


# ----------------------------------------------------------------------------------------------
# Elementwise definitions (pure functions of int64 magnitude arrays)
# ----------------------------------------------------------------------------------------------

def exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


def daism_product(a: np.ndarray, b: np.ndarray, group_bits: int, truncate: int) -> np.ndarray:
    """OR of exact group products ``(a * group_g(b)) << (g * group_bits)``, low ``truncate`` bits cleared.

    ``group_bits = 1`` is the plain ``or`` multiplier (one partial product per set
    bit of ``b``). The loop runs over the (at most 8) bit groups, not over pairs.
    """
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=np.int64)
    digit_mask = (1 << group_bits) - 1
    for shift in range(0, OPERAND_BITS, group_bits):
        out |= (a * ((b >> shift) & digit_mask)) << shift
    return out & ~((1 << truncate) - 1)


def leading_one(a: np.ndarray) -> np.ndarray:
    """Position of the most significant set bit (``floor(log2 a)``); -1 for 0. Exact: frexp of small ints."""
    return np.frexp(a.astype(np.float64))[1].astype(np.int64) - 1


def mitchell_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mitchell's product, exactly, in integers.

    With ``a = 2**ka (1 + fa)`` and ``b = 2**kb (1 + fb)``, Mitchell adds the
    approximate logarithms ``ka + fa`` and ``kb + fb`` and takes the approximate
    antilog: ``2**(ka+kb) (1 + fa + fb)`` if ``fa + fb < 1``, else
    ``2**(ka+kb+1) (fa + fb)``. With ``ma = a - 2**ka`` (so ``fa = ma / 2**ka``)
    the carry-free sum ``s = ma 2**kb + mb 2**ka = 2**(ka+kb) (fa + fb)`` is an
    integer, and so are both results: ``2**(ka+kb) + s`` and ``2 s``.
    """
    ka, kb = np.maximum(leading_one(a), 0), np.maximum(leading_one(b), 0)
    s = ((a - (1 << ka)) << kb) + ((b - (1 << kb)) << ka)
    base = 1 << (ka + kb)
    approx = np.where(s < base, base + s, 2 * s)
    return np.where((a == 0) | (b == 0), 0, approx)


def drum_operand(a: np.ndarray, keep: int) -> np.ndarray:
    """DRUM's operand: ``keep`` bits from the leading one, the lowest forced to 1, shifted back.

    Forcing the lowest kept bit to 1 stands for the expected value of the dropped
    bits, which makes the product nearly unbiased. Operands below ``2**keep`` pass
    unchanged (the hardware's mux selects the low bits directly).
    """
    shift = np.maximum(leading_one(a) - keep + 1, 0)
    return np.where(a < (1 << keep), a, (((a >> shift) | 1) << shift))


def drum_product(a: np.ndarray, b: np.ndarray, keep: int) -> np.ndarray:
    return drum_operand(a, keep) * drum_operand(b, keep)


def table_product(a: np.ndarray, b: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[a, b]


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

_DAISM = re.compile(r"(?:or|pc([2-7]))(?:-t([1-9]|1[0-5]))?")
_DRUM = re.compile(r"drum([2-7])")


def get_multiplier(name: str, table_file: str | Path | None = None) -> Multiplier:
    """The multiplier called ``name`` (see the module docstring); ``table`` needs ``table_file``."""
    if name == "table":
        if table_file is None:
            raise MultiplierError("the `table` multiplier needs a table file (256x256 products, .npy/.npz/text)")
        return table_multiplier(table_file)
    if table_file is not None:
        raise MultiplierError(f"a table file goes with the multiplier `table`, not {name!r}")
    if name == "exact":
        return Multiplier("exact", "exact product", {}, exact_product, operand=lambda a: a)
    if name == "mitchell":
        return Multiplier("mitchell", "Mitchell logarithmic", {}, mitchell_product)
    if m := _DAISM.fullmatch(name):
        group_bits, truncate = int(m[1] or 1), int(m[2] or 0)
        what = ("DAISM: OR of all partial products" if group_bits == 1 else
                f"DAISM: {group_bits}-bit groups of operand 2 exact, OR across")
        if truncate:
            what += f", {truncate} low bits dropped"
        return Multiplier(name, what, {"group_bits": group_bits, "truncate": truncate},
                          partial(daism_product, group_bits=group_bits, truncate=truncate))
    if m := _DRUM.fullmatch(name):
        keep = int(m[1])
        return Multiplier(name, f"DRUM: {keep} bits from the leading one, last set", {"keep": keep},
                          partial(drum_product, keep=keep), operand=partial(drum_operand, keep=keep))
    raise MultiplierError(f"unknown multiplier {name!r}; known: {KNOWN_NAMES}")


def table_multiplier(path: str | Path) -> Multiplier:
    """A multiplier given by its 256x256 table in a file (see :func:`load_table`)."""
    table = load_table(path)
    table.flags.writeable = False
    return Multiplier("table", f"table from {Path(path).name}", {"file": str(path)},
                      partial(table_product, table=table))


def load_table(path: str | Path) -> np.ndarray:
    """A validated 256x256 int64 table: ``.npy``, ``.npz`` holding one array, or text/CSV integers.

    Row ``a``, column ``b`` is the product of ``a`` (first operand, the
    activation) and ``b`` (second operand, the weight). Entries must be integers
    in 0..65535, the output range of an unsigned 8x8 multiplier (EvoApproxLib's
    ``mul8u`` circuits); this also keeps :func:`matmul`'s float sums exact.
    """
    path = Path(path)
    try:
        table = _read_table(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise MultiplierError(f"cannot read multiplier table {path}: {exc}") from None
    if table.shape != (SIZE, SIZE):
        raise MultiplierError(f"multiplier table {path} has shape {table.shape}; an 8x8 table must be "
                              f"({SIZE}, {SIZE}), the products of a, b in 0..{SIZE - 1}")
    if not np.issubdtype(table.dtype, np.integer):
        raise MultiplierError(f"multiplier table {path} has dtype {table.dtype}; it must hold integers")
    if table.min() < 0 or table.max() > MAX_ENTRY:
        raise MultiplierError(f"multiplier table {path} has entries {table.min()}..{table.max()}; products of "
                              f"8-bit magnitudes must lie in 0..{MAX_ENTRY}")
    return table.astype(np.int64)


def _read_table(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        if path.is_file() and not zipfile.is_zipfile(path):    # np.load would report pickled data instead
            raise MultiplierError(f"multiplier table {path} is not an .npz archive")
        with np.load(path, allow_pickle=False) as npz:
            if len(npz.files) != 1:
                raise MultiplierError(f"multiplier table {path} holds {len(npz.files)} arrays "
                                      f"({', '.join(npz.files) or 'none'}); it must hold exactly one")
            return npz[npz.files[0]]
    text = path.read_text()
    try:
        return np.loadtxt(io.StringIO(text), dtype=np.int64, delimiter="," if "," in text else None, ndmin=2)
    except ValueError as exc:                                  # numpy's first clause says where; drop its hints
        raise MultiplierError(f"multiplier table {path} is not rows of integers separated by commas or "
                              f"whitespace: {str(exc).split(';')[0]}") from None


# ----------------------------------------------------------------------------------------------
# Characterization
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Characterization:
    """Relative errors ``(approx - exact) / exact`` over every operand pair of a domain.

    ``bf16``: significand pairs 128..255 x 128..255 (16,384). ``int8``: all
    65,536 signed pairs, sign-magnitude; the 511 pairs with a zero operand have a
    zero product (exact by construction) and no relative error, so every figure,
    ``exact_fraction`` included, is over the other 65,025.
    """

    domain: str
    pairs: int
    mean_error: float      # mean |relative error|
    bias: float            # mean signed relative error
    max_error: float       # max |relative error|
    exact_fraction: float  # fraction of pairs with approx == exact


def domain_operands(domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Every operand pair of a domain with a nonzero exact product, as two broadcast int64 arrays."""
    if domain == "bf16":
        v = np.arange(SIZE // 2, SIZE, dtype=np.int64)
    elif domain == "int8":
        v = np.arange(-SIZE // 2, SIZE // 2, dtype=np.int64)
        v = v[v != 0]
    else:
        raise MultiplierError(f"unknown operand domain {domain!r}; domains: {', '.join(DOMAINS)}")
    return np.broadcast_arrays(v[:, None], v[None, :])


def characterize(mult: Multiplier, domain: str) -> Characterization:
    """Exhaustive error figures of ``mult`` on ``domain`` (``bf16`` or ``int8``), from its table."""
    x, w = domain_operands(domain)
    exact = (x * w).astype(np.float64)
    approx = (np.sign(x) * np.sign(w) * mult.table()[np.abs(x), np.abs(w)]).astype(np.float64)
    rel = (approx - exact) / exact
    return Characterization(domain, rel.size, float(np.abs(rel).mean()), float(rel.mean()),
                            float(np.abs(rel).max()), float((approx == exact).mean()))


def format_table(rows: list[tuple[Multiplier, dict[str, Characterization]]], markdown: bool = False) -> str:
    """One table: name, description, then mean / bias / max / exact per domain (percent)."""
    head = ["name", "description"] + [f"{d} {c}" for d in DOMAINS for c in ("mean", "bias", "max", "exact")]
    body = [[m.name, m.description] + [cell for d in DOMAINS for cell in _percent_cells(chars[d])]
            for m, chars in rows]
    if markdown:
        return "".join("| " + " | ".join(r) + " |\n" for r in [head, ["---"] * len(head)] + body)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    return "".join("  ".join(c.ljust(wd) if i < 2 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths)))
                   .rstrip() + "\n" for r in [head] + body)


def _percent_cells(c: Characterization) -> list[str]:
    return [f"{100 * c.mean_error:.2f} %", f"{100 * c.bias:+.2f} %", f"{100 * c.max_error:.2f} %",
            f"{100 * c.exact_fraction:.1f} %"]


# ----------------------------------------------------------------------------------------------
# Emulated matrix products
# ----------------------------------------------------------------------------------------------

def matmul(x, w, mult: Multiplier) -> np.ndarray:
    """``Y[m, n] = sum_k sign(x_mk) sign(w_kn) T[|x_mk|, |w_kn|]`` exactly, as int64.

    ``x`` (M, K) and ``w`` (K, N) are integer arrays with magnitudes up to 255
    (signed int8 or significands). One BLAS product per distinct nonzero weight
    magnitude, or a single one of mapped operands when the multiplier factors
    (exact, DRUM); every partial sum is bounded by ``K * max(T)``, so the products
    run in float32 when that is below 2**24 and in float64 (bound below 2**53)
    otherwise, and both are exact.
    """
    x, w = _operand_matrix(x, "x"), _operand_matrix(w, "w")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"matmul: x is {x.shape} and w is {w.shape}: inner dimensions differ")
    table = mult.table()
    bound = x.shape[1] * int(table.max())
    if bound >= 1 << 53:
        raise ValueError(f"matmul: K = {x.shape[1]} is too large for exact float64 sums")
    dtype = np.float32 if bound < 1 << 24 else np.float64
    if mult.operand is not None:                    # T[a, b] = f(a) f(b): one product of mapped operands
        fx = (np.sign(x) * mult.operand(np.abs(x))).astype(dtype)
        fw = (np.sign(w) * mult.operand(np.abs(w))).astype(dtype)
        return (fx @ fw).astype(np.int64)
    y = _decomposed(np.abs(x), np.sign(x).astype(dtype), np.abs(w), np.sign(w).astype(dtype), table, dtype)
    return y.astype(np.int64)


def _operand_matrix(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"matmul: {what} must be a 2-D integer array, got {a.ndim}-D {a.dtype}")
    a = a.astype(np.int64)
    if a.size and np.abs(a).max() >= SIZE:
        raise ValueError(f"matmul: {what} has magnitudes up to {np.abs(a).max()}; the multiplier takes 0..{SIZE - 1}")
    return a


def _decomposed(ax: np.ndarray, x_scale: np.ndarray, aw: np.ndarray, w_scale: np.ndarray,
                table: np.ndarray, dtype) -> np.ndarray:
    """``sum_v (x_scale * T[ax, v]) @ (w_scale * [aw == v])`` over the values v of ``aw`` where w_scale != 0.

    When at most half the rows k of ``w`` hold a value, only those take part (a
    value absent from a row contributes nothing there). Activations go in chunks
    of rows so that the gathered (rows, K) block stays within
    :data:`CHUNK_ELEMENTS`.
    """
    (m, k), n = ax.shape, aw.shape[1]
    columns = np.ascontiguousarray(table.T, dtype=dtype)       # columns[v] = T[:, v]
    y = np.zeros((m, n), dtype=dtype)
    step = max(1, CHUNK_ELEMENTS // max(k, n, 1))
    used = w_scale != 0
    for v in np.unique(aw[used]):
        hit = used & (aw == v)
        ks = np.flatnonzero(hit.any(axis=1))
        if 2 * len(ks) > k:                                 # selecting rows would cost more than it saves
            ks = slice(None)
        indicator = np.where(hit[ks], w_scale[ks], 0).astype(dtype)
        for start in range(0, m, step):
            rows = slice(start, start + step)
            block = columns[v][ax[rows, ks]]
            block *= x_scale[rows, ks]
            y[rows] += block @ indicator
    return y


@dataclass(frozen=True)
class Bf16Parts:
    """A bfloat16 array split so that ``value = sign * significand * 2.0**exponent`` exactly.

    Normal numbers have the hidden bit (significand 128..255); subnormals keep
    their 0..127 fraction with the smallest exponent, so they go through the same
    8-bit multiplier (gradual underflow, no flush to zero); zeros have sign 0.
    """

    sign: np.ndarray         # int64, -1, 0 or +1
    significand: np.ndarray  # int64, 0..255
    exponent: np.ndarray     # int64, -133..120


def bf16_bits(x) -> np.ndarray:
    """The bfloat16 bit patterns (uint16) of ``x`` rounded from float32 to nearest, ties to even."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    if ((rounded & 0x7F80) == 0x7F80).any():
        raise ValueError("bf16 operands must be finite after rounding to bfloat16 (inf and NaN have no "
                         "significand to multiply)")
    return rounded


def bf16_round(x) -> np.ndarray:
    """``x`` rounded to bfloat16 (nearest, ties to even), as float32."""
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def bf16_split(x) -> Bf16Parts:
    """Sign, significand (hidden bit included) and exponent of ``x`` rounded to bfloat16."""
    bits = bf16_bits(x).astype(np.int64)
    field_exp, fraction = (bits >> 7) & 0xFF, bits & 0x7F
    significand = np.where(field_exp > 0, fraction | 0x80, fraction)
    sign = np.where(significand == 0, 0, 1 - 2 * (bits >> 15))
    return Bf16Parts(sign, significand, np.maximum(field_exp, 1) - 127 - 7)


def bf16_matmul(x, w, mult: Multiplier) -> np.ndarray:
    """A float32 matrix product whose multiplies are bfloat16 multiplies with ``mult`` on the significands.

    Operands are converted to float32 and rounded to bfloat16 (nearest, ties to
    even; finite only). Each product is
    ``sign_x sign_w T[sig_x, sig_w] 2**(e_x + e_w)``: exact signs and exponents,
    approximate significand product, no rounding of the product. Grouping by the
    weight significand ``v``, the exponent scale splits into an activation factor
    ``sign_x 2**e_x`` (applied to ``T[sig_x, v]``) and a weight factor
    ``sign_w 2**e_w`` (on the indicator of ``v``). Accumulation: every product is
    exact in float64 (a 16-bit integer times a power of two in range), the
    products are summed by float64 BLAS in its own order, and the sum is rounded
    once to float32 (a wide accumulator, then one rounding). ``x`` is (M, K),
    ``w`` is (K, N); returns (M, N) float32.
    """
    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"bf16_matmul: need (M, K) and (K, N) operands, got {x.shape} and {w.shape}")
    px, pw = bf16_split(x), bf16_split(w)
    x_scale = np.ldexp(px.sign.astype(np.float64), px.exponent)
    w_scale = np.ldexp(pw.sign.astype(np.float64), pw.exponent)
    y = _decomposed(px.significand, x_scale, pw.significand, w_scale, mult.table(), np.float64)
    with np.errstate(over="ignore"):                 # beyond float32's range is inf, as in hardware
        return y.astype(np.float32)
