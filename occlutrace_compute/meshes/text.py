"""Vectorised reading of text mesh formats: tokens, lines, keywords and numbers of a whole buffer
in numpy, with no Python loop over lines or tokens (ASCII STL, OBJ and ASCII PLY use it).

Numbers are converted by numpy's C parser (np.fromstring with a whitespace separator) on a copy
of the buffer in which every byte outside the wanted tokens is blanked: one pass, correctly
rounded like float(), and a token that is not a number makes the whole call fail.

Worst case for a buffer of n bytes and t tokens: time O(n + t log n); memory about 4n bytes of
masks plus 3 int32 arrays of t (token starts, ends, lines): at most ~10x the buffer when every
other byte starts a token (bench/bench_parse_memory.py measures the whole loaders).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True
DIGIT = np.zeros(256, dtype=bool)
DIGIT[48:58] = True


def as_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


@dataclass
class Tokens:
    """Whitespace-separated tokens of a buffer: [start, end) byte ranges, their line numbers and,
    per line that holds any token, its first token (`first`) and token count (`count`)."""

    buf: np.ndarray  # (n,) uint8
    start: np.ndarray  # (t,) int32 (int64 for buffers over 2 GiB)
    end: np.ndarray  # (t,) likewise
    line: np.ndarray  # (t,) 0-based line of each token
    first: np.ndarray  # (L,) index of the first token of each non-blank line
    count: np.ndarray  # (L,) tokens on that line

    @property
    def length(self) -> np.ndarray:
        return self.end - self.start

    def text(self, a: int, b: int) -> str:
        """Bytes a..b of the buffer as text (for reporting a few values, never in bulk)."""
        raw = self.buf[a:b].tobytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def line_text(self, line_index: int, from_token: int = 0) -> str:
        """The text of non-blank line `line_index` from its `from_token`-th token on."""
        f = int(self.first[line_index])
        return self.text(int(self.start[f + from_token]), int(self.end[f + int(self.count[line_index]) - 1]))


def line_breaks(buf: np.ndarray) -> np.ndarray:
    """Positions of line ends: LF, or CR in a file with CR line ends only."""
    nl = np.flatnonzero(buf == 10)
    if len(nl) == 0:
        nl = np.flatnonzero(buf == 13)
    return nl


def tokenize(buf: np.ndarray, blank: np.ndarray | None = None, lines: bool = True) -> Tokens:
    """Tokens of `buf`; bytes where `blank` is True count as whitespace (cut comments). With
    lines=False the line tables are left empty (a PLY body has no line structure)."""
    ws = _WS[buf]
    if blank is not None:
        ws |= blank
    edge = np.empty(len(buf) + 1, dtype=bool)
    edge[0] = False
    edge[-1] = False
    inside = ~ws
    del ws
    np.not_equal(inside[1:], inside[:-1], out=edge[1:-1])
    edge[0] = inside[0] if len(buf) else False
    edge[-1] = inside[-1] if len(buf) else False
    del inside
    bounds = np.flatnonzero(edge)
    del edge
    # byte positions fit int32 below 2 GiB: halves the token tables, the bulk of the memory
    small = np.int32 if len(buf) < 2**31 - 1 else np.int64
    start, end = bounds[0::2].astype(small), bounds[1::2].astype(small)
    del bounds
    if not lines:
        empty = np.empty(0, small)
        return Tokens(buf, start, end, empty, empty, empty)
    line = np.searchsorted(line_breaks(buf).astype(small), start).astype(small)
    new_line = np.ones(len(start), dtype=bool)
    if len(start):
        np.not_equal(line[1:], line[:-1], out=new_line[1:])
    first = np.flatnonzero(new_line)
    count = np.diff(np.append(first, len(start)))
    return Tokens(buf, start, end, line, first, count)


def keys(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A uint64 per token from its first 8 bytes (zero padded), to compare with `key(word)`;
    tokens longer than 8 bytes get all ones and never match a keyword."""
    n = len(buf)
    out = np.zeros(len(start), dtype=np.uint64)
    length = end - start
    for j in range(8):
        pos = start + j
        b = buf[np.minimum(pos, n - 1)].astype(np.uint64) if n else np.zeros(len(start), np.uint64)
        b[pos >= end] = 0
        out |= b << np.uint64(8 * j)
    out[length > 8] = np.uint64(0xFFFFFFFFFFFFFFFF)
    return out


def key(word: str) -> np.uint64:
    raw = word.encode("ascii").ljust(8, b"\0")
    return np.frombuffer(raw, dtype="<u8")[0]


def span_mask(n: int, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(n,) bool, True on bytes inside any of the disjoint [start, end) ranges."""
    marks = np.zeros(n + 1, dtype=np.int8)
    # starts are distinct and so are ends (disjoint non-empty ranges): plain fancy updates are exact
    marks[start] += 1
    marks[end] -= 1
    return np.cumsum(marks[:n], dtype=np.int8) > 0


def numbers(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """float64 values of the tokens [start, end) in order; None when one is not a number."""
    if len(start) == 0:
        return np.empty(0, dtype=np.float64)
    keep = span_mask(len(buf), start, end)
    text = np.where(keep, buf, np.uint8(32)).tobytes()
    del keep
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy < 2.3 warns (and stops) where 2.3+ raises
            values = np.fromstring(text, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    return values if len(values) == len(start) else None


def all_numbers(body: bytes) -> np.ndarray | None:
    """Every whitespace-separated token of `body` as float64; None when one is not a number."""
    if not body or _WS[as_array(body)].all():
        return np.empty(0, dtype=np.float64)  # (np.fromstring reads blank text as [-1.0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return np.fromstring(body, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None


def integers(values: np.ndarray) -> bool:
    """Whether every value is a whole number small enough to be exact in float64."""
    with np.errstate(invalid="ignore"):
        return bool(np.all((np.floor(values) == values) & (np.abs(values) <= 2.0**53)))


_POW10_DIGITS = 18  # 18 decimal digits always fit int64


def whole_numbers(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """int64 values of decimal integer tokens ('-'? digits, at most 18 digits); None when a token
    is anything else. Column by column over the digits (at most 18 passes over t tokens): several
    times faster than a float parser, and O(t) memory."""
    n_tok = len(start)
    if n_tok == 0:
        return np.empty(0, np.int64)
    neg = buf[start] == 45
    first = start + neg
    length = end - first
    if length.min() < 1 or length.max() > _POW10_DIGITS:
        return None
    value = np.zeros(n_tok, np.int64)
    for k in range(int(length.max())):
        live = length > k
        if live.all():
            d = buf[first + k].astype(np.int64) - 48
            if d.min() < 0 or d.max() > 9:
                return None
            value *= 10
            value += d
        else:
            at = np.flatnonzero(live)
            d = buf[first[at] + k].astype(np.int64) - 48
            if d.min() < 0 or d.max() > 9:
                return None
            value[at] = value[at] * 10 + d
    return np.where(neg, -value, value)
