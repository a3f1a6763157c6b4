"""Vectorised reading of text mesh formats: tokens, lines, keywords and numbers of a whole buffer
in numpy, with no Python loop over lines or tokens (ASCII STL, OBJ and ASCII PLY use it).

Numbers are read from a copy of the buffer in which every byte outside the wanted tokens is
blanked, by fastnumbers (C++ fast_float, correctly rounded) over 1 MiB chunks when it is
installed, else (or when it refuses a token) by numpy's C parser (np.fromstring): the same
float64 values either way, and a token that is not a number makes the whole call fail.

Worst case for a buffer of n bytes and t tokens: time O(n + t log n); memory about 3n bytes of
masks plus 3 int32 arrays of t (token starts, ends, lines), and a chunk's token list (~30 MB
whatever n): at most ~10x the buffer when every other byte starts a token
(bench/bench_parse_memory.py measures the whole loaders).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

fastnumbers: Any
try:  # optional: a C++ float parser (fast_float), see parse_floats
    import fastnumbers
except ImportError:  # pragma: no cover - numpy's parser gives the same values
    fastnumbers = None

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
    ws = np.subtract(buf, 9, dtype=np.uint8) <= 4  # 9..13 (uint8 wraps below 9); compares beat a lookup 5x
    ws |= buf == 32
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
    # line of a token = line breaks before it: each break counted at the first token after it
    # (a sorted search of the L breaks among the t starts, cheaper than t searches among L breaks)
    after = np.searchsorted(start, line_breaks(buf))
    line = np.cumsum(np.bincount(after, minlength=len(start) + 1)[: len(start)]).astype(small)
    del after
    new_line = np.ones(len(start), dtype=bool)
    if len(start):
        np.not_equal(line[1:], line[:-1], out=new_line[1:])
    first = np.flatnonzero(new_line)
    count = np.diff(np.append(first, len(start)))
    return Tokens(buf, start, end, line, first, count)


def keys(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A uint64 per token from its first 8 bytes (zero padded), to compare with `key(word)`;
    tokens longer than 8 bytes get all ones and never match a keyword. One gather of 8-byte
    windows (k, 8) uint8: O(k) time and 8k bytes."""
    n, k = len(buf), len(start)
    win = np.zeros((k, 8), dtype=np.uint8)
    near = start > n - 8  # windows that would run past the buffer's end (at most 8 tokens)
    if n >= 8:
        far = ~near
        win[far] = np.lib.stride_tricks.sliding_window_view(buf, 8)[start[far]]
    if near.any():
        base = max(n - 8, 0)
        padded = np.zeros(16, dtype=np.uint8)
        padded[: n - base] = buf[base:]
        win[near] = np.lib.stride_tricks.sliding_window_view(padded, 8)[start[near] - base]
    length = end - start
    win *= np.arange(8) < length[:, None]
    out = win.view("<u8").ravel()
    out[length > 8] = np.uint64(0xFFFFFFFFFFFFFFFF)
    return out


def key(word: str) -> np.uint64:
    raw = word.encode("ascii").ljust(8, b"\0")
    return np.frombuffer(raw, dtype="<u8")[0]


def span_mask(n: int, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(n,) bool, True on bytes inside any of the disjoint, sorted [start, end) ranges: one
    np.repeat of alternating False/True runs (5x faster than a cumsum of +-1 marks)."""
    k = len(start)
    if k == 0:
        return np.zeros(n, dtype=bool)
    runs = np.empty(2 * k + 1, dtype=np.int64)
    runs[0] = start[0]
    runs[1::2] = end - start
    runs[2:-1:2] = start[1:] - end[:-1]
    runs[-1] = n - end[-1]
    inside = np.zeros(2 * k + 1, dtype=bool)
    inside[1::2] = True
    return np.repeat(inside, runs)


_CHUNK = 1 << 20  # bytes of text converted at a time: bounds the token list (~56 bytes a token)
_SPACE = re.compile(rb"[ \t\n\v\f\r]")


def _strict(text: bytes) -> np.ndarray | None:
    """numpy's C parser over the whole text; None when a token is not a number."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy < 2.3 warns (and stops) where 2.3+ raises
            return np.fromstring(text, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None


def _fast(text: bytes) -> np.ndarray | None:
    """fastnumbers (fast_float: correctly rounded, the values np.fromstring gives) over chunks of
    _CHUNK bytes cut at whitespace: the Python loop runs len(text) / _CHUNK times, each chunk's
    token list is ~56 bytes a token, at most ~30 MB. None when a token is not a number."""
    parts: list[np.ndarray] = []
    pos, n = 0, len(text)
    while pos < n:
        cut = _SPACE.search(text, min(pos + _CHUNK, n)) if pos + _CHUNK < n else None
        stop = cut.start() if cut else n
        words = text[pos:stop].split()
        out = np.empty(len(words), dtype=np.float64)
        try:
            fastnumbers.try_array(
                words, out, on_fail=fastnumbers.RAISE, on_overflow=fastnumbers.RAISE, on_type_error=fastnumbers.RAISE
            )
        except (ValueError, TypeError, OverflowError):
            return None
        parts.append(out)
        pos = stop
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def parse_floats(text: bytes) -> np.ndarray | None:
    """float64 of every whitespace-separated token; None when one is not a number. fastnumbers
    when installed (~4x faster than numpy on 17-digit numbers); a token it refuses sends the
    whole text to numpy's parser, whose verdict (and values) stand, as before it existed."""
    if fastnumbers is not None:
        values = _fast(text)
        if values is not None:
            return values
    return _strict(text)


def numbers(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """float64 values of the tokens [start, end) in order; None when one is not a number."""
    if len(start) == 0:
        return np.empty(0, dtype=np.float64)
    keep = span_mask(len(buf), start, end)
    text = np.where(keep, buf, np.uint8(32)).tobytes()
    del keep
    values = parse_floats(text)
    return values if values is not None and len(values) == len(start) else None


def all_numbers(body: bytes) -> np.ndarray | None:
    """Every whitespace-separated token of `body` as float64; None when one is not a number."""
    if not body or _WS[as_array(body)].all():
        return np.empty(0, dtype=np.float64)  # (np.fromstring reads blank text as [-1.0])
    return parse_floats(body)


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
