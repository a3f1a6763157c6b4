"""Loading and validation of real STL/OBJ/PLY files written to tmp_path."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import trimesh

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, Mesh, load_mesh, mesh_to_bytes


def arch_mesh(colors: bool = False) -> Mesh:
    """A 40 mm sphere (a dental-sized surface) with float32-exact coordinates."""
    s = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    v = s.vertices.astype(np.float32).astype(np.float64)
    c = np.random.default_rng(1).integers(0, 256, (len(v), 4), dtype=np.uint8) if colors else None
    return Mesh(v, s.faces.astype(np.int64), c)


def ply_bytes(order: str, comments: list[str], v: np.ndarray, f: np.ndarray, rgb: np.ndarray | None = None) -> bytes:
    """A PLY written by hand (not by our exporter), binary in the given byte order."""
    fmt = {"<": "binary_little_endian", ">": "binary_big_endian"}[order]
    lines = ["ply", f"format {fmt} 1.0", *comments, f"element vertex {len(v)}"]
    lines += ["property float x", "property float y", "property float z"]
    if rgb is not None:
        lines += ["property uchar red", "property uchar green", "property uchar blue"]
    lines += [f"element face {len(f)}", "property list uchar uint vertex_indices", "end_header"]
    vt = [("x", order + "f4"), ("y", order + "f4"), ("z", order + "f4")]
    if rgb is not None:
        vt.append(("c", "u1", (3,)))
    vr = np.empty(len(v), vt)
    vr["x"], vr["y"], vr["z"] = v.T
    if rgb is not None:
        vr["c"] = rgb
    fr = np.empty(len(f), [("n", "u1"), ("i", order + "u4", (3,))])
    fr["n"], fr["i"] = 3, f
    return ("\n".join(lines) + "\n").encode() + vr.tobytes() + fr.tobytes()


@pytest.mark.parametrize(
    "fmt,enc", [("stl", "binary"), ("stl", "ascii"), ("obj", "ascii"), ("ply", "binary"), ("ply", "ascii")]
)
def test_loads_every_format_from_a_file(tmp_path, fmt, enc):
    mesh = arch_mesh()
    path = tmp_path / f"scan.{fmt}"
    path.write_bytes(mesh_to_bytes(mesh, fmt, enc))
    lm = load_mesh(path)
    assert (lm.format, lm.encoding, lm.source) == (fmt, enc, str(path))
    assert lm.mesh.n_vertices == mesh.n_vertices and lm.mesh.n_faces == mesh.n_faces
    assert lm.mesh.vertices.dtype == np.float64 and lm.mesh.faces.dtype == np.int64
    # STL re-numbers vertices (first appearance); the triangles themselves are identical
    assert np.array_equal(lm.mesh.vertices[lm.mesh.faces], mesh.vertices[mesh.faces])
    assert lm.metadata == [] and lm.warnings == []


def test_binary_stl_corners_are_merged_exactly(tmp_path):
    mesh = arch_mesh()
    lm = load_mesh(data=mesh_to_bytes(mesh, "stl"), name="a.stl")
    assert lm.mesh.n_vertices == mesh.n_vertices  # 3 corners a face collapse to shared vertices
    assert len(np.unique(lm.mesh.vertices, axis=0)) == lm.mesh.n_vertices
    assert trimesh.Trimesh(lm.mesh.vertices, lm.mesh.faces, process=False).is_watertight
    # vertices come in order of first appearance in the face list
    first = np.unique(lm.mesh.faces.ravel(), return_index=True)[1]
    assert np.all(np.diff(first) > 0)


@pytest.mark.parametrize("order", ["<", ">"])
def test_binary_ply_both_byte_orders_with_colors(tmp_path, order):
    mesh = arch_mesh()
    rgb = np.random.default_rng(2).integers(0, 256, (mesh.n_vertices, 3), dtype=np.uint8)
    path = tmp_path / "scan.ply"
    path.write_bytes(ply_bytes(order, ["comment made by hand"], mesh.vertices, mesh.faces, rgb))
    lm = load_mesh(path)
    assert np.array_equal(lm.mesh.vertices, mesh.vertices) and np.array_equal(lm.mesh.faces, mesh.faces)
    assert lm.mesh.vertex_colors.shape == (mesh.n_vertices, 4) and lm.mesh.vertex_colors.dtype == np.uint8
    assert np.array_equal(lm.mesh.vertex_colors[:, :3], rgb) and (lm.mesh.vertex_colors[:, 3] == 255).all()
    assert lm.metadata == [("ply.comment", "made by hand")]


def test_ply_quads_and_obj_polygons_are_fan_triangulated(tmp_path):
    v = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0], [0, 0, 10]], float)
    obj = "v " + "\nv ".join(" ".join(map(str, r)) for r in v) + "\nf 1/1/1 2/2/2 3/3/3 4/4/4\nf -5 -4 -1\n"
    (tmp_path / "q.obj").write_text(obj)
    lm = load_mesh(tmp_path / "q.obj")
    assert lm.mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 4]]
    ply = "ply\nformat ascii 1.0\nelement vertex 5\nproperty double x\nproperty double y\nproperty double z\n"
    ply += "element face 2\nproperty list uchar int vertex_indices\nend_header\n"
    ply += "\n".join(" ".join(map(str, r)) for r in v) + "\n4 0 1 2 3\n3 0 1 4\n"
    (tmp_path / "q.ply").write_text(ply)
    assert load_mesh(tmp_path / "q.ply").mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 4]]


def test_obj_colors_and_unreferenced_vertices_are_kept(tmp_path):
    text = "v 0 0 0 1 0 0\nv 10 0 0 0 1 0\nv 0 10 0 0 0 1\nv 99 99 99 0.5 0.5 0.5\nf 1 2 3\n"
    (tmp_path / "c.obj").write_text(text)
    lm = load_mesh(tmp_path / "c.obj")
    assert lm.mesh.n_vertices == 4  # the unreferenced vertex stays (geometry kept as given)
    assert lm.mesh.vertex_colors[:3, :3].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    assert lm.mesh.vertex_colors[3].tolist() == [128, 128, 128, 255]


def test_uploaded_bytes_are_detected_by_content(tmp_path):
    data = mesh_to_bytes(arch_mesh(), "ply")
    lm = load_mesh(data=data, name="upload.bin")
    assert (lm.format, lm.source) == ("ply", "upload.bin")


def rejection(path_or_data, name=None, limits=Limits()) -> str:
    with pytest.raises(InputRejected) as e:
        if isinstance(path_or_data, bytes):
            load_mesh(data=path_or_data, name=name, limits=limits)
        else:
            load_mesh(path_or_data, limits)
    return str(e.value)


def test_wrong_format_for_suffix(tmp_path):
    path = tmp_path / "scan.ply"
    path.write_bytes(mesh_to_bytes(arch_mesh(), "stl"))
    msg = rejection(path)
    assert msg.startswith(f"{path}: ") and "wrong format for the suffix: content is binary STL" in msg
    assert "content is ASCII PLY" in rejection(mesh_to_bytes(arch_mesh(), "ply", "ascii"), "x.obj")


def test_unknown_format_and_empty_file(tmp_path):
    assert "unknown format" in rejection(b"\x89PNG\r\n\x1a\n" + bytes(200), "x.png")
    assert "unknown format" in rejection(b"hello world\nthis is text\n", "x.obj")
    assert "empty file" in rejection(b"", "x.stl")
    assert "cannot read the file" in rejection(tmp_path / "missing.stl")


def test_truncated_files(tmp_path):
    mesh = arch_mesh()
    for fmt, enc in [("stl", "binary"), ("stl", "ascii"), ("ply", "binary"), ("ply", "ascii")]:
        data = mesh_to_bytes(mesh, fmt, enc)
        msg = rejection(data[: len(data) * 2 // 3], f"t.{fmt}")
        assert "truncated" in msg, (fmt, enc, msg)


def test_header_counts_beyond_the_file_are_rejected_from_the_header():
    data = bytearray(mesh_to_bytes(arch_mesh(), "stl"))
    data[80:84] = struct.pack("<I", 10**9)
    assert "header declares 1000000000 triangles" in rejection(bytes(data), "h.stl")
    ply = mesh_to_bytes(arch_mesh(), "ply")
    msg = rejection(ply.replace(b"element face 320", b"element face 9999999"), "h.ply")
    assert "9999999 'face' records" in msg and "truncated or corrupt" in msg
    msg = rejection(ply.replace(b"element vertex 162", b"element vertex 4000000"), "h.ply")
    assert "4000000 'vertex' records" in msg
    assert "too many faces" in rejection(ply.replace(b"element face 320", b"element face 1000000000"), "h.ply")


def test_limits():
    data = mesh_to_bytes(arch_mesh(), "ply")
    assert "too many vertices: 162 > limit 100" in rejection(data, "a.ply", Limits(max_vertices=100))
    assert "too many faces: 320 > limit 10" in rejection(data, "a.ply", Limits(max_faces=10))
    assert "file too large" in rejection(data, "a.ply", Limits(max_bytes=1000))
    assert "too many faces" in rejection(mesh_to_bytes(arch_mesh(), "stl"), "a.stl", Limits(max_faces=10))


def test_file_size_checked_before_reading(tmp_path):
    path = tmp_path / "big.stl"
    with open(path, "wb") as f:  # a sparse 2 GB file: reading it would take time and memory
        f.truncate(2 * 10**9)
    assert "file too large: 2000000000 bytes" in rejection(path)


def test_geometry_problems():
    mesh = arch_mesh()
    bad = Mesh(mesh.vertices.copy(), mesh.faces)
    bad.vertices[5, 1] = np.nan
    assert "non-finite coordinates (NaN or inf) in 1 of 162 vertices" in rejection(mesh_to_bytes(bad, "ply"), "n.ply")
    bad.vertices[5, 1] = np.inf
    assert "non-finite" in rejection(mesh_to_bytes(bad, "obj"), "n.obj")
    oob = Mesh(mesh.vertices, mesh.faces.copy())
    oob.faces[3, 2] = 500
    assert "face index out of range: 500 (the mesh has 162 vertices)" in rejection(mesh_to_bytes(oob, "ply"), "o.ply")
    assert "face index out of range: 0" in rejection(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "z.obj")
    flat = Mesh(np.array([[0, 0, 0], [10, 0, 0], [20, 0, 0]], float), np.array([[0, 1, 2]]))
    assert "zero-area mesh: all 1 faces are degenerate" in rejection(mesh_to_bytes(flat, "ply"), "f.ply")
    assert "empty mesh: no faces" in rejection(b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "p.obj")
    empty = bytes(80) + struct.pack("<I", 0)
    assert "empty mesh" in rejection(empty, "e.stl")


def test_degenerate_faces_are_dropped_with_a_warning():
    mesh = arch_mesh()
    faces = np.vstack([mesh.faces, [[0, 0, 1], [2, 3, 3]]])
    lm = load_mesh(data=mesh_to_bytes(Mesh(mesh.vertices, faces), "ply"), name="d.ply")
    assert np.array_equal(lm.mesh.faces, mesh.faces)
    assert lm.warnings == ["dropped 2 degenerate faces (zero area)"]


def test_units_warn_or_reject():
    mesh = arch_mesh()
    metres = Mesh(mesh.vertices / 1000.0, mesh.faces)
    lm = load_mesh(data=mesh_to_bytes(metres, "ply"), name="m.ply")
    assert len(lm.warnings) == 1 and "under 5 mm" in lm.warnings[0]
    assert "under 5 mm" in rejection(mesh_to_bytes(metres, "ply"), "m.ply", Limits(units="reject"))
    microns = Mesh(mesh.vertices * 1000.0, mesh.faces)
    assert "over 300 mm" in load_mesh(data=mesh_to_bytes(microns, "ply"), name="u.ply").warnings[0]


def test_corrupt_text():
    assert "not a number" in rejection(b"v 0 0 zero\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "c.obj")
    assert "not an integer" in rejection(b"v 0 0 0\nv 10 0 0\nv 0 10 0\nf 1 2 x\n", "c.obj")
    bad = mesh_to_bytes(arch_mesh(), "stl", "ascii").replace(b"vertex", b"vertex 1", 1)
    assert "corrupt ASCII STL" in rejection(bad, "c.stl")
    ply = mesh_to_bytes(arch_mesh(), "ply", "ascii").replace(b"property float y", b"property wobble y")
    assert "corrupt PLY header: bad property line" in rejection(ply, "c.ply")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vertex_merge_is_exact_even_when_hashes_collide(monkeypatch, dtype):
    from occlutrace_compute.meshes import merge

    rows = np.random.default_rng(6).integers(0, 5, (2000, 3)).astype(dtype)
    rows[7] = [-0.0, 0.0, 1.0]  # -0.0 and 0.0 differ bitwise: kept apart (geometry bit-for-bit)
    rows[8] = [0.0, 0.0, 1.0]
    for weak in (False, True):
        if weak:  # a hash with 7 values: nearly every group collides and must be split exactly
            weak_hash = lambda bits: (bits[:, 0].astype(np.uint64) % np.uint64(7)) << np.uint64(60)  # noqa: E731
            monkeypatch.setattr(merge, "_hash", weak_hash)
        unique, inverse = merge.merge_exact(rows)
        assert np.array_equal(unique[inverse], rows)
        assert len(unique) == len(np.unique(rows.view(np.uint32 if dtype == np.float32 else np.uint64), axis=0))
        firsts = np.unique(inverse, return_index=True)[1]
        assert len(firsts) == len(unique) and np.all(np.diff(firsts) > 0)  # first-appearance order


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vertex_hash_separates_real_coordinates(dtype):
    """Float32 values stored as float64 end in 29 zero bits: the hash must still use every bit,
    or the merge falls back to its slow exact path on every file."""
    from occlutrace_compute.meshes.merge import _hash

    s = trimesh.creation.icosphere(subdivisions=5, radius=20.0)
    rows = s.vertices.astype(np.float32).astype(dtype)
    bits = rows.view(np.uint32 if dtype == np.float32 else np.uint64).reshape(-1, 3)
    assert len(np.unique(_hash(bits) >> np.uint64(24))) == len(rows)  # even the top 40 bits differ
