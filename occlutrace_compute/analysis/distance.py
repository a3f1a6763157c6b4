"""Exact signed point-to-surface distance (point to TRIANGLE), fast on CPU, bounded work per point.

Candidates come from a kd-tree (pykdtree) over *proxy points*: the centre of each triangle's
smallest enclosing ball, or, for a triangle larger than the cover radius `rho`, the centres of
its two halves (cut at its longest side) or of an n x n grid of similar sub-triangles of each
half (`_proxies`). Every point of every triangle is then within `rho` of one of that triangle's
proxies, so a triangle whose proxies are all farther than D from a query point is at least
D - rho away.

A query asks the tree for the k nearest proxies within `reach = limit + rho` (limit: the
`max_distance` cutoff, padded by a relative 1e-9 against the tree's rounding). A point is done when

- the tree returned FEWER than k proxies: every proxy within reach is among them, so every triangle
  within the cutoff is a candidate and the best one is exact (or the point is beyond the cutoff).
  This is decided from the tree's answer itself, never by comparing a bound with itself after
  arithmetic (`(limit + rho) - rho` rounds below `limit` for some rho);
- or the best exact distance d over the candidates is <= D_k - rho (D_k: k-th proxy distance);
- or it has every proxy.

The first k is 12 (_FIRST_K): on a 150k-vertex rescan measured against its reference (most points
within 0.05 mm), 12 proxies settle about 90 % of the points; neighbours asked in all: 2.19M /
2.11M / 2.26M / 2.73M for a first k of 8 / 10 / 12 / 16, and 12, unlike 10, is an ask size, so the
bounds below keep their form (fewer rounds than 8). Otherwise a point asks for more: about as many as the proxy
density it has seen puts within d + rho, at least 4/3 and at most 4 times its k (sizes 2^n or
1.5 * 2^n; 12 is one); the points left in a round that ask for the same size go on together (one
tree query per group of equal (scored, asked) sizes: with S <= 2 log2(n_proxies) + 2 sizes, at
most S^2 groups a round, each for many points).

Worst case, per point p, with c(p) = the number of proxies within reach of p (c(p) <= n_proxies,
and all of them when there is no cutoff): p asks again only while its k-th proxy is within reach,
i.e. while k <= c(p), so its last k is <= max(12, 4 c(p)); k grows at least 4/3 per round, so a
query takes at most 1 + log_{4/3}(n_proxies / 12) rounds (41 for a million proxies), the tree
returns at most 4 times p's last k over all rounds (<= 16 max(3, c(p)) neighbours) and p scores
at most max(12, 4 c(p)) triangles exactly. A point with no proxy within reach (no surface within
the cutoff) costs one 12-neighbour query. Memory: at most 131,072 (point, candidate) pairs in
flight (plus one point's k when k is larger). Proxies: at most 4 per triangle + 4096 (`_proxies`;
1.2 per triangle on a scan).

Winners (_finish): distance, closest point and sign in float64; a closest point inside its face
(98 % of a rescan's vertices) is signed by that face's normal and is never on the open boundary,
so pseudo-normals and rim flags are built only around the edge and corner hits: O(N) plus one
byte pass over the faces, never the whole mesh's features (0.16 s for 310k faces).

Measured and left as is (150k-vertex pair, 157k queries, one thread): the kd-tree search is ~60 %
of a deviation query and near its floor: every point asking exactly the proxies within d + rho in
one round (an oracle) would take 0.26 s against 0.33 s now; pykdtree on float32 proxies and
queries is only 2-4 % faster (0.261 vs 0.267 s for k = 12), not worth a rounding margin in every
proof; a face-plane lower bound would skip 41 % of the exact triangle tests but saves ~0.015 s
net of its own cost.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pykdtree.kdtree import KDTree
from threadpoolctl import ThreadpoolController

from occlutrace_compute.analysis.triangles import (
    EDGE_AB,
    EDGE_CA,
    INTERIOR,
    VERTEX_A,
    ClosestOnTriangles,
    Columns,
    MeshFeatures,
    closest_on_columns,
    dot_columns,
    face_normal_columns,
    feature_normal,
    mesh_features,
    on_boundary,
    sq_distance_columns,
    sub_columns,
)
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh

NormalsFrom = Literal["faces", "vertices"]
_PAIRS_PER_CHUNK = 131_072  # per chunk: its (points, k) arrays (1 MB each) stay in cache with two threads at work
_FIRST_K = 12  # a size (1.5 * 2^3): see the module docstring
_SERIAL_PAIRS = 32_768  # (point, neighbour) pairs under which a tree query runs on one thread


@functools.lru_cache(maxsize=1)
def _openmp() -> ThreadpoolController:
    """Created after pykdtree is imported, so it sees pykdtree's OpenMP runtime."""
    return ThreadpoolController()


