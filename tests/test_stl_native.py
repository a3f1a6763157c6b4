"""Binary STL's one C++ pass (native.stl_binary: _textscan.cpp's stl_binary and stl_vertices)
against the numpy path it replaces (OCCLUTRACE_NO_NATIVE=1: merge_exact, _foreign_normals,
validate._non_degenerate): the same vertices bit for bit (-0.0 and 0.0 apart, NaN payloads,
signalling NaNs quieted alike), faces, foreign-normal and attribute counts, degenerate faces and
verdicts, on random and hostile records (all corners equal, all distinct, normals at the
tolerance's edge, NaN and infinite normals, 0 and 1 records, truncated files), whatever the
hash seed and when the probe budget runs out (the exact fallback). Then a file trimesh wrote, and
the pass's memory. Skipped where the extension is not built.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import native, stl
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.load import load_mesh
from occlutrace_compute.meshes.validate import _non_degenerate
from tests.parse_equivalence import binary_stl, scanner_off, verdict

scan = pytest.importorskip("occlutrace_compute.meshes._textscan")

SPECIALS = [
    0x00000000,  # 0.0
    0x80000000,  # -0.0
    0x7FC00000,  # NaN
    0x7FC00001,  # NaN, another payload
    0xFFC00000,  # -NaN
    0x7F800001,  # signalling NaN (quieted by the float64 cast)
    0x7F800000,  # inf
    0xFF800000,  # -inf
    0x00000001,  # the smallest denormal
    0x3F800000,  # 1.0
    0x3F800001,  # 1.0 + ulp
]


@st.composite
def stl_files(draw) -> bytes:
    """Records whose corners come from a small pool (so they repeat, as in a closed mesh, and
    faces degenerate) of special bit patterns, random bits and points of a small grid (flat and
    sliver faces); normals as random bits, zero, the geometric normal, or the geometric normal
    moved by about the tolerance (both sides of it), NaN or inf; attribute bytes; trailing bytes."""
    n = draw(st.integers(0, 80))
    grid = [np.float32(x).view("<u4") for x in (0.0, 1.0, 2.0, 1e-30, 3.5, -7.25, 1e30)]
    pool = draw(st.lists(st.sampled_from(SPECIALS + grid) | st.integers(0, 2**32 - 1), min_size=1, max_size=10))
    bits = np.array(draw(st.lists(st.sampled_from(pool), min_size=9 * n, max_size=9 * n)), dtype="<u4")
    corners = bits.view(np.float32).reshape(n, 3, 3)
    geometric = stl.geometric_normals(corners).astype(np.float32)
    normals = np.zeros((n, 3), dtype=np.float32)
    kinds = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    for r, kind in enumerate(kinds):
        if kind == 0:
            normals[r] = np.array(draw(st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3)), "<u4").view(
                np.float32
            )
        elif kind == 2:
            normals[r] = geometric[r]
        elif kind == 3:
            step = draw(st.sampled_from([0.99e-4, 1.0e-4, 1.01e-4, -1.0e-4, 5e-5]))
            normals[r] = geometric[r] + np.float32(step) * (np.arange(3) == draw(st.integers(0, 2)))
        elif kind == 4:
            normals[r] = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)[draw(st.integers(0, 2))]
        # kind 1, 5: zero (the usual "no normal")
    attr = np.array(draw(st.lists(st.sampled_from([0, 0, 1, 0xFFFF]), min_size=n, max_size=n)), dtype="<u2")
    return binary_stl(corners, normals, attr, draw(st.binary(max_size=7)))


def parsed_both_ways(data: bytes):
    """parse_binary with the one pass and on the numpy path, and the one pass's own result."""
    native_parsed = stl.parse_binary(data, "x.stl", Limits())
    with scanner_off():
        python_parsed = stl.parse_binary(data, "x.stl", Limits())
    return native_parsed, python_parsed


def assert_same_parse(a, b) -> None:
    assert a.vertices.dtype == b.vertices.dtype == np.float64
    assert a.vertices.tobytes() == b.vertices.tobytes()  # bit for bit: -0.0, NaN payloads
    assert a.faces.dtype == b.faces.dtype == np.int64
    assert np.array_equal(a.faces, b.faces)
    assert a.metadata == b.metadata and a.warnings == b.warnings


