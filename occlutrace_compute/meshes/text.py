"""Vectorised reading of text mesh formats: tokens, lines, keywords and numbers of a whole buffer
in numpy, with no Python loop over lines or tokens (ASCII STL, OBJ and ASCII PLY use it).

Where the optional C++ scanner is built (meshes/native.py, _textscan.cpp), tokens, lines,
keys, floats (std::from_chars, correctly rounded) and integers come from it, without the GIL and
without the masks; a token it refuses (anything but a plain decimal: nan, inf, '1_0', out of
range...) sends that call to the numpy path below, whose verdict and values stand. Otherwise
(or with OCCLUTRACE_NO_NATIVE=1) numbers are read from a copy of the buffer in which every byte
outside the wanted tokens is blanked, by fastnumbers (C++ fast_float, correctly rounded) over
256 KiB chunks when it is installed, else (or when it refuses a token) by numpy's C parser
(np.fromstring): the same float64 values every way, and a token that is not a number makes the
whole call fail.

Worst case for a buffer of n bytes and t tokens: time O(n + t log n); memory about 3n bytes of
masks (none with the scanner) plus 3 int32 arrays of t (token starts, ends, lines), and a
chunk's token list (~8 MB whatever n): at most ~10x the buffer when every other byte starts a
token (bench/bench_parse_memory.py measures the whole loaders).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from occlutrace_compute.meshes import native

fastnumbers: Any
try:  # optional: a C++ float parser (fast_float), see parse_floats
    import fastnumbers
except ImportError:  # pragma: no cover - numpy's parser gives the same values
    fastnumbers = None
# fastnumbers.try_array raises on any token that is not a float (the callers then fall back)
STRICT: dict[str, Any] = (
    {}
    if fastnumbers is None
    else {"on_fail": fastnumbers.RAISE, "on_overflow": fastnumbers.RAISE, "on_type_error": fastnumbers.RAISE}
)

_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True
DIGIT = np.zeros(256, dtype=bool)
DIGIT[48:58] = True


def as_array(data: bytes | memoryview) -> np.ndarray:
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


_BLOCK = 1 << 20


def has_byte(buf: np.ndarray, byte: int) -> bool:
    """Whether `byte` occurs in buf: a MiB at a time, stopping at the first block holding it
    (a text file's first LF is in its first block): no n-byte mask."""
    return any(bool(np.any(buf[a : a + _BLOCK] == byte)) for a in range(0, len(buf), _BLOCK))


def whitespace(buf: np.ndarray) -> np.ndarray:
    """(n,) bool, True on the 6 ASCII whitespace bytes. Compares (5x faster than a lookup table)
    a MiB at a time, so that their temporaries stay a MiB: n bytes in all."""
    ws = np.empty(len(buf), dtype=bool)
    for a in range(0, len(buf), _BLOCK):
        part = buf[a : a + _BLOCK]
        low = np.subtract(part, 9, dtype=np.uint8) <= 4  # 9..13 (uint8 wraps below 9)
        np.logical_or(low, part == 32, out=ws[a : a + _BLOCK])
    return ws


def tokenize(buf: np.ndarray, blank: np.ndarray | None = None, lines: bool = True) -> Tokens:
    """Tokens of `buf`; bytes where `blank` is True count as whitespace (cut comments). With
    lines=False the line tables are left empty (a PLY body has no line structure). The C++
    scanner (meshes/native.py) finds the same tokens and lines when it is built, numpy else."""
    if native.scanner() is not None:
        return _tokenize_native(buf, blank, lines)
    ws = whitespace(buf)
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
    breaks = line_breaks(buf).astype(small)
    after = np.empty(len(breaks), dtype=small)  # filled a block at a time: no int64 table of L
    for a in range(0, len(breaks), _BLOCK):
        after[a : a + _BLOCK] = np.searchsorted(start, breaks[a : a + _BLOCK])
    del breaks
    counts = np.bincount(after, minlength=len(start) + 1)[: len(start)]
    del after
    line = np.cumsum(counts, out=counts).astype(small)
    del counts
    return _with_lines(buf, start, end, line)


def _with_lines(buf: np.ndarray, start: np.ndarray, end: np.ndarray, line: np.ndarray) -> Tokens:
    new_line = np.ones(len(start), dtype=bool)
    if len(start):
        np.not_equal(line[1:], line[:-1], out=new_line[1:])
    first = np.flatnonzero(new_line)
    count = np.diff(np.append(first, len(start)))
    return Tokens(buf, start, end, line, first, count)


def _tokenize_native(buf: np.ndarray, blank: np.ndarray | None, lines: bool) -> Tokens:
    """tokenize's tables from the C++ scanner: the same tokens, lines counted at the same break
    byte (LF, or CR without any LF). Blanked bytes are spaces in a copy (n more bytes), the line
    breaks among them kept, as line_breaks counts them in the buffer itself."""
    buf = np.ascontiguousarray(buf)
    brk = 10 if has_byte(buf, 10) else 13
    scanned = buf
    if blank is not None:
        scanned = np.where(blank & (buf != brk), np.uint8(32), buf)
    found = native.tokens(scanned, lines, brk)
    assert found is not None  # (tokenize checked the scanner)
    start, end, line = found
    del found  # (the tuple would keep the line table alive)
    del scanned
    if line is None:
        empty = np.empty(0, start.dtype)
        return Tokens(buf, start, end, empty, empty, empty)
    return _with_lines(buf, start, end, line)


_LOW_BYTES = np.array([(1 << (8 * j)) - 1 for j in range(8)] + [2**64 - 1], dtype=np.uint64)


def keys(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A uint64 per token from its first 8 bytes (zero padded), to compare with `key(word)`;
    tokens longer than 8 bytes get all ones and never match a keyword. One gather from an
    overlapping little-endian uint64 view of the buffer (a window at every byte): O(k) time
    and 16k bytes."""
    buf = np.ascontiguousarray(buf)  # (the view below reads its memory directly)
    scanned = native.keys(buf, start, end)
    if scanned is not None:
        return scanned
    n, k = len(buf), len(start)
    out = np.zeros(k, dtype=np.uint64)
    near = start > n - 8  # windows that would run past the buffer's end (at most 8 tokens)
    if n >= 8:
        windows = np.ndarray((n - 7,), dtype="<u8", buffer=buf, offset=0, strides=(1,))
        far = np.flatnonzero(~near)
        out[far] = windows[start[far]]
    if near.any():
        base = max(n - 8, 0)
        padded = np.zeros(16, dtype=np.uint8)
        padded[: n - base] = buf[base:]
        tail = np.ndarray((9,), dtype="<u8", buffer=padded, offset=0, strides=(1,))
        out[near] = tail[start[near] - base]
    length = end - start
    out &= _LOW_BYTES[np.minimum(length, 8)]
    out[length > 8] = np.uint64(0xFFFFFFFFFFFFFFFF)
    return out


def key(word: str) -> np.uint64:
    raw = word.encode("ascii").ljust(8, b"\0")
    return np.frombuffer(raw, dtype="<u8")[0]


_SPAN_BLOCK = 1 << 18  # ranges expanded at a time by span_mask: bounds its run table (4 MB)


def span_mask(n: int, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(n,) bool, True on bytes inside any of the disjoint, sorted [start, end) ranges: np.repeat
    of alternating True/False runs (5x faster than a cumsum of +-1 marks), a block of
    _SPAN_BLOCK ranges at a time so that the run table stays ~4 MB: memory n bytes plus at most
    one block's span, O(n + k) time."""
    mask = np.zeros(n, dtype=bool)
    for a in range(0, len(start), _SPAN_BLOCK):
        s, e = start[a : a + _SPAN_BLOCK].astype(np.int64), end[a : a + _SPAN_BLOCK].astype(np.int64)
        runs = np.empty(2 * len(s) - 1, dtype=np.int64)
        runs[0::2] = e - s
        runs[1::2] = s[1:] - e[:-1]
        inside = np.zeros(len(runs), dtype=bool)
        inside[0::2] = True
        mask[s[0] : e[-1]] = np.repeat(inside, runs)
    return mask


_CHUNK = 1 << 18  # bytes of text converted at a time: bounds the token list (~56 bytes a token)
_SPACE = re.compile(rb"[ \t\n\v\f\r]")


def _strict(text: bytes) -> np.ndarray | None:
    """numpy's C parser over the whole text; None when a token is not a number."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy < 2.3 warns (and stops) where 2.3+ raises
            return np.fromstring(text, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None


def _fast(text: bytes | memoryview, count: int | None, out: np.ndarray | None = None) -> np.ndarray | None:
    """fastnumbers (fast_float: correctly rounded, the values np.fromstring gives) over chunks of
    _CHUNK bytes cut at whitespace: the Python loop runs len(text) / _CHUNK times, a chunk's
    token list is ~56 bytes a token (<= ~8 MB). With `count` the values go straight into one
    array of that size (`out` when given: no copy); None when a token is not a number or the
    count is wrong. `text` may be a memoryview (a part of a file, not copied whole)."""
    if count is not None and out is None:
        out = np.empty(count, dtype=np.float64)
    parts: list[np.ndarray] = []
    pos, n, filled = 0, len(text), 0
    while pos < n:
        cut = _SPACE.search(text, pos + _CHUNK) if pos + _CHUNK < n else None
        stop = cut.start() if cut else n
        words = bytes(text[pos:stop]).split()  # (bytes() of a bytes slice is that slice)
        if out is not None and filled + len(words) > len(out):
            return None
        dest = np.empty(len(words), dtype=np.float64) if out is None else out[filled : filled + len(words)]
        try:
            fastnumbers.try_array(words, dest, **STRICT)
        except (ValueError, TypeError, OverflowError):
            return None
        if out is None:
            parts.append(dest)
        filled += len(words)
        pos = stop
    if out is not None:
        return out if filled == len(out) else None
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def fast_floats(text: bytes | memoryview, out: np.ndarray) -> np.ndarray | None:
    """`out` filled with the float64 values of `text` by fastnumbers alone; None when it is not
    installed, refuses a token or finds another count (the caller then takes its exact path)."""
    scanned = native.all_floats(text, len(out), out)
    if scanned is not None:
        return scanned
    return _fast(text, len(out), out) if fastnumbers is not None else None


def parse_floats(text: bytes, count: int | None = None) -> np.ndarray | None:
    """float64 of every whitespace-separated token; None when one is not a number. fastnumbers
    when installed (~4x faster than numpy on 17-digit numbers); a token it refuses (or a token
    count other than `count`, when given) sends the whole text to numpy's parser, whose verdict
    and values stand, as before fastnumbers was used. The C++ scanner, when built, goes first
    (the same values: from_chars is correctly rounded too); a token it refuses sends the text on."""
    scanned = native.all_floats(text, count)
    if scanned is not None:
        return scanned
    if fastnumbers is not None:
        values = _fast(text, count)
        if values is not None:
            return values
    return _strict(text)


def numbers(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """float64 values of the tokens [start, end) in order; None when one is not a number."""
    if len(start) == 0:
        return np.empty(0, dtype=np.float64)
    scanned = native.floats(buf, start, end)
    if scanned is not None:
        return scanned
    keep = span_mask(len(buf), start, end)
    text = np.where(keep, buf, np.uint8(32)).tobytes()
    del keep
    values = parse_floats(text, len(start))
    return values if values is not None and len(values) == len(start) else None


def all_numbers(body: bytes, count: int | None = None) -> np.ndarray | None:
    """Every whitespace-separated token of `body` as float64 (`count` of them, when known);
    None when one is not a number."""
    if not body or _WS[as_array(body)].all():
        return np.empty(0, dtype=np.float64)  # (np.fromstring reads blank text as [-1.0])
    return parse_floats(body, count)


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
    scanned = native.integers(buf, start, end)  # the same grammar in C++, when built
    if scanned is not None:
        return scanned
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
