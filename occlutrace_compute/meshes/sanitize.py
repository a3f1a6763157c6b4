"""Strip every embedded field (headers, names, comments, material refs) and keep the geometry.

The stripped copy keeps its format and encoding; it is re-loaded and compared with the original
before it is returned, so a sanitized file never differs in geometry or still carries metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from occlutrace_compute.meshes import obj, ply, stl
from occlutrace_compute.meshes.detect import Detected
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.load import load_mesh, read_bytes

_STRIPPERS = {
    Detected("stl", "binary"): stl.strip_binary,
    Detected("stl", "ascii"): stl.strip_ascii,
    Detected("obj", "ascii"): obj.strip,
    Detected("ply", "binary"): ply.strip,
    Detected("ply", "ascii"): ply.strip,
}


def find_metadata(
    path: str | Path | None = None, data: bytes | None = None, name: str | None = None, limits: Limits = Limits()
) -> list[tuple[str, str]]:
    """Every embedded (field, value) pair, e.g. ("stl.header", "Patient: ..."); validates the mesh."""
    return load_mesh(path, limits, data=data, name=name).metadata


def sanitize_bytes(data: bytes, name: str, limits: Limits = Limits()) -> bytes:
    """A copy of a mesh file without metadata; InputRejected when the file is not a valid mesh."""
    before = load_mesh(None, limits, data=data, name=name)
    clean = _STRIPPERS[Detected(before.format, before.encoding)](data, name, limits)
    after = load_mesh(None, limits, data=clean, name=name)
    a, b = before.mesh, after.mesh
    same = (
        np.array_equal(a.vertices, b.vertices)
        and np.array_equal(a.faces, b.faces)
        and (a.vertex_colors is None) == (b.vertex_colors is None)
        and (a.vertex_colors is None or np.array_equal(a.vertex_colors, b.vertex_colors))
    )
    if not same or after.metadata:
        raise RuntimeError(f"{name}: sanitize would change the geometry or keep metadata (a bug)")
    return clean


def sanitize_file(src: str | Path, dst: str | Path, limits: Limits = Limits()) -> list[tuple[str, str]]:
    """Write the stripped copy of `src` to `dst`; returns the fields removed."""
    data, source = read_bytes(src, limits, None, None)
    removed = load_mesh(None, limits, data=data, name=source).metadata
    Path(dst).write_bytes(sanitize_bytes(data, source, limits))
    return removed
