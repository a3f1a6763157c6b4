"""An attacker's review of binary STL's native code (_textscan.cpp: stl_binary, stl_vertices,
stl_write, weld_rows, face_checks): arguments no caller of ours passes but a bug might (negative
and huge counts, foreign byte orders, read-only or aliased outputs), every refusal releasing the
buffers it took (a leaked export would pin a bytearray or memoryview for good) and leaving
reference counts alone; the hash table's growth points and probe budgets crossed with any seed
(the answer the numpy path's, or None, never a partial one, and the table freed either way);
allocation failures as MemoryError; the GIL released safely (an input resized meanwhile is
refused by Python, threads parse at once and agree); bit patterns the numpy path must match
(signed zeros, NaN payloads, signalling NaNs, denormals, infinities) on load and export; and the
export written from parsed values only (no header, attribute or normal byte of the input).
Skipped where the extension is not built.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import native, stl
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.load import load_mesh
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.validate import validate
from tests.parse_equivalence import binary_stl, scanner_off, verdict

scan = pytest.importorskip("occlutrace_compute.meshes._textscan")

# float32 bit patterns an attacker would try: signed zeros, NaNs (quiet, signalling, payloads,
# negative), infinities, denormals at both ends, the largest finite, 1.0 and its neighbour
BITS32 = [
    0x00000000,
    0x80000000,
    0x7FC00000,
    0x7FC00001,
    0xFFC12345,
    0x7F800001,
    0xFFBFFFFF,
    0x7F800000,
    0xFF800000,
    0x00000001,
    0x80000001,
    0x007FFFFF,
    0x807FFFFF,
    0x7F7FFFFF,
    0x3F800000,
    0x3F800001,
]


def distinct_bits(k: int, offset: int = 0) -> np.ndarray:
    """k distinct positive finite float32 bit patterns."""
    return (np.arange(k, dtype=np.uint32) + np.uint32(0x3F000000 + offset)).astype("<u4")


def assert_same_as_numpy_path(data: bytes) -> None:
    got = stl.parse_binary(data, "x.stl", Limits())
    with scanner_off():
        want = stl.parse_binary(data, "x.stl", Limits())
    assert got.vertices.tobytes() == want.vertices.tobytes()
    assert np.array_equal(got.faces, want.faces) and got.faces.dtype == want.faces.dtype
    assert got.metadata == want.metadata and got.warnings == want.warnings
    assert verdict(got) == verdict(want)


# ---- bit patterns ---------------------------------------------------------------------------


@st.composite
def special_files(draw) -> bytes:
    """Records whose 12 corner and normal words come from BITS32 and a few random words (so
    corners repeat bitwise, differ only in a sign or a NaN payload, or are denormal), whole
    records of one corner thrice, and attribute bytes."""
    n = draw(st.integers(1, 60))
    pool = draw(st.lists(st.sampled_from(BITS32) | st.integers(0, 2**32 - 1), min_size=1, max_size=6))
    words = np.array(draw(st.lists(st.sampled_from(pool), min_size=12 * n, max_size=12 * n)), dtype="<u4")
    words = words.reshape(n, 12)
    for r in draw(st.lists(st.integers(0, n - 1), max_size=3)):
        words[r, 6:9] = words[r, 9:12] = words[r, 3:6]  # all corners equal
    attr = np.array(draw(st.lists(st.integers(0, 2**16 - 1), min_size=n, max_size=n)), dtype="<u2")
    return binary_stl(words[:, 3:], words[:, :3], attr)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(special_files())
def test_special_bit_patterns_load_as_on_the_numpy_path(data):
    n = struct.unpack_from("<I", data, 80)[0]
    assert native.stl_binary(data, n, stl.NORMAL_TOLERANCE) is not None
    assert_same_as_numpy_path(data)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(BITS32), min_size=9, max_size=9), st.sampled_from(["float32", "float64"]))
def test_export_of_special_coordinates_gives_the_numpy_paths_bytes(bits, vdtype):
    """One face and its corners of special values held as float32 (a signalling NaN kept as it
    is) or float64: native.stl_write writes what the numpy path writes, or steps aside."""
    v32 = np.array(bits, dtype="<u4").view(np.float32).reshape(3, 3)
    with np.errstate(invalid="ignore"):
        vertices = v32 if vdtype == "float32" else v32.astype(np.float64)
    mesh = Mesh(vertices, np.array([[0, 1, 2], [2, 1, 0], [0, 0, 1]], np.int64))
    with np.errstate(invalid="ignore"):
        got = stl.write(mesh, "binary")
        with scanner_off():
            want = stl.write(mesh, "binary")
    assert got == want


def test_export_of_float32_signalling_nan_keeps_its_bits():
    """float32 vertices go to the record as they are on the numpy path (astype(float32) is a
    copy); the native path widened them to float64 first, which quiets a signalling NaN."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    v.view(np.uint32)[0, 0] = 0x7F800001
    mesh = Mesh(v, np.array([[0, 1, 2]], np.int64))
    with np.errstate(invalid="ignore"):
        with scanner_off():
            want = stl.write(mesh, "binary")
        got = stl.write(mesh, "binary")
    assert got[84 + 12 : 84 + 16] == struct.pack("<I", 0x7F800001) == want[84 + 12 : 84 + 16]
    assert got == want


