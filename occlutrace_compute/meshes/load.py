"""load_mesh: bytes or a file to a validated Mesh, with the metadata the file carried."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import obj, ply, stl
from occlutrace_compute.meshes.detect import Detected, resolve
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.model import LoadedMesh
from occlutrace_compute.meshes.parsed import Parsed
from occlutrace_compute.meshes.validate import validate

Reader = Callable[[bytes, str, Limits], Parsed]
PARSERS: dict[Detected, Reader] = {
    Detected("stl", "binary"): stl.parse_binary,
    Detected("stl", "ascii"): stl.parse_ascii,
    Detected("obj", "ascii"): obj.parse,
    Detected("ply", "binary"): ply.parse,
    Detected("ply", "ascii"): ply.parse,
}


def read_bytes(path: str | Path | None, limits: Limits, data: bytes | None, name: str | None) -> tuple[bytes, str]:
    """The file's bytes and the name to report, with the size limit checked before reading."""
    if data is None and path is None:
        raise TypeError("load_mesh needs a path or data")
    source = name if name is not None else str(path)
    if data is None:
        try:
            size = os.stat(path).st_size
            if size > limits.max_bytes:
                raise InputRejected(source, f"file too large: {size} bytes > limit {limits.max_bytes}")
            data = Path(path).read_bytes()
        except OSError as e:
            raise InputRejected(source, f"cannot read the file: {e.strerror or e}") from None
    if len(data) > limits.max_bytes:
        raise InputRejected(source, f"file too large: {len(data)} bytes > limit {limits.max_bytes}")
    if not data:
        raise InputRejected(source, "empty file")
    return data, source


def load_mesh(
    path: str | Path | None = None,
    limits: Limits = Limits(),
    data: bytes | None = None,
    name: str | None = None,
) -> LoadedMesh:
    """Load and validate a mesh from `path`, or from `data` (uploaded bytes) named `name`.

    The format comes from the content; a known suffix must agree with it. Raises InputRejected
    (naming the file and the problem) for anything that cannot be used.
    """
    data, source = read_bytes(path, limits, data, name)
    kind = resolve(data, source)
    parsed = PARSERS[kind](data, source, limits)
    mesh, warnings = validate(parsed, source, limits)
    return LoadedMesh(mesh, source, kind.fmt, kind.encoding, parsed.metadata, parsed.warnings + warnings)
