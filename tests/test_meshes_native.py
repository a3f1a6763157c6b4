"""The C++ text scanner's primitives (meshes/_textscan.cpp) against plain Python references, on
random and hostile bytes: NUL and non-ASCII bytes, huge digit strings, nan/inf/1e999, -0, hex,
'1_000', leading '+', empty and multi-MB tokens, CR-only line ends, no final newline, buffers
whose length is (or is not) a multiple of the scanner's 64-byte block; bad arguments.

Then the readers' helpers (text.tokenize, numbers, whole_numbers, keys, parse_floats) with the
scanner against the same helpers with it switched off (OCCLUTRACE_NO_NATIVE=1): the same tables
and values, bit for bit, or the same refusal. Skipped where the extension is not built.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from occlutrace_compute.meshes import native, text

scan = pytest.importorskip("occlutrace_compute.meshes._textscan")

TOKEN = re.compile(rb"[^ \t\n\v\f\r]+")
DECIMAL = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
INTEGER = re.compile(rb"-?[0-9]{1,18}")
WORDS = [b"1", b"-0", b"+1.5", b"1e999", b"-1e-400", b"nan", b"-inf", b"Infinity", b"0x1A", b"1_000", b"1e", b"e5",
         b".5", b"5.", b".", b"+", b"-", b"--1", b"+-1", b"1.2.3", b"\x00", b"1\x00", b"\xff", b"\xc3\xa9", b"4e-320",
         b"123456789012345678", b"1234567890123456789", b"-000000000000000001", b"1,5", b"vertex", b"facet",
         b"endsolid", b"abcdefghi", b"0.1000000000000000055511151231257827", b"2.4703282292062327e-324"]  # fmt: skip
SPACES = [b" ", b"\t", b"\n", b"\r", b"\r\n", b"\x0b", b"\x0c", b"  ", b"\n\n"]


@st.composite
def buffers(draw) -> bytes:
    """Tokens drawn from WORDS, random floats and random bytes, joined by random whitespace,
    with or without whitespace at either end; sometimes random bytes alone."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    parts: list[bytes] = [draw(st.sampled_from([b"", *SPACES]))]
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            parts.append(draw(st.sampled_from(WORDS)))
        elif kind == 1:
            x = draw(st.floats(allow_nan=True, allow_infinity=True))
            parts.append(draw(st.sampled_from(["{!r}", "{:.17g}", "{:e}", "{:+.3f}", "{:.0f}"])).format(x).encode())
        elif kind == 2:
            parts.append(draw(st.binary(min_size=1, max_size=12)))
        else:
            parts.append(str(draw(st.integers(-(10**20), 10**20))).encode())
        parts.append(draw(st.sampled_from(SPACES)))
    if draw(st.booleans()):
        parts.pop()  # no whitespace (no newline) at the end
    return b"".join(parts)


def reference_tokens(data: bytes, brk: int) -> tuple[list[int], list[int], list[int]]:
    spans = [(m.start(), m.end()) for m in TOKEN.finditer(data)]
    return [a for a, _ in spans], [b for _, b in spans], [data.count(bytes([brk]), 0, a) for a, _ in spans]


def reference_float(tok: bytes) -> float | None:
    """What the scanner must give: the value of a plain decimal, None (refused) otherwise or when
    it overflows or underflows to zero (nan, inf and '1_0' are refused: the Python path reads them)."""
    if not DECIMAL.fullmatch(tok):
        return None
    x = float(tok)
    mantissa = tok.lower().split(b"e")[0]
    if not np.isfinite(x) or (x == 0 and re.search(rb"[1-9]", mantissa)):
        return None
    return x


def reference_key(tok: bytes) -> int:
    return int.from_bytes(tok.ljust(8, b"\0"), "little") if len(tok) <= 8 else 2**64 - 1


def tokenize(data: bytes, brk: int, dtype=np.int32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = scan.count_tokens(data)
    start, end, line = (np.empty(n, dtype) for _ in range(3))
    assert scan.tokenize(data, start, end, line, brk) == n
    return start, end, line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buffers(), st.sampled_from([10, 13]), st.sampled_from([np.int32, np.int64]))
def test_tokens_and_lines_match_a_regex_split(data, brk, dtype):
    start, end, line = tokenize(data, brk, dtype)
    ref = reference_tokens(data, brk)
    assert start.tolist() == ref[0] and end.tolist() == ref[1] and line.tolist() == ref[2]
    assert [data[a:b] for a, b in zip(ref[0], ref[1])] == data.split()
    flags = np.full(len(start), 7, np.uint8)  # the line-start flags instead of line numbers
    assert scan.tokenize(data, start, end, flags, brk) == len(start)
    assert flags.tolist() == [int(ln != prev) for ln, prev in zip(ref[2], [0, *ref[2][:-1]])]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buffers())