# ---- the table: growth points, budgets, seeds, leaks -----------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from([1, 10, 11, 21, 22, 42, 43, 85, 86, 170, 171, 341, 342]),
    st.integers(0, 3),
    st.integers(1, 2**64 - 1),
    st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.2, 1.5, 2.0, 3.0, 8.0]),
)
def test_table_growth_points_and_budgets_give_the_exact_answer_or_none(n, repeat, seed, probes):
    """n records whose corners are all distinct (repeat 0), or repeat one of `repeat + 1`
    earlier corners: distinct counts on both sides of the table's doublings (33, 65, 129, ... keys),
    any seed, budgets that run out anywhere, also in the middle of a doubling's rehash: the
    answer is the numpy path's or None, and no table memory is left behind either way."""
    k = 3 * n
    bits = distinct_bits(k)
    if repeat:
        bits[::3] = bits[np.arange(0, k, 3) % (3 * repeat + 1)]
    data = binary_stl(np.repeat(bits, 3).reshape(n, 9), np.zeros((n, 3), np.uint32))
    with scanner_off():
        want = stl.parse_binary(data, "x.stl", Limits())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        faces, first = np.empty(k, np.int64), np.empty(k, np.int32)
        keep = np.empty(n, bool)
        arrays = tracemalloc.get_traced_memory()[0]
        counts = scan.stl_binary(data, n, faces, first, keep, stl.NORMAL_TOLERANCE, probes, seed)
        left, peak = (m - arrays for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert peak >= 1024 and arrays > before  # the table (64 slots at least) is traced
    assert left < 1024, left  # and freed, on success and on a spent budget
    if probes == 8.0:
        assert counts is not None
    if counts is not None:
        distinct = counts[0]
        assert distinct == len(want.vertices)
        assert np.array_equal(faces, want.faces.ravel())
        v = np.empty((distinct, 3))
        scan.stl_vertices(data, n, first[:distinct], v)
        assert v.tobytes() == want.vertices.tobytes()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 200), st.integers(0, 2), st.integers(1, 2**64 - 1), st.sampled_from([0.0, 0.5, 1.0, 1.5, 8.0]))
def test_weld_rows_budgets_and_initial_sizes_give_merge_exact_or_none(k, initial, seed, probes):
    from occlutrace_compute.meshes.merge import merge_exact

    rows = np.arange(3 * k, dtype=np.float64).reshape(k, 3)
    rows[1::2] = rows[::2][: len(rows[1::2])]
    want_v, want_i = merge_exact(rows)
    ranks, first = np.empty(k, np.int64), np.empty(k, np.int64)
    tracemalloc.start()
    try:
        got = scan.weld_rows(rows, ranks, first, probes, seed, initial)
        left, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= 1024 > left  # the table (64 slots at least) traced, then freed
    if probes == 8.0:
        assert got is not None
    if got is not None:
        assert rows[first[:got]].tobytes() == want_v.tobytes() and np.array_equal(ranks, want_i)


