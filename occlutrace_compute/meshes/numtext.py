"""Vectorised decimal text of whole number columns, for the text mesh writers.

Python's `repr` of 470k floats plus one f-string per line cost ~0.9 s CPU for a 157k-vertex OBJ,
under the GIL, beside a job's preview (bench/RESULTS.md, "Issue 12: the align command, third
session"). Here each column becomes a (N, W) byte matrix built with integer numpy arithmetic,
the columns and separators of a line are laid side by side and the padding is dropped with one
boolean mask: O(N * W) time and memory per column, W <= 26 for floats (a fallback value's repr
can widen a column to its length, at most 24), no per-value Python except for fallback values.

Floats are written with 17 significant digits, trailing zeros dropped: enough for every float64
to read back bit-identical (17 digits are always enough; the digits come from one rounding of
|x| * 10^k in an x87 80-bit long double, whose error, < 0.006 units of the 17th digit, keeps the
decimal within half a float64 ulp of x). Values where that arithmetic is not exact (|x| < 1e-6 or
>= 1e15, zeros, NaN/inf), or every value on a platform whose long double is not wider than a
double, are written by `repr` (also exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIG = 17  # significant digits written: round-trips every float64
_FAST_MIN, _FAST_MAX = 1e-6, 1e15  # decimal exponents -6..14: 10^(16-E) <= 10^22, exact in a long double
_EXTENDED = np.finfo(np.longdouble).nmant >= 63  # x87 80-bit (or quad) long double
_POW10 = [10**k for k in range(19)]  # every power of ten in an int64
_POW10_LD = np.array([10.0**k for k in range(23)], dtype=np.longdouble)  # exact: 10^22 is a float64


def _digit_table() -> np.ndarray:
    """(10000,) uint32 whose four little-endian bytes are the ASCII digits of 0000..9999."""
    n = np.arange(10000)
    chars = np.stack([n // 1000, n // 100 % 10, n // 10 % 10, n % 10], axis=1).astype(np.uint8) + ord("0")
    return chars.view("<u4").ravel()


_TABLE = _digit_table()


class Column:
    """One column of text: a (N, W) uint8 matrix of characters and its (N, W) keep mask."""

    def __init__(self, chars: np.ndarray, keep: np.ndarray) -> None:
        self.chars, self.keep = chars, keep


def literal(n: int, text: str) -> Column:
    """The same text on every one of n lines."""
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return Column(np.broadcast_to(raw, (n, len(raw))), np.ones((n, len(raw)), dtype=bool))


def integers(values: np.ndarray) -> Column:
    """Non-negative integers (N,) as decimal text without leading zeros (four digits per table
    look-up)."""
    x = np.asarray(values, dtype=np.int64)
    n = len(x)
    if n and int(x.min()) < 0:
        raise ValueError("integers() writes non-negative values only")
    width = len(str(int(x.max()) if n else 0))
    nw = -(-width // 4)
    words = np.empty((n, nw), dtype="<u4")
    rest = x
    for i in range(nw - 1, -1, -1):  # the last four digits first
        rest, chunk = np.divmod(rest, 10000)
        words[:, i] = _TABLE[chunk]
    chars = words.view(np.uint8)[:, 4 * nw - width :]
    ndig = np.searchsorted(np.asarray(_POW10[1:width], dtype=np.int64), x, side="right") + 1
    keep = np.arange(width)[None, :] >= (width - ndig)[:, None]
    return Column(chars, keep)


def floats(values: np.ndarray) -> Column:
    """Float64 values (N,) as positional decimal text that reads back bit-identical."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    a = np.abs(x)
    fast = np.isfinite(x) & (a >= _FAST_MIN) & (a < _FAST_MAX) if _EXTENDED else np.zeros(n, dtype=bool)
    rows = np.flatnonzero(fast)
    chars, keep, order = _positional(x[rows], a[rows])
    rows = rows[order]
    slow = np.flatnonzero(~fast)
    texts = [repr(v).encode("ascii") for v in x[slow].tolist()]
    width = max([chars.shape[1], *map(len, texts)])
    out = np.zeros((n, width), dtype=np.uint8)
    mask = np.zeros((n, width), dtype=bool)
    out[rows, : chars.shape[1]], mask[rows, : chars.shape[1]] = chars, keep
    for row, text in zip(slow.tolist(), texts):
        out[row, : len(text)] = np.frombuffer(text, dtype=np.uint8)
        mask[row, : len(text)] = True
    return Column(out, mask)