def test_floats_integers_and_keys_of_every_token_match_python(data):
    start, end, _ = tokenize(data, 10)
    toks = data.split()
    k = len(toks)
    out = np.full(k, 7.0)
    refused = scan.floats(data, start, end, out)
    expect = [reference_float(t) for t in toks]
    first_bad = next((i for i, x in enumerate(expect) if x is None), -1)
    assert refused == first_bad
    good = k if first_bad < 0 else first_bad
    assert out[:good].tobytes() == np.array(expect[:good], dtype=np.float64).tobytes()  # -0.0 too
    ints = np.zeros(k, np.int64)
    refused = scan.integers(data, start, end, ints)
    ok = [bool(INTEGER.fullmatch(t)) for t in toks]
    first_bad = ok.index(False) if False in ok else -1
    assert refused == first_bad
    good = k if first_bad < 0 else first_bad
    assert ints[:good].tolist() == [int(t) for t in toks[:good]]
    keys = np.zeros(k, np.uint64)
    assert scan.keys(data, start, end, keys) == -1
    assert keys.tolist() == [reference_key(t) for t in toks]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buffers(), st.integers(0, 5))
def test_scans_convert_every_token_or_say_where_they_stopped(data, spare):
    toks = data.split()
    for fn, ref, dtype in (
        (scan.scan_floats, reference_float, np.float64),
        (scan.scan_integers, lambda t: int(t) if INTEGER.fullmatch(t) else None, np.int64),
    ):
        values = [ref(t) for t in toks]
        bad = next((i for i, x in enumerate(values) if x is None), -1)
        cap = max(len(toks) + spare - 3, 0)  # too small, exact or room to spare
        out = np.zeros(cap, dtype)
        found, refused = fn(data, out)
        stop = len(toks) if bad < 0 else bad  # the token the scan stops at (or the count)
        if cap < len(toks) and cap <= stop:  # a token with no room left: counted, then stop
            assert (found, refused) == (cap + 1, -1)
        else:
            assert (found, refused) == (stop, bad)
        done = min(cap, stop)
        assert out[:done].tolist() == values[:done]


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 127, 128, 129, 1000])
def test_block_edges_and_a_token_running_to_the_end(n):
    """Tokens that end exactly at a 64-byte block edge or at the buffer's end (no final newline)."""
    rng = np.random.default_rng(n)
    data = bytes(rng.choice(list(b"0123456789 \n\t."), size=n).tolist())
    for tail in (b"", b"7", b"\n"):
        buf = data + tail
        start, end, line = tokenize(buf, 10)
        assert (start.tolist(), end.tolist(), line.tolist()) == reference_tokens(buf, 10)


def test_multi_megabyte_tokens_and_digit_strings():
    big = b"1." + b"0" * 3_000_000  # one 3 MB token: exactly 1.0
    for data, value in ((big, 1.0), (b"  " + big + b"5\n", 1.0), (b"0." + b"0" * 2_000_000 + b"1", None),
                        (b"9" * 2_000_000, None), (b"-" + b"0" * 1_000_000, -0.0)):  # fmt: skip
        start, end, _ = tokenize(data, 10)
        out = np.empty(1)
        refused = scan.floats(data, start, end, out)
        assert (refused == -1) == (value is not None)
        if value is not None:
            assert out.tobytes() == np.float64(value).tobytes()
    ints = np.empty(1, np.int64)
    assert scan.integers(b"1" * 1_000_000, np.array([0]), np.array([1_000_000]), ints) == 0


def test_bad_arguments_are_refused_before_any_read():
    data = b"1 2 3"
    out = np.empty(1)
    with pytest.raises(IndexError):
        scan.floats(data, np.array([2]), np.array([9]), out)  # past the end
    with pytest.raises(IndexError):
        scan.floats(data, np.array([-1]), np.array([1]), out)
    with pytest.raises(IndexError):
        scan.integers(data, np.array([3]), np.array([2]), np.empty(1, np.int64))  # end before start
    with pytest.raises(ValueError):
        scan.floats(data, np.array([0, 2]), np.array([1]), np.empty(2))
    with pytest.raises(TypeError):
        scan.floats(data, np.array([0.0]), np.array([1]), out)  # float offsets
    with pytest.raises(TypeError):
        scan.floats(data, np.array([0]), np.array([1]), np.empty(1, np.float32))
    with pytest.raises(TypeError):
        scan.floats(data, np.array([0]), np.array([1]), np.empty(1)[::1].view(np.int64))
    with pytest.raises(ValueError):  # more tokens than the tables hold
        scan.tokenize(data, np.empty(2, np.int32), np.empty(2, np.int32), None, 10)
    with pytest.raises(ValueError):
        scan.tokenize(data, np.empty(3, np.int32), np.empty(3, np.int32), None, 32)  # not a line break
    with pytest.raises((TypeError, ValueError)):
        scan.floats(data, np.array([0]), np.array([1]), np.empty(1).view(np.uint8)[::2])  # not contiguous
    read_only = np.empty(1)
    read_only.flags.writeable = False
    with pytest.raises((TypeError, ValueError, BufferError)):
        scan.floats(data, np.array([0]), np.array([1]), read_only)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buffers())