_ALLOCATION_FAILURE = r"""
import resource, sys, numpy as np
from occlutrace_compute.meshes import _textscan as scan
n = 400_000
k = 3 * n
rec = np.zeros(n, dtype=[("normal", "<u4", (3,)), ("v", "<u4", (9,)), ("attr", "<u2")])
rec["v"] = (np.arange(9 * n, dtype=np.uint32) + np.uint32(0x3F000000)).reshape(n, 9)
data = bytes(84) + rec.tobytes()
faces, first, keep = np.empty(k, np.int64), np.empty(k, np.int32), np.empty(n, bool)
faces[:] = 0; first[:] = 0; keep[:] = 0
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
_, hard = resource.getrlimit(resource.RLIMIT_AS)
# initial table: 2^20 slots of 16 bytes (16 MiB); doublings to 32 and 64 MiB
for room, step in ((4 << 20, "initial"), (56 << 20, "grow")):
    resource.setrlimit(resource.RLIMIT_AS, (vm + room, hard))
    try:
        scan.stl_binary(data, n, faces, first, keep, 1e-4, 8.0, 1)
    except MemoryError:
        print(step, "MemoryError")
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
print(scan.stl_binary(data, n, faces, first, keep, 1e-4, 8.0, 1))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""), reason="ASan reserves address space")
def test_allocation_failure_of_the_table_is_a_memory_error():
    """With the address space capped, the table's first allocation and a later doubling (made
    without the GIL) each fail as MemoryError; the process then goes on and the same call
    succeeds once memory is back."""
    out = subprocess.run(
        [sys.executable, "-c", _ALLOCATION_FAILURE], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert lines[:2] == ["initial MemoryError", "grow MemoryError"], out.stdout
    assert lines[2] == "(1200000, 0, 0)"


# ---- arguments, buffers, references -----------------------------------------------------------


def views(data: bytes, n: int):
    """buf and the outputs as memoryviews over bytearrays: an export left unreleased makes
    memoryview.release() raise."""
    k = 3 * n
    return (
        memoryview(bytearray(data)),
        memoryview(bytearray(8 * k)).cast("q"),
        memoryview(bytearray(4 * k)).cast("i"),
        memoryview(bytearray(n)).cast("B"),
    )


def hostile_calls(data: bytes, n: int):
    """(description, exception, function of fresh views) for refused calls."""
    yield "negative n", ValueError, lambda b, f, i, k: scan.stl_binary(b, -1, f, i, k, 1e-4, 8.0, 0)
    yield "n past the buffer", ValueError, lambda b, f, i, k: scan.stl_binary(b, n + 1, f, i, k, 1e-4, 8.0, 0)
    yield "n huge", ValueError, lambda b, f, i, k: scan.stl_binary(b, 2**62, f, i, k, 1e-4, 8.0, 0)
    yield "n overflows", OverflowError, lambda b, f, i, k: scan.stl_binary(b, 2**64, f, i, k, 1e-4, 8.0, 0)
    yield "short faces", ValueError, lambda b, f, i, k: scan.stl_binary(b, n, f[1:], i, k, 1e-4, 8.0, 0)
    yield "probes inf", ValueError, lambda b, f, i, k: scan.stl_binary(b, n, f, i, k, 1e-4, float("inf"), 0)
    yield "probes negative", ValueError, lambda b, f, i, k: scan.stl_binary(b, n, f, i, k, 1e-4, -1.0, 0)
    yield (
        "faces read-only",
        (TypeError, BufferError),
        lambda b, f, i, k: scan.stl_binary(b, n, f.toreadonly(), i, k, 1e-4, 8.0, 0),
    )
    yield (
        "faces unsigned",
        TypeError,
        lambda b, f, i, k: scan.stl_binary(b, n, f.cast("B").cast("Q"), i, k, 1e-4, 8.0, 0),
    )
    yield (
        "faces as keep",
        ValueError,
        lambda b, f, i, k: scan.stl_binary(b, n, f, i, f.cast("B")[: len(k)], 1e-4, 8.0, 0),
    )
    yield (
        "buf as faces",
        ValueError,
        lambda b, f, i, k: scan.stl_binary(b, n, b[: 8 * len(f)].cast("q"), i, k, 1e-4, 8.0, 0),
    )
    yield "buf of ints", TypeError, lambda b, f, i, k: scan.stl_binary(f, n, f, i, k, 1e-4, 8.0, 0)
    yield "vertices n", ValueError, lambda b, f, i, k: scan.stl_vertices(b, 2**62, i[:1], np.empty((1, 3)))
    yield (
        "vertices corner",
        IndexError,
        lambda b, f, i, k: scan.stl_vertices(b, n, _filled(i, 3 * n), np.empty((len(i), 3))),
    )
    yield (
        "vertices negative",
        IndexError,
        lambda b, f, i, k: scan.stl_vertices(b, n, _filled(i, -1), np.empty((len(i), 3))),
    )
    yield "vertices out", ValueError, lambda b, f, i, k: scan.stl_vertices(b, n, i, np.empty((len(i) + 1, 3)))
    yield (
        "vertices out is buf",
        (TypeError, ValueError),
        lambda b, f, i, k: scan.stl_vertices(b, n, i[:1], b[:24].cast("d")),
    )
    yield "weld shape", ValueError, lambda b, f, i, k: scan.weld_rows(b[:32].cast("d"), f[:1], f[1:2], 8.0, 0)
    yield "weld alias", ValueError, lambda b, f, i, k: scan.weld_rows(b[:24].cast("d"), f[:1], f[:1], 8.0, 0)
    yield "weld initial", ValueError, lambda b, f, i, k: scan.weld_rows(b[:24].cast("d"), f[:1], f[1:2], 8.0, 0, 3)
    yield (
        "checks shape",
        ValueError,
        lambda b, f, i, k: scan.face_checks(b[:24].cast("d"), f[:3], b[:48].cast("d"), 1e-4, k[:1]),
    )
    yield (
        "checks keep alias",
        ValueError,
        lambda b, f, i, k: scan.face_checks(
            f.cast("B").cast("d")[:3], f[3:6], f.cast("B").cast("d")[6:9], 1e-4, f.cast("B")[:1]
        ),
    )
    yield "write rows", ValueError, lambda b, f, i, k: scan.stl_write(b[:32].cast("d"), f[:3])
    yield "write int32 faces", TypeError, lambda b, f, i, k: scan.stl_write(b[:24].cast("d"), i[:3])


def _filled(i: memoryview, value: int) -> memoryview:
    i[len(i) - 1] = value
    return i


def test_refused_calls_release_every_buffer_and_reference():
    n = 4
    data = binary_stl(np.repeat(distinct_bits(3 * n), 3).reshape(n, 9), np.zeros((n, 3), np.uint32))
    for what, error, call in hostile_calls(data, n):
        b, f, i, k = views(data, n)
        counts = [sys.getrefcount(x) for x in (b, f, i, k)]
        with pytest.raises(error):
            call(b, f, i, k)
        assert [sys.getrefcount(x) for x in (b, f, i, k)] == counts, what
        for x in (b, f, i, k):
            x.release()  # BufferError: an export the call did not release
    b, f, i, k = views(data, n)
    assert scan.stl_binary(b, n, f, i, k, 1e-4, 8.0, 0) == (3 * n, 0, 0)
    for x in (b, f, i, k):
        x.release()


def test_non_native_byte_order_outputs_are_refused():
    n = 2
    data = binary_stl(np.repeat(distinct_bits(3 * n), 3).reshape(n, 9), np.zeros((n, 3), np.uint32))
    for dtype in (">i8", ">i4"):
        with pytest.raises(TypeError):
            scan.stl_binary(data, n, np.empty(3 * n, dtype), np.empty(3 * n, np.int64), np.empty(n, bool), 1e-4, 8.0, 0)
    with pytest.raises(TypeError):
        scan.stl_write(np.zeros((3, 3), ">f8"), np.zeros((1, 3), np.int64))
    # native.py's wrappers convert or step aside: the numpy path's bytes
    mesh = Mesh(np.eye(3).astype(">f8"), np.array([[0, 1, 2]]).astype(">i8"))
    with scanner_off():
        want = stl.write(mesh, "binary")
    assert stl.write(mesh, "binary") == want


def test_zero_records_and_rows():
    data = binary_stl(np.zeros((0, 9), np.uint32), np.zeros((0, 3), np.uint32))
    got = native.stl_binary(data, 0, stl.NORMAL_TOLERANCE)
    assert got is not None and got.vertices.shape == (0, 3) and got.faces.shape == (0, 3)
    assert (got.foreign, got.tagged) == (0, 0)
    welded = native.weld_rows(np.zeros((0, 3)))
    assert welded is not None and welded[0].shape == (0, 3) and welded[1].shape == (0,)
    checked = native.face_checks(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3)), 1e-4)
    assert checked is not None and checked[0] == 0 and checked[1].shape == (0,)
    assert native.stl_write(np.zeros((0, 3)), np.zeros((0, 3), np.int64)) == bytes(80) + bytes(4)


# ---- the GIL released ----------------------------------------------------------------------------


def test_an_input_resized_by_another_thread_meanwhile_is_refused_by_python():
    """stl_binary holds its input's buffer while it runs without the GIL: a bytearray cannot be
    resized under it (BufferError in the resizing thread), and the answer is the file's."""
    n = 300_000
    bits = distinct_bits(9 * n)
    data = bytearray(binary_stl(bits.reshape(n, 9), np.zeros((n, 3), np.uint32)))
    with scanner_off():
        want = stl.parse_binary(bytes(data), "x.stl", Limits())
    done = threading.Event()

    def resize() -> None:  # (refused while a call holds the buffer; else it moves the bytes)
        while not done.is_set():
            try:
                data.extend(b"\0" * 4096)
                del data[-4096:]
            except BufferError:
                pass

    t = threading.Thread(target=resize)
    t.start()
    try:
        got = [native.stl_binary(data, n, stl.NORMAL_TOLERANCE) for _ in range(3)]
    finally:
        done.set()
        t.join()
    for g in got:
        assert g is not None
        assert g.vertices.tobytes() == want.vertices.tobytes() and np.array_equal(g.faces, want.faces)


