"""Vectorised exact point-to-triangle closest points, and the per-feature normals that sign them.

Closest point follows Ericson, *Real-Time Collision Detection* 5.1.5 (Voronoi regions of a
triangle). The region (face interior, one of three edges, one of three vertices) picks the
angle-weighted pseudo-normal of that feature (Baerentzen & Aanaes 2005), which gives the correct
inside/outside sign on a closed manifold even when the closest point is on an edge or vertex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occlutrace_compute.meshes.model import Mesh

# Region codes of a closest point: the face interior, an edge, or a corner. An edge's code minus
# EDGE_AB is its index e in MeshFeatures.face_edges (e0=(a,b), e1=(b,c), e2=(c,a)); a corner's
# code minus VERTEX_A is its index in the face's (a, b, c).
INTERIOR = 0
EDGE_AB, EDGE_BC, EDGE_CA = 1, 2, 3
VERTEX_A, VERTEX_B, VERTEX_C = 4, 5, 6

# sin^2 of a triangle's angle at a under which it counts as flat (a straight line): sqrt(eps) of
# its float type, so the interior answer of a triangle above it is off by < ~sqrt(eps) relative
FLAT = {np.float64: np.float64(2.0**-26), np.float32: np.float32(2.0**-12)}


@dataclass(frozen=True)
class ClosestOnTriangles:
    """Closest points of P points on P triangles (one triangle per point)."""

    sq_distance: np.ndarray  # (P,)
    point: np.ndarray  # (P, 3)
    bary: np.ndarray  # (P, 3) barycentric weights of a, b, c
    region: np.ndarray  # (P,) int8 region code


Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z of P points


def sub_columns(x: Columns, y: Columns) -> Columns:
    return x[0] - y[0], x[1] - y[1], x[2] - y[2]


def dot_columns(x: Columns, y: Columns) -> np.ndarray:
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 0 where den is 0 (degenerate triangles)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    out[den == 0] = 0
    return out


def _closest(p: Columns, a: Columns, b: Columns, c: Columns) -> tuple[Columns, np.ndarray, np.ndarray, np.ndarray]:
    """Closest point, its (v, w) with point = a + v*ab + w*ac, and region code.

    Works on coordinate columns: numpy runs 1-D arrays several times faster than (P, 3) rows.
    """
    ab, ac = sub_columns(b, a), sub_columns(c, a)
    ap, bp, cp = sub_columns(p, a), sub_columns(p, b), sub_columns(p, c)
    d1, d2 = dot_columns(ab, ap), dot_columns(ac, ap)
    d3, d4 = dot_columns(ab, bp), dot_columns(ac, bp)
    d5, d6 = dot_columns(ab, cp), dot_columns(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2

    # Interior by default; then overwrite in reverse priority so Ericson's first matching test wins.
    den = va + vb + vc
    v = _ratio(vb, den)
    w = _ratio(vc, den)
    region = np.full(len(d1), INTERIOR, dtype=np.int8)
    t_bc = _ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    tests = [
        ((d1 <= 0) & (d2 <= 0), 0.0, 0.0, VERTEX_A),
        ((d3 >= 0) & (d4 <= d3), 1.0, 0.0, VERTEX_B),
        # d1 - d3 = |ab|^2: with a == b the three tests hold vacuously and would give `a` for
        # every point; the C and CA tests below then answer for the segment a-c
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0) & (d1 > d3), _ratio(d1, d1 - d3), 0.0, EDGE_AB),
        ((d6 >= 0) & (d5 <= d6), 0.0, 1.0, VERTEX_C),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), 0.0, _ratio(d2, d2 - d6), EDGE_CA),
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), 1.0 - t_bc, t_bc, EDGE_BC),
    ]
    for mask, mv, mw, code in reversed(tests):
        v = np.where(mask, mv, v)
        w = np.where(mask, mw, w)
        region = np.where(mask, np.int8(code), region)
    # A (near-)straight-line triangle: sin^2 of its angle at a, den / (|ab|^2 |ac|^2), is under
    # FLAT (rounding noise in va, vb, vc, ~eps / sin^2 relative, then decides which of Ericson's
    # tests holds: ~1 % of straight triangles answered a side or corner too far), or an interior
    # answer lands off the triangle. Then: the nearest of Ericson's answer (if on the triangle)
    # and the three clamped side projections.
    # |ab|^2 = d1 - d3 and |ac|^2 = d2 - d6: no more products on this hot path
    flat = den <= FLAT[den.dtype.type] * ((d1 - d3) * (d2 - d6))
    on = (v >= 0) & (w >= 0) & (v + w <= 1)
    off = np.nonzero(flat | ((region == INTERIOR) & ~on))[0]
    if off.size:
        v, w, region = _nearest_side(off, p, a, ab, ac, (d1, d2, d3, d4, d5, d6), v, w, region, on)
    point = tuple(a[i] + v * ab[i] + w * ac[i] for i in range(3))
    return point, v, w, region


def _nearest_side(
    off: np.ndarray,
    p: Columns,
    a: Columns,
    ab: Columns,
    ac: Columns,
    d: tuple[np.ndarray, ...],
    v: np.ndarray,
    w: np.ndarray,
    region: np.ndarray,
    on: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(v, w, region) with rows `off` replaced by the nearest of: Ericson's answer where it is on
    the triangle (`on`), then the sides ab, bc, ca, each the clamped projection (first on ties; a
    clamp to a corner gives that corner's region code). The kernel (point_mesh_distance.cu,
    pmd_closest) does the same arithmetic in the same order. O(len(off)) time and memory."""
    d1, d2, d3, d4, d5, d6 = (x[off] for x in d)
    ps, as_, abs_, acs = (tuple(col[off] for col in cols) for cols in (p, a, ab, ac))
    t_ab = np.clip(_ratio(d1, d1 - d3), 0, 1)
    t_bc = np.clip(_ratio(d4 - d3, (d4 - d3) + (d5 - d6)), 0, 1)
    t_ca = np.clip(_ratio(d2, d2 - d6), 0, 1)
    zero = np.zeros_like(t_ab)
    best_v, best_w, best_r = v[off], w[off], region[off]
    diff = tuple(ps[i] - (as_[i] + best_v * abs_[i] + best_w * acs[i]) for i in range(3))
    best_sq = np.where(on[off], dot_columns(diff, diff), np.inf).astype(d1.dtype)
    for sv, sw, edge, start, end, t in (
        (t_ab, zero, EDGE_AB, VERTEX_A, VERTEX_B, t_ab),
        (1 - t_bc, t_bc, EDGE_BC, VERTEX_B, VERTEX_C, t_bc),
        (zero, t_ca, EDGE_CA, VERTEX_A, VERTEX_C, t_ca),
    ):
        diff = tuple(ps[i] - (as_[i] + sv * abs_[i] + sw * acs[i]) for i in range(3))
        sq = dot_columns(diff, diff)
        better = sq < best_sq
        code = np.where(t == 0, np.int8(start), np.where(t == 1, np.int8(end), np.int8(edge)))
        best_sq = np.where(better, sq, best_sq)
        best_v, best_w = np.where(better, sv, best_v), np.where(better, sw, best_w)
        best_r = np.where(better, code, best_r)
    v, w, region = v.copy(), w.copy(), region.copy()
    v[off], w[off], region[off] = best_v, best_w, best_r
    return v, w, region


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> ClosestOnTriangles:
    """Exact closest point of p[i] on triangle (a[i], b[i], c[i]); degenerate triangles allowed."""
    return closest_on_columns(tuple(p.T), tuple(a.T), tuple(b.T), tuple(c.T))


