"""Fuzzing the loaders: every input ends as a valid Mesh or InputRejected, quickly, in bounded memory."""

from __future__ import annotations

import re
import signal
import struct
import time
import tracemalloc
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import trimesh

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, Mesh, load_mesh, mesh_to_bytes, sanitize_bytes

CASE_SECONDS = 5.0  # one input may never take longer (a hang fails the test)
BUDGET_SECONDS = 12.0  # the whole random sweep
MAX_CASES = 4000


def seeds() -> dict[str, bytes]:
    """Real files of every format and encoding (small, so many cases fit the time budget)."""
    s = trimesh.creation.icosphere(subdivisions=1, radius=15.0)
    c = np.random.default_rng(5).integers(0, 256, (len(s.vertices), 4), dtype=np.uint8)
    mesh = Mesh(s.vertices, s.faces.astype(np.int64), c)
    files = {
        "a.stl": mesh_to_bytes(mesh, "stl"),
        "b.stl": b"solid x\n" + mesh_to_bytes(mesh, "stl", "ascii")[6:],
        "c.obj": b"# c\no x\n" + mesh_to_bytes(mesh, "obj"),
        "d.ply": mesh_to_bytes(mesh, "ply"),
        "e.ply": mesh_to_bytes(mesh, "ply", "ascii"),
    }
    le = files["d.ply"]
    head, _, _ = le.partition(b"end_header\n")
    vr = np.empty(len(s.vertices), [("p", ">f8", (3,)), ("c", "u1", (4,))])  # icosphere is float64
    vr["p"], vr["c"] = s.vertices, c
    fr = np.empty(len(s.faces), [("n", "u1"), ("i", ">i4", (3,))])
    fr["n"], fr["i"] = 3, s.faces
    files["f.ply"] = head.replace(b"little", b"big") + b"end_header\n" + vr.tobytes() + fr.tobytes()
    return files


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout


