"""The optional C++ byte scanner (meshes/_textscan.cpp) behind the text readers, or None.

pip builds the extension from pyproject.toml ([[tool.setuptools.ext-modules]]) when a C++17
compiler and Python's headers are found (optional: without them the package installs and the
readers take their Python path; in a checkout, `python -c "from setuptools import setup; setup()"
build_ext --inplace` builds it in place). OCCLUTRACE_NO_NATIVE=1 in the environment (read at
every call, so tests can switch it) forces the Python path too.

Every helper here answers None where the scanner refuses a token (anything but a plain decimal
number: nan, inf, hex, '1_0', out of range, NUL or non-ASCII bytes), and the caller then takes its
Python path, whose verdict and values stand: the scanner only ever makes an accepted file faster,
never changes what a file gives. The scanner releases the GIL, so two files parse at once on two
threads. Memory: the output arrays (token tables: 8 or 12 bytes a token, at most one token per
2 bytes of input), first_equal's hash table (<= 32 bytes a range) and stl_binary's (<= 64 bytes a
corner); time O(n) for n bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

_scan: ModuleType | None
try:
    from occlutrace_compute.meshes import _textscan as _scan
except ImportError:  # no compiler at install time: the Python path
    _scan = None


def scanner() -> ModuleType | None:
    """The extension module, or None when it is missing or switched off (OCCLUTRACE_NO_NATIVE)."""
    if _scan is None or os.environ.get("OCCLUTRACE_NO_NATIVE", "") not in ("", "0"):
        return None
    return _scan


def index_dtype(n: int) -> type[np.signedinteger]:
    """Byte offsets and line numbers of an n-byte buffer: int32 below 2 GiB (half the tables)."""
    return np.int32 if n < 2**31 - 1 else np.int64


def tokens(
    buf: bytes | np.ndarray, lines: bool, brk: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """[start, end) of every whitespace-separated token of buf and, with lines, the number of
    `brk` bytes before each; None without the scanner. Two C passes (count, then fill): memory
    exactly the tables (8 or 12 bytes a token), nothing in between."""
    scan = scanner()
    if scan is None:
        return None
    n = len(buf)
    count = scan.count_tokens(buf)
    small = index_dtype(n)
    start, end = np.empty(count, small), np.empty(count, small)
    line = np.empty(count, small) if lines else None
    written = scan.tokenize(buf, start, end, line, brk)
    assert written == count  # the same bytes, counted twice
    return start, end, line


def tokens_and_line_starts(buf: bytes | np.ndarray, brk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """tokens' [start, end) and a uint8 per token, 1 where a `brk` byte falls between the
    previous token (the buffer's start, for the first) and it: where lines start, for readers
    that check a layout and need no line numbers (9 bytes a token); None without the scanner."""
    scan = scanner()
    if scan is None:
        return None
    count = scan.count_tokens(buf)
    small = index_dtype(len(buf))
    start, end, flags = np.empty(count, small), np.empty(count, small), np.empty(count, np.uint8)
    written = scan.tokenize(buf, start, end, flags, brk)
    assert written == count
    return start, end, flags


def floats(
    buf: bytes | np.ndarray, start: np.ndarray, end: np.ndarray, index: np.ndarray | None = None
) -> np.ndarray | None:
    """float64 of the token ranges [start, end) (those of tokens `index` when given, without
    gathering their offsets first); None when the scanner is off or refuses one."""
    scan = scanner()
    return None if scan is None else _read(scan.floats, np.float64, buf, start, end, index)


def first_equal(buf: bytes | np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """(k,) for k ranges: the index of the first range holding the same bytes as each (a hash
    table in C++, <= 32 bytes a range, bounded probes and compares); None when the scanner is off
    or gave up on a hostile input (many ranges of one hash)."""
    scan = scanner()
    if scan is None:
        return None
    start, end = _index_pair(start, end)
    out = np.empty(len(start), dtype=start.dtype)
    return out if scan.first_equal(buf, start, end, out) else None


@dataclass
class BinaryStl:
    """What stl_binary reads from n binary STL records in one pass (stl.parse_binary's numbers).

    vertices (V, 3) float64, the distinct corners (bitwise) in order of first appearance;
    faces (n, 3) int64 into them; keep (n,) bool, validate._non_degenerate of those faces;
    foreign: records whose stored normal is neither zero nor the geometric one (stl._foreign_count);
    tagged: records with attribute bytes.
    """

    vertices: np.ndarray
    faces: np.ndarray
    keep: np.ndarray
    foreign: int
    tagged: int


def stl_binary(data: bytes, n: int, tolerance: float, probes: float = 8.0, seed: int = 0) -> BinaryStl | None:
    """The n 50-byte records after data's 84-byte header in one C++ pass without the GIL
    (_textscan.cpp, stl_binary: corners welded by their 12 bytes in a seeded hash table, stored
    normals checked against `tolerance`, degenerate faces found), then the distinct corners
    gathered as float64. None when the scanner is off or gave up (more than probes x 3n probes:
    a hostile file; seed 0: a fresh random seed, else that one, for tests): the caller then takes
    its Python path. Time O(n); memory the outputs (~33 bytes a record and 24 a vertex) and the
    table (8-16 bytes a corner for a closed mesh; all corners distinct: 64, 96 while it doubles
    the last time, i.e. ~4-6x the file)."""
    scan = scanner()
    if scan is None:
        return None
    k = 3 * n
    faces = np.empty((n, 3), dtype=np.int64)
    first = np.empty(k, dtype=index_dtype(k))
    keep = np.empty(n, dtype=bool)
    counts = scan.stl_binary(data, n, faces, first, keep, tolerance, probes, seed)
    if counts is None:
        return None
    distinct, foreign, tagged = counts
    vertices = np.empty((distinct, 3), dtype=np.float64)
    scan.stl_vertices(data, n, first[:distinct], vertices)  # (returns the non-finite rows: validate counts them)
    return BinaryStl(vertices, faces, keep, foreign, tagged)


def stl_write(vertices: np.ndarray, faces: np.ndarray) -> bytes | None:
    """The binary STL of (N, 3) vertices and (M, 3) faces in one C++ pass without the GIL
    (stl._write_binary's bytes: float64 normals by its arithmetic, then float32); None when the
    scanner is off or the arrays are not that (other dtypes or shapes, an index outside [0, N)):
    the caller's numpy path then writes or raises. Time O(M); memory the output (50 bytes a face)
    and contiguous float64/int64 copies of the arrays where they are not that already."""
    scan = scanner()
    if scan is None or vertices.dtype not in (np.float64, np.float32) or faces.dtype.kind not in "iu":
        return None
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        return None
    if faces.dtype == np.uint64 and len(faces) and int(faces.max()) >= 2**63:
        return None  # would wrap to negative in int64 (refused there anyway, but not this way)
    if vertices.dtype == np.float32 and np.isnan(vertices).any():
        bits = vertices.view(np.uint32)  # a signalling NaN: quiet bit clear, payload not zero
        if (((bits & 0x7FC00000) == 0x7F800000) & ((bits & 0x003FFFFF) != 0)).any():
            return None  # widened to float64 here it would be quieted; numpy copies its bits
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    return scan.stl_write(v, f)


def weld_rows(rows: np.ndarray, probes: float = 8.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """merge_exact(rows) for (k, 3) float64 rows by the C++ hash table (weld_rows: seeded, probes
    capped at probes x k + 64, no GIL): the distinct rows (bitwise) in order of first appearance
    and each row's int64 index into them. None when the scanner is off or gave up: the caller
    then calls merge_exact. Time O(k); memory the outputs and the table (2^ceil(log2(2k)) slots
    of 28 bytes: 56-112 bytes a row, sized for rows that are mostly distinct)."""
    scan = scanner()
    if scan is None or rows.dtype != np.float64 or rows.ndim != 2 or rows.shape[1] != 3:
        return None
    rows = np.ascontiguousarray(rows)
    k = len(rows)
    ranks = np.empty(k, dtype=np.int64)
    first = np.empty(k, dtype=index_dtype(k))
    distinct = scan.weld_rows(rows, ranks, first, probes, seed)
    if distinct is None:
        return None
    return rows[first[:distinct]], ranks


def face_checks(
    vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, tolerance: float
) -> tuple[int, np.ndarray] | None:
    """stl._foreign_count of (M, 3) stored normals and validate._non_degenerate of (M, 3) int64
    faces of (N, 3) float64 vertices in one C++ pass (face_checks, no GIL, the same arithmetic):
    the foreign count and the (M,) bool keep mask. None when the scanner is off or an index is
    out of range (the caller's numpy path). Time O(M); memory the mask."""
    scan = scanner()
    if scan is None:
        return None
    keep = np.empty(len(faces), dtype=bool)
    foreign = scan.face_checks(
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
        np.ascontiguousarray(normals, dtype=np.float64),
        tolerance,
        keep,
    )
    return None if foreign is None else (foreign, keep)


def integers(
    buf: bytes | np.ndarray, start: np.ndarray, end: np.ndarray, index: np.ndarray | None = None
) -> np.ndarray | None:
    """int64 of '-'?digits tokens of 1-18 digits (text.whole_numbers' grammar; tokens `index`
    when given); None otherwise or when the scanner is off."""
    scan = scanner()
    return None if scan is None else _read(scan.integers, np.int64, buf, start, end, index)


def keys(
    buf: bytes | np.ndarray, start: np.ndarray, end: np.ndarray, index: np.ndarray | None = None
) -> np.ndarray | None:
    """text.keys by the scanner (one pass in token order; tokens `index` when given); None when
    it is off."""
    scan = scanner()
    return None if scan is None else _read(scan.keys, np.uint64, buf, start, end, index)


def nth_byte(buf: bytes | memoryview, byte: int, r: int) -> int | None:
    """The offset of the r-th (1-based) `byte` in buf, -1 when it holds fewer; None when off."""
    scan = scanner()
    return None if scan is None else scan.nth_byte(buf, byte, r)


def all_floats(text: bytes | memoryview, count: int | None, out: np.ndarray | None = None) -> np.ndarray | None:
    """float64 of every token of `text` (exactly `count` of them when given; into `out` when
    given) with no token table; None when the scanner is off, refuses a token or the count differs."""
    scan = scanner()
    if scan is None:
        return None
    if out is None:
        out = np.empty(scan.count_tokens(text) if count is None else count, dtype=np.float64)
    found, refused = scan.scan_floats(text, out)
    return out if refused < 0 and found == len(out) else None


def all_integers(text: bytes | memoryview) -> np.ndarray | None:
    """int64 of every token of `text` ('-'?digits, 1-18 digits); None otherwise or when off."""
    scan = scanner()
    if scan is None:
        return None
    out = np.empty(scan.count_tokens(text), dtype=np.int64)
    found, refused = scan.scan_integers(text, out)
    return out if refused < 0 and found == len(out) else None


def _read(
    read: Callable[..., int],
    dtype: type[np.generic],
    buf: bytes | np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    index: np.ndarray | None,
) -> np.ndarray | None:
    """One of the scanner's range readers (floats, integers, keys) into a new `dtype` array, one
    value a range (a token `index` when given); None where it refused a token."""
    start, end = _index_pair(start, end)
    if index is not None:
        index = _fix(index)
    out = np.empty(len(start) if index is None else len(index), dtype=dtype)
    return out if read(buf, start, end, out, index) < 0 else None


def _fix(a: np.ndarray) -> np.ndarray:
    """A contiguous int32/int64 array (a copy where needed: the scanner reads raw memory)."""
    if a.dtype not in (np.int32, np.int64):
        a = a.astype(np.int64)
    return np.ascontiguousarray(a)


def _index_pair(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _fix(start), _fix(end)
