"""Mesh files: load, validate, sanitize (re-write from the parsed geometry alone) and export STL/OBJ/PLY.

The names below are imported on first use (PEP 562): a process that needs only the `Mesh`
model (`occlutrace align`'s registration process, jobs/registrar.py, whose import of torch is
the command's critical path) does not load every reader and writer (~0.05 s CPU).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from occlutrace_compute.meshes.export import export_mesh, mesh_to_bytes
    from occlutrace_compute.meshes.limits import Limits
    from occlutrace_compute.meshes.load import load_mesh
    from occlutrace_compute.meshes.model import LoadedMesh, Mesh
    from occlutrace_compute.meshes.sanitize import find_metadata, sanitize_bytes, sanitize_file

# exported name -> the submodule that defines it
_EXPORTS = {
    "Limits": "limits",
    "LoadedMesh": "model",
    "Mesh": "model",
    "export_mesh": "export",
    "find_metadata": "sanitize",
    "load_mesh": "load",
    "mesh_to_bytes": "export",
    "sanitize_bytes": "sanitize",
    "sanitize_file": "sanitize",
}

__all__ = [
    "Limits",
    "LoadedMesh",
    "Mesh",
    "export_mesh",
    "find_metadata",
    "load_mesh",
    "mesh_to_bytes",
    "sanitize_bytes",
    "sanitize_file",
]


def __getattr__(name: str) -> Any:
    """The exported names, imported from their submodule on first use (then cached here). Any
    other name is an AttributeError, so `from occlutrace_compute.meshes import ply` still
    imports the submodule."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