def loaded_alike(data: bytes, name: str):
    """load_mesh of data with the scanner and without it: the same mesh, metadata and warnings
    (bit for bit); the scanner's LoadedMesh."""
    native_loaded = load_mesh(data=data, name=name)
    with scanner_off():
        python_loaded = load_mesh(data=data, name=name)
    assert native_loaded.mesh.vertices.tobytes() == python_loaded.mesh.vertices.tobytes()
    assert np.array_equal(native_loaded.mesh.faces, python_loaded.mesh.faces)
    assert native_loaded.metadata == python_loaded.metadata and native_loaded.warnings == python_loaded.warnings
    return native_loaded


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stl_files())
def test_one_pass_gives_the_numpy_paths_parse_and_verdict(data):
    native_parsed, python_parsed = parsed_both_ways(data)
    assert python_parsed.keep is None
    n = int(np.frombuffer(data, "<u4", 1, 80)[0])
    if n:
        assert native_parsed.keep is not None  # the one pass ran (else this compares a path with itself)
        assert np.array_equal(native_parsed.keep, _non_degenerate(native_parsed.vertices, native_parsed.faces))
    assert_same_parse(native_parsed, python_parsed)
    assert verdict(native_parsed) == verdict(python_parsed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stl_files(), st.integers(1, 2**64 - 1), st.sampled_from([0.0, 0.1, 1.0]))
def test_the_answer_does_not_depend_on_the_seed_and_a_spent_budget_falls_back(data, seed, probes):
    """Any seed gives the same vertices and faces (only the table's layout changes); a budget
    too small for the file gives None, never a partial answer, and parse_binary then takes the
    exact numpy path."""
    n = int(np.frombuffer(data, "<u4", 1, 80)[0])
    ref = native.stl_binary(data, n, stl.NORMAL_TOLERANCE, seed=1)
    assert ref is not None
    got = native.stl_binary(data, n, stl.NORMAL_TOLERANCE, seed=seed)
    assert got is not None
    for field in ("vertices", "faces", "keep"):
        assert getattr(got, field).tobytes() == getattr(ref, field).tobytes()
    assert (got.foreign, got.tagged) == (ref.foreign, ref.tagged)
    starved = native.stl_binary(data, n, stl.NORMAL_TOLERANCE, probes=probes, seed=seed)
    if probes == 0.0 and 3 * n > 64:
        assert starved is None  # 64 probes in all, one at least a corner
    if starved is not None:
        assert starved.vertices.tobytes() == ref.vertices.tobytes()


def test_a_spent_budget_in_parse_binary_gives_the_numpy_paths_answer(monkeypatch):
    rng = np.random.default_rng(5)
    corners = rng.integers(0, 6, size=(500, 3, 3)).astype(np.float32)
    data = binary_stl(corners, np.zeros((500, 3), np.float32))
    calls = []

    def starved(data, n, tolerance, probes=8.0, seed=0):
        result = real(data, n, tolerance, probes=0.0, seed=seed)
        calls.append(result)
        return result

    real = native.stl_binary
    monkeypatch.setattr(native, "stl_binary", starved)
    got = stl.parse_binary(data, "x.stl", Limits())
    assert calls == [None] and got.keep is None  # the fallback ran
    monkeypatch.undo()
    assert_same_parse(got, stl.parse_binary(data, "x.stl", Limits()))


