"""load_mesh: bytes or a file to a validated Mesh, with the metadata the file carried."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from occlutrace_compute.errors import InputRejected, too_large
from occlutrace_compute.meshes import obj, ply, stl
from occlutrace_compute.meshes.detect import Detected, resolve
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.model import LoadedMesh
from occlutrace_compute.meshes.parsed import Parsed
from occlutrace_compute.meshes.texture import Resolver, base_name, load_texture, resolver_of
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
        assert path is not None  # both None is refused above
        try:
            size = os.stat(path).st_size
            if size > limits.max_bytes:
                raise InputRejected(source, too_large(size, limits.max_bytes, "Limits.max_bytes"))
            data = Path(path).read_bytes()
        except OSError as e:
            raise InputRejected(source, f"cannot read the file: {e.strerror or e}") from None
    if len(data) > limits.max_bytes:
        raise InputRejected(source, too_large(len(data), limits.max_bytes, "Limits.max_bytes"))
    if not data:
        raise InputRejected(source, "empty file")
    return data, source


def beside(path: str | Path, limits: Limits) -> Resolver:
    """Looks a file a mesh names (MTL, texture) up in the mesh's folder, by base name only."""
    folder = Path(path).parent

    def read(ref: str) -> bytes | None:
        name = base_name(ref)
        if not name or name in (".", ".."):
            return None
        candidate = folder / name
        if not candidate.is_file():
            return None
        return read_bytes(candidate, limits, None, None)[0]

    return read


def load_mesh(
    path: str | Path | None = None,
    limits: Limits = Limits(),
    data: bytes | None = None,
    name: str | None = None,
    companions: Mapping[str, bytes] | Resolver | None = None,
) -> LoadedMesh:
    """Load and validate a mesh from `path`, or from `data` (uploaded bytes) named `name`.

    The format comes from the content; a known suffix must agree with it. A texture the mesh
    names (OBJ mtllib -> MTL -> map_Kd; PLY comment TextureFile) is looked up by base name in
    `companions` (files sent with the mesh) or, for a `path` and no companions, beside the file;
    it is re-encoded from its pixels (meshes/texture.py). Raises InputRejected (naming the file
    and the problem) for anything that cannot be used.
    """
    data, source = read_bytes(path, limits, data, name)
    kind = resolve(data, source)
    parsed = PARSERS[kind](data, source, limits)
    mesh, warnings = validate(parsed, source, limits)
    metadata, warnings = parsed.metadata, parsed.warnings + warnings
    if parsed.texture_ref is not None:
        finder = resolver_of(companions) if companions is not None or path is None else beside(path, limits)
        mesh.texture, found, missing = load_texture(kind.fmt, parsed.texture_ref, source, finder, limits)
        metadata, warnings = metadata + found, warnings + missing
    return LoadedMesh(mesh, source, kind.fmt, kind.encoding, metadata, warnings, parsed.texture_ref)