def closest_on_columns(p: Columns, a: Columns, b: Columns, c: Columns) -> ClosestOnTriangles:
    """closest_on_triangles on coordinate columns (P,) each: the same arithmetic, bit for bit,
    and faster when the columns are contiguous (gathered from per-axis arrays)."""
    point, v, w, region = _closest(p, a, b, c)
    diff = sub_columns(p, point)
    return ClosestOnTriangles(
        dot_columns(diff, diff), np.stack(point, axis=1), np.stack([1.0 - v - w, v, w], axis=1), region
    )


def sq_distance_to_triangles(p: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Squared distance of p[i] (P, 3) to triangle corners[i] (P, 3, 3): closest_on_triangles'
    sq_distance without building its (P, 3) outputs."""
    return sq_distance_columns(tuple(p.T), tuple(corners[:, 0].T), tuple(corners[:, 1].T), tuple(corners[:, 2].T))


def sq_distance_columns(p: Columns, a: Columns, b: Columns, c: Columns) -> np.ndarray:
    """sq_distance_to_triangles on coordinate columns (P,) each: the same arithmetic, bit for
    bit, and faster when the columns are contiguous (gathered from per-axis arrays)."""
    point, _, _, _ = _closest(p, a, b, c)
    diff = sub_columns(p, point)
    return dot_columns(diff, diff)


@dataclass(frozen=True)
class MeshFeatures:
    """Per-face, per-edge and per-vertex normals and topology used to sign distances.

    face_edges[f, e] is the edge id of edge e of face f (e0=(a,b), e1=(b,c), e2=(c,a)).
    Pseudo-normals are unnormalised sums: only their direction matters for the sign.
    """

    face_normals: np.ndarray  # (M, 3) unit (zero for degenerate faces)
    edge_normals: np.ndarray  # (E, 3)
    vertex_normals: np.ndarray  # (N, 3) angle-weighted, unit where defined
    face_edges: np.ndarray  # (M, 3) int64
    edges: np.ndarray  # (E, 2) int64 vertex ids, sorted per row
    boundary_edge: np.ndarray  # (E,) bool: used by exactly one face
    boundary_vertex: np.ndarray  # (N,) bool
    face_areas: np.ndarray  # (M,)


def _edge_topology(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique undirected edges (E, 2), each face's edge ids (M, 3) and each edge's face count."""
    nxt = np.roll(faces, -1, axis=1)
    keys = (np.minimum(faces, nxt) * np.int64(n_vertices) + np.maximum(faces, nxt)).ravel()
    # Stable sort is timsort: it rides the long runs of a scan's spatially ordered faces.
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    counts = np.diff(starts, append=len(keys))
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.repeat(np.arange(len(starts)), counts)
    low, high = np.divmod(ordered[starts], n_vertices)
    return np.stack([low, high], axis=1), inverse.reshape(-1, 3), counts


def _normal_columns(a: Columns, b: Columns, c: Columns) -> tuple[Columns, np.ndarray]:
    """Unit normal columns (zero for degenerate faces) and |(b - a) x (c - a)| (P,) of faces
    given as float64 coordinate columns: per element the arithmetic np.cross and the row norm
    did on (M, 3) rows before (x = u1 v2 - u2 v1 ..., u = a - c, v = b - a: (b - a) x (c - a)
    as np.cross(a - c, b - a) gave it), on contiguous columns."""
    u, v = sub_columns(a, c), sub_columns(b, a)
    cross = (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
    norm = np.sqrt(cross[0] * cross[0] + cross[1] * cross[1] + cross[2] * cross[2])
    safe = np.where(norm > 0, norm, 1.0)
    return (cross[0] / safe, cross[1] / safe, cross[2] / safe), norm


def face_normal_columns(a: Columns, b: Columns, c: Columns) -> np.ndarray:
    """Unit normals (P, 3) of faces (a[i], b[i], c[i]) given as float64 coordinate columns:
    mesh_features' face_normals of those faces, bit for bit (the same arithmetic per element)."""
    return np.stack(_normal_columns(a, b, c)[0], axis=1)


def mesh_features(mesh: Mesh) -> MeshFeatures:
    """Topology and pseudo-normals of a triangle mesh (any manifoldness; open meshes allowed).

    On coordinate columns gathered from per-axis arrays (numpy runs those several times faster
    than (M, 3) rows). Time O(M log M) (the edge sort), memory O(M)."""
    v, f = mesh.vertices, mesh.faces
    n_v = len(v)
    vt, ft = np.ascontiguousarray(v.T), np.ascontiguousarray(f.T)
    a, b, c = (tuple(vt[axis][ft[k]] for axis in range(3)) for k in range(3))
    normal, norm = _normal_columns(a, b, c)
    face_normals = np.stack(normal, axis=1)
    face_areas = 0.5 * norm

    edges, face_edges, counts = _edge_topology(f, n_v)
    corner_edges = face_edges.ravel()  # face-major: a face's three edges, then the next face's
    edge_normals = np.stack(
        [np.bincount(corner_edges, weights=np.repeat(normal[axis], 3), minlength=len(edges)) for axis in range(3)],
        axis=1,
    )
    boundary_edge = counts == 1
    boundary_vertex = np.zeros(n_v, dtype=bool)
    boundary_vertex[edges[boundary_edge].ravel()] = True

    # Angle-weighted vertex normals: the corner angle of each face at each of its vertices, between
    # side k and the reversed side k-1 (so the cosine is minus their dot product); summed per
    # corner slot k in face order (faces around a vertex in the same order whatever the subset).
    sides = (sub_columns(b, a), sub_columns(c, b), sub_columns(a, c))  # side k: corner k to the next
    lengths = [np.sqrt(dot_columns(s, s)) for s in sides]
    sums = [np.zeros(n_v), np.zeros(n_v), np.zeros(n_v)]
    for k in range(3):
        prev = (k + 2) % 3
        cosang = -dot_columns(sides[k], sides[prev]) / np.maximum(lengths[k] * lengths[prev], 1e-300)
        angle = np.arccos(np.clip(cosang, -1.0, 1.0))
        for axis in range(3):
            sums[axis] += np.bincount(ft[k], weights=angle * normal[axis], minlength=n_v)
    vn = np.sqrt(sums[0] * sums[0] + sums[1] * sums[1] + sums[2] * sums[2])
    safe = np.where(vn > 0, vn, 1.0)
    vertex_normals = np.stack([sums[0] / safe, sums[1] / safe, sums[2] / safe], axis=1)
    return MeshFeatures(
        face_normals, edge_normals, vertex_normals, face_edges, edges, boundary_edge, boundary_vertex, face_areas
    )


def feature_normal(features: MeshFeatures, faces: np.ndarray, face: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Pseudo-normal of the feature (face, edge or vertex) each closest point lies on."""
    out = features.face_normals[face].copy()
    is_edge = (region >= EDGE_AB) & (region <= EDGE_CA)
    if is_edge.any():
        out[is_edge] = features.edge_normals[features.face_edges[face[is_edge], region[is_edge] - EDGE_AB]]
    is_vertex = region >= VERTEX_A
    if is_vertex.any():
        out[is_vertex] = features.vertex_normals[faces[face[is_vertex], region[is_vertex] - VERTEX_A]]
    return out


def on_boundary(features: MeshFeatures, faces: np.ndarray, face: np.ndarray, region: np.ndarray) -> np.ndarray:
    """True where the closest point lies on an open-boundary edge or vertex of the mesh."""
    out = np.zeros(len(face), dtype=bool)
    is_edge = (region >= EDGE_AB) & (region <= EDGE_CA)
    out[is_edge] = features.boundary_edge[features.face_edges[face[is_edge], region[is_edge] - EDGE_AB]]
    is_vertex = region >= VERTEX_A
    out[is_vertex] = features.boundary_vertex[faces[face[is_vertex], region[is_vertex] - VERTEX_A]]
    return out