@pytest.mark.parametrize("shape", ["all_equal", "all_distinct", "two_values", "signed_zeros"])
def test_hostile_corner_layouts_weld_like_the_numpy_path(shape):
    """200k records (600k corners): one corner repeated (one vertex, every face degenerate: the
    table holds one key), every corner distinct (the table doubles up to its cap), corners of two
    values, and +-0.0 in every combination (8 bitwise-distinct vertices, equal as numbers)."""
    n = 200_000
    if shape == "all_equal":
        corners = np.full((n, 3, 3), 1.5, dtype=np.float32)
    elif shape == "all_distinct":
        corners = (np.arange(9 * n, dtype=np.float32) * np.float32(1e-3)).reshape(n, 3, 3)
    elif shape == "two_values":
        corners = np.random.default_rng(1).integers(0, 2, size=(n, 3, 3)).astype(np.float32)
    else:
        corners = np.where(np.random.default_rng(2).integers(0, 2, size=(n, 3, 3)) == 1, -0.0, 0.0).astype(np.float32)
    data = binary_stl(corners, np.zeros((n, 3), np.float32))
    one_pass = native.stl_binary(data, n, stl.NORMAL_TOLERANCE)
    assert one_pass is not None  # the default budget covers these (the fallback is for crafted files)
    native_parsed, python_parsed = parsed_both_ways(data)
    assert_same_parse(native_parsed, python_parsed)
    assert verdict(native_parsed) == verdict(python_parsed)
    expected = {"all_equal": 1, "all_distinct": 3 * n, "two_values": 8, "signed_zeros": 8}[shape]
    assert len(native_parsed.vertices) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"\0" * 83,  # shorter than the header
        b"\0" * 80 + struct.pack("<I", 2) + b"\0" * 99,  # one byte short of 2 records
        b"\0" * 80 + struct.pack("<I", 2**32 - 1) + b"\0" * 50,  # a huge count over a 1-record file
    ],
)
def test_truncated_files_are_refused_alike(data):
    with pytest.raises(InputRejected, match="truncated") as native_error:
        stl.parse_binary(data, "x.stl", Limits())
    with scanner_off(), pytest.raises(InputRejected, match="truncated") as python_error:
        stl.parse_binary(data, "x.stl", Limits())
    assert str(native_error.value) == str(python_error.value)


def test_no_records_and_one_record():
    empty = binary_stl(np.zeros((0, 3, 3), np.float32), np.zeros((0, 3), np.float32))
    with pytest.raises(InputRejected, match="empty mesh: no vertices"):
        load_mesh(data=empty, name="x.stl")
    with scanner_off(), pytest.raises(InputRejected, match="empty mesh: no vertices"):
        load_mesh(data=empty, name="x.stl")
    one = binary_stl(np.array([[[0, 0, 0], [10, 0, 0], [0, 10, 0]]], np.float32), np.array([[0, 0, 1]], np.float32))
    native_parsed, python_parsed = parsed_both_ways(one)
    assert_same_parse(native_parsed, python_parsed)
    assert native_parsed.keep is not None and native_parsed.keep.tolist() == [True]
    assert native_parsed.faces.tolist() == [[0, 1, 2]] and native_parsed.metadata[1:] == []


def test_a_file_trimesh_wrote_loads_alike_and_as_trimesh_reads_it():
    """A binary STL written by trimesh (its own normals, float32 records): the same mesh on both
    paths, no foreign normals reported, and the triangles trimesh reads from the file."""
    trimesh = pytest.importorskip("trimesh")
    source = trimesh.creation.annulus(r_min=5.0, r_max=12.0, height=3.0, sections=400)
    source.vertices[:, 0] += np.random.default_rng(0).normal(scale=1e-3, size=len(source.vertices))
    data = source.export(file_type="stl")
    assert len(data) == 84 + 50 * len(source.faces)
    native_loaded = loaded_alike(data, "trimesh.stl")
    assert not [m for m in native_loaded.metadata if m[0] == "stl.normal_bytes"]
    import io

    theirs = trimesh.load(io.BytesIO(data), file_type="stl", process=False)
    ours = native_loaded.mesh.vertices[native_loaded.mesh.faces]
    assert np.array_equal(ours, np.asarray(theirs.triangles, dtype=np.float64))


def test_stored_normals_are_counted_as_the_numpy_path_counts_them():
    """Normals written exactly, off by just under and just over the tolerance, zero, NaN: the
    numbers in the metadata are _foreign_normals' on the same records."""
    rng = np.random.default_rng(3)
    corners = rng.normal(size=(2000, 3, 3)).astype(np.float32)
    normals = stl.geometric_normals(corners).astype(np.float32)
    normals[::5, 0] += np.float32(0.9e-4)
    normals[1::5, 1] -= np.float32(1.1e-4)
    normals[2::5] = 0
    normals[3::7, 2] = np.nan
    data = binary_stl(corners, normals)
    one_pass = native.stl_binary(data, 2000, stl.NORMAL_TOLERANCE)
    assert one_pass is not None
    rec = np.frombuffer(data, stl.RECORD, count=2000, offset=84)
    assert one_pass.foreign == stl._foreign_normals(rec["normal"], rec["v"]) > 0


