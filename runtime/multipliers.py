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

Emulated matrix products (:class:`IntProduct` / :func:`matmul` on integers,
:class:`Bf16Product` / :func:`bf16_matmul` on bfloat16) equal the elementwise-table
definition ``Y[m, n] = sum_k s_x s_w T[|x_mk|, |w_kn|]`` (times the exponents'
powers of two in bf16) without gathering one table entry per multiply-accumulate
into an (M, K, N) array. A multiplier that factors as ``f(a) f(b)`` (exact,
DRUM) is one BLAS product of mapped operands. Any other gets, per row k of the
weights, a table ``L_k[c, :]`` of the signed products of every activation code
``c`` with that row (built once per weight matrix: weights are fixed), and
``Y = sum_k L_k[x[:, k]]`` is one ``take`` of M rows from a small table and one
add per k (in bfloat16 the table is over significands and holds the weight's sign
and power of two; the gathered rows are scaled by the activation's before the add):
M x K x N additions in all, as many as the exact product's multiply-adds, but at
numpy's gather speed rather than BLAS's: 40-70x the float32 BLAS product (on
every core) on one ResNet-like layer, tables built included, 2-3x faster than a
per-product gather (``benchmarks/results/multipliers.md``); about 5x the exact
run on a whole model, which does much besides its products
(``benchmarks/results/multiplier_accuracy.md``). An earlier scheme, one BLAS product per distinct
weight value (``sum_v T[x, v] @ [w == v]``), costs a full product and an (M, K)
gather per value, 120-220x the exact product on int8 layers with ~120 weight
magnitudes; the row tables replace it. In bfloat16 the scaling by the activations'
powers of two (a multiply broadcast along short rows) takes about half the time;
folding them into the tables instead (a table per row k and per activation
exponent present, about 20 per call on ResNet-8) removes it but costs as much to
build on the small M of its deep layers, and finding the exponents present costs
what it saves on the others, so it is not done.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from cimc.errors import MultiplierError

OPERAND_BITS = 8
SIZE = 1 << OPERAND_BITS                 # 256 magnitudes 0..255
MAX_ENTRY = (1 << 2 * OPERAND_BITS) - 1  # a table entry is a 16-bit unsigned product
STANDARD_NAMES = ("exact", "or", "pc2", "pc3", "pc4", "or-t4", "pc4-t4", "mitchell", "drum4", "drum6")
KNOWN_NAMES = ("exact, or, pc<k> (k = 2..7), or-t<t> and pc<k>-t<t> (t = 1..15), mitchell, "
               "drum<k> (k = 2..7), table (with a table file)")
DOMAINS = ("bf16", "int8")
#: A prepared weight matrix keeps its row tables up to this size (a layer builds them once) ...
TABLE_CACHE_BYTES = 128 << 20
#: ... else it builds them this many bytes at a time, for every product.
TABLE_CHUNK_BYTES = 4 << 20
#: Largest weight exponent (``value = significand 2**exponent``) a bf16 table can scale by:
#: a 16-bit table entry times ``2**111`` is float32's largest power of two, 2**127.
MAX_TABLE_EXPONENT = 111

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

def _gather_sum(index: np.ndarray, chunks: Iterable[np.ndarray], scale: np.ndarray | None, n: int,
                dtype) -> np.ndarray:
    """``Y[m, :] = sum_k scale[k, m] * L_k[index[k, m], :]``, summed in the order of k.

    ``index`` is (K, M) (any unsigned integers within the tables' rows), ``chunks`` yields the row tables
    ``L_k`` (R, N) in order of k, a few at a time, ``scale`` is (K, M) or None. Each k is one
    ``take`` of M rows from a table small enough to stay in cache, and one add: M x N work per
    k, vectorized, and no (M, K, N) array ever exists.
    """
    m = index.shape[1]
    y = np.zeros((m, n), dtype=dtype)
    part = np.empty((m, n), dtype=dtype)
    k = 0
    for chunk in chunks:
        for table in chunk:
            np.take(table, index[k], axis=0, out=part, mode="clip")   # in range by construction
            if scale is not None:
                np.multiply(part, scale[k][:, None], out=part)
            y += part
            k += 1
    return y


def _chunked(build: Callable[[int, int], np.ndarray], k: int, bytes_per_row: int) -> Iterator[np.ndarray]:
    """``build(k0, k1)`` over ``0..k`` in pieces of about :data:`TABLE_CHUNK_BYTES`."""
    step = max(1, TABLE_CHUNK_BYTES // max(bytes_per_row, 1))
    for k0 in range(0, k, step):
        yield build(k0, min(k0 + step, k))


def _row_builder(columns: np.ndarray, operand: np.ndarray, factor: np.ndarray) -> Callable[[int, int], np.ndarray]:
    """``build(k0, k1)``: the row tables ``L_k[c, n] = columns[operand[k, n], c] * factor[k, n]`` of
    weight rows k0..k1, as (k, R, N): ``columns[v]`` holds the products of every activation with
    weight operand ``v``, ``factor`` the weight's sign (and, in bfloat16, its power of two)."""
    def build(k0: int, k1: int) -> np.ndarray:
        rows = columns[operand[k0:k1]]                                                      # (k, N, R)
        rows *= factor[k0:k1, :, None]
        return np.ascontiguousarray(rows.transpose(0, 2, 1))
    return build


class _RowTables:
    """The row tables of one prepared weight matrix: kept when they fit :data:`TABLE_CACHE_BYTES`
    (weights are fixed, so a layer builds them once), else rebuilt in pieces for every product."""

    def __init__(self, build: Callable[[int, int], np.ndarray], k: int, bytes_per_row: int) -> None:
        self.build, self.k, self.bytes_per_row = build, k, bytes_per_row
        self.kept = build(0, k) if k * bytes_per_row <= TABLE_CACHE_BYTES else None

    def chunks(self) -> Iterable[np.ndarray]:
        return [self.kept] if self.kept is not None else _chunked(self.build, self.k, self.bytes_per_row)


def _operand_matrix(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"matmul: {what} must be a 2-D integer array, got {a.ndim}-D {a.dtype}")
    if a.size and np.abs(a.astype(np.int64)).max() >= SIZE:
        raise ValueError(f"matmul: {what} has magnitudes up to {np.abs(a.astype(np.int64)).max()}; the "
                         f"multiplier takes 0..{SIZE - 1}")
    return a


class IntProduct:
    """An integer weight matrix ``w`` (K, N), |w| <= 255, prepared for emulated products with ``mult``.

    ``product(x)`` is ``Y[m, n] = sum_k sign(x_mk) sign(w_kn) T[|x_mk|, |w_kn|]``, exactly, as
    int64. When the multiplier factors (exact, DRUM) it is one BLAS product of mapped operands,
    in float32 when every partial sum stays below 2**24, else float64 (exact to 2**53).
    Otherwise each row k of ``w`` gets a table ``L_k[c, n] = sign(c) sign(w_kn) T[|c|, |w_kn|]``
    over the activation codes ``c`` (``codes``: the range every activation lies in, e.g. a
    layer's code range; None: each call's own range), and ``Y = sum_k L_k[x[:, k]]`` is
    summed by :func:`_gather_sum` in int32 (int64 when K x max(T) could reach 2**31). Rows of
    ``w`` that are all zero take no part.
    """

    def __init__(self, w, mult: Multiplier, codes: tuple[int, int] | None = None) -> None:
        w = _operand_matrix(w, "w").astype(np.int64)
        self.mult, self.shape, self.codes = mult, w.shape, codes
        table = mult.table()
        bound = w.shape[0] * int(table.max(initial=0))
        if bound >= 1 << 53:
            raise ValueError(f"matmul: K = {w.shape[0]} is too large for exact float64 sums")
        if mult.operand is not None:
            self.dtype = np.float32 if bound < 1 << 24 else np.float64
            codes = np.arange(-SIZE + 1, SIZE)
            self.operand = (np.sign(codes) * mult.operand(np.abs(codes))).astype(self.dtype)   # f, signed
            self.mapped = self.operand[w + SIZE - 1]
            return
        self.dtype = np.int32 if bound < 1 << 31 else np.int64
        self.used = np.flatnonzero((w != 0).any(axis=1))
        self.magnitude, self.sign = np.abs(w[self.used]), np.sign(w[self.used]).astype(self.dtype)
        self._tables: dict[tuple[int, int], _RowTables] = {}

    def _tables_for(self, lo: int, hi: int) -> _RowTables:
        """Tables over the codes ``lo..hi`` (one per range, built on first use)."""
        tables = self._tables.get((lo, hi))
        if tables is None:
            codes = np.arange(lo, hi + 1)
            # columns[v] = the signed products of every code with magnitude v
            columns = np.ascontiguousarray((np.sign(codes)[:, None] * self.mult.table()[np.abs(codes)]).T,
                                           dtype=self.dtype)

            itemsize = np.dtype(self.dtype).itemsize
            tables = self._tables[(lo, hi)] = _RowTables(_row_builder(columns, self.magnitude, self.sign),
                                                         len(self.used), codes.size * self.shape[1] * itemsize)
        return tables

    def __call__(self, x) -> np.ndarray:
        x = _operand_matrix(x, "x")
        if x.shape[1] != self.shape[0]:
            raise ValueError(f"matmul: x is {x.shape} and w is {self.shape}: inner dimensions differ")
        if self.mult.operand is not None:
            return (self.operand[x.astype(np.int16) + (SIZE - 1)] @ self.mapped).astype(np.int64)
        x = x[:, self.used]
        lo, hi = self.codes if self.codes is not None else (int(x.min(initial=0)), int(x.max(initial=0)))
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"matmul: activations {x.min()}..{x.max()} outside the prepared codes {lo}..{hi}")
        index = np.ascontiguousarray((x.astype(np.int16) - np.int16(lo)).T).view(np.uint16)
        return _gather_sum(index, self._tables_for(lo, hi).chunks(), None, self.shape[1], self.dtype).astype(np.int64)


def matmul(x, w, mult: Multiplier) -> np.ndarray:
    """``Y[m, n] = sum_k sign(x_mk) sign(w_kn) T[|x_mk|, |w_kn|]`` exactly, as int64.

    ``x`` (M, K) and ``w`` (K, N) are integer arrays with magnitudes up to 255 (signed int8
    or significands); see :class:`IntProduct`, which a caller multiplying by the same weights
    many times should keep.
    """
    return IntProduct(w, mult)(x)


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


def bf16_bits(x, finite: bool = True) -> np.ndarray:
    """The bfloat16 bit patterns (uint16) of ``x`` rounded from float32 to nearest, ties to even.

    ``finite``: refuse values that are, or round to, infinity or NaN; otherwise they are kept
    as IEEE rounding has them (beyond the largest bfloat16, infinity; NaN stays NaN).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    # 32-bit arithmetic: only NaNs (0xFFFF8000 and up) can wrap, and they are set below
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = 0x7FC0                # a NaN's low bits could carry into inf, or wrap
    if finite and ((rounded & 0x7F80) == 0x7F80).any():
        raise ValueError("bf16 operands must be finite after rounding to bfloat16 (inf and NaN have no "
                         "significand to multiply)")
    return rounded


def bf16_round(x, finite: bool = True) -> np.ndarray:
    """``x`` rounded to bfloat16 (nearest, ties to even), as float32 (``finite``: see :func:`bf16_bits`)."""
    return (bf16_bits(x, finite).astype(np.uint32) << 16).view(np.float32)


def bf16_split(x) -> Bf16Parts:
    """Sign, significand (hidden bit included) and exponent of ``x`` rounded to bfloat16 (finite)."""
    bits = bf16_bits(x).astype(np.int64)
    field_exp, fraction = (bits >> 7) & 0xFF, bits & 0x7F
    significand = np.where(field_exp > 0, fraction | 0x80, fraction)
    sign = np.where(significand == 0, 0, 1 - 2 * (bits >> 15))
    return Bf16Parts(sign, significand, np.maximum(field_exp, 1) - 127 - 7)


def _operand(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite bfloat16 values (float32) as (significand uint8, ``sign 2**exponent`` float32), so that
    ``x == significand * scale``: the fields of :func:`bf16_split`, in a few 32-bit passes.

    Clearing the fraction of a normal number leaves ``sign 2**(E - 127)``, and ``2**-7`` more is
    the scale (exact: at least 2**-133); the significand is the fraction with the hidden bit set.
    A zero gets scale 0 (its significand, 128, then does not matter); subnormals, found only
    when present, keep their fraction with the smallest scale, ``2**-133``.
    """
    bits = x.view(np.uint32)
    scale = (bits & np.uint32(0xFF800000)).view(np.float32) * np.float32(2.0 ** -7)
    significand = (bits >> 16).astype(np.uint8) | np.uint8(0x80)
    if np.count_nonzero(scale) != np.count_nonzero(x):
        subnormal = (scale == 0) & (x != 0)
        scale[subnormal] = np.copysign(np.float32(2.0 ** -133), x[subnormal])
        significand[subnormal] &= np.uint8(0x7F)
    return significand, scale


class Bf16Product:
    """A weight matrix ``w`` (K, N) rounded to bfloat16 and prepared for products with ``mult``.

    ``product(x)`` rounds ``x`` (M, K) to bfloat16 and returns, in float32,
    ``Y[m, n] = sum_k sign_x sign_w T[sig_x, sig_w] 2**(e_x + e_w)``: exact signs and
    exponents, the multiplier on the 8-bit significands (hidden bit included; subnormals
    keep theirs, no flush to zero), each product rounded once to float32 (exact unless it
    leaves float32's range: a 16-bit integer times a power of two), accumulated in float32.
    The order of the float32 additions is the implementation's, as an adder tree's is:
    BLAS's for multipliers that factor (exact, DRUM: one product of mapped operands, which
    for ``exact`` is the plain bfloat16 product), the order of k otherwise, where each row
    k of ``w`` gets a table ``L_k[s, n] = T[s, sig_w] sign_w 2**e_w`` over the significands
    ``s`` and the activation side contributes ``sign_x 2**e_x`` per element
    (:func:`_gather_sum`). Activations that are, or round to, infinity or NaN contribute
    as IEEE arithmetic has them (``inf * w``, NaN). Weights must be finite in bfloat16, and
    below 2**119 in magnitude for a multiplier that does not factor (its float32 tables
    hold ``T 2**e_w``).
    """

    def __init__(self, w, mult: Multiplier) -> None:
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 2:
            raise ValueError(f"bf16_matmul: w must be a 2-D array, got {w.ndim}-D")
        parts = bf16_split(w)
        self.mult, self.shape = mult, w.shape
        self.values = bf16_round(w)
        if mult.operand is not None:
            self.operand = mult.operand(np.arange(SIZE)).astype(np.float32)        # f on significands
            self.mapped = self._mapped(self.values)
            return
        if (parts.exponent[parts.sign != 0] > MAX_TABLE_EXPONENT).any():
            raise MultiplierError(f"a weight of magnitude 2**{MAX_TABLE_EXPONENT + 8} or more is beyond the "
                                  f"emulation of bfloat16 multiplier {mult.name} (its products' float32 "
                                  f"tables would overflow)")
        self.used = np.flatnonzero((parts.sign != 0).any(axis=1))
        significand = parts.significand[self.used]
        scale = np.ldexp(parts.sign[self.used].astype(np.float64), parts.exponent[self.used]).astype(np.float32)
        columns = np.ascontiguousarray(mult.table().T, dtype=np.float32)              # columns[v] = T[:, v]
        self.tables = _RowTables(_row_builder(columns, significand, scale), len(self.used), SIZE * w.shape[1] * 4)

    def _mapped(self, values: np.ndarray) -> np.ndarray:
        """``sign f(significand) 2**exponent`` of finite bfloat16 values, in float32 (exact: at most
        8 significant bits, below float32's largest)."""
        significand, scale = _operand(values)
        return self.operand[significand] * scale

    def __call__(self, x, rounded: bool = False) -> np.ndarray:
        """``x`` (M, K) times the weights; ``rounded``: ``x`` already holds bfloat16 values."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.shape[0]:
            raise ValueError(f"bf16_matmul: need (M, K) and (K, N) operands, got {x.shape} and {self.shape}")
        if not rounded:
            x = bf16_round(x, finite=False)
        odd = ~np.isfinite(x)
        special = bool(odd.any())
        if special:
            extreme, x = np.where(odd, x, np.float32(0)), np.where(odd, np.float32(0), x)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):   # inf and NaN as in IEEE hardware
            if self.mult.name == "exact":
                y = x @ self.values
            elif self.mult.operand is not None:
                y = self._mapped(x) @ self.mapped
            else:
                significand, scale = _operand(np.ascontiguousarray(x[:, self.used].T))
                y = _gather_sum(significand, self.tables.chunks(), scale, self.shape[1], np.float32)
            if special:                                      # IEEE's inf and NaN terms
                y += extreme @ self.values
        return y


def bf16_matmul(x, w, mult: Multiplier) -> np.ndarray:
    """A float32 matrix product whose multiplies are bfloat16 multiplies with ``mult`` on the
    significands: ``x`` (M, K) and ``w`` (K, N) rounded to bfloat16, see :class:`Bf16Product`
    (which a caller multiplying by the same weights many times should keep)."""
    return Bf16Product(w, mult)(x)
