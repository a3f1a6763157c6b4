"""Input limits: the bounds a mesh file must stay within before we spend memory or time on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Limits:
    """Checked as early as possible: file size before reading, header counts before allocating.

    units: what to do when the largest bounding-box extent falls outside
    [min_extent_mm, max_extent_mm] (a dental arch is a few cm; metres or micrometres are the
    usual export mistakes): "warn" adds a LoadedMesh warning, "reject" raises InputRejected.
    max_faces bounds the triangles after fan triangulation (checked from the corner counts before
    triangulating); max_polygon_corners bounds one polygon (scanner meshes are triangles, CAD
    exports have n-gons of tens of corners; a polygon of millions is an attack, not a tooth).
    """

    max_bytes: int = 200_000_000
    max_vertices: int = 5_000_000
    max_faces: int = 10_000_000
    max_polygon_corners: int = 1000
    max_texture_pixels: int = 64_000_000  # an 8k x 8k texture; checked from the image header before decoding
    units: Literal["warn", "reject"] = "warn"
    min_extent_mm: float = 5.0
    max_extent_mm: float = 300.0
