"""Property test: payloads planted in every free place of every format are gone after sanitize.

A free place is any part of a file that a writer or an attacker can fill without changing the
geometry we read. Every place listed here gets random payloads (names, dates, long numbers,
random bytes); the sanitised copy must contain none of them, must parse to exactly the geometry of
the same file without payloads, and `inspect` (find_metadata) must name the field.

Places, by format and encoding:
- binary STL: the 80-byte header; the 12 normal bytes of a facet (any bytes, not the normal);
  the 2 attribute bytes of facets; bytes after the last record.
- ASCII STL: the `solid` name; the `endsolid` name; text after `facet normal x y z`, after
  `outer loop`, after `endloop`, after `endfacet`; a facet normal's numbers (not the normal);
  a line that is not STL; the spelling of a coordinate (payload digits past float64 precision).
- PLY, each of ASCII, binary little-endian and binary big-endian: `comment`; `obj_info`; the
  format version; an extra element (its name and records); an extra vertex property (its name
  and values); vertex normals nx/ny/nz (values); an extra scalar face property (name and values);
  an extra face list property (a name spelled as a uchar list); data after the last element;
  (ASCII) the spelling of a coordinate.
- OBJ: a comment line; an inline comment; `o`, `g`, `usemtl`, `mtllib` and `s` names (with
  trailing tokens); a 4th value (w) on `v` lines; `vt` and `vn` values; the vt/vn indices of face
  corners; an unknown statement; the spelling of a coordinate.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from occlutrace_compute.meshes import find_metadata, load_mesh, sanitize_bytes
from occlutrace_compute.meshes.stl import geometric_normals


def grid_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4x4 height field, 12 mm across, with short decimal coordinates and colours (k/5 * 255),
    so no payload of 6+ characters can occur in a clean file by chance."""
    ij = np.array([(i, j) for j in range(4) for i in range(4)], dtype=np.float64)
    z = np.array([0, 1, 2, 1, 1, 3, 2, 0, 2, 1, 0, 1, 0, 2, 1, 3], dtype=np.float64) * 0.5
    v = np.column_stack([ij * 4.0, z])
    f = []
    for j in range(3):
        for i in range(3):
            a = 4 * j + i
            f += [(a, a + 1, a + 5), (a, a + 5, a + 4)]
    c = np.array([[51 * ((k + d) % 6) for d in range(3)] + [255] for k in range(16)], dtype=np.uint8)
    return v, np.array(f, dtype=np.int64), c


V, F, C = grid_mesh()
NAMES = ["John Smith", "Maria Garcia-Lopez", "Dr. Anna Kowalski", "Jean-Pierre Dubois", "Li Wei"]

texts = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.dates()).map(lambda t: f"{t[0]} {t[1]:%Y-%m-%d}"),
    st.tuples(st.sampled_from(NAMES), st.integers(10**6, 10**10)).map(lambda t: f"{t[0]} MRN{t[1]}"),
    st.dates().map(lambda d: f"DOB {d:%d.%m.%Y}"),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _-:.", min_size=6, max_size=40
    ).map(lambda s: "Q" + " ".join(s.split()) + "Z"),  # an upper-case letter: clean files have none
)
tokens = texts.map(lambda s: s.replace(" ", "_"))
numbers = st.integers(10**9, 10**15).map(str)  # longer than any number a clean file holds
blobs = st.binary(min_size=5, max_size=40).map(lambda b: b + b"\x8f\x11\xe2")  # never blank

STL_BINARY = {"header": blobs, "normal": st.binary(min_size=9, max_size=9).map(lambda b: b + b"\x8f\x11\xe2"),
              "attribute": st.binary(min_size=1, max_size=1).map(lambda b: b + b"\x01"), "trailing": blobs}  # fmt: skip
STL_ASCII = {"solid_name": texts, "endsolid_name": texts, "facet_tail": texts, "outer_tail": texts,
             "endloop_tail": texts, "endfacet_tail": texts, "normal_number": numbers, "text_line": texts,
             "spelling": numbers}  # fmt: skip
PLY = {"comment": texts, "obj_info": texts, "version": tokens, "element": tokens, "vertex_property": tokens,
       "normals": numbers, "face_property": tokens, "face_list": tokens, "trailing": numbers,
       "spelling": numbers}  # fmt: skip
OBJ = {"comment": texts, "inline_comment": texts, "o": texts, "g": texts, "usemtl": texts, "mtllib": texts,
       "s": texts, "w": numbers, "vt": numbers, "vn": numbers, "corner_refs": numbers, "statement": texts,
       "spelling": numbers}  # fmt: skip
FORMATS = {"stl-binary": STL_BINARY, "stl-ascii": STL_ASCII, "ply-ascii": PLY, "ply-le": PLY, "ply-be": PLY,
           "obj": OBJ}  # fmt: skip

