"""Mesh files: load, validate, sanitize (re-write from the parsed geometry alone) and export STL/OBJ/PLY."""

from occlutrace_compute.meshes.export import export_mesh, mesh_to_bytes
from occlutrace_compute.meshes.limits import Limits
from occlutrace_compute.meshes.load import load_mesh
from occlutrace_compute.meshes.model import LoadedMesh, Mesh
from occlutrace_compute.meshes.sanitize import find_metadata, sanitize_bytes, sanitize_file

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
