"""The in-memory mesh every layer passes around: plain arrays, no file or format state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Mesh:
    """A triangle surface in millimetres.

    vertices: (N, 3) float64; faces: (M, 3) int64 indices into vertices;
    vertex_colors: optional (N, 4) uint8 RGBA (kept through load/export for PLY and OBJ).
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    def transformed(self, matrix: np.ndarray) -> "Mesh":
        """A copy with vertices mapped by a 4x4 row-major transform (x' = R x + t)."""
        m = np.asarray(matrix, dtype=np.float64)
        v = self.vertices @ m[:3, :3].T + m[:3, 3]
        return Mesh(v, self.faces.copy(), None if self.vertex_colors is None else self.vertex_colors.copy())


@dataclass
class LoadedMesh:
    """A mesh as read from a file, with what the file said about itself.

    metadata lists, as (field, value), everything of the file that is not geometry and that
    `sanitize` therefore does not write: STL headers, names, keyword tails, foreign normals,
    attribute bytes; PLY comments, obj_info, extra elements/properties/lists; OBJ comments,
    names, normals, texture coordinates, corner refs. Repeated fields give up to 10 sample
    values and one "<count> ..., <bytes> bytes" summary (see each format module).
    """

    mesh: Mesh
    source: str
    format: str  # "stl" | "obj" | "ply"
    encoding: str  # "ascii" | "binary"
    metadata: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