def one_openmp_thread():
    """Context manager: tree queries on one OpenMP thread (for callers that run queries on
    several Python threads themselves, or small queries)."""
    return _openmp().limit(limits=1, user_api="openmp")


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


def _sub_triangles(n: int) -> np.ndarray:
    """(n*n, 3, 2) (v, w) barycentric coordinates of the corners of the triangles of a triangle
    split n x n (n*(n+1)/2 upright ones and n*(n-1)/2 upside-down ones; together they tile it)."""
    ij = [(i, j) for i in range(n) for j in range(n - i)]
    up = [((i, j), (i + 1, j), (i, j + 1)) for i, j in ij]
    down = [((i + 1, j), (i + 1, j + 1), (i, j + 1)) for i, j in ij if i + j <= n - 2]
    return np.array(up + down, dtype=np.float64) / n


def _balls(a: Columns, b: Columns, c: Columns) -> tuple[np.ndarray, np.ndarray]:
    """Centre (P, 3) and cover radius (P,) of triangles (a[i], b[i], c[i]) given as coordinate
    columns: the smallest ball around each (an acute triangle's circumcentre, else the midpoint
    of its longest side; 10-25 % smaller than the centroid's for the right and obtuse triangles of
    a scan). The radius is the largest corner distance from the centre as computed, so the ball
    holds the whole triangle (it is convex) whatever the rounding of the centre or of the
    acute/obtuse test; degenerate triangles (a segment, a point) get their longest side's
    midpoint, and a centre that is not finite falls back to the centroid."""
    ab, ac = sub_columns(b, a), sub_columns(c, a)
    lab, lac, dot = dot_columns(ab, ab), dot_columns(ac, ac), dot_columns(ab, ac)
    lbc = lab + lac - 2.0 * dot  # |c - b|^2 (only picks the case: the radius is measured below)
    # circumcentre = a + s ab + t ac, from the 2 x 2 Gram system of the sides
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        den = 2.0 * (lab * lac - dot * dot)
        s = lac * (lab - dot) / den
        t = lab * (lac - dot) / den
    at_bc, at_ca, at_ab = lbc >= lab + lac, lac >= lab + lbc, lab >= lac + lbc  # >= 90 degrees
    s = np.where(at_bc, 0.5, np.where(at_ca, 0.0, np.where(at_ab, 0.5, s)))
    t = np.where(at_bc, 0.5, np.where(at_ca, 0.5, np.where(at_ab, 0.0, t)))
    bad = ~(np.isfinite(s) & np.isfinite(t))
    if bad.any():  # rare (degenerate corners): the where passes only then
        s, t = np.where(bad, 1.0 / 3.0, s), np.where(bad, 1.0 / 3.0, t)
    centre = (a[0] + s * ab[0] + t * ac[0], a[1] + s * ab[1] + t * ac[1], a[2] + s * ab[2] + t * ac[2])
    sq = [dot_columns(d, d) for d in (sub_columns(a, centre), sub_columns(b, centre), sub_columns(c, centre))]
    radius = np.sqrt(np.maximum(np.maximum(sq[0], sq[1]), sq[2]))  # no (3, P) stack
    return np.stack(centre, axis=1), radius


def _halves(a: Columns, b: Columns, c: Columns) -> tuple[Columns, Columns, Columns]:
    """Corner columns of the two halves of each triangle cut from its longest side's midpoint to
    the opposite corner (2P triangles: first halves of all, then second halves)."""
    sq = np.stack([dot_columns(d, d) for d in (sub_columns(c, b), sub_columns(a, c), sub_columns(b, a))])
    longest = np.argmax(sq, axis=0)  # the side opposite corner `longest`
    corners = np.stack([np.stack(a), np.stack(b), np.stack(c)])  # (3 corners, 3 axes, P)
    cols = np.arange(len(longest))
    apex, left, right = (corners[(longest + k) % 3, :, cols].T for k in range(3))  # (3, P) each
    mid = 0.5 * (left + right)

    def two(x: np.ndarray, y: np.ndarray) -> Columns:
        both = np.concatenate([x, y], axis=1)
        return both[0], both[1], both[2]

    return two(apex, apex), two(left, mid), two(mid, right)


# rho's start: the cover radius of 85 % of the triangles. Index build + query CPU (one thread)
# for 0.75 / 0.85 / 0.9: a 150k-vertex pair's deviation 0.736 / 0.685 / 0.700 s, a bite arch's
# contacts 0.166 / 0.130 / 0.121 s, a synthetic arch scan 0.945 / 0.888 / 0.899 s (fewer halves
# to build; the neighbours asked stay within 1 % up to 0.85, +6 % at 0.9).
_RHO_QUANTILE = 0.85
_GRID_CHUNK = 65_536  # sub-triangles made at once when big triangles are split n x n (bounds temporaries)


