"""An arch's own anatomical axes, from its shape alone (no landmarks).

Rule (principal axes of the area-weighted surface):
- occlusal axis = smallest principal axis, signed along the surface's vector area (the summed
  area-weighted normals of an open scan point out of the occlusal/outer surface);
- width axis = largest principal axis (an arch is wider than deep);
- anterior = second axis, signed towards the end of the arch that crosses the midline (a U-shaped
  arch has surface on the midline only at the incisors);
- x = anterior x occlusal, so (x, anterior, occlusal) is right-handed and a view from the occlusal
  side with anterior up has x to the right (never mirrored).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from occlutrace_compute.meshes.model import Mesh


@dataclass(frozen=True)
class FaceCross:
    """(ab x ac) of every face of one mesh as three (F,) columns and their (F,) lengths (twice
    the faces' areas), kept with the very arrays they were computed from: arch_frame computes
    them anyway, and the preview's shading and the 3D view's sizing need the same numbers for
    the same mesh (they take them only when handed that mesh's own arrays: `of`)."""

    vertices: np.ndarray  # (N, 3) the source arrays themselves (identity, not equality, is checked)
    faces: np.ndarray  # (F, 3)
    columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # nx, ny, nz, length, each (F,)

    def of(
        self, vertices: np.ndarray, faces: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The columns when (vertices, faces) are the arrays they came from, else None."""
        return self.columns if vertices is self.vertices and faces is self.faces else None


@dataclass(frozen=True)
class ArchFrame:
    origin: np.ndarray  # (3,) centre of the arch's extent along each axis
    x: np.ndarray  # (3,) unit, across the arch
    anterior: np.ndarray  # (3,) unit, towards the incisors
    occlusal: np.ndarray  # (3,) unit, out of the occlusal surface
    extent: np.ndarray  # (3,) size along x, anterior, occlusal (mm)
    # the face cross products arch_frame computed on the way (None for a frame made otherwise)
    cross: FaceCross | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        """Pickled without `cross`: its arrays serve only the very arrays they came from (an
        identity no copy keeps), and would add ~10 MB at 300k faces to whatever carries a frame."""
        return {**self.__dict__, "cross": None}

    def face_cross(self, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """(nx, ny, nz, length) (F,) columns of these arrays' faces when this frame was computed
        from these very arrays (the preview and the report's 3D view reuse them), else None."""
        return self.cross.of(vertices, faces) if self.cross is not None else None

    def local(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) coordinates along (x, anterior, occlusal), relative to origin."""
        return (np.asarray(points) - self.origin) @ np.stack([self.x, self.anterior, self.occlusal], axis=1)


def arch_frame(mesh: Mesh) -> ArchFrame:
    """Principal-axis frame of an arch (see module docstring for the rule).

    Computed on coordinate columns, never on (F, 3) rows, and without BLAS products: nine
    gathers of the faces' corners and a few dozen (F,) multiply-adds, then (N,) dots for the
    extents. O(N + F) time, ~12 (F,) float64 temporaries at once (~30 MB at 300k faces); about
    a third of the row version's CPU (bench/RESULTS.md, fifth session), the same frame within
    rounding (tests/test_analysis_frame.py checks it against the row formulas)."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    xs, ys, zs = (np.ascontiguousarray(v[:, j]) for j in range(3))
    i0, i1, i2 = (np.ascontiguousarray(f[:, j]) for j in range(3))
    ax, ay, az = xs[i0], ys[i0], zs[i0]
    ux, uy, uz = xs[i1] - ax, ys[i1] - ay, zs[i1] - az
    wx, wy, wz = xs[i2] - ax, ys[i2] - ay, zs[i2] - az
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    lengths = np.sqrt(nx * nx + ny * ny + nz * nz)  # twice the areas
    weights = lengths  # the weights' scale cancels
    if not weights.sum() > 0:  # no area (no faces, all degenerate): the vertices, equally weighted
        cx, cy, cz, weights = xs, ys, zs, np.ones(len(xs))
    else:  # centroids a + (u + w) / 3 of each face
        cx, cy, cz = ax + (ux + wx) / 3.0, ay + (uy + wy) / 3.0, az + (uz + wz) / 3.0
    total = float(weights.sum())
    mean = [float(np.dot(weights, c)) / total for c in (cx, cy, cz)]
    d = [c - m for c, m in zip((cx, cy, cz), mean)]
    wd = [weights * dj for dj in d]
    cov = np.empty((3, 3))
    for j in range(3):
        for k in range(j, 3):
            cov[j, k] = cov[k, j] = float(np.dot(wd[j], d[k])) / total
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    occlusal, second, width = vecs[:, 0], vecs[:, 1], vecs[:, 2]
    vector_area = np.array([nx.sum(), ny.sum(), nz.sum()])
    if np.dot(vector_area, occlusal) < 0:
        occlusal = -occlusal
    cols = (xs, ys, zs)
    proj_w, proj_s = _dot(cols, width), _dot(cols, second)
    w_lo, w_hi = float(proj_w.min()), float(proj_w.max())
    near_mid = np.abs(proj_w - 0.5 * (w_lo + w_hi)) <= 0.1 * (0.5 * (w_hi - w_lo))
    s_lo, s_hi = float(proj_s.min()), float(proj_s.max())
    if near_mid.any() and proj_s[near_mid].mean() < 0.5 * (s_lo + s_hi):
        second, s_lo, s_hi = -second, -s_hi, -s_lo
    x = np.cross(second, occlusal)
    proj_x, proj_o = _dot(cols, x), _dot(cols, occlusal)
    lo = np.array([proj_x.min(), s_lo, proj_o.min()])
    hi = np.array([proj_x.max(), s_hi, proj_o.max()])
    axes = np.stack([x, second, occlusal], axis=1)
    origin = axes @ (0.5 * (lo + hi))
    cross = FaceCross(mesh.vertices, mesh.faces, (nx, ny, nz, lengths))
    return ArchFrame(origin=origin, x=x, anterior=second, occlusal=occlusal, extent=hi - lo, cross=cross)


def _dot(cols: tuple[np.ndarray, np.ndarray, np.ndarray], axis: np.ndarray) -> np.ndarray:
    """(N,) coordinates along `axis` from three (N,) coordinate columns (no BLAS call)."""
    return cols[0] * float(axis[0]) + cols[1] * float(axis[1]) + cols[2] * float(axis[2])