def run_case(data: bytes, name: str, what: str) -> str:
    """'ok' or 'rejected'; fails the test on any other exception or a case over CASE_SECONDS."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a numpy overflow/invalid warning is an unguarded path
            lm = load_mesh(data=data, name=name)
            m = lm.mesh
            assert np.isfinite(m.vertices).all() and m.n_faces > 0
            assert m.faces.min() >= 0 and m.faces.max() < m.n_vertices
            assert m.vertex_colors is None or m.vertex_colors.shape == (m.n_vertices, 4)
            sanitize_bytes(data, name)  # what loads must also sanitize (its own self-check included)
        return "ok"
    except InputRejected as e:
        assert str(e).startswith(f"{name}: ") and e.problem
        return "rejected"
    except CaseTimeout:
        pytest.fail(f"{what}: over {CASE_SECONDS} s")
    except Exception as e:
        pytest.fail(f"{what}: {type(e).__name__}: {e}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


VOCAB = [
    "ply",
    "format",
    "ascii",
    "binary_little_endian",
    "binary_big_endian",
    "element",
    "vertex",
    "face",
    "edge",
    "property",
    "list",
    "uchar",
    "char",
    "int",
    "uint",
    "short",
    "float",
    "double",
    "x",
    "y",
    "z",
    "red",
    "alpha",
    "vertex_indices",
    "comment",
    "end_header",
    "v",
    "f",
    "vt",
    "vn",
    "o",
    "g",
    "s",
    "#",
    "mtllib",
    "usemtl",
    "solid",
    "endsolid",
    "facet",
    "normal",
    "outer",
    "loop",
    "endloop",
    "endfacet",
    "0",
    "1",
    "-1",
    "3",
    "255",
    "1/2/3",
    "1//1",
    "-5",
    "nan",
    "inf",
    "1e309",
    "0.5",
    "4294967295",
    "99999999999999999999",
    "/",
    "//",
]


def edit_lines(rng: np.random.Generator, data: bytes) -> bytes:
    """Word- and line-level edits of a text file or a PLY header: gets past the first checks."""
    head, sep, body = data.partition(b"end_header\n") if data.startswith(b"ply") else (data, b"", b"")
    lines = head.decode("latin-1").split("\n")
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(len(lines)))
        words = lines[i].split()
        op = rng.integers(4)
        if op == 0 and words:
            words[rng.integers(len(words))] = VOCAB[rng.integers(len(VOCAB))]
        elif op == 1:
            words.insert(int(rng.integers(len(words) + 1)), VOCAB[rng.integers(len(VOCAB))])
        elif op == 2:
            lines.insert(i, lines[rng.integers(len(lines))])
            continue
        elif len(lines) > 2:
            del lines[i]
            continue
        lines[i] = " ".join(words)
    return "\n".join(lines).encode("latin-1") + sep + body


def mutations(rng: np.random.Generator, files: dict[str, bytes]) -> Iterator[tuple[bytes, str, str]]:
    names = sorted(files)
    while True:
        name = names[rng.integers(len(names))]
        data = files[name]
        kind = rng.integers(6)
        if kind == 5 and name != "a.stl":
            yield edit_lines(rng, data), name, f"{name} with edited lines"
            continue
        if kind == 0:
            cut = int(rng.integers(len(data)))
            yield data[:cut], name, f"{name} truncated at {cut}"
        elif kind == 1:
            buf = bytearray(data)
            flips = rng.integers(len(buf) * 8, size=int(rng.integers(1, 9)))
            for bit in flips:
                buf[bit // 8] ^= 1 << (bit % 8)
            yield bytes(buf), name, f"{name} bits {flips.tolist()} flipped"
        elif kind == 2:
            n = int(rng.integers(0, 3000))
            junk = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            yield junk, name, f"{n} random bytes as {name}"
        elif kind == 3:
            keep = int(rng.integers(0, min(len(data), 400)))
            junk = rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8).tobytes()
            yield data[:keep] + junk, name, f"{name} head {keep} + random tail"
        elif kind == 4:
            buf = bytearray(data)
            pos = int(rng.integers(len(buf)))
            chunk = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
            buf[pos : pos + len(chunk)] = chunk
            yield bytes(buf), name, f"{name} overwritten at {pos}"


def test_random_mutations_end_in_mesh_or_rejection():
    files = seeds()
    rng = np.random.default_rng(20260101)
    outcomes = {"ok": 0, "rejected": 0}
    deadline = time.monotonic() + BUDGET_SECONDS
    for i, (data, name, what) in enumerate(mutations(rng, files)):
        if i >= MAX_CASES or time.monotonic() > deadline:
            break
        outcomes[run_case(data, name, what)] += 1
    assert outcomes["rejected"] > 100 and outcomes["ok"] > 10, outcomes  # both paths exercised


def test_every_seed_loads_and_nan_injection_is_rejected():
    for name, data in seeds().items():
        assert run_case(data, name, name) == "ok"
        if name.endswith(".obj") or name in ("b.stl", "e.ply"):
            text = data.decode()
            at = text.index("vertex ") if name.endswith(".stl") else text.find("end_header")
            number = re.compile(r"(?<=[ \n])-?\d+\.\d+").search(text, at)  # a first-vertex coordinate
            bad = (text[: number.start()] + "nan" + text[number.end() :]).encode()
        else:
            buf = bytearray(data)
            if name.endswith(".stl"):
                struct.pack_into("<f", buf, 84 + 12 + 4, float("nan"))  # first corner's y
            else:
                order = "<" if b"little" in data[:60] else ">"
                fmt = "d" if b"double x" in data[:200] else "f"
                start = data.index(b"end_header\n") + 11
                struct.pack_into(order + fmt, buf, start, float("inf"))
            bad = bytes(buf)
        with pytest.raises(InputRejected, match="non-finite"):
            load_mesh(data=bad, name=name)


def huge_headers() -> Iterator[tuple[bytes, str]]:
    files = seeds()
    stl = bytearray(files["a.stl"])
    for count in (2**32 - 1, 10**9, 200_000):
        struct.pack_into("<I", stl, 80, count)
        yield bytes(stl), "a.stl"
    for name in ("d.ply", "e.ply", "f.ply"):
        for element in (b"vertex", b"face"):
            for count in (b"4294967295", b"1000000000", b"4999999", b"9999999", b"99999999999999999999"):
                declared = b"element " + element + b" " + count
                yield re.sub(rb"element " + element + rb" \d+", declared, files[name], count=1), name
    ply = bytearray(files["d.ply"])
    first_face = ply.index(b"end_header\n") + 11 + 42 * (3 * 8 + 4)  # 42 vertices: 3 double + 4 uchar
    ply[first_face] = 255  # a first polygon claiming 255 corners
    yield bytes(ply), "d.ply"
    yield files["d.ply"].replace(b"list uchar int", b"list uint int"), "d.ply"


def test_huge_header_counts_are_rejected_before_allocation():
    tracemalloc.start()
    try:
        for data, name in huge_headers():
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            with pytest.raises(InputRejected):
                load_mesh(data=data, name=name)
            peak = tracemalloc.get_traced_memory()[1] - base
            assert peak < 2_000_000 + 20 * len(data), (name, peak)
    finally:
        tracemalloc.stop()


# --- issue 11: one polygon with a million corners (the old loader triangulated it in a loop) --------


def one_polygon(fmt: str, corners: int) -> tuple[bytes, str]:
    """4 vertices and ONE polygon cycling over three of them: its fan (0, j, j+1) has no
    degenerate triangle, so every one of its corners - 2 triangles is kept."""
    verts = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    idx = np.arange(corners) % 3 + 1
    idx[0] = 0
    if fmt == "obj":
        head = "".join(f"v {x} {y} {z}\n" for x, y, z in verts)
        return (head + "f " + " ".join(map(str, idx + 1)) + "\n").encode(), "poly.obj"
    enc = "ascii" if fmt == "ply-ascii" else "binary_little_endian"
    head = (
        f"ply\nformat {enc} 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uint int vertex_indices\nend_header\n"
    ).encode()
    if fmt == "ply-ascii":
        body = " ".join(map(str, verts.ravel())) + f"\n{corners} " + " ".join(map(str, idx)) + "\n"
        return head + body.encode(), "poly.ply"
    return head + verts.astype("<f4").tobytes() + struct.pack("<I", corners) + idx.astype("<i4").tobytes(), "poly.ply"


@pytest.mark.parametrize("fmt", ["ply-binary", "ply-ascii", "obj"])
def test_issue11_one_huge_polygon_is_refused_naming_file_and_polygon(fmt):
    data, name = one_polygon(fmt, 400_000)
    with pytest.raises(InputRejected) as e:
        load_mesh(data=data, name=name)
    assert str(e.value).startswith(f"{name}: ") and "polygon 1 has 400000 corners" in str(e.value)
    assert "limit of 1000 corners per polygon" in str(e.value)


@pytest.mark.parametrize("fmt", ["ply-binary", "ply-ascii", "obj"])
def test_issue11_huge_polygon_within_the_limit_loads_in_bounded_memory(fmt):
    """Allowed by a raised limit, a 200k-corner polygon is fan-triangulated with numpy: peak
    memory stays within a small multiple of the triangle array (bench/ measures the constant)."""
    corners = 200_000
    data, name = one_polygon(fmt, corners)
    tracemalloc.start()
    try:
        lm = load_mesh(data=data, name=name, limits=Limits(max_polygon_corners=corners))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lm.mesh.n_faces == corners - 2
    triangle_bytes = (corners - 2) * 3 * 8
    assert peak < 6 * triangle_bytes + 20 * len(data), (peak, triangle_bytes)


def test_issue11_triangles_implied_by_polygons_are_checked_before_triangulating():
    """Ten 200-corner polygons are 10 faces in the header but 1980 triangles."""
    verts = "".join(f"v {x} {y} 0\n" for x, y in [(0, 0), (10, 0), (0, 10), (10, 10)])
    face = "f 1 " + " ".join(str(2 + j % 3) for j in range(199)) + "\n"
    data = (verts + face * 10).encode()
    with pytest.raises(InputRejected, match="the 10 polygons make 1980 triangles > limit 1000"):
        load_mesh(data=data, name="many.obj", limits=Limits(max_faces=1000))
    assert load_mesh(data=data, name="many.obj").mesh.n_faces > 0