def test_text_helpers_give_the_python_paths_results(data):
    """text.tokenize / numbers / whole_numbers / keys / parse_floats: the scanner's answer equals
    the numpy/fastnumbers path's, bit for bit, or both refuse."""

    def run() -> tuple:
        buf = text.as_array(data)
        blank = np.zeros(len(buf), dtype=bool)
        blank[len(buf) // 3 : len(buf) // 2] = True  # an OBJ comment's bytes count as whitespace
        t = text.tokenize(buf)
        tb = text.tokenize(buf, blank)
        tn = text.tokenize(buf, lines=False)
        values = text.numbers(buf, t.start, t.end)
        whole = text.whole_numbers(buf, t.start, t.end)
        keys = text.keys(buf, t.start, t.end)
        floats = text.parse_floats(data)
        tables = [a.tolist() for a in (t.start, t.end, t.line, t.first, t.count, tb.start, tb.end, tb.line, tn.start)]
        tables += [[str(a.dtype) for a in (t.start, t.line, t.first, t.count)]]
        return (
            tables,
            None if values is None else values.tobytes(),
            None if whole is None else whole.tolist(),
            keys.tolist(),
            None if floats is None else floats.tobytes(),
        )

    before = os.environ.get("OCCLUTRACE_NO_NATIVE")
    try:
        os.environ["OCCLUTRACE_NO_NATIVE"] = "0"
        assert native.scanner() is not None
        with_scanner = run()
        os.environ["OCCLUTRACE_NO_NATIVE"] = "1"
        assert native.scanner() is None
        without = run()
    finally:
        if before is None:
            del os.environ["OCCLUTRACE_NO_NATIVE"]
        else:
            os.environ["OCCLUTRACE_NO_NATIVE"] = before
    assert with_scanner == without


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buffers(), st.integers(0, 2**32 - 1))
def test_first_equal_and_indexed_reads_match_python(data, seed):
    """first_equal gives each range the first range with its bytes (a dict's setdefault), over
    tokens and over random, overlapping, empty ranges; floats/integers/keys of tokens `index`
    equal the same reads of the gathered ranges."""
    rng = np.random.default_rng(seed)
    start, end, _ = tokenize(data, 10)
    k = int(rng.integers(0, 60))
    a = rng.integers(0, len(data) + 1, k)
    b = np.minimum(a + rng.integers(0, 4, k), len(data))  # short ranges: many repeats
    for s, e in ((start, end), (a, b), (np.concatenate([start, start]), np.concatenate([end, end]))):
        s, e = s.astype(np.int64), e.astype(np.int64)
        out = np.empty(len(s), np.int64)
        assert scan.first_equal(data, s, e, out)
        seen: dict[bytes, int] = {}
        assert out.tolist() == [seen.setdefault(data[x:y], j) for j, (x, y) in enumerate(zip(s, e))]
    if len(start):
        index = rng.integers(0, len(start), int(rng.integers(0, 40))).astype(np.int32)
        for fn, dtype in ((scan.floats, np.float64), (scan.integers, np.int64), (scan.keys, np.uint64)):
            by_index, gathered = np.zeros(len(index), dtype), np.zeros(len(index), dtype)
            r1 = fn(data, start, end, by_index, index)
            r2 = fn(data, start[index], end[index], gathered)
            assert r1 == r2
            stop = len(index) if r1 < 0 else r1
            assert by_index[:stop].tobytes() == gathered[:stop].tobytes()


def test_first_equal_and_index_refuse_out_of_range_arguments():
    data = b"1 2 1"
    with pytest.raises(IndexError):
        scan.first_equal(data, np.array([0, 4]), np.array([1, 6]), np.empty(2, np.int64))
    with pytest.raises(ValueError):
        scan.first_equal(data, np.array([0]), np.array([1]), np.empty(2, np.int64))
    start, end = np.array([0, 2, 4]), np.array([1, 3, 5])
    for bad in ([3], [-1]):
        with pytest.raises(IndexError):
            scan.floats(data, start, end, np.empty(1), np.array(bad))
    out = np.empty(3, np.int64)
    assert scan.first_equal(data, start, end, out) and out.tolist() == [0, 1, 0]