# the field inspect must report for a place (None: nothing to name, e.g. a number's spelling)
REPORTED = {
    "header": "stl.header", "normal": "stl.normal_bytes", "attribute": "stl.attribute_bytes",
    "trailing": None, "solid_name": "stl.solid_name", "endsolid_name": "stl.endsolid_name",
    "facet_tail": "stl.facet_text", "outer_tail": "stl.outer_text", "endloop_tail": "stl.endloop_text",
    "endfacet_tail": "stl.endfacet_text", "normal_number": "stl.facet_normal", "text_line": "stl.text",
    "spelling": None, "comment": None, "obj_info": "ply.obj_info", "version": "ply.format_version",
    "element": "ply.element", "vertex_property": "ply.property", "normals": "ply.property",
    "face_property": "ply.property", "face_list": "ply.property", "inline_comment": "obj.comment",
    "o": "obj.object_name", "g": "obj.group_name", "usemtl": "obj.usemtl", "mtllib": "obj.mtllib",
    "s": "obj.smoothing_group", "w": "obj.vertex_w", "vt": "obj.vt", "vn": "obj.vn",
    "corner_refs": "obj.face_refs", "statement": "obj.statement",
}  # fmt: skip


def num(x: float) -> str:
    return repr(float(x))


def spelled(x: float, digits: str) -> str:
    """x written with the payload's digits past float64 precision (or, for 0, below the smallest
    subnormal): it still reads as x."""
    if x == 0:
        return "0." + "0" * 400 + digits
    return repr(float(x)) + "0" * 25 + digits