def test_threads_parse_at_once_and_agree_with_one_thread():
    rng = np.random.default_rng(4)
    files = []
    for j in range(4):
        n = 20_000 + 1000 * j
        corners = rng.integers(0, 40, size=(n, 9)).astype(np.float32).view("<u4")
        files.append(binary_stl(corners, rng.integers(0, 2**32, size=(n, 3), dtype=np.uint32)))
    alone = [stl.parse_binary(d, "x.stl", Limits()) for d in files]
    results: list = [None] * len(files)

    def work(j: int) -> None:
        for _ in range(5):
            results[j] = stl.parse_binary(files[j], "x.stl", Limits())

    threads = [threading.Thread(target=work, args=(j,)) for j in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, results, strict=True):
        assert a.vertices.tobytes() == b.vertices.tobytes() and np.array_equal(a.faces, b.faces)
        assert np.array_equal(a.keep, b.keep) and a.metadata == b.metadata


# ---- whitelisting ----------------------------------------------------------------------------------


def test_export_holds_no_byte_of_the_inputs_header_attributes_or_normals():
    """A file whose header, attribute bytes and stored normals carry a payload: the binary STL
    written from it (load, then sanitize's writer) has 80 zero header bytes, zero attribute
    bytes and geometric normals, so no byte of the payload; both paths write the same file."""
    n = 64
    rng = np.random.default_rng(9)
    corners = rng.normal(size=(n, 9)).astype(np.float32).view("<u4")
    secret = b"PATIENT Jane Doe 1970-01-01 ID#123456789"
    normals = np.frombuffer((secret * 20)[: 12 * n], "<u4").reshape(n, 3)
    attr = np.frombuffer((secret * 4)[: 2 * n], "<u2")
    data = binary_stl(corners, normals, attr, header=secret)
    from occlutrace_compute.meshes import mesh_to_bytes
    from occlutrace_compute.meshes.sanitize import sanitize_bytes

    loaded = load_mesh(data=data, name="x.stl")
    out = mesh_to_bytes(loaded.mesh, "stl", "binary")
    assert out == sanitize_bytes(data, "x.stl")
    with scanner_off():
        assert mesh_to_bytes(loaded.mesh, "stl", "binary") == out
    assert out[:80] == bytes(80) and struct.unpack("<I", out[80:84]) == (n,)
    rec = np.frombuffer(out, stl.RECORD, offset=84)
    assert not rec["attr"].any()
    assert np.allclose(rec["normal"], stl.geometric_normals(rec["v"]), rtol=0, atol=1e-6)
    for j in range(len(secret) - 6):
        assert secret[j : j + 6] not in out