def test_first_equal_refuses_an_out_sharing_memory_with_its_ranges():
    """first_equal writes out while it reads start and end again (without the GIL): an out that
    shares their memory would turn the indices it writes into byte offsets nobody checked."""
    data = bytes(range(256)) * 4
    k = 200
    rng = np.random.default_rng(5)
    start = rng.integers(0, len(data) - 12, k)
    store = np.empty(k + 1, np.int64)
    store[:-1] = start
    end = start + 12
    for out, s, e in ((end, start, end), (start, start, end), (store[1:], store[:-1], store[:-1] + 12)):
        with pytest.raises(ValueError, match="share memory"):
            scan.first_equal(data, s, e, out)
    out = np.empty(k, np.int64)
    assert scan.first_equal(data, start, end, out)  # separate arrays: answered
    assert all(data[start[o] : end[o]] == data[a:b] and o <= j for j, (o, a, b) in enumerate(zip(out, start, end)))


@pytest.mark.parametrize(("fmt", "bound"), [("stl", 3.0), ("obj", 5.0), ("ply", 5.0)])  # measured: 1.7, 3.6, 3.0
def test_parse_memory_stays_a_small_multiple_of_the_file(fmt, bound):
    """Peak traced memory (numpy arrays and the scanner's hash table, PyMem_Raw) of load_mesh on
    a ~2-5 MB ASCII file with the scanner, as a multiple of the file (bench_parse_memory.py
    measures the hostile cases: at most ~18x, at the smallest tokens)."""
    import tracemalloc

    import trimesh

    from occlutrace_compute.meshes import Mesh, load_mesh, mesh_to_bytes

    s = trimesh.creation.icosphere(subdivisions=5, radius=20.0)
    data = mesh_to_bytes(Mesh(s.vertices, s.faces.astype(np.int64)), fmt, "ascii")
    load_mesh(data=data, name=f"m.{fmt}")  # first-use caches
    tracemalloc.start()
    try:
        loaded = load_mesh(data=data, name=f"m.{fmt}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.mesh.n_faces == len(s.faces)
    assert peak < bound * len(data), (peak / len(data), len(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 255), st.integers(1, 30))
def test_nth_byte_finds_the_rth_occurrence(data, byte, r):
    where = [i for i, b in enumerate(data) if b == byte]
    assert scan.nth_byte(data, byte, r) == (where[r - 1] if len(where) >= r else -1)
    with pytest.raises(ValueError):
        scan.nth_byte(data, 256, r)
    with pytest.raises(ValueError):
        scan.nth_byte(data, byte, 0)


@st.composite
def binary_stls(draw) -> bytes:
    """A binary STL whose corners are drawn from a small pool of float32 bit patterns (so they
    repeat, as in a closed mesh) that holds -0.0 and 0.0, NaNs with different payloads, infinities
    and denormals; random normals and attribute bytes; sometimes trailing bytes."""
    specials = [0x00000000, 0x80000000, 0x7FC00000, 0x7FC00001, 0xFFC00000, 0x7F800000, 0x00000001, 0x3F800000]
    pool = draw(st.lists(st.sampled_from(specials) | st.integers(0, 2**32 - 1), min_size=1, max_size=12))
    n = draw(st.integers(0, 60))
    corners = np.array(draw(st.lists(st.sampled_from(pool), min_size=9 * n, max_size=9 * n)), dtype="<u4")
    records = np.zeros(n, dtype=[("normal", "<u4", (3,)), ("v", "<u4", (9,)), ("attr", "<u2")])
    records["v"] = corners.reshape(n, 9)
    records["normal"] = np.array(
        draw(st.lists(st.integers(0, 2**32 - 1), min_size=3 * n, max_size=3 * n)), "<u4"
    ).reshape(n, 3)
    tail = draw(st.binary(max_size=7))
    return b"\0" * 80 + np.uint32(n).tobytes() + records.tobytes() + tail


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(binary_stls())
def test_binary_stl_corners_weld_alike_with_and_without_the_scanner(data):
    """stl._weld_binary (the scanner's hash table over each corner's 12 bytes) gives merge_exact's
    vertices (bitwise: -0.0 and 0.0 stay apart, NaN payloads too) and faces."""
    from occlutrace_compute.meshes import stl
    from occlutrace_compute.meshes.merge import merge_exact

    n = int(np.frombuffer(data, "<u4", 1, 80)[0])
    corners = np.frombuffer(data, stl.RECORD, count=n, offset=84)["v"].reshape(-1, 3)
    want_v, want_f = merge_exact(corners)
    got_v, got_f = stl._weld_binary(data, corners)
    assert got_v.tobytes() == want_v.tobytes() and got_v.dtype == want_v.dtype
    assert np.array_equal(got_f, want_f)
