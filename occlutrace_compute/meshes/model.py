"""The in-memory mesh every layer passes around: plain arrays, no file or format state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Texture:
    """A texture image re-encoded from its decoded pixels alone (meshes/texture.py): `data` is a
    fresh PNG or JPEG with no EXIF, XMP, ICC profile, text chunks, comments or thumbnails."""

    data: bytes
    fmt: str  # "png" | "jpeg"
    width: int
    height: int

    @property
    def suffix(self) -> str:
        return "jpg" if self.fmt == "jpeg" else "png"


@dataclass
class Mesh:
    """A triangle surface in millimetres.

    vertices: (N, 3) float64; faces: (M, 3) int64 indices into vertices;
    vertex_colors: optional (N, 4) uint8 RGBA (kept through load/export for PLY and OBJ);
    uv: optional (N, 2) float64 texture coordinates, one per vertex (OBJ corners whose UVs differ
    for one vertex are split into several vertices on load, see meshes/obj.py);
    texture: optional re-encoded image the UVs index (OBJ: written with an MTL; PLY: TextureFile).
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: Texture | None = None

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    def transformed(self, matrix: np.ndarray) -> Mesh:
        """A copy with vertices mapped by a 4x4 row-major transform (x' = R x + t)."""
        m = np.asarray(matrix, dtype=np.float64)
        v = self.vertices @ m[:3, :3].T + m[:3, 3]
        return Mesh(
            v,
            self.faces.copy(),
            None if self.vertex_colors is None else self.vertex_colors.copy(),
            None if self.uv is None else self.uv.copy(),
            self.texture,
        )


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
    texture_ref: str | None = None  # the MTL (OBJ) or image (PLY) file the input named, if any


def vertex_normals(mesh: Mesh) -> np.ndarray:
    """(N, 3) area-weighted unit vertex normals (a vertex on no face of area: zero).
    Time and memory O(N + F)."""
    tri = mesh.vertices[mesh.faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # area weighted
    idx = mesh.faces.ravel()
    vn = np.stack([np.bincount(idx, weights=np.repeat(fn[:, k], 3), minlength=mesh.n_vertices) for k in range(3)], 1)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.where(norm > 0, norm, 1.0)
