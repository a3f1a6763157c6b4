"""Mesh files: load, validate, sanitize (strip metadata) and export STL/OBJ/PLY."""

from occlutrace_compute.meshes.model import LoadedMesh, Mesh

__all__ = ["LoadedMesh", "Mesh"]
