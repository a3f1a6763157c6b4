"""Exact signed point-to-surface distance (point to TRIANGLE), fast on CPU.

Candidates come from a kd-tree (pykdtree) over *proxy points*: one per triangle (its centroid), or
a grid of sub-triangle centroids for triangles larger than the cover radius `rho`. Every point of
every triangle is then within `rho` of one of that triangle's proxies, so a triangle whose proxies
are all farther than D from a query point is at least D - rho away. With the k nearest proxies, the
best exact distance d over their triangles is proven exact when d <= D_k - rho (D_k: k-th proxy
distance). A point that fails the test asks for more neighbours (about as many as the proxy
density it has seen puts within d + rho) and scores only the new ones, until it passes or has every
proxy, so the result is always exact. A `max_distance` cutoff lets far points stop early as NaN
(without one, a point far from a fine mesh may need many candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pykdtree.kdtree import KDTree

from occlutrace_compute.analysis.triangles import (
    MeshFeatures,
    closest_on_triangles,
    feature_normal,
    mesh_features,
    on_boundary,
    row_norms,
    sq_distance_to_triangles,
)
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh

NormalsFrom = Literal["faces", "vertices"]
_PAIRS_PER_CHUNK = 262_144
_FIRST_K = 16


@dataclass(frozen=True)
class SurfaceDistance:
    """Signed distances of N points to a surface; NaN / -1 where farther than max_distance.

    Sign: positive on the side the surface normals point to (outside of a scan's material).
    on_boundary: the closest point lies on an open-boundary edge or vertex of the surface.
    """

    distance: np.ndarray  # (N,) mm
    closest: np.ndarray  # (N, 3)
    face: np.ndarray  # (N,) int64
    on_boundary: np.ndarray  # (N,) bool


def _subdivision_template(n: int) -> np.ndarray:
    """(n*n, 2) (v, w) barycentric coordinates of the centroids of a triangle split n x n."""
    ij = np.array([(i, j) for i in range(n) for j in range(n - i)], dtype=np.float64)
    up = (ij + 1.0 / 3.0) / n
    down_ij = ij[ij.sum(axis=1) <= n - 2]
    down = (down_ij + 2.0 / 3.0) / n
    return np.concatenate([up, down])


def _proxies(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proxy points, their face ids, and each proxy's cover radius (the global max is rho)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    centroid = (a + b + c) / 3.0
    radius = np.maximum.reduce([row_norms(t - centroid) for t in (a, b, c)])
    n_faces = len(faces)
    budget = 4 * n_faces + 4096
    rho = max(float(np.quantile(radius, 0.75)), 1e-9)
    for _ in range(64):  # grows rho geometrically: terminates long before 64 rounds
        splits = np.maximum(np.ceil(radius / rho), 1).astype(np.int64)
        if int(np.sum(splits**2)) <= budget:
            break
        rho *= 1.15
    whole = splits == 1
    points, owner = [centroid[whole]], [np.flatnonzero(whole)]
    cover = radius / splits
    for n in np.unique(splits[~whole]):
        ids = np.flatnonzero(splits == n)
        tmpl = _subdivision_template(int(n))
        a_ids = a[ids]
        ab, ac = b[ids] - a_ids, c[ids] - a_ids
        pts = a_ids[:, None, :] + tmpl[None, :, :1] * ab[:, None, :] + tmpl[None, :, 1:] * ac[:, None, :]
        points.append(pts.reshape(-1, 3))
        owner.append(np.repeat(ids, len(tmpl)))
    owners = np.concatenate(owner)
    return np.concatenate(points), owners, cover[owners]


class SurfaceIndex:
    """A surface prepared for repeated signed-distance queries (build once, query many)."""

    def __init__(self, mesh: Mesh, normals_from: NormalsFrom = "faces", name: str = "mesh") -> None:
        if normals_from not in ("faces", "vertices"):
            raise ValueError(f"normals_from must be 'faces' or 'vertices', not {normals_from!r}")
        if mesh.n_faces == 0:
            raise InputRejected(name, "has no triangles to measure distances to")
        if not np.isfinite(mesh.vertices).all():
            raise InputRejected(name, "has non-finite vertex coordinates")
        self.mesh = mesh
        self.normals_from = normals_from
        self.features: MeshFeatures = mesh_features(mesh)
        proxy_points, self._proxy_face, self._proxy_cover = _proxies(mesh.vertices, mesh.faces)
        self.rho = float(self._proxy_cover.max())
        # pykdtree: OpenMP queries on the process's threads (OMP_NUM_THREADS), a fast build.
        self._tree = KDTree(proxy_points)
        self._n_proxies = len(proxy_points)
        # Candidates are scored in float32 around the mesh centre (twice as fast; rounding about
        # 1e-4 um per mm from the centre, so it can only swap near-tied triangles); the winner's
        # distance, closest point and sign are recomputed in float64.
        self._center = mesh.vertices.mean(axis=0)
        self._corners = (mesh.vertices - self._center).astype(np.float32)[mesh.faces]

    def query(self, points: np.ndarray, max_distance: float | None = None) -> SurfaceDistance:
        """Exact signed distance of each point to the surface (NaN beyond max_distance)."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
        if not np.isfinite(pts).all():
            raise InputRejected("points", "contain non-finite coordinates")
        limit = np.inf if max_distance is None else float(max_distance)
        sq = np.full(len(pts), np.inf)
        face = np.full(len(pts), -1, dtype=np.int64)
        # (points, proxies already scored, proxies to score): a point whose best triangle is not
        # yet proven asks for more proxies and scores only the new ones; once it has every proxy
        # nothing is left unscored, so the loop ends.
        work = [(np.arange(len(pts)), 0, min(_FIRST_K, self._n_proxies))]
        while work:
            todo, done, k = work.pop()
            ask = self._round(pts, todo, done, k, limit, sq, face)
            work += [(todo[ask == kk], k, int(kk)) for kk in np.unique(ask[ask > 0])]
        return self._finish(pts, sq, face, limit)

    def _round(
        self, pts: np.ndarray, todo: np.ndarray, done: int, k: int, limit: float, sq: np.ndarray, face: np.ndarray
    ) -> np.ndarray:
        """Score proxies done..k-1 of the todo points into sq / face; how many each asks for next."""
        ask = np.empty(len(todo), dtype=np.int64)
        step = max(1, _PAIRS_PER_CHUNK // k)
        for start in range(0, len(todo), step):
            rows = todo[start : start + step]
            sq[rows], face[rows], ask[start : start + step] = self._refine(pts[rows], done, k, limit, sq[rows], face[rows])
        return ask

    def _refine(
        self, p: np.ndarray, done: int, k: int, limit: float, best_sq: np.ndarray, best_face: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Improve the best squared distance and face with the proxies ranked done..k-1."""
        bound = limit + self.rho
        dist, idx = self._tree.query(p, k=k, distance_upper_bound=bound)
        dist, idx = dist.reshape(len(p), k)[:, done:], idx.reshape(len(p), k)[:, done:]
        found = idx < self._n_proxies
        safe = np.where(found, idx, 0)
        cand = np.where(found, self._proxy_face[safe], -1)
        p32 = (p - self._center).astype(np.float32)
        if done == 0:
            # The nearest candidate's exact distance bounds the answer from above.
            first = np.flatnonzero(found[:, 0])
            best_sq[first] = self._sq_to_faces(p32[first], cand[first, 0])
            best_face[first] = cand[first, 0]
            found[:, 0] = False
        # A candidate whose proxy is farther than the best so far plus its own cover radius
        # cannot beat it.
        worth = found & (dist - self._proxy_cover[safe] <= np.sqrt(best_sq)[:, None])
        rr, cc = np.nonzero(worth)
        d2 = np.full(worth.shape, np.inf)
        d2[rr, cc] = self._sq_to_faces(p32[rr], cand[rr, cc])
        arg = np.argmin(d2, axis=1)
        row = np.arange(len(p))
        better = d2[row, arg] < best_sq  # ties keep the nearer-ranked candidate
        best_sq[better] = d2[row, arg][better]
        best_face[better] = cand[row, arg][better]
        # Lower bound on the distance of every triangle not among the candidates.
        kth = np.where(np.isfinite(dist[:, -1]), dist[:, -1], bound)
        lower = kth - self.rho
        d = np.sqrt(best_sq)
        proven = (d <= lower) | ((d > limit) & (lower >= limit)) | (k == self._n_proxies)
        return best_sq, best_face, np.where(proven, 0, self._ask(k, np.minimum(d, limit) + self.rho, kth))

    def _ask(self, k: int, reach: np.ndarray, kth: np.ndarray) -> np.ndarray:
        """Proxies an unproven point asks for next: all within reach = d + rho make it exact. On a
        surface, k proxies within kth predict k * (reach / kth)^2 of them; asking for 25% more
        (a power of two or 1.5 times one, so points share rounds) mostly avoids another round."""
        with np.errstate(divide="ignore"):
            want = np.minimum(1.25 * k * (reach / kth) ** 2, self._n_proxies)
        want = np.maximum(want, k + 1)
        size = 2.0 ** np.floor(np.log2(want))
        size = np.where(want <= size, size, np.where(want <= 1.5 * size, 1.5 * size, 2 * size))
        return np.minimum(size, self._n_proxies).astype(np.int64)

    def _sq_to_faces(self, p32: np.ndarray, faces: np.ndarray) -> np.ndarray:
        return sq_distance_to_triangles(p32, self._corners[faces])

    def _finish(self, pts: np.ndarray, sq: np.ndarray, face: np.ndarray, limit: float) -> SurfaceDistance:
        n = len(pts)
        hit = (face >= 0) & (np.sqrt(sq) <= limit)
        distance = np.full(n, np.nan)
        closest = np.full((n, 3), np.nan)
        out_face = np.full(n, -1, dtype=np.int64)
        boundary = np.zeros(n, dtype=bool)
        if hit.any():
            f_ids = face[hit]
            f = self.mesh.faces[f_ids]
            v = self.mesh.vertices
            res = closest_on_triangles(pts[hit], v[f[:, 0]], v[f[:, 1]], v[f[:, 2]])
            if self.normals_from == "faces":
                normal = feature_normal(self.features, self.mesh.faces, f_ids, res.region)
            else:
                normal = np.einsum("pk,pkj->pj", res.bary, self.features.vertex_normals[f])
            side = np.einsum("ij,ij->i", pts[hit] - res.point, normal)
            distance[hit] = np.where(side < 0, -1.0, 1.0) * np.sqrt(res.sq_distance)
            closest[hit] = res.point
            out_face[hit] = f_ids
            boundary[hit] = on_boundary(self.features, self.mesh.faces, f_ids, res.region)
        return SurfaceDistance(distance, closest, out_face, boundary)


def signed_distance(
    points: np.ndarray,
    mesh: Mesh,
    normals_from: NormalsFrom = "faces",
    max_distance: float | None = None,
) -> SurfaceDistance:
    """Exact signed distance of points (N, 3) to the triangles of mesh.

    normals_from="faces": sign from the pseudo-normal of the closest feature (face, edge or
    vertex; exact inside/outside on closed meshes). "vertices": sign from the barycentric blend of
    angle-weighted vertex normals at the closest point (smoother on noisy open scans).
    """
    return SurfaceIndex(mesh, normals_from).query(points, max_distance)
