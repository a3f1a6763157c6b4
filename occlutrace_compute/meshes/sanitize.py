"""Sanitize by re-serialisation (a whitelist): the clean file is WRITTEN from the parsed arrays
alone, never made by editing the input's bytes.

What is written: vertex positions, triangles (polygons fan-triangulated, degenerate faces dropped
as on every load) and vertex colours (PLY: uchar RGBA; OBJ: float RGB[A]). Per-vertex normals,
texture coordinates, names, comments, extra properties and elements, STL normals (recomputed
from the corners), attribute bytes (zero), number spellings, whitespace and line ends of the input
are all gone because nothing of them is ever read into those arrays. The copy keeps the input's
format and encoding unless another is asked for (binary PLY is written little-endian).

Self-check: the copy is parsed again and must give exactly the same geometry (positions, faces,
colours; for STL the triangle corners, as STL has no shared vertices) and report no metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import obj
from occlutrace_compute.meshes.export import mesh_to_bytes
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.load import load_mesh, read_bytes
from occlutrace_compute.meshes.model import LoadedMesh, Mesh


def find_metadata(
    path: str | Path | None = None, data: bytes | None = None, name: str | None = None, limits: Limits = Limits()
) -> list[tuple[str, str]]:
    """Every embedded (field, value) pair, e.g. ("stl.header", "Patient: ..."): exactly what
    sanitize drops; validates the mesh."""
    return load_mesh(path, limits, data=data, name=name).metadata


def _same_geometry(a: Mesh, b: Mesh, stl: bool) -> bool:
    if stl:  # STL stores corners: compare the triangles' coordinates, not the merged numbering
        return np.array_equal(a.vertices[a.faces], b.vertices[b.faces])
    same_colors = (a.vertex_colors is None) == (b.vertex_colors is None) and (
        a.vertex_colors is None or np.array_equal(a.vertex_colors, b.vertex_colors)
    )
    return np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces) and same_colors


def _rewrite(before: LoadedMesh, name: str, fmt: str, encoding: str) -> bytes:
    mesh = before.mesh
    if fmt == "stl" and mesh.vertex_colors is not None:
        mesh = Mesh(mesh.vertices, mesh.faces)  # asked for STL: it cannot hold colours
    if fmt == "stl" and encoding == "binary":
        with np.errstate(over="ignore"):
            exact32 = np.array_equal(mesh.vertices.astype(np.float32).astype(np.float64), mesh.vertices)
        if not exact32:
            raise InputRejected(name, "cannot write binary STL: coordinates need more than float32 precision")
    if fmt == "obj":
        return obj.write(mesh, "ascii", keep_alpha=True)  # exports drop alpha; a clean copy keeps it
    return mesh_to_bytes(mesh, fmt, encoding)


def sanitize_bytes(
    data: bytes, name: str, limits: Limits = Limits(), *, fmt: str | None = None, encoding: str | None = None
) -> bytes:
    """A mesh file written from `data`'s geometry alone (same format and encoding unless `fmt` /
    `encoding` ask otherwise); InputRejected when `data` is not a valid mesh.

    Worst case: one load of the input, one write, one load of the output (see load_mesh)."""
    before = load_mesh(None, limits, data=data, name=name)
    fmt = (fmt or before.format).lower().lstrip(".")
    encoding = encoding or before.encoding
    clean = _rewrite(before, name, fmt, encoding)
    after = load_mesh(None, limits, data=clean, name=name if fmt == before.format else f"{name}.{fmt}")
    expected = before.mesh
    if fmt == "stl":
        expected = Mesh(expected.vertices, expected.faces)
    if not _same_geometry(expected, after.mesh, "stl" in (fmt, before.format)) or after.metadata:
        raise RuntimeError(f"{name}: sanitize would change the geometry or keep metadata (a bug)")
    return clean


def sanitize_file(
    src: str | Path,
    dst: str | Path,
    limits: Limits = Limits(),
    *,
    fmt: str | None = None,
    encoding: str | None = None,
) -> list[tuple[str, str]]:
    """Write the re-serialised copy of `src` to `dst`; returns the fields dropped."""
    data, source = read_bytes(src, limits, None, None)
    removed = load_mesh(None, limits, data=data, name=source).metadata
    Path(dst).write_bytes(sanitize_bytes(data, source, limits, fmt=fmt, encoding=encoding))
    return removed
