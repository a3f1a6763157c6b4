"""Wavefront OBJ: v (optionally with r g b [a] colours), f (polygons, v/vt/vn, negative indices).

Everything that is not geometry (comments, o/g names, mtllib/usemtl, free-form statements) is
reported as metadata and dropped by sanitize; OBJ is text only, so `encoding` is always ascii.
"""

from __future__ import annotations

import re

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.parsed import Parsed, colors_to_uint8, fan, printable
from occlutrace_compute.meshes.validate import check_counts

_GEOMETRY = frozenset(("v", "vt", "vn", "vp", "f", "l", "p"))
_NAMED = {"o": "obj.object_name", "g": "obj.group_name", "mtllib": "obj.mtllib", "usemtl": "obj.usemtl"}
_SILENT = frozenset(("s",))  # smoothing groups: dropped by sanitize, nothing to report


def _lines(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    text = text.lstrip("\ufeff").replace("\\\r\n", " ").replace("\\\n", " ")
    return text.splitlines()


def _split(line: str) -> tuple[str, str, str]:
    """(keyword, arguments, inline comment) of one line."""
    body, _, comment = line.partition("#")
    words = body.split(None, 1)
    if not words:
        return "", "", comment.strip()
    return words[0], words[1] if len(words) > 1 else "", comment.strip()


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_corner(token: str) -> bool:
    """An index reference: 'i', 'i/j', 'i//k' or 'i/j/k' with integer parts."""
    parts = token.split("/")
    digits = (p.isascii() and p.lstrip("-").isdigit() for p in parts if p)
    return len(parts) <= 3 and parts[0] != "" and all(digits)


def _scan(data: bytes) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(kept geometry lines as (keyword, arguments, line), metadata): one classification shared
    by parse and strip, so sanitize drops exactly what inspect reports."""
    kept: list[tuple[str, str, str]] = []
    metadata: list[tuple[str, str]] = []
    for line in _lines(data):
        if line[:2] in ("v ", "f ") and "#" not in line:  # the bulk of a file: skip the general split
            kept.append((line[0], line[2:], line))
            continue
        key, args, comment = _split(line)
        if comment:
            metadata.append(("obj.comment", printable(comment)))
        check = _is_corner if key in ("f", "l", "p") else _is_number
        if key in ("v", "f") or (key in _GEOMETRY and all(map(check, args.split()))):
            kept.append((key, args, line.partition("#")[0]))
        elif key in _NAMED:
            metadata.append((_NAMED[key], printable(args)))
        elif key and key not in _SILENT:
            metadata.append(("obj.statement", printable(line, 200)))
    return kept, metadata


def parse(data: bytes, name: str, limits: Limits) -> Parsed:
    kept, metadata = _scan(data)
    check_counts(name, sum(k == "v" for k, _, _ in kept), sum(k == "f" for k, _, _ in kept), limits)
    v_args: list[list[str]] = []
    f_args: list[tuple[str, int]] = []  # (corners, vertices defined so far)
    for key, args, _ in kept:
        if key == "v":
            v_args.append(args.split())
        elif key == "f":
            f_args.append((args.strip(), len(v_args)))
    vertices, colors, warnings = _vertices(v_args, name)
    faces = _faces(f_args, name)
    return Parsed(vertices, faces, colors, metadata, warnings)


def _vertices(rows: list[list[str]], name: str) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    if not rows:
        return np.empty((0, 3)), None, []
    widths = {len(r) for r in rows}
    if not widths <= {3, 4, 6, 7}:
        bad = sorted(widths - {3, 4, 6, 7})[0]
        raise InputRejected(name, f"corrupt OBJ: a 'v' line holds {bad} values (3, 4, 6 or 7 expected)")
    try:
        if len(widths) == 1:
            values = np.array(rows, dtype=np.float64)
        else:
            values = np.full((len(rows), 7), np.nan)
            for i, r in enumerate(rows):
                values[i, : len(r)] = np.array(r, dtype=np.float64)
    except ValueError:
        raise InputRejected(name, "corrupt OBJ: a 'v' value is not a number") from None
    xyz = values[:, :3]
    if not widths & {6, 7}:
        return xyz, None, []
    if widths & {3, 4}:
        return xyz, None, ["vertex colours dropped: only some 'v' lines carry them"]
    # colours are floats 0..1 by convention; some writers use 0..255
    rgb = values[:, 3:6][np.isfinite(values[:, 3:6])]
    scale = 255.0 if rgb.size and rgb.max() > 1.0 else 1.0
    channels = [values[:, 3 + i] for i in range(values.shape[1] - 3)]
    if len(channels) == 4:  # alpha where a line gave one, opaque elsewhere
        channels[3] = np.where(np.isnan(channels[3]), scale, channels[3])
    return xyz, colors_to_uint8(channels, scale), []


_CORNER = r"\d+(?:/\d*){0,2}"
_FACE_LINES = re.compile(rf"{_CORNER}(?:[ \t]+{_CORNER})*(?:\n{_CORNER}(?:[ \t]+{_CORNER})*)*")
_SUFFIXES = re.compile(r"/\S*")


def _faces(rows: list[tuple[str, int]], name: str) -> np.ndarray:
    """1-based (or negative, relative) corner indices to 0-based triangles (fan for polygons)."""
    if not rows:
        return np.empty((0, 3), np.int64)
    text = "\n".join(corners for corners, _ in rows)
    sizes = np.fromiter((len(c.split()) for c, _ in rows), dtype=np.int64, count=len(rows))
    if sizes.min() == sizes.max() >= 3 and _FACE_LINES.fullmatch(text):
        # the usual file: positive indices, one polygon size; parsed by numpy in one go
        try:
            idx = np.array(_SUFFIXES.sub("", text).split()).astype(np.int64).reshape(len(rows), -1)
        except OverflowError:
            raise InputRejected(name, "face index out of range: beyond 64-bit integers") from None
        if idx.min() == 0:
            raise InputRejected(name, "face index out of range: 0 (OBJ indices start at 1)")
        return fan(idx - 1)
    tris: list[np.ndarray] = []
    for corners, defined in rows:
        tokens = corners.split()
        if not all(map(_is_corner, tokens)):
            raise InputRejected(name, "corrupt OBJ: an 'f' index is not an integer")
        try:
            idx = np.array([int(c.partition("/")[0]) for c in tokens], dtype=np.int64)
        except OverflowError:
            raise InputRejected(name, "face index out of range: beyond 64-bit integers") from None
        if (idx == 0).any():
            raise InputRejected(name, "face index out of range: 0 (OBJ indices start at 1)")
        if len(idx) < 3:
            raise InputRejected(name, f"corrupt OBJ: an 'f' line with {len(idx)} corners")
        tris.append(fan(np.where(idx > 0, idx - 1, defined + idx).reshape(1, -1)))
    return np.concatenate(tris)


def strip(data: bytes, name: str, limits: Limits) -> bytes:
    """Geometry lines only (inline comments cut); names, comments and material refs dropped."""
    kept, _ = _scan(data)
    return ("\n".join(line.strip() for _, _, line in kept) + "\n").encode("utf-8")


def write(mesh: Mesh, encoding: str) -> bytes:
    """'v x y z [r g b]' (colours as floats 0..1, alpha is not representable) and 'f a b c'."""
    rows = [f"v {x!r} {y!r} {z!r}" for x, y, z in mesh.vertices.tolist()]
    if mesh.vertex_colors is not None:
        rgb = (mesh.vertex_colors[:, :3].astype(np.float64) / 255.0).tolist()
        rows = [f"{r} {a!r} {b!r} {c!r}" for r, (a, b, c) in zip(rows, rgb)]
    rows += [f"f {a} {b} {c}" for a, b, c in (mesh.faces + 1).tolist()]
    return ("\n".join(rows) + "\n").encode("ascii")