def _digits(d: np.ndarray) -> np.ndarray:
    """(M, SIG) ASCII digits of integers 10^16 <= d < 10^17, four at a time from a table (one
    integer division per four digits; each row is 5 aligned words: 3 pad bytes and the first
    digit, then four words of four digits)."""
    words = np.empty((len(d), 5), dtype="<u4")
    first, rest = np.divmod(d, 10**16)
    words[:, 0] = (first + ord("0")).astype("<u4") << 24
    for i, p in enumerate((10**12, 10**8, 10**4)):
        chunk, rest = np.divmod(rest, p)
        words[:, 1 + i] = _TABLE[chunk]
    words[:, 4] = _TABLE[rest]
    return words.view(np.uint8)[:, 3:]


def _positional(x: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Characters, keep mask and row order of 1e-6 <= |x| < 1e15 with SIG significant digits:
    row i of the matrices is x[order[i]] (rows sorted by decimal exponent, so that each
    exponent's fixed layout is written to one contiguous block)."""
    e = np.floor(np.log10(a)).astype(np.int64)  # the decimal exponent, up to one off: fixed below
    d = _scaled(a, e)
    for _ in range(2):  # log10's rounding is at most one off near a power of ten
        high, low = d >= 10**SIG, d < 10 ** (SIG - 1)
        if not (high.any() or low.any()):
            break
        e = e + high - low
        d = _scaled(a, e)
    order = np.argsort(e, kind="stable")
    e, neg = e[order], x[order] < 0
    digits = _digits(d[order])
    last = SIG - 1 - np.argmax(digits[:, ::-1] != ord("0"), axis=1)  # last non-zero digit (d_0 != 0)
    lead_max = max(-int(e[0]) - 1, 0) if len(e) else 0
    # Layout after the sign column: e >= 0: d_0..d_e [. d_e+1..d_last]; e < 0: 0 . 0*(-e-1) d_0..d_last.
    width = 1 + 2 + lead_max + SIG + 1
    chars = np.zeros((len(e), width), dtype=np.uint8)
    keep = np.zeros((len(e), width), dtype=bool)
    chars[:, 0], keep[:, 0] = ord("-"), neg
    shown = np.arange(SIG)[None, :] <= last[:, None]
    exps, starts = np.unique(e, return_index=True)
    for exp, lo, hi in zip(exps.tolist(), starts.tolist(), [*starts[1:].tolist(), len(e)]):
        c, k, g, sh = chars[lo:hi], keep[lo:hi], digits[lo:hi], shown[lo:hi]
        if exp >= 0:
            c[:, 1 : 2 + exp], k[:, 1 : 2 + exp] = g[:, : exp + 1], True
            c[:, 2 + exp], k[:, 2 + exp] = ord("."), last[lo:hi] > exp
            c[:, 3 + exp : 2 + SIG], k[:, 3 + exp : 2 + SIG] = g[:, exp + 1 :], sh[:, exp + 1 :]
        else:
            lead = -exp - 1
            c[:, 1:3], c[:, 3 : 3 + lead], k[:, 1 : 3 + lead] = (ord("0"), ord(".")), ord("0"), True
            c[:, 3 + lead : 3 + lead + SIG], k[:, 3 + lead : 3 + lead + SIG] = g, sh
    return chars, keep, order


def _scaled(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """round(a * 10^(SIG-1-e)) as int64, computed in long double (exact powers: SIG-1-e <= 22)."""
    k = SIG - 1 - e
    scale = _POW10_LD[k]
    return np.rint(a.astype(np.longdouble) * scale).astype(np.int64)


def lines(columns: Sequence[Column]) -> bytes:
    """The columns side by side, each line ended by a newline: the text of all lines."""
    if not columns:
        return b""
    n = columns[0].chars.shape[0]
    if n == 0:
        return b""
    parts = [*columns, literal(n, "\n")]
    chars = np.concatenate([np.broadcast_to(c.chars, c.keep.shape) for c in parts], axis=1)
    keep = np.concatenate([c.keep for c in parts], axis=1)
    return chars[keep].tobytes()
