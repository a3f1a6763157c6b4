"""sanitize: every embedded field found and stripped; geometry and encoding kept bit-for-bit."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import trimesh

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import find_metadata, load_mesh, mesh_to_bytes, sanitize_bytes, sanitize_file
from occlutrace_compute.meshes.model import Mesh

NAME = "John Smith 1972-03-04"


def arch() -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    c = np.random.default_rng(3).integers(0, 256, (len(s.vertices), 4), dtype=np.uint8)
    return Mesh(s.vertices.astype(np.float32).astype(np.float64), s.faces.astype(np.int64), c)


def binary_stl() -> bytes:
    data = bytearray(mesh_to_bytes(arch(), "stl"))
    data[:80] = f"Patient: {NAME}".encode().ljust(80, b"\0")
    data[84 + 48 : 84 + 50] = b"\x12\x34"  # attribute bytes of the first triangle
    return bytes(data) + b"Dr. Who was here"


def ascii_stl() -> bytes:
    text = mesh_to_bytes(arch(), "stl", "ascii").decode()
    text = text.replace("solid\n", f"solid Patient {NAME}\n", 1).replace("endsolid\n", f"endsolid Patient {NAME}\n")
    return (text + "scanned by clinic X\n").encode()


def ply(encoding: str, order: str = "<") -> bytes:
    data = mesh_to_bytes(arch(), "ply", encoding)
    head, _, body = data.partition(b"end_header\n")
    head = head.replace(b"format binary_little_endian 1.0", b"format binary_big_endian 1.0") if order == ">" else head
    if order == ">":  # re-encode the body big-endian, the header types are float/uchar/int
        m = arch()
        vr = np.empty(len(m.vertices), [("p", ">f4", (3,)), ("c", "u1", (4,))])
        vr["p"], vr["c"] = m.vertices, m.vertex_colors
        fr = np.empty(len(m.faces), [("n", "u1"), ("i", ">i4", (3,))])
        fr["n"], fr["i"] = 3, m.faces
        body = vr.tobytes() + fr.tobytes()
    lines = head.decode().splitlines()
    lines[2:2] = [f"comment Patient {NAME}", "obj_info scanner serial 12345"]
    extra = "element camera 1\nproperty float view_x\n"
    cam = b"1.5 " if encoding == "ascii" else struct.pack(order + "f", 1.5)
    return ("\n".join(lines) + "\n" + extra + "end_header\n").encode() + body + cam


def obj() -> bytes:
    m = arch()
    lines = [f"# Patient {NAME}", "mtllib smith.mtl", "o JohnSmith_upper", "g jaw"]
    lines += [f"v {x!r} {y!r} {z!r}  # corner" for x, y, z in m.vertices.tolist()]
    lines += ["vt 0.5 0.5", "vn 0 0 1", "usemtl skin", "s 1"]
    lines += [f"f {a}/1/1 {b}/1/1 {c}/1/1" for a, b, c in (m.faces + 1).tolist()]
    lines += ["cstype bezier"]
    return ("\n".join(lines) + "\n").encode()


CASES = {
    "binary.stl": (binary_stl, {"stl.header", "stl.attribute_bytes", "stl.trailing_bytes"}),
    "ascii.stl": (ascii_stl, {"stl.solid_name", "stl.endsolid_name", "stl.text"}),
    "ascii.ply": (lambda: ply("ascii"), {"ply.comment", "ply.obj_info", "ply.element"}),
    "le.ply": (lambda: ply("binary") + b"Dr. Who", {"ply.comment", "ply.obj_info", "ply.element", "ply.trailing_data"}),
    "be.ply": (lambda: ply("binary", ">"), {"ply.comment", "ply.obj_info", "ply.element"}),
    "scan.obj": (
        obj,
        {"obj.comment", "obj.mtllib", "obj.object_name", "obj.group_name", "obj.usemtl", "obj.statement",
         "obj.smoothing_group", "obj.vt", "obj.vn", "obj.face_refs"},  # fmt: skip
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_metadata_found_then_stripped_geometry_kept(tmp_path, name):
    make, fields = CASES[name]
    src, dst = tmp_path / name, tmp_path / f"clean-{name}"
    src.write_bytes(make())
    before = load_mesh(src)
    found = find_metadata(src)
    assert {f for f, _ in found} == fields
    assert found == before.metadata
    removed = sanitize_file(src, dst)
    assert removed == found
    after = load_mesh(dst)
    assert (after.format, after.encoding) == (before.format, before.encoding)
    assert after.metadata == []
    assert np.array_equal(after.mesh.vertices, before.mesh.vertices)
    assert np.array_equal(after.mesh.faces, before.mesh.faces)
    if before.mesh.vertex_colors is None:
        assert after.mesh.vertex_colors is None
    else:
        assert np.array_equal(after.mesh.vertex_colors, before.mesh.vertex_colors)
    clean = dst.read_bytes()
    for secret in (b"Smith", b"1972", b"12345", b"clinic", b"Dr. Who", b"camera", b"skin", b"corner"):
        assert secret not in clean


def test_values_are_reported_verbatim():
    found = dict(find_metadata(data=binary_stl(), name="x.stl"))
    assert found["stl.header"] == f"Patient: {NAME}"
    found = find_metadata(data=ply("binary"), name="x.ply")
    assert ("ply.comment", f"Patient {NAME}") in found and ("ply.obj_info", "scanner serial 12345") in found
    found = find_metadata(data=obj(), name="x.obj")
    assert ("obj.object_name", "JohnSmith_upper") in found and ("obj.mtllib", "smith.mtl") in found


def test_stripped_binary_stl_has_zero_header_and_attributes():
    clean = sanitize_bytes(binary_stl(), "x.stl")
    n = struct.unpack_from("<I", clean, 80)[0]
    assert clean[:80] == bytes(80) and len(clean) == 84 + 50 * n
    attrs = np.frombuffer(clean, np.dtype([("r", "V48"), ("a", "<u2")]), n, 84)["a"]
    assert not attrs.any()


def test_sanitize_is_idempotent_and_a_clean_file_is_unchanged():
    clean = sanitize_bytes(obj(), "x.obj")
    assert sanitize_bytes(clean, "x.obj") == clean
    exported = mesh_to_bytes(arch(), "ply")
    assert sanitize_bytes(exported, "x.ply") == exported


def test_sanitize_rejects_invalid_input():
    with pytest.raises(InputRejected, match="truncated"):
        sanitize_bytes(binary_stl()[:500], "x.stl")