def _proxies(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proxy points (P, 3), their face ids (P,), and each proxy's cover radius (P,; the max is rho).

    A triangle whose smallest ball is within rho is one proxy (the ball's centre). A larger one is
    cut in two halves at its longest side (most large triangles of a scan are just above rho:
    two proxies, where an n x n grid would make four), and a half still larger than rho is split
    n x n (n = ceil(radius / rho): similar triangles of radius / n). rho starts at the 85th
    percentile of the radii and grows by 15 % while the proxies would exceed the budget
    (4 per triangle + 4096); after 64 rounds every triangle is whole. Time O(M) per round,
    memory O(M) plus _GRID_CHUNK sub-triangles at a time."""
    vt, ft = np.ascontiguousarray(vertices.T), np.ascontiguousarray(faces.T)  # columns: contiguous gathers
    a, b, c = ((vt[0][ft[k]], vt[1][ft[k]], vt[2][ft[k]]) for k in range(3))
    centre, radius = _balls(a, b, c)
    n_faces = len(faces)
    budget = 4 * n_faces + 4096
    rho = max(float(np.quantile(radius, _RHO_QUANTILE)), 1e-9)
    big = np.flatnonzero(radius > rho)  # rho only grows below: later big faces are among these
    half = _halves(*((x[big], y[big], z[big]) for x, y, z in (a, b, c)))
    half_owner = np.concatenate([big, big])
    half_centre, half_radius = _balls(*half)
    for _ in range(64):  # grows rho geometrically
        split = radius[half_owner] > rho
        # counted in float64 (an int64 square could wrap); a half needing more than the budget
        # alone is clipped to it (it is over budget either way)
        n_grid = np.minimum(np.maximum(np.ceil(half_radius / rho), 1.0), float(budget))
        if float(np.sum(radius <= rho)) + float(np.sum(n_grid[split] ** 2)) <= budget:
            break
        rho *= 1.15
    else:  # uneven beyond 1.15^64 (no real mesh): every triangle whole, n_faces proxies
        rho = float(radius.max())
        split = np.zeros(len(half_owner), dtype=bool)
    whole = np.flatnonzero(radius <= rho)
    points, owner, cover = [centre[whole]], [whole], [radius[whole]]
    one = np.flatnonzero(split & (half_radius <= rho))
    points.append(half_centre[one])
    owner.append(half_owner[one])
    cover.append(half_radius[one])
    grid = split & (half_radius > rho)
    for n in np.unique(n_grid[grid]):
        tmpl = _sub_triangles(int(n))  # (S, 3, 2); n * n <= budget here
        ids = np.flatnonzero(grid & (n_grid == n))
        step = max(1, _GRID_CHUNK // len(tmpl))
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            o, u, w = (
                np.stack([col[chunk] for col in corner])
                for corner in (half[0], sub_columns(half[1], half[0]), sub_columns(half[2], half[0]))
            )
            # sub-triangle corner k, axis i: o + v * u + w * w, for every (chunk triangle, S) pair
            sub = [
                tuple(
                    (o[i][:, None] + tmpl[None, :, k, 0] * u[i][:, None] + tmpl[None, :, k, 1] * w[i][:, None]).ravel()
                    for i in range(3)
                )
                for k in range(3)
            ]
            sub_centre, sub_radius = _balls(sub[0], sub[1], sub[2])
            points.append(sub_centre)
            owner.append(np.repeat(half_owner[chunk], len(tmpl)))
            cover.append(sub_radius)
    return np.concatenate(points), np.concatenate(owner), np.concatenate(cover)


def query_arguments(points: np.ndarray, max_distance: float | None) -> tuple[np.ndarray, float]:
    """A distance query's points as float64 (N, 3) and its cutoff (inf for None), checked:
    a clear error for a wrong shape, non-finite coordinates or a negative cutoff."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputRejected("points", "contain non-finite coordinates")
    if max_distance is not None and not float(max_distance) >= 0:
        raise ValueError(f"max_distance must be >= 0 or None, got {max_distance}")
    return pts, np.inf if max_distance is None else float(max_distance)


_NEAR_CELLS = 128  # faces_near: at most this many grid cells per axis (a 2M-cell bool grid at most)


def faces_near(mesh: Mesh, points: np.ndarray, reach: float) -> np.ndarray:
    """Sorted ids of the faces that may lie within `reach` of some of the points (N, 3): every
    face that does is among them (a superset), so a SurfaceIndex built over them answers those
    points' queries with max_distance <= reach as the whole mesh's would. For contacts: about a
    sixth of an arch lies within the cutoff of the other arch.

    A face is kept when its bounding box grown by reach (padded against rounding) may hold a
    point: on a grid of side h at least the grown box's extent of 99 % of the faces, such a box
    spans at most two cells per axis, so a point inside it lies in the box's first cell or the
    next one along each axis; every point marks its own cell and the 7 before it, and the box's
    first cell is looked up. Cells come from the same monotone arithmetic for points and boxes.
    The larger faces are kept without the lookup. Time O(N + M), memory O(N + M) plus at most
    (_NEAR_CELLS + 1)^3 bytes."""
    pts, limit = query_arguments(points, reach)
    pad = limit * (1.0 + 1e-9) + 1e-12
    if not np.isfinite(pad):  # no cutoff: every face may be the nearest
        return np.arange(mesh.n_faces)
    if not len(pts):
        return np.zeros(0, dtype=np.int64)
    pc = np.ascontiguousarray(pts.T)
    lo = np.array([pc[axis].min() for axis in range(3)]) - pad
    hi = np.array([pc[axis].max() for axis in range(3)]) + pad
    vt, ft = np.ascontiguousarray(mesh.vertices.T), np.ascontiguousarray(mesh.faces.T)
    grown_lo, meets, extent = [], np.ones(mesh.n_faces, dtype=bool), np.zeros(mesh.n_faces)
    for axis in range(3):
        x = [vt[axis][ft[k]] for k in range(3)]
        g_lo, g_hi = np.minimum(np.minimum(x[0], x[1]), x[2]) - pad, np.maximum(np.maximum(x[0], x[1]), x[2]) + pad
        meets &= (g_hi >= lo[axis]) & (g_lo <= hi[axis])
        np.maximum(extent, g_hi - g_lo, out=extent)
        grown_lo.append(g_lo)
    span = float(np.max(hi - lo))
    h = max(float(np.quantile(extent[meets], 0.99)) if meets.any() else 0.0, span / _NEAR_CELLS, 1e-12) * (1 + 1e-6)
    n = np.minimum(np.floor((hi - lo) / h).astype(np.int64) + 1, _NEAR_CELLS + 1)
    stride = (n[1] * n[2], n[2], 1)  # a flat, C-ordered grid

    def cell(x: np.ndarray, axis: int) -> np.ndarray:
        return np.clip(np.floor((x - lo[axis]) / h), 0, n[axis] - 1).astype(np.int64)

    grid = np.zeros(int(np.prod(n)), dtype=bool)
    own = [cell(pc[axis], axis) for axis in range(3)]
    for dx in (0, 1):  # a point's cell and the ones before it: the first cells of boxes holding it
        for dy in (0, 1):
            for dz in (0, 1):
                grid[sum(np.maximum(own[a] - d, 0) * stride[a] for a, d in enumerate((dx, dy, dz)))] = True
    small = extent * (1 + 1e-6) <= h  # spans at most two cells per axis (with rounding to spare)
    ids = np.flatnonzero(meets & small)
    hit = grid[sum(cell(grown_lo[axis][ids], axis) * stride[axis] for axis in range(3))]
    keep = meets & ~small
    keep[ids[hit]] = True
    return np.flatnonzero(keep)


class SurfaceIndex:
    """A surface prepared for repeated signed-distance queries (build once, query many).

    faces: build over these face ids only (sorted, unique); answers (face ids, signs, rim flags:
    from the whole mesh) are then exact for every query point whose faces within its
    max_distance are all among them, e.g. faces_near(mesh, points, max_distance) for those points
    (contacts: the other arch's faces near this one). None: every face."""

    def __init__(
        self, mesh: Mesh, normals_from: NormalsFrom = "faces", name: str = "mesh", faces: np.ndarray | None = None
    ) -> None:
        if normals_from not in ("faces", "vertices"):
            raise ValueError(f"normals_from must be 'faces' or 'vertices', not {normals_from!r}")
        if mesh.n_faces == 0:
            raise InputRejected(name, "has no triangles to measure distances to")
        if not np.isfinite(mesh.vertices).all():
            raise InputRejected(name, "has non-finite vertex coordinates")
        self.mesh = mesh
        self.normals_from = normals_from
        if faces is None:
            proxy_points, proxy_face, proxy_cover = _proxies(mesh.vertices, mesh.faces)
        else:
            # No face near any point: one face stands for the mesh (a superset; every query
            # point is then farther than its cutoff, NaN, as with the whole mesh).
            some = np.asarray(faces, dtype=np.int64) if len(faces) else np.zeros(1, dtype=np.int64)
            if some.min() < 0 or some.max() >= mesh.n_faces:
                raise ValueError(f"faces must be face ids of {name} (0..{mesh.n_faces - 1})")
            proxy_points, local_face, proxy_cover = _proxies(mesh.vertices, mesh.faces[some])
            proxy_face = some[local_face]
        self.rho = float(proxy_cover.max())
        # pykdtree: OpenMP queries on the process's threads (OMP_NUM_THREADS), a fast build.
        self._tree = KDTree(proxy_points)
        self._n_proxies = len(proxy_points)
        # One padding entry at n_proxies (the tree's index for "no neighbour"): face -1, cover 0,
        # so a missing neighbour's lower bound is its distance, inf, and it is never scored.
        self._proxy_face = np.append(proxy_face, -1)
        self._proxy_cover = np.append(proxy_cover, 0.0)
        # Candidates are scored in float32 around the mesh centre (twice as fast; rounding about
        # 1e-4 um per mm from the centre, so it can only swap near-tied triangles); the winner's
        # distance, closest point and sign are recomputed in float64.
        self._center = mesh.vertices.mean(axis=0)
        # As 9 contiguous columns (x, y, z of corners a, b, c): numpy's arithmetic on gathered
        # contiguous columns runs about twice as fast as on the strided columns of (M, 3, 3) rows.
        v32 = np.ascontiguousarray((mesh.vertices - self._center).astype(np.float32).T)
        ft = np.ascontiguousarray(mesh.faces.T)
        # float64 columns of the vertices and face corners: the winners' exact re-check gathers them
        self._vertex_columns = np.ascontiguousarray(mesh.vertices.T)
        self._face_columns = ft
        self._corner_columns = tuple(v32[axis][ft[corner]] for corner in range(3) for axis in range(3))

    @functools.cached_property
    def features(self) -> MeshFeatures:
        """Topology and pseudo-normals of the whole mesh. Queries do not need them: a closest
        point inside its face is signed by that face's normal, and edge and corner hits (~2 % of a
        rescan's vertices) by the features around their faces (_finish, _feature_signs); a query
        uses these once built (then they cost nothing more)."""
        return mesh_features(self.mesh)

    def _local_features(self, hit_faces: np.ndarray) -> tuple[MeshFeatures, np.ndarray, np.ndarray]:
        """Features exact for the given faces, the faces array they index and each given face's
        row in it. A face's pseudo-normals and boundary flags depend only on the faces around its
        vertices, so those suffice; a query that hits most of the mesh (a deviation map) uses the
        whole mesh's, one that hits a few percent (contacts with a cutoff) saves their cost.
        Time and memory O(M) for the ring selection, plus mesh_features of the ring."""
        faces = self.mesh.faces
        if "features" in self.__dict__ or len(hit_faces) > len(faces) // 4:
            return self.features, faces, hit_faces
        used = np.zeros(self.mesh.n_vertices, dtype=bool)
        used[faces[hit_faces].ravel()] = True
        ring = np.flatnonzero(used[faces].any(axis=1))
        ring_vertices, ring_faces = np.unique(faces[ring], return_inverse=True)
        sub = Mesh(self.mesh.vertices[ring_vertices], ring_faces.reshape(-1, 3).astype(np.int64))
        row = np.searchsorted(ring, hit_faces)  # ring is sorted and holds every hit face
        return mesh_features(sub), sub.faces, row

    def query(self, points: np.ndarray, max_distance: float | None = None) -> SurfaceDistance:
        """Exact signed distance of each point (N, 3) to the surface (NaN beyond max_distance).

        Work per point is bounded by the number of proxies within max_distance + rho of it (see the
        module docstring): a point with no surface within the cutoff costs one _FIRST_K-neighbour query.
        """
        pts, limit = query_arguments(points, max_distance)
        sq = np.full(len(pts), np.inf)
        face = np.full(len(pts), -1, dtype=np.int64)
        # Groups of (points, proxies already scored, proxies to score): a point whose best
        # triangle is not yet proven asks for more proxies (k grows >= 4/3 per round) and scores
        # only the new ones; at k == n_proxies nothing is left, so every point leaves after a
        # bounded number of rounds. Points asking for the same size go on together: one tree
        # query per (done, k) group, at most (number of sizes)^2 groups a round.
        groups = [(np.arange(len(pts)), 0, min(_FIRST_K, self._n_proxies))]
        while groups:
            asks: dict[tuple[int, int], list[np.ndarray]] = {}
            for todo, done, k in groups:
                if len(todo) * k <= _SERIAL_PAIRS:
                    # A small round: OpenMP's thread start and barrier cost more than the search
                    # (and far more on a busy machine, where a descheduled thread stalls the barrier).
                    with one_openmp_thread():
                        ask = self._round(pts, todo, done, k, limit, sq, face)
                else:
                    ask = self._round(pts, todo, done, k, limit, sq, face)
                # Each point takes its own ask (<= 4k <= 4 c(p)); asking for the round's largest
                # made a few far points' k everybody's (on a 150k-vertex deviation map: 1.46M
                # pairs in round 2 instead of 0.46M).
                for size in np.unique(ask[ask > 0]):
                    asks.setdefault((k, int(size)), []).append(todo[ask == size])
            groups = [(np.concatenate(rows), done, k) for (done, k), rows in sorted(asks.items())]
        return self._finish(pts, sq, face, limit)

    def reach(self, limit: float) -> float:
        """Tree search radius for a cutoff: limit + rho, padded against the tree's rounding (its
        squared distances carry a relative error near 1e-16; a wider radius only adds candidates)."""
        return (limit + self.rho) * (1.0 + 1e-9) + 1e-12

    def _round(
        self, pts: np.ndarray, todo: np.ndarray, done: int, k: int, limit: float, sq: np.ndarray, face: np.ndarray
    ) -> np.ndarray:
        """Score proxies done..k-1 of the todo points into sq / face; how many each asks for next."""
        ask = np.empty(len(todo), dtype=np.int64)
        step = max(1, _PAIRS_PER_CHUNK // k)
        for start in range(0, len(todo), step):
            rows = todo[start : start + step]
            sq[rows], face[rows], ask[start : start + step] = self._refine(
                pts[rows], done, k, limit, sq[rows], face[rows]
            )
        return ask

    def _refine(
        self, p: np.ndarray, done: int, k: int, limit: float, best_sq: np.ndarray, best_face: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Improve the best squared distance and face with the proxies ranked done..k-1."""
        dist, idx = self._tree.query(p, k=k, distance_upper_bound=self.reach(limit))
        # idx as intp once: numpy gathers with the tree's uint32 indices convert them each time
        # (2.4x slower per gather)
        dist, idx = dist.reshape(len(p), k)[:, done:], idx.reshape(len(p), k)[:, done:].astype(np.intp)
        found = idx < self._n_proxies
        # A point with no proxy within reach is done here: nothing of the surface is within the
        # cutoff (contacts: most of an arch). Only the others are scored.
        live = np.flatnonzero(found.any(axis=1))
        if len(live) == len(p):
            return self._score(p, done, k, limit, best_sq, best_face, dist, idx, found)
        ask = np.zeros(len(p), dtype=np.int64)
        if len(live):
            best_sq[live], best_face[live], ask[live] = self._score(
                p[live], done, k, limit, best_sq[live], best_face[live], dist[live], idx[live], found[live]
            )
        return best_sq, best_face, ask

    def _score(
        self,
        p: np.ndarray,
        done: int,
        k: int,
        limit: float,
        best_sq: np.ndarray,
        best_face: np.ndarray,
        dist: np.ndarray,
        idx: np.ndarray,
        found: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """_refine for points with at least one proxy within reach: score, prove, ask."""
        # Fewer than k proxies within reach: the tree gave every one, so every triangle within the
        # cutoff is among the candidates. Decided from the tree's answer, not from arithmetic.
        complete = ~found[:, -1]
        cand = self._proxy_face[idx]  # -1 where no neighbour (the padding entry)
        p32 = np.ascontiguousarray((p - self._center).astype(np.float32).T)  # (3, N) columns
        # A candidate whose proxy is farther than the best so far (or the cutoff, padded like
        # reach) plus its own cover radius cannot beat it or be within the cutoff; a missing
        # neighbour's bound is inf.
        near = dist - self._proxy_cover[idx]
        if done == 0:
            # The nearest candidate's exact distance bounds the answer from above.
            first = np.flatnonzero(found[:, 0])
            best_sq[first] = self._sq_to_faces(p32[:, first], cand[first, 0])
            best_face[first] = cand[first, 0]
            near[:, 0] = np.inf
        worth = (near <= np.sqrt(best_sq)[:, None]) & (near <= limit * (1.0 + 1e-9) + 1e-12)
        flat = np.flatnonzero(worth)  # row-major as np.nonzero, ~3x faster than its 2-D form
        d2 = np.full(worth.shape, np.inf)
        d2.ravel()[flat] = self._sq_to_faces(p32[:, flat // worth.shape[1]], cand.ravel()[flat])
        arg = np.argmin(d2, axis=1)
        row = np.arange(len(p))
        better = d2[row, arg] < best_sq  # ties keep the nearer-ranked candidate
        best_sq[better] = d2[row, arg][better]
        best_face[better] = cand[row, arg][better]
        # Every triangle not among the candidates is at least kth - rho away (kth: finite here
        # for every point that is not complete).
        kth = dist[:, -1]
        d = np.sqrt(best_sq)
        proven = complete | (d <= kth - self.rho) | (k >= self._n_proxies)
        ask = np.zeros(len(p), dtype=np.int64)
        left = np.flatnonzero(~proven)  # ~10 % of a rescan's points after the first round
        ask[left] = self._ask(k, np.minimum(d[left], limit) + self.rho, kth[left])
        return best_sq, best_face, ask

    def _ask(self, k: int, reach: np.ndarray, kth: np.ndarray) -> np.ndarray:
        """Proxies an unproven point asks for next: all within reach = d + rho make it exact. On a
        surface, k proxies within kth predict k * (reach / kth)^2 of them; asking for 25% more
        mostly avoids another round. Capped at 4k (a bad prediction, e.g. kth near 0, cannot ask
        for the whole mesh) and at least the next size up (>= 4k/3): sizes are 2^n or
        1.5 * 2^n, and 4k is itself a size."""
        with np.errstate(divide="ignore", invalid="ignore"):
            want = 1.25 * k * (reach / kth) ** 2
        want = np.clip(np.nan_to_num(want, nan=4.0 * k, posinf=4.0 * k), k + 1, 4 * k)
        size = 2.0 ** np.floor(np.log2(want))
        size = np.where(want <= size, size, np.where(want <= 1.5 * size, 1.5 * size, 2 * size))
        return np.minimum(size, self._n_proxies).astype(np.int64)

    def _sq_to_faces(self, p32: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Squared float32 distances of points p32 (3, P columns, around the centre) to faces (P,)."""
        c = [col[faces] for col in self._corner_columns]
        return sq_distance_columns((p32[0], p32[1], p32[2]), (c[0], c[1], c[2]), (c[3], c[4], c[5]), (c[6], c[7], c[8]))

    def _finish(self, pts: np.ndarray, sq: np.ndarray, face: np.ndarray, limit: float) -> SurfaceDistance:
        """The winners' distance, closest point and sign in float64. Features on demand: a closest
        point inside its face (~98 % of a rescan's vertices) is signed by that face's normal and
        is never on the boundary; only edge and corner hits need pseudo-normals and boundary
        flags, from the faces around theirs (_feature_signs), unless the whole mesh's are built.
        Time O(N) plus _feature_signs of the edge and corner hits (O(M) bytes, O(R log R))."""
        n = len(pts)
        # The cutoff is decided on the winner's float64 distance, never on its float32 score:
        # that is off by ~1e-6 of the mesh's size on a big face (a point on a face 100 mm wide
        # was NaN at cutoff 0, one just past the cutoff was reported beyond it) and by far more
        # on a sliver (float32 merges its corners). Every winner is computed exactly (on a
        # contacts-like query ~14 % more than those within the cutoff: ~4 ms of 152k points).
        hit = face >= 0
        distance = np.full(n, np.nan)
        closest = np.full((n, 3), np.nan)
        out_face = np.full(n, -1, dtype=np.int64)
        boundary = np.zeros(n, dtype=bool)
        if hit.any():
            f_ids = face[hit]
            p_hit = pts if len(f_ids) == n else pts[hit]
            corner = [self._face_columns[k][f_ids] for k in range(3)]
            a, b, c = (tuple(col[ids] for col in self._vertex_columns) for ids in corner)
            res = closest_on_columns(tuple(np.ascontiguousarray(p_hit.T)), a, b, c)
            beyond = np.sqrt(res.sq_distance) > limit
            if beyond.any():  # winners past the cutoff (contacts: the points near but beyond it)
                keep = ~beyond
                hit[np.flatnonzero(hit)[beyond]] = False
                f_ids, p_hit = f_ids[keep], p_hit[keep]
                a, b, c = (tuple(col[keep] for col in x) for x in (a, b, c))
                res = ClosestOnTriangles(res.sq_distance[keep], res.point[keep], res.bary[keep], res.region[keep])
                if not len(f_ids):
                    return SurfaceDistance(distance, closest, out_face, boundary)
            if "features" in self.__dict__:  # the whole mesh's, built already: its rows are the face ids
                normal, on_rim = self._signs(self.features, self.mesh.faces, f_ids, res)
            elif self.normals_from == "faces":
                normal = face_normal_columns(a, b, c)  # mesh_features' face_normals of these faces, bit for bit
                on_rim = np.zeros(len(f_ids), dtype=bool)
                feature = np.flatnonzero(res.region != INTERIOR)
                if len(feature):
                    normal[feature], on_rim[feature] = self._feature_signs(f_ids[feature], res.region[feature])
            else:  # blended vertex normals: every hit needs its corners' normals
                normal, on_rim = self._local_signs(f_ids, res)
            side = np.einsum("ij,ij->i", p_hit - res.point, normal)
            distance[hit] = np.where(side < 0, -1.0, 1.0) * np.sqrt(res.sq_distance)
            closest[hit] = res.point
            out_face[hit] = f_ids
            boundary[hit] = on_rim
        return SurfaceDistance(distance, closest, out_face, boundary)

    def _feature_signs(self, f_ids: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pseudo-normal (P, 3) and open-boundary flag (P,) of the edge or corner (region codes
        EDGE_AB..VERTEX_C) of face f_ids[i] that closest point i lies on: mesh_features' values,
        bit for bit (the same faces summed in the same order), from the faces around them only.
        An edge's faces all hold its first vertex, a corner's faces hold it: one pass over the
        faces (O(M), bytes) picks those; an edge's normal sums the normals of the picked faces
        that have it (O(R log P) for R picked faces), a corner's comes from mesh_features of the
        faces around it (O(R))."""
        faces, nv = self.mesh.faces, self.mesh.n_vertices
        normal = np.empty((len(f_ids), 3))
        rim = np.zeros(len(f_ids), dtype=bool)
        edge = np.flatnonzero(region <= EDGE_CA)
        corner = np.flatnonzero(region >= VERTEX_A)
        fe = faces[f_ids[edge]]
        e = region[edge].astype(np.int64) - EDGE_AB
        u, w = fe[np.arange(len(edge)), e], fe[np.arange(len(edge)), (e + 1) % 3]
        corner_v = faces[f_ids[corner], region[corner].astype(np.int64) - VERTEX_A]
        wanted = np.zeros(nv, dtype=bool)
        wanted[u] = True
        wanted[corner_v] = True
        ft = self._face_columns
        ring = np.flatnonzero(wanted[ft[0]] | wanted[ft[1]] | wanted[ft[2]])  # ascending, as mesh_features sums
        if len(edge):
            keys = np.minimum(u, w) * np.int64(nv) + np.maximum(u, w)
            uniq, which = np.unique(keys, return_inverse=True)
            rf = faces[ring]
            nxt = np.roll(rf, -1, axis=1)
            ring_keys = (np.minimum(rf, nxt) * np.int64(nv) + np.maximum(rf, nxt)).ravel()  # face-major, e0..e2
            slot = np.minimum(np.searchsorted(uniq, ring_keys), len(uniq) - 1)
            match = np.flatnonzero(uniq[slot] == ring_keys)
            ring_cols = [ft[k][ring] for k in range(3)]
            fn = face_normal_columns(*(tuple(col[ids] for col in self._vertex_columns) for ids in ring_cols))
            by = slot[match]
            sums = np.stack(
                [np.bincount(by, weights=fn[match // 3, axis], minlength=len(uniq)) for axis in range(3)], axis=1
            )
            normal[edge] = sums[which]
            rim[edge] = np.bincount(by, minlength=len(uniq))[which] == 1
        if len(corner):
            at_corner = np.zeros(nv, dtype=bool)
            at_corner[corner_v] = True
            around = ring[at_corner[faces[ring]].any(axis=1)]
            verts, local = np.unique(faces[around], return_inverse=True)
            features = mesh_features(Mesh(self.mesh.vertices[verts], local.reshape(-1, 3).astype(np.int64)))
            row = np.searchsorted(verts, corner_v)
            normal[corner] = features.vertex_normals[row]
            rim[corner] = features.boundary_vertex[row]
        return normal, rim

    def _local_signs(self, f_ids: np.ndarray, res: ClosestOnTriangles) -> tuple[np.ndarray, np.ndarray]:
        """_signs from the features around the given faces only (_local_features)."""
        unique_faces, row_of = np.unique(f_ids, return_inverse=True)
        features, faces, rows = self._local_features(unique_faces)
        return self._signs(features, faces, rows[row_of], res)

    def _signs(
        self, features: MeshFeatures, faces: np.ndarray, local: np.ndarray, res: ClosestOnTriangles
    ) -> tuple[np.ndarray, np.ndarray]:
        """The normal that signs each closest point (P, 3) and whether it is on the open boundary
        (P,); local: each point's face as a row of `faces` (the rows `features` describe)."""
        if self.normals_from == "faces":
            normal = feature_normal(features, faces, local, res.region)
        else:
            normal = np.einsum("pk,pkj->pj", res.bary, features.vertex_normals[faces[local]])
        return normal, on_boundary(features, faces, local, res.region)


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
