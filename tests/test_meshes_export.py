"""Export round trips for every format x encoding, with and without colours; no metadata out."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from hypothesis import given, settings, strategies as st

from occlutrace_compute.meshes import Mesh, export_mesh, load_mesh, mesh_to_bytes

CASES = [(f, e, c) for f in ("stl", "obj", "ply") for e in ("binary", "ascii") for c in (False, True)]


def arch(colors: bool, float32_exact: bool = True) -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    v = s.vertices + np.array([1.0 / 3.0, -7.1, 0.2])
    if float32_exact:
        v = v.astype(np.float32).astype(np.float64)
    c = np.random.default_rng(4).integers(0, 256, (len(v), 4), dtype=np.uint8) if colors else None
    return Mesh(v, s.faces.astype(np.int64), c)


@pytest.mark.parametrize("fmt,encoding,colors", CASES)
def test_round_trip(tmp_path, fmt, encoding, colors):
    mesh = arch(colors)
    path = export_mesh(mesh, tmp_path / f"out.{fmt}", encoding=encoding)
    lm = load_mesh(path)
    assert lm.format == fmt and lm.encoding == ("ascii" if fmt == "obj" else encoding)
    assert lm.metadata == [] and lm.warnings == []
    if fmt == "stl":  # STL shares no vertices: compare triangles; no colours in STL
        assert np.array_equal(lm.mesh.vertices[lm.mesh.faces], mesh.vertices[mesh.faces])
        assert lm.mesh.vertex_colors is None
        return
    assert np.array_equal(lm.mesh.vertices, mesh.vertices)
    assert np.array_equal(lm.mesh.faces, mesh.faces)
    if not colors:
        assert lm.mesh.vertex_colors is None
    elif fmt == "ply":
        assert np.array_equal(lm.mesh.vertex_colors, mesh.vertex_colors)
    else:  # OBJ carries RGB only
        assert np.array_equal(lm.mesh.vertex_colors[:, :3], mesh.vertex_colors[:, :3])
        assert (lm.mesh.vertex_colors[:, 3] == 255).all()


@pytest.mark.parametrize("fmt,encoding", [("obj", "ascii"), ("ply", "binary"), ("ply", "ascii"), ("stl", "ascii")])
def test_float64_geometry_survives_text_and_ply(fmt, encoding):
    mesh = arch(False, float32_exact=False)
    lm = load_mesh(data=mesh_to_bytes(mesh, fmt, encoding), name=f"x.{fmt}")
    assert np.array_equal(lm.mesh.vertices[lm.mesh.faces], mesh.vertices[mesh.faces])


@pytest.mark.parametrize(
    "fmt,encoding", [("stl", "binary"), ("stl", "ascii"), ("ply", "binary"), ("ply", "ascii"), ("obj", "ascii")]
)
def test_exports_are_read_by_trimesh(tmp_path, fmt, encoding):
    """Interoperability: another reader sees the same triangles."""
    mesh = arch(False)
    path = export_mesh(mesh, tmp_path / f"x.{fmt}", encoding=encoding)
    other = trimesh.load(path, force="mesh", process=False)
    got = np.sort(np.round(other.vertices[other.faces].reshape(-1, 9), 5), axis=0)
    want = np.sort(np.round(mesh.vertices[mesh.faces].reshape(-1, 9), 5), axis=0)
    assert np.array_equal(got, want)


def test_exports_carry_no_metadata():
    mesh = arch(True)
    stl = mesh_to_bytes(mesh, "stl")
    assert stl[:80] == bytes(80)
    assert mesh_to_bytes(mesh, "stl", "ascii").startswith(b"solid\n")
    for fmt in ("ply", "obj"):
        for enc in ("binary", "ascii"):
            text = mesh_to_bytes(mesh, fmt, enc).partition(b"end_header")[0]  # PLY: the header
            assert b"comment" not in text and b"obj_info" not in text and b"#" not in text


def test_format_from_suffix_and_bad_arguments(tmp_path):
    mesh = arch(False)
    assert load_mesh(export_mesh(mesh, tmp_path / "a.PLY")).format == "ply"
    assert load_mesh(export_mesh(mesh, tmp_path / "a.bin", fmt="stl")).format == "stl"
    with pytest.raises(ValueError, match="unknown mesh format"):
        export_mesh(mesh, tmp_path / "a.xyz")
    with pytest.raises(ValueError, match="unknown encoding"):
        mesh_to_bytes(mesh, "ply", "utf8")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.floats(1e-6, 1e4))
def test_binary_stl_records_are_the_row_wise_normals_and_corners(seed, n_faces, scale):
    """stl._write_binary's column arithmetic gives the bytes of the row-wise version
    (geometric_normals over (M, 3, 3) corners): random meshes at any scale, with repeated corners
    (zero-area faces: zero normals) and sliver faces."""
    import struct

    from occlutrace_compute.meshes import stl
    from occlutrace_compute.meshes.model import Mesh

    rng = np.random.default_rng(seed)
    v = rng.normal(size=(max(3, n_faces // 2), 3)) * scale
    v[-1] = v[-2] + 1e-12 * scale  # a sliver's corners
    f = rng.integers(0, len(v), size=(n_faces, 3))
    f[: n_faces // 5, 1] = f[: n_faces // 5, 0]  # degenerate faces
    mesh = Mesh(v, f)
    tri = v[f]
    rec = np.zeros(n_faces, stl.RECORD)
    rec["normal"] = stl.geometric_normals(tri)
    rec["v"] = tri
    assert stl.write(mesh, "binary") == bytes(80) + struct.pack("<I", n_faces) + rec.tobytes()