def test_bad_arguments_are_refused():
    data = binary_stl(np.zeros((2, 3, 3), np.float32), np.zeros((2, 3), np.float32))
    faces, first, keep = np.empty(6, np.int64), np.empty(6, np.int32), np.empty(2, bool)
    with pytest.raises(ValueError, match="n records"):
        scan.stl_binary(data, 3, faces, first, keep, 1e-4, 8.0, 0)
    with pytest.raises(ValueError, match="3n items"):
        scan.stl_binary(data, 2, faces[:5], first, keep, 1e-4, 8.0, 0)
    with pytest.raises(ValueError, match="share memory"):
        scan.stl_binary(data, 2, faces, faces.view(np.int32)[:6], keep, 1e-4, 8.0, 0)
    with pytest.raises(ValueError, match="probes"):
        scan.stl_binary(data, 2, faces, first, keep, 1e-4, float("nan"), 0)
    assert scan.stl_binary(data, 2, faces, first, keep, 1e-4, 8.0, 0) == (1, 0, 0)
    with pytest.raises(IndexError):
        scan.stl_vertices(data, 2, np.array([6], np.int32), np.empty((1, 3)))
    with pytest.raises(ValueError, match="3 values"):
        scan.stl_vertices(data, 2, np.array([0], np.int32), np.empty((2, 3)))