# ---- validate's trust in the parser's mask --------------------------------------------------------


@pytest.mark.parametrize("mask", [np.array([1, 1, 1], np.uint8), np.array([1, 1, 1], np.int64), np.ones(4, bool)])
def test_validate_takes_a_parsers_keep_mask_only_when_it_is_one_bool_a_face(mask):
    """Parsed.keep (binary STL's one pass) indexes the faces: a mask of another dtype would be
    taken as face numbers (f[[1, 1, 1]]: face 1 thrice) and one of another length would not fit;
    validate then computes the mask itself."""
    from occlutrace_compute.meshes.parsed import Parsed

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    f = np.array([[0, 1, 2], [0, 1, 3], [0, 0, 3]], np.int64)  # the last one degenerate
    mesh, warnings = validate(Parsed(v, f, None, [], keep=mask), "x.stl", Limits(units="warn"))
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 1, 3]]
    assert "dropped 1 degenerate faces (zero area)" in warnings


# ---- ASCII STL: the float weld and face checks in a real parse --------------------------------------

NUMBER_TEXTS = ["0", "-0", "0.0", "-0.000", "+0", "1", "1.0", "1e0", "10e-1", "-1", "2.5", "1e-310", "-4.9e-324",
                "1.7976931348623157e308", "3.4e38", "0.1", "0.10000000000000001", "1e-4", "-7.25"]  # fmt: skip