def build_stl_binary(p: dict) -> bytes:
    tri = V[F]
    rec = np.zeros(len(F), [("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["n"], rec["v"] = geometric_normals(tri), tri
    raw = bytearray(rec.tobytes())
    if "normal" in p:
        raw[50 * 3 : 50 * 3 + 12] = p["normal"]
    if "attribute" in p:
        for i in range(0, len(F), 2):
            raw[50 * i + 48 : 50 * i + 50] = p["attribute"]
    header = p.get("header", b"")[:80].ljust(80, b"\0")
    return header + struct.pack("<I", len(F)) + bytes(raw) + p.get("trailing", b"")


def build_stl_ascii(p: dict) -> bytes:
    def tail(key: str) -> str:
        return " " + p[key] if key in p else ""

    normals = geometric_normals(V[F])
    out = ["solid" + tail("solid_name")]
    for i, (face, n) in enumerate(zip(F, normals)):
        ns = [f"{x:.7g}" for x in n]
        if i == 2 and "normal_number" in p:
            ns[0] = p["normal_number"]
        out.append("facet normal " + " ".join(ns) + tail("facet_tail"))
        out.append("outer loop" + tail("outer_tail"))
        for k, c in enumerate(face):
            xyz = [num(x) for x in V[c]]
            if i == 1 and k == 0 and "spelling" in p:
                xyz[1] = spelled(V[c][1], p["spelling"])
            out.append("vertex " + " ".join(xyz))
        out += ["endloop" + tail("endloop_tail"), "endfacet" + tail("endfacet_tail")]
    out.append("endsolid" + tail("endsolid_name"))
    if "text_line" in p:
        out.append(p["text_line"])
    return ("\n".join(out) + "\n").encode()


def build_ply(p: dict, encoding: str) -> bytes:
    fmt = {"ascii": "ascii", "le": "binary_little_endian", "be": "binary_big_endian"}[encoding]
    head = ["ply", f"format {fmt} {p.get('version', '1.0')}"]
    head += [f"comment {p['comment']}"] if "comment" in p else []
    head += [f"obj_info {p['obj_info']}"] if "obj_info" in p else []
    vprops = [("x", "f8"), ("y", "f8"), ("z", "f8")]
    if "normals" in p:
        vprops += [("nx", "f8"), ("ny", "f8"), ("nz", "f8")]
    vprops += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if "vertex_property" in p:
        vprops.append((p["vertex_property"], "f8"))
    head.append(f"element vertex {len(V)}")
    head += [f"property {'double' if t == 'f8' else 'uchar'} {n}" for n, t in vprops]
    head.append(f"element face {len(F)}")
    if "face_property" in p:
        head.append(f"property uchar {p['face_property']}")
    head.append("property list uchar int vertex_indices")
    name_bytes = list(p["face_list"].encode()) if "face_list" in p else []
    if "face_list" in p:
        head.append(f"property list uchar uchar {p['face_list']}_x")
    if "element" in p:
        head += [f"element {p['element']} 2", "property double value"]
    head.append("end_header")
    extra_value = float(p["normals"]) if "normals" in p else 0.0
    vrows = []
    for i, (xyz, c) in enumerate(zip(V, C)):
        row: list = list(xyz)
        if "normals" in p:
            row += [extra_value, 0.0, 1.0]
        row += list(c[:3])
        if "vertex_property" in p:
            row.append(1234567.0 + i)
        vrows.append(row)
    frows = []
    for face in F:
        row = [1] if "face_property" in p else []
        row += [3, *face]
        if "face_list" in p:
            row += [len(name_bytes), *name_bytes]
        frows.append(row)
    erows = [[float(p["normals"]) if "normals" in p else 3.25]] * 2 if "element" in p else []
    if encoding == "ascii":

        def fmt_row(row, spell=None):
            return " ".join(num(x) if isinstance(x, float) else str(int(x)) for x in row)

        lines = [fmt_row(r) for r in vrows]
        if "spelling" in p:
            parts = lines[1].split()
            parts[0] = spelled(V[1][0], p["spelling"])
            lines[1] = " ".join(parts)
        lines += [fmt_row(r) for r in frows] + [fmt_row(r) for r in erows]
        body = ("\n".join(lines) + "\n").encode()
        if "trailing" in p:
            body += (p["trailing"] + "\n").encode()
    else:
        o = "<" if encoding == "le" else ">"
        body = b""
        for row in vrows:
            for (_n, t), x in zip(vprops, row):
                body += struct.pack(o + ("d" if t == "f8" else "B"), x)
        for row in frows:
            r = list(row)
            if "face_property" in p:
                body += struct.pack("B", r.pop(0))
            body += struct.pack(o + "B3i", *r[:4])
            if "face_list" in p:
                body += struct.pack("B", r[4]) + bytes(r[5:])
        for row in erows:
            body += struct.pack(o + "d", row[0])
        if "trailing" in p:
            body += p["trailing"].encode()
    return ("\n".join(head) + "\n").encode() + body


def build_obj(p: dict) -> bytes:
    out = [f"# {p['comment']}"] if "comment" in p else []
    out += [f"mtllib {p['mtllib']}"] if "mtllib" in p else []
    out += [f"o {p['o']}"] if "o" in p else []
    out += [f"g {p['g']}"] if "g" in p else []
    for i, (xyz, _c) in enumerate(zip(V, C)):
        parts = [num(x) for x in xyz]
        if i == 2 and "spelling" in p:
            parts[2] = spelled(xyz[2], p["spelling"])
        if "w" in p:
            parts.append(p["w"])
        line = "v " + " ".join(parts)
        if i == 0 and "inline_comment" in p:
            line += f" # {p['inline_comment']}"
        out.append(line)
    out += [f"vt 0.5 {p['vt']}"] if "vt" in p else []
    out += [f"vn 0 0 {p['vn']}"] if "vn" in p else []
    out += [f"usemtl {p['usemtl']}"] if "usemtl" in p else []
    out += [f"s {p['s']}"] if "s" in p else []
    for face in F + 1:
        if "corner_refs" in p:
            out.append("f " + " ".join(f"{a}/{p['corner_refs']}/{p['corner_refs']}" for a in face))
        else:
            out.append("f " + " ".join(map(str, face)))
    out += [f"cstype {p['statement']}"] if "statement" in p else []
    return ("\n".join(out) + "\n").encode()


def build(fmt: str, p: dict) -> tuple[bytes, str]:
    if fmt == "stl-binary":
        return build_stl_binary(p), "scan.stl"
    if fmt == "stl-ascii":
        return build_stl_ascii(p), "scan.stl"
    if fmt == "obj":
        return build_obj(p), "scan.obj"
    return build_ply(p, fmt.split("-")[1]), "scan.ply"


def payload_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


@st.composite
def plantings(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    places = FORMATS[fmt]
    if fmt != "ply-ascii":
        places = {k: v for k, v in places.items() if not (fmt.startswith("ply") and k == "spelling")}
    chosen = draw(st.lists(st.sampled_from(sorted(places)), min_size=1, max_size=len(places), unique=True))
    return fmt, {k: draw(places[k]) for k in chosen}


def geometry(data: bytes, name: str, stl: bool):
    m = load_mesh(data=data, name=name).mesh
    if stl:
        return (m.vertices[m.faces],)
    return m.vertices, m.faces, m.vertex_colors


CASES = int(os.environ.get("OCCLUTRACE_PAYLOAD_CASES", "200"))  # more by hand: bench/RESULTS.md


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plantings())
def test_no_planted_payload_survives_sanitize(case):
    fmt, planted = case
    data, name = build(fmt, planted)
    clean = sanitize_bytes(data, name)
    for place, value in planted.items():
        if place == "attribute":
            continue  # 2 bytes: checked below as all-zero attribute bytes
        assert payload_bytes(value) not in clean, (fmt, place, value)
    if fmt == "stl-binary":
        attrs = np.frombuffer(clean, np.dtype([("r", "V48"), ("a", "<u2")]), len(F), 84)["a"]
        assert not attrs.any()
    stl = fmt.startswith("stl")
    base, _ = build(fmt, {})
    want, got = geometry(base, name, stl), geometry(clean, name, stl)
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    assert load_mesh(data=clean, name=name).metadata == []
    reported = {field for field, _ in find_metadata(data=data, name=name)}
    for place in planted:
        field = REPORTED.get(place) if not (place == "comment" and fmt.startswith("ply")) else "ply.comment"
        if place == "comment" and fmt == "obj":
            field = "obj.comment"
        if place == "trailing":
            field = "stl.trailing_bytes" if fmt == "stl-binary" else "ply.trailing_data"
        if field is not None:
            assert field in reported, (fmt, place, reported)
