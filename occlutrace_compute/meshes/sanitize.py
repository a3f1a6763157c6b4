"""Sanitize by re-serialisation (a whitelist): the clean file is WRITTEN from the parsed arrays
alone, never made by editing the input's bytes.

What is written: vertex positions, triangles (polygons fan-triangulated, degenerate faces dropped
as on every load) and vertex colours (PLY: uchar RGBA; OBJ: float RGB[A]). Per-vertex normals,
texture coordinates, names, comments, extra properties and elements, STL normals (recomputed
from the corners), attribute bytes (zero), number spellings, whitespace and line ends of the input
are all gone because nothing of them is ever read into those arrays. The copy keeps the input's
format and encoding unless another is asked for (binary PLY is written little-endian).

Textured scans (OBJ + MTL + image, PLY + TextureFile image): UVs are written from the parsed
per-vertex array; the MTL is ours (`newmtl texture`, `map_Kd <name>`), the image re-encoded from
its pixels (meshes/texture.py). Written as files: `<stem>.obj` + `<stem>.mtl` + `<stem>.png|jpg`
(or `<stem>.ply` + the image), the input's file names never reused. Uploads (`keep_refs`) keep
the referenced base name instead, after the service's file-name privacy check, so a job finds
the case's separately uploaded (and separately re-made) MTL and image.

Self-check: the copy is parsed again and must give exactly the same geometry (positions, faces,
colours, UVs; for STL the triangle corners, as STL has no shared vertices) and report no
metadata but the texture references we wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import obj, ply
from occlutrace_compute.meshes.export import mesh_to_bytes
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.load import load_mesh, read_bytes
from occlutrace_compute.meshes.model import LoadedMesh, Mesh
from occlutrace_compute.meshes.texture import base_name, companion_files

_OUR_FIELDS = ("obj.mtllib", "obj.usemtl", "mtl.newmtl", "mtl.map_Kd", "texture.file")


def find_metadata(
    path: str | Path | None = None, data: bytes | None = None, name: str | None = None, limits: Limits = Limits()
) -> list[tuple[str, str]]:
    """Every embedded (field, value) pair, e.g. ("stl.header", "Patient: ..."): exactly what
    sanitize drops; validates the mesh."""
    return load_mesh(path, limits, data=data, name=name).metadata


def _same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Both absent, or both present and equal."""
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


def _same_geometry(a: Mesh, b: Mesh, stl: bool) -> bool:
    if stl:  # STL stores corners: compare the triangles' coordinates, not the merged numbering
        return np.array_equal(a.vertices[a.faces], b.vertices[b.faces])
    same_colors = _same_optional(a.vertex_colors, b.vertex_colors)
    same_uv = _same_optional(a.uv, b.uv)
    return np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces) and same_colors and same_uv


def _ours(field: str, value: str) -> bool:
    """A metadata entry the clean copy carries because we wrote it: its texture references."""
    return field in _OUR_FIELDS or (field == "ply.comment" and value.startswith("TextureFile "))


def _rewrite(mesh: Mesh, name: str, fmt: str, encoding: str, ref: str | None) -> bytes:
    if fmt == "stl" and mesh.vertex_colors is not None:
        mesh = Mesh(mesh.vertices, mesh.faces)  # asked for STL: it cannot hold colours
    if fmt == "stl" and encoding == "binary":
        with np.errstate(over="ignore"):
            exact32 = np.array_equal(mesh.vertices.astype(np.float32).astype(np.float64), mesh.vertices)
        if not exact32:
            raise InputRejected(name, "cannot write binary STL: coordinates need more than float32 precision")
    if fmt == "obj":
        return obj.write(mesh, "ascii", keep_alpha=True, ref=ref)  # exports drop alpha; a clean copy keeps it
    if fmt == "ply":
        return ply.write(mesh, encoding, ref=ref)
    return mesh_to_bytes(mesh, fmt, encoding)


