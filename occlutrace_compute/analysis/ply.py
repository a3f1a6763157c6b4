"""Writing coloured result meshes. The one place to swap for occlutrace_compute.meshes export."""

from __future__ import annotations

from pathlib import Path

import trimesh

from occlutrace_compute.meshes.model import Mesh


def write_colored_ply(mesh: Mesh, path: str | Path) -> Path:
    """Binary PLY with per-vertex RGBA (mesh.vertex_colors), geometry untouched (no merging)."""
    if mesh.vertex_colors is None:
        raise ValueError("write_colored_ply needs vertex_colors")
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=mesh.vertex_colors, process=False, validate=False)
    out = Path(path)
    out.write_bytes(tm.export(file_type="ply", encoding="binary"))
    return out
