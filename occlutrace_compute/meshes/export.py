"""Write a Mesh as STL, OBJ or PLY; exports carry no metadata (no comments, neutral headers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from occlutrace_compute.meshes import obj, ply, stl
from occlutrace_compute.meshes.detect import FORMATS, suffix_of
from occlutrace_compute.meshes.model import Mesh

_WRITERS: dict[str, Callable[[Mesh, str], bytes]] = {"stl": stl.write, "obj": obj.write, "ply": ply.write}


def mesh_to_bytes(mesh: Mesh, fmt: str, encoding: str = "binary") -> bytes:
    """The file content; `encoding` is "binary" or "ascii" (OBJ is always text).

    Colours are written to PLY (uchar RGBA) and OBJ (RGB floats 0..1); STL cannot hold them.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"unknown mesh format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if encoding not in ("binary", "ascii"):
        raise ValueError(f"unknown encoding {encoding!r}: expected 'binary' or 'ascii'")
    return _WRITERS[fmt](mesh, encoding)


def export_mesh(mesh: Mesh, path: str | Path, fmt: str | None = None, encoding: str = "binary") -> Path:
    """Write `mesh` to `path` (format from the suffix unless `fmt` is given); returns the path."""
    path = Path(path)
    path.write_bytes(mesh_to_bytes(mesh, fmt or suffix_of(path.name), encoding))
    return path