def sanitize_files(
    data: bytes,
    name: str,
    limits: Limits = Limits(),
    *,
    fmt: str | None = None,
    encoding: str | None = None,
    stem: str | None = None,
    companions: Mapping[str, bytes] | Callable[[str], bytes | None] | None = None,
    keep_refs: Callable[[str], str] | None = None,
) -> tuple[dict[str, bytes], LoadedMesh]:
    """The clean files written from `data`'s parsed values, and the input as loaded.

    `stem` given: `{<stem>.<fmt>: mesh, <stem>.mtl: our MTL, <stem>.png|jpg: the re-encoded
    texture}` (texture files only for a textured OBJ/PLY whose texture was found in
    `companions`). `stem` None: `{name: mesh}` only; with `keep_refs` the texture reference the
    input named is kept as `keep_refs(<its base name>)` (uploads), else dropped.

    Worst case: one load of the input, one write, one load of the output (see load_mesh), plus
    two decodes and one encode of a texture (meshes/texture.py)."""
    before = load_mesh(None, limits, data=data, name=name, companions=companions if companions is not None else {})
    fmt = (fmt or before.format).lower().lstrip(".")
    encoding = encoding or before.encoding
    mesh = before.mesh
    if fmt == "stl":
        mesh = Mesh(mesh.vertices, mesh.faces)
    extra: dict[str, bytes] = {}
    ref = None
    if stem is not None:
        ref, extra = companion_files(fmt, mesh.texture if mesh.uv is not None else None, stem)
    elif keep_refs is not None and before.texture_ref is not None and mesh.uv is not None and fmt == before.format:
        ref = keep_refs(base_name(before.texture_ref))
    clean = _rewrite(mesh, name, fmt, encoding, ref)
    out_name = f"{stem}.{fmt}" if stem is not None else (name if fmt == before.format else f"{name}.{fmt}")
    after = load_mesh(None, limits, data=clean, name=out_name, companions=extra)
    left = [(f, v) for f, v in after.metadata if not _ours(f, v)]
    same_texture = (mesh.texture is None or not extra) or (
        after.mesh.texture is not None
        and (after.mesh.texture.width, after.mesh.texture.height) == (mesh.texture.width, mesh.texture.height)
    )
    if not _same_geometry(mesh, after.mesh, "stl" in (fmt, before.format)) or left or not same_texture:
        raise RuntimeError(f"{name}: sanitize would change the geometry or keep metadata (a bug): {left[:3]}")
    return {out_name: clean, **extra}, before


def sanitize_bytes(
    data: bytes,
    name: str,
    limits: Limits = Limits(),
    *,
    fmt: str | None = None,
    encoding: str | None = None,
    keep_refs: Callable[[str], str] | None = None,
) -> bytes:
    """A mesh file written from `data`'s geometry alone (same format and encoding unless `fmt` /
    `encoding` ask otherwise); InputRejected when `data` is not a valid mesh. A textured input's
    MTL/image reference is dropped unless `keep_refs` keeps it (see sanitize_files).

    Worst case: one load of the input, one write, one load of the output (see load_mesh)."""
    files, _ = sanitize_files(data, name, limits, fmt=fmt, encoding=encoding, keep_refs=keep_refs)
    return next(iter(files.values()))


def sanitize_file(
    src: str | Path,
    dst: str | Path,
    limits: Limits = Limits(),
    *,
    fmt: str | None = None,
    encoding: str | None = None,
) -> list[tuple[str, str]]:
    """Write the re-serialised copy of `src` to `dst` (and, for a textured OBJ/PLY whose MTL and
    image lie beside `src`, `<dst stem>.mtl` and `<dst stem>.png|jpg` beside `dst`); returns the
    fields dropped (texture metadata included)."""
    from occlutrace_compute.meshes.load import beside

    data, source = read_bytes(src, limits, None, None)
    dst = Path(dst)
    files, before = sanitize_files(
        data, source, limits, fmt=fmt, encoding=encoding, stem=dst.stem, companions=beside(src, limits)
    )
    for i, (out, content) in enumerate(files.items()):
        (dst if i == 0 else dst.with_name(out)).write_bytes(content)
    return before.metadata
