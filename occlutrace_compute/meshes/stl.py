"""STL: binary (80-byte header, uint32 count, 50-byte records) and ASCII (solid ... endsolid).

STL has no shared vertices; corners are merged by exact equality so vertex counts mean something.
Binary coordinates are float32 (exact in float64); ASCII ones are read as float64 as written.
"""

from __future__ import annotations

import re
import struct
from collections import Counter

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.merge import merge_exact
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.parsed import Parsed, printable
from occlutrace_compute.meshes.validate import check_counts

RECORD = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
_KEYWORDS = ("solid", "facet", "outer", "vertex", "endloop", "endfacet", "endsolid")
_VERTEX = re.compile(r"^[ \t]*vertex[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)[ \t]*\r?$", re.M)
_SOLID = re.compile(r"^[ \t]*(solid|endsolid)\b[ \t]*(.*?)[ \t]*\r?$", re.M)
_FIRST_WORD = re.compile(r"^[ \t]*(\S+)", re.M)
_OTHER = re.compile(
    r"^[ \t]*(?!(?:solid|facet|outer|vertex|endloop|endfacet|endsolid)\b)(\S[^\r\n]*)", re.M
)


def _binary_count(data: bytes, name: str, limits: Limits) -> int:
    """The declared triangle count, checked against the file size and limits before any array."""
    if len(data) < 84:
        raise InputRejected(name, f"truncated binary STL: {len(data)} bytes, the header alone is 84")
    (n,) = struct.unpack_from("<I", data, 80)
    if 84 + 50 * n > len(data):
        raise InputRejected(
            name,
            f"truncated or corrupt binary STL: header declares {n} triangles "
            f"({84 + 50 * n} bytes) but the file has {len(data)} bytes",
        )
    check_counts(name, 0, n, limits)
    return n


def parse_binary(data: bytes, name: str, limits: Limits) -> Parsed:
    n = _binary_count(data, name, limits)
    rec = np.frombuffer(data, RECORD, count=n, offset=84)
    metadata = []
    header = printable(data[:80].rstrip(b"\x00 ").decode("latin-1"))
    if header:
        metadata.append(("stl.header", header))
    tagged = int(np.count_nonzero(rec["attr"]))
    if tagged:
        metadata.append(("stl.attribute_bytes", f"{tagged} of {n} triangles carry attribute bytes"))
    warnings = []
    extra = len(data) - 84 - 50 * n
    if extra:
        metadata.append(("stl.trailing_bytes", f"{extra} bytes after the last triangle"))
        warnings.append(f"ignored {extra} bytes after the {n} declared triangles")
    vertices, faces = merge_exact(rec["v"].reshape(-1, 3))
    with np.errstate(invalid="ignore"):  # signalling NaNs: rejected by validation, not here
        vertices = vertices.astype(np.float64)
    return Parsed(vertices, faces.reshape(-1, 3), None, metadata, warnings)


def strip_binary(data: bytes, name: str, limits: Limits) -> bytes:
    """Zeroed header and attribute bytes, nothing after the last triangle; records untouched."""
    n = _binary_count(data, name, limits)
    out = bytearray(data[: 84 + 50 * n])
    out[:80] = bytes(80)
    np.frombuffer(out, RECORD, count=n, offset=84)["attr"] = 0
    return bytes(out)


def _ascii_text(data: bytes, name: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as e:
        raise InputRejected(name, f"corrupt ASCII STL: non-ASCII byte at offset {e.start}") from None


def parse_ascii(data: bytes, name: str, limits: Limits) -> Parsed:
    text = _ascii_text(data, name)
    check_counts(name, 0, text.count("endfacet"), limits)
    counts = Counter(_FIRST_WORD.findall(text))  # one pass over the text for the structure check
    n_facets, n_solid = counts["facet"], counts["solid"]
    if counts["endsolid"] < n_solid or n_solid == 0:
        raise InputRejected(name, "truncated ASCII STL: no 'endsolid' after the last triangle")
    if not (counts["outer"] == counts["endloop"] == counts["endfacet"] == n_facets) or (
        counts["vertex"] != 3 * n_facets
    ):
        raise InputRejected(
            name,
            f"corrupt ASCII STL: {n_facets} facets but {counts['vertex']} vertex lines, "
            f"{counts['endfacet']} endfacet lines",
        )
    corners = _VERTEX.findall(text)
    if len(corners) != 3 * n_facets:
        raise InputRejected(name, "corrupt ASCII STL: a vertex line does not hold 3 numbers")
    try:
        raw = np.array(corners, dtype=np.float64).reshape(-1, 3)
    except ValueError:
        raise InputRejected(name, "corrupt ASCII STL: a vertex coordinate is not a number") from None
    metadata = [(f"stl.{kw}_name", printable(v)) for kw, v in _SOLID.findall(text) if v.strip()]
    if set(counts) - set(_KEYWORDS):
        metadata += [("stl.text", printable(line)) for line in _OTHER.findall(text)]
    vertices, faces = merge_exact(raw)
    return Parsed(vertices, faces.reshape(-1, 3), None, metadata)


def strip_ascii(data: bytes, name: str, limits: Limits) -> bytes:
    """Bare 'solid'/'endsolid' lines, geometry lines verbatim, every other line dropped."""
    out = []
    for line in _ascii_text(data, name).splitlines():
        words = line.split(None, 1)
        if not words or words[0] not in _KEYWORDS:
            continue
        out.append(words[0] if words[0] in ("solid", "endsolid") else line.rstrip())
    return ("\n".join(out) + "\n").encode("ascii")


def _normals(tri: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return np.where(length > 0, n / np.where(length > 0, length, 1), 0.0)


def write(mesh: Mesh, encoding: str) -> bytes:
    """A neutral file: zero header (binary) or a bare 'solid' (ASCII); no colours in STL."""
    tri = mesh.vertices[mesh.faces]
    normals = _normals(tri)
    if encoding == "binary":
        rec = np.zeros(len(tri), RECORD)
        rec["normal"] = normals
        rec["v"] = tri
        return bytes(80) + struct.pack("<I", len(tri)) + rec.tobytes()
    parts = ["solid"]
    for n, t in zip(normals.astype(np.float32).tolist(), tri.tolist()):  # normals are not read back
        parts.append(
            f"facet normal {n[0]:.7g} {n[1]:.7g} {n[2]:.7g}\nouter loop\n"
            f"vertex {t[0][0]!r} {t[0][1]!r} {t[0][2]!r}\n"
            f"vertex {t[1][0]!r} {t[1][1]!r} {t[1][2]!r}\n"
            f"vertex {t[2][0]!r} {t[2][1]!r} {t[2][2]!r}\nendloop\nendfacet"
        )
    parts.append("endsolid\n")
    return "\n".join(parts).encode("ascii")