def test_the_one_pass_keeps_load_memory_near_the_file_size():
    """Peak traced memory (numpy arrays and the table, PyMem_Raw) of load_mesh on a 4 MB binary
    STL: ~1.25x the file with the one pass; the numpy path's per-corner arrays (record copies,
    index columns, float64 normal columns) took ~2.7x."""
    import tracemalloc

    trimesh = pytest.importorskip("trimesh")
    from occlutrace_compute.meshes import Mesh, mesh_to_bytes

    s = trimesh.creation.icosphere(subdivisions=6, radius=20.0)
    data = mesh_to_bytes(Mesh(s.vertices, s.faces.astype(np.int64)), "stl", "binary")
    load_mesh(data=data, name="m.stl")  # first-use caches
    tracemalloc.start()
    try:
        loaded = load_mesh(data=data, name="m.stl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.mesh.n_faces == len(s.faces)
    assert peak < 1.6 * len(data), peak / len(data)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 300),
    st.floats(1e-6, 1e30),
    st.sampled_from(["float64", "float32"]),
    st.sampled_from(["int64", "int32", "uint32"]),
)
def test_binary_export_in_one_pass_gives_the_numpy_paths_bytes(seed, n_faces, scale, vdtype, fdtype):
    """stl.write(mesh, "binary") by native.stl_write and by the numpy columns: the same bytes for
    random meshes at any scale (past float32's range: infinite corners), with repeated corners
    (zero normals), slivers, -0.0, NaN and infinite coordinates, float32 vertices and int32 or
    uint32 faces; an index out of range or negative goes to the numpy path (which wraps or raises)."""
    from occlutrace_compute.meshes.model import Mesh

    rng = np.random.default_rng(seed)
    v = rng.normal(size=(max(3, n_faces // 2), 3)) * scale
    v[-1] = v[-2] + 1e-12 * scale  # a sliver's corners
    specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-320])
    v.ravel()[rng.integers(0, v.size, size=3)] = rng.choice(specials, size=3)
    f = rng.integers(0, len(v), size=(n_faces, 3))
    f[: n_faces // 5, 1] = f[: n_faces // 5, 0]  # degenerate faces
    mesh = Mesh(v.astype(vdtype), f.astype(fdtype))
    got = stl.write(mesh, "binary")
    assert native.stl_write(mesh.vertices, mesh.faces) == got
    with scanner_off():
        assert stl.write(mesh, "binary") == got
    if n_faces and fdtype != "uint32":
        f[-1, 2] = -1  # numpy wraps it to the last vertex
        wrapped = Mesh(mesh.vertices, f.astype(fdtype))
        assert native.stl_write(wrapped.vertices, wrapped.faces) is None
        with scanner_off():
            want = stl.write(wrapped, "binary")
        assert stl.write(wrapped, "binary") == want
        f[-1, 2] = len(v)
        with pytest.raises(IndexError):
            stl.write(Mesh(mesh.vertices, f.astype(fdtype)), "binary")


@st.composite
def float_rows(draw) -> np.ndarray:
    """(k, 3) float64 rows drawn from a small pool (so rows repeat) of special values (+-0.0,
    NaNs with different payloads, infinities, denormals) and random floats."""
    specials = [0.0, -0.0, np.inf, -np.inf, 5e-324, 1.0, np.nextafter(1.0, 2.0)]
    nans = [np.array([0x7FF8000000000000 + p], dtype=np.uint64).view(np.float64)[0] for p in (0, 1, 2**40)]
    pool = draw(st.lists(st.sampled_from(specials + nans) | st.floats(allow_nan=False), min_size=1, max_size=8))
    k = draw(st.integers(0, 200))
    return np.array(draw(st.lists(st.sampled_from(pool), min_size=3 * k, max_size=3 * k)), dtype=np.float64).reshape(
        k, 3
    )


@settings(max_examples=150, deadline=None)
@given(float_rows(), st.integers(0, 2**64 - 1))
def test_weld_rows_is_merge_exact(rows, seed):
    """native.weld_rows (ASCII STL's float weld) gives merge_exact's rows, bit for bit, and
    indices, whatever the seed; a spent budget gives None, never a partial answer."""
    from occlutrace_compute.meshes.merge import merge_exact

    want_v, want_i = merge_exact(rows)
    got = native.weld_rows(rows, seed=seed)
    assert got is not None
    assert got[0].tobytes() == want_v.tobytes() and np.array_equal(got[1], want_i) and got[1].dtype == np.int64
    for initial in (0, 1):  # a table that starts small and doubles: the same answer
        k = len(rows)
        ranks, first = np.empty(k, np.int64), np.empty(k, np.int64)
        assert scan.weld_rows(rows, ranks, first, 8.0, seed, initial) == len(want_v)
        assert np.array_equal(ranks, want_i)
    if len(rows) > 64:
        assert native.weld_rows(rows, probes=0.0, seed=seed) is None


@settings(max_examples=150, deadline=None)
@given(float_rows(), st.integers(0, 2**32 - 1))
def test_face_checks_are_foreign_count_and_non_degenerate(rows, seed):
    """native.face_checks (ASCII STL's face pass) against stl._foreign_count and
    validate._non_degenerate on faces of special and random vertices, normals exact, off by
    about the tolerance, zero or random; an index out of range gives None."""
    if len(rows) == 0:
        rows = np.zeros((1, 3))
    rng = np.random.default_rng(seed)
    m = int(rng.integers(0, 100))
    faces = rng.integers(0, len(rows), size=(m, 3))
    corners = rows[faces]
    normals = stl.geometric_normals(corners)
    pick = rng.integers(0, 4, size=m)
    normals[pick == 1] += rng.choice([0.99e-4, 1.01e-4, -1e-4], size=(int(np.sum(pick == 1)), 3))
    normals[pick == 2] = 0.0
    normals[pick == 3] = rng.normal(size=(int(np.sum(pick == 3)), 3))
    got = native.face_checks(rows, faces, normals, stl.NORMAL_TOLERANCE)
    assert got is not None
    foreign = stl._foreign_count([normals[:, d] for d in range(3)], lambda c, d: corners[:, c, d])
    assert got[0] == foreign
    assert np.array_equal(got[1], _non_degenerate(rows, faces))
    if m:
        faces[-1, 0] = len(rows)
        assert native.face_checks(rows, faces, normals, stl.NORMAL_TOLERANCE) is None


@pytest.mark.parametrize("writer", ["ours", "trimesh"])
def test_ascii_stl_loads_alike_with_and_without_the_native_weld(writer):
    """An ASCII STL (ours, or trimesh's with its own normals, some moved off the geometric ones):
    the scanner's fast path (text weld, weld_rows, face_checks) and the Python path give the same
    mesh, metadata and warnings, degenerate faces dropped alike."""
    trimesh = pytest.importorskip("trimesh")
    from occlutrace_compute.meshes import Mesh, mesh_to_bytes

    s = trimesh.creation.icosphere(subdivisions=3, radius=11.0)
    faces = s.faces.astype(np.int64)
    faces[:7, 2] = faces[:7, 1]  # degenerate faces
    if writer == "ours":
        data = mesh_to_bytes(Mesh(s.vertices, faces), "stl", "ascii")
    else:
        t = trimesh.Trimesh(s.vertices, faces, process=False)
        data = trimesh.exchange.stl.export_stl_ascii(t).encode()
    lines = data.split(b"\n")
    for i in range(1, 7 * 40, 7 * 3):  # every third of the first 40 facets: a foreign normal
        assert lines[i].startswith(b"facet normal")
        lines[i] = b"facet normal 0.5 0.5 0.7"
    data = b"\n".join(lines)
    assert stl.parse_ascii_fast(data, "a.stl", Limits()) is not None  # the scanner's fast path reads it
    native_loaded = loaded_alike(data, "a.stl")
    assert native_loaded.mesh.n_faces == len(faces) - 7
    assert (
        "stl.facet_normal",
        "14 of 1280 facet normals are not the facet's geometric normal, replaced by computed normals",
    ) in (native_loaded.metadata)


M64 = 2**64 - 1


def _splitmix(x: int) -> tuple[int, int]:
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31), x


def _fold_mul(a: int, b: int) -> int:
    p = a * b
    return (p & M64) ^ (p >> 64)


def corner_hash(seed: int):
    """_textscan.cpp's KeyHash<3> for a table seeded with `seed` (a copy, to craft collisions)."""
    s0, seed = _splitmix(seed)
    s1, seed = _splitmix(seed)
    s2, seed = _splitmix(seed)
    s1 |= 1

    def h(x: int, y: int, z: int) -> int:
        v = _fold_mul((x | y << 32) ^ s0, s2 ^ s1)
        v = _fold_mul(z ^ s0, v ^ s1)
        return _fold_mul(v ^ s2, 0x9E3779B97F4A7C15)

    return h


def test_a_file_crafted_against_a_known_seed_spends_the_budget_and_falls_back_exactly():
    """90 distinct corners whose hashes under seed 1 share their low 8 bits (the largest table
    30 records get: 256 slots) make one cluster: ~90^2 / 2 probes, over the 8 x 90 + 64 budget.
    With seed 1 the pass gives up (None, not a quadratic loop); a fresh per-call seed welds the
    file natively; both answers are the numpy path's. A table without a probe cap would probe
    quadratically in the cluster's size."""
    h = corner_hash(1)
    rng = np.random.default_rng(11)
    keys: list[tuple[int, int, int]] = []
    while len(keys) < 90:
        x, y, z = (int(v) for v in rng.integers(0, 2**23, size=3))  # small positive floats' bits
        if h(x, y, z) & 255 == 0:
            keys.append((x, y, z))
    corners = np.array(keys, dtype="<u4").view(np.float32).reshape(30, 3, 3)
    data = binary_stl(corners, np.zeros((30, 3), np.float32))
    assert native.stl_binary(data, 30, stl.NORMAL_TOLERANCE, seed=1) is None
    fresh = native.stl_binary(data, 30, stl.NORMAL_TOLERANCE)
    assert fresh is not None and len(fresh.vertices) == 90
    with scanner_off():
        want = stl.parse_binary(data, "x.stl", Limits())
    assert fresh.vertices.tobytes() == want.vertices.tobytes() and np.array_equal(fresh.faces, want.faces)
    # a seed the file was not crafted against spreads the same keys: the default budget suffices
    assert native.stl_binary(data, 30, stl.NORMAL_TOLERANCE, seed=2) is not None