@st.composite
def ascii_files(draw) -> bytes:
    """ASCII STL in the common layout whose coordinates are spellings of a few values (0 and -0
    in several spellings, equal values written apart, denormals, the largest
    double) so the text weld leaves equal floats apart for weld_rows; normals the same or the
    facet's geometric one written out, some moved by about the tolerance."""
    m = draw(st.integers(1, 40))
    pool = draw(st.lists(st.sampled_from(NUMBER_TEXTS), min_size=1, max_size=6))
    lines = ["solid hostile"]
    for _ in range(m):
        corners = [[draw(st.sampled_from(pool)) for _ in range(3)] for _ in range(3)]
        normal = [draw(st.sampled_from(pool)) for _ in range(3)]
        tri = np.array([[float(x) for x in c] for c in corners])
        g = stl.geometric_normals(tri[None])[0] + draw(st.sampled_from([0.0, 0.99e-4, 1.01e-4]))
        if draw(st.booleans()) and np.isfinite(g).all():  # (inf - inf: 'nan', which the fast path refuses)
            normal = [repr(float(x)) for x in g]
        lines.append("  facet normal " + " ".join(normal))
        lines.append("    outer loop")
        lines += ["      vertex " + " ".join(c) for c in corners]
        lines += ["    endloop", "  endfacet"]
    lines.append("endsolid hostile")
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ascii_files())
def test_ascii_files_of_equal_values_spelt_apart_load_as_on_the_python_path(data):
    assert stl.parse_ascii_fast(data, "a.stl", Limits()) is not None  # the native weld and checks ran

    def load(data: bytes):
        try:
            loaded = load_mesh(data=data, name="a.stl", limits=Limits(units="warn"))
        except InputRejected as e:
            return str(e)
        return loaded.mesh.vertices.tobytes(), loaded.mesh.faces.tobytes(), loaded.metadata, loaded.warnings

    got = load(data)
    with scanner_off():
        assert load(data) == got
