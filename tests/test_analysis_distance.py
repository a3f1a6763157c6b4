"""signed_distance: exact point-to-triangle distances, checked against trimesh.proximity."""

from __future__ import annotations

import time

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings, strategies as st
from test_analysis_surfaces import bowl, bumpy, height_field

from occlutrace_compute.analysis.distance import _FIRST_K, SurfaceIndex, faces_near, signed_distance
from occlutrace_compute.analysis.triangles import (
    closest_on_triangles,
    face_normal_columns,
    feature_normal,
    mesh_features,
    on_boundary,
    sq_distance_to_triangles,
)
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh

UM = 1e-3


def _tm(mesh: Mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)


def _reference(mesh: Mesh, points: np.ndarray):
    """trimesh's closest point, signed by the closest face's normal (independent of our code)."""
    tm = _tm(mesh)
    closest, dist, tri = trimesh.proximity.closest_point(tm, points)
    side = np.einsum("ij,ij->i", points - closest, tm.face_normals[tri])
    return closest, dist, side


def test_open_bumpy_surface_matches_trimesh_to_1um():
    mesh = height_field(bumpy, 6.0, 41)
    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(-7, 7, 1500), rng.uniform(-7, 7, 1500), rng.uniform(-2.5, 2.5, 1500)])
    got = signed_distance(pts, mesh)
    closest, dist, side = _reference(mesh, pts)
    np.testing.assert_allclose(np.abs(got.distance), dist, atol=UM)
    np.testing.assert_allclose(got.closest, closest, atol=UM)
    # Sign agrees wherever the face-normal sign is unambiguous (not exactly on an edge's wedge).
    clear = np.abs(side) > 1e-3 * np.maximum(dist, 1e-9)
    assert clear.mean() > 0.9
    assert (np.sign(got.distance[clear]) == np.sign(side[clear])).all()


def test_closed_meshes_sign_is_inside_outside_and_exact():
    rng = np.random.default_rng(2)
    for tm in (trimesh.creation.icosphere(subdivisions=2, radius=3.0), trimesh.creation.box((8.0, 2.0, 1.0))):
        mesh = Mesh(np.asarray(tm.vertices, float), np.asarray(tm.faces, np.int64))
        pts = rng.uniform(-5, 5, (800, 3))
        got = signed_distance(pts, mesh)
        _, dist, _ = _reference(mesh, pts)
        np.testing.assert_allclose(np.abs(got.distance), dist, atol=UM)
        inside = tm.contains(pts)
        assert (got.distance[inside] < 0).all() and (got.distance[~inside] > 0).all()


def test_points_offset_along_normals_of_a_sphere_have_the_offset_as_distance():
    tm = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    mesh = Mesh(np.asarray(tm.vertices, float), np.asarray(tm.faces, np.int64))
    rng = np.random.default_rng(3)
    offsets = rng.uniform(-0.3, 0.3, mesh.n_vertices)
    pts = mesh.vertices * (1 + offsets / 10.0)[:, None]  # radial = along the vertex normal
    got = signed_distance(pts, mesh)
    # At a vertex the radial offset is exactly the distance for outside points; inside points see
    # the flat facets a little closer (bounded by the facet sagitta).
    np.testing.assert_allclose(got.distance[offsets > 0], offsets[offsets > 0], atol=UM)
    assert np.all(np.abs(got.distance[offsets < 0] - offsets[offsets < 0]) < 0.02)
    assert (np.sign(got.distance) == np.sign(offsets)).all()
    assert (got.face >= 0).all()


def test_large_triangles_are_subdivided_and_still_exact():
    # Two huge triangles next to many tiny ones: the candidate bound must not break.
    fine = height_field(lambda x, y: 0.1 * np.sin(x) * np.cos(y), 2.0, 30)
    big_v = np.array([[3.0, -40, 0], [60, -40, 0], [3, 40, 0], [60, 40, 0.5]])
    v = np.concatenate([fine.vertices, big_v])
    n = len(fine.vertices)
    f = np.concatenate([fine.faces, [[n, n + 1, n + 2], [n + 1, n + 3, n + 2]]])
    mesh = Mesh(v, f)
    rng = np.random.default_rng(4)
    pts = np.column_stack([rng.uniform(-5, 70, 2000), rng.uniform(-50, 50, 2000), rng.uniform(-3, 3, 2000)])
    got = signed_distance(pts, mesh)
    _, dist, _ = _reference(mesh, pts)
    np.testing.assert_allclose(np.abs(got.distance), dist, atol=UM)


def test_max_distance_marks_far_points_nan_and_keeps_near_ones_exact():
    mesh = height_field(bumpy, 6.0, 41)
    rng = np.random.default_rng(5)
    pts = np.column_stack([rng.uniform(-6, 6, 1000), rng.uniform(-6, 6, 1000), rng.uniform(-3, 3, 1000)])
    got = SurfaceIndex(mesh).query(pts, max_distance=0.5)
    _, dist, _ = _reference(mesh, pts)
    near = dist <= 0.5 - 1e-9
    far = dist > 0.5 + 1e-9
    assert near.any() and far.any()
    np.testing.assert_allclose(np.abs(got.distance[near]), dist[near], atol=UM)
    assert np.isnan(got.distance[far]).all() and (got.face[far] == -1).all()


def test_on_boundary_flags_points_beyond_an_open_edge():
    mesh = height_field(lambda x, y: 0 * x, 5.0, 11)
    pts = np.array([[0.0, 0.0, 0.3], [7.0, 0.0, 0.3], [5.0, 5.0, -0.1], [4.9, 0.0, 0.2]])
    got = signed_distance(pts, mesh)
    assert got.on_boundary.tolist() == [False, True, True, False]
    np.testing.assert_allclose(got.distance[[0, 3]], [0.3, 0.2], atol=1e-12)


def test_vertex_normal_sign_mode_agrees_on_a_smooth_surface():
    mesh = bowl(6.0, 0.0, 3.0, 40)
    centre = np.array([0.0, 0.0, 6.0])
    rng = np.random.default_rng(6)
    # Directions that stay well inside the cap (its boundary would decide the sign otherwise).
    direction = np.column_stack([rng.uniform(-0.35, 0.35, (500, 2)), -np.ones(500)])
    direction /= np.linalg.norm(direction, axis=1)[:, None]
    radius = rng.uniform(5.7, 6.3, 500)
    pts = centre + direction * radius[:, None]
    keep = np.abs(radius - 6.0) > 0.02
    for mode in ("faces", "vertices"):
        got = signed_distance(pts[keep], mesh, normals_from=mode)
        # Outside the sphere is along the bowl's (outward, downward) normals: positive.
        assert (np.sign(got.distance) == np.sign(radius[keep] - 6.0)).all(), mode


def test_degenerate_triangles_do_not_break_exactness():
    mesh = height_field(bumpy, 3.0, 15)
    f = np.concatenate([mesh.faces, [[0, 0, 0], [1, 2, 3]]])  # a point and a sliver line
    v = mesh.vertices.copy()
    v[3] = v[1] + 2 * (v[2] - v[1])  # collinear with 1, 2
    m = Mesh(v, f)
    pts = np.random.default_rng(7).uniform(-4, 4, (300, 3))
    got = signed_distance(pts, m)
    _, dist, _ = _reference(m, pts)
    np.testing.assert_allclose(np.abs(got.distance), dist, atol=UM)


def _brute_force(mesh: Mesh, points: np.ndarray):
    """Every point against every triangle in float64; the feature pseudo-normal signs the best."""
    n, m = len(points), mesh.n_faces
    v, f = mesh.vertices, mesh.faces
    p = np.repeat(points, m, axis=0)
    tri = np.tile(f, (n, 1))
    res = closest_on_triangles(p, v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]])
    sq = res.sq_distance.reshape(n, m)
    best = np.argmin(sq, axis=1)
    pick = np.arange(n) * m + best
    features = mesh_features(mesh)
    normal = feature_normal(features, f, best, res.region[pick])
    side = np.einsum("ij,ij->i", points - res.point[pick], normal)
    boundary = on_boundary(features, f, best, res.region[pick])
    return np.where(side < 0, -1.0, 1.0) * np.sqrt(sq[np.arange(n), best]), res.point[pick], boundary


def test_open_mesh_matches_brute_force_in_every_region():
    # Points over the interior, beyond the open edges and past the corners: face, edge and vertex
    # regions, boundary and not, with a mix of large and small triangles (subdivided proxies).
    mesh = height_field(bumpy, 3.0, 13)
    rng = np.random.default_rng(8)
    v = mesh.vertices.copy()
    v[:, :2] += rng.uniform(-0.2, 0.2, (len(v), 2))  # slivers and uneven sizes (grid step 0.5)
    mesh = Mesh(v, mesh.faces)
    pts = np.column_stack([rng.uniform(-4.5, 4.5, 3000), rng.uniform(-4.5, 4.5, 3000), rng.uniform(-1.5, 1.5, 3000)])
    want_d, want_closest, want_boundary = _brute_force(mesh, pts)
    got = SurfaceIndex(mesh).query(pts)
    # Candidates are ranked in float32: only triangles tied within its rounding may swap.
    np.testing.assert_allclose(np.abs(got.distance), np.abs(want_d), rtol=0, atol=1e-7)
    same = np.abs(np.abs(got.distance) - np.abs(want_d)) <= 1e-12
    assert same.mean() > 0.99
    np.testing.assert_allclose(got.closest[same], want_closest[same], rtol=0, atol=1e-12)
    assert (np.sign(got.distance[same]) == np.sign(want_d[same])).all()
    assert (got.on_boundary[same] == want_boundary[same]).all()
    assert got.on_boundary.any() and not got.on_boundary.all()
    by_vertices = SurfaceIndex(mesh, normals_from="vertices").query(pts)
    np.testing.assert_array_equal(np.abs(by_vertices.distance), np.abs(got.distance))
    np.testing.assert_array_equal(by_vertices.on_boundary, got.on_boundary)
    clipped = SurfaceIndex(mesh).query(pts, max_distance=0.4)
    near = np.abs(want_d) <= 0.4
    np.testing.assert_array_equal(clipped.distance[near], got.distance[near])
    assert np.isnan(clipped.distance[~near]).all()


def test_float32_scoring_has_the_bits_of_closest_on_triangles():
    rng = np.random.default_rng(9)
    corners = rng.normal(0, 1, (5000, 3, 3)).astype(np.float32)
    corners[::50, 2] = corners[::50, 1]  # degenerate: a segment
    corners[::70, 1:] = corners[::70, :1]  # degenerate: a point
    p = rng.normal(0, 2, (5000, 3)).astype(np.float32)
    want = closest_on_triangles(p, corners[:, 0], corners[:, 1], corners[:, 2]).sq_distance
    got = sq_distance_to_triangles(p, corners)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_index_scores_on_corner_columns_with_the_bits_of_the_row_kernel():
    # SurfaceIndex scores candidates from per-axis corner columns: the same float32 arithmetic
    # as sq_distance_to_triangles on (P, 3, 3) rows, bit for bit (degenerate faces too).
    mesh = _uneven(3)
    index = SurfaceIndex(mesh)
    rng = np.random.default_rng(17)
    faces = rng.integers(0, mesh.n_faces, 4000)
    p32 = rng.normal(0, 3, (4000, 3)).astype(np.float32)
    corners = (mesh.vertices - index._center).astype(np.float32)[mesh.faces[faces]]
    want = sq_distance_to_triangles(p32, corners)
    got = index._sq_to_faces(np.ascontiguousarray(p32.T), faces)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_mesh_features_topology_and_pseudo_normals_match_a_plain_loop():
    mesh = height_field(bumpy, 2.0, 6)
    rng = np.random.default_rng(10)
    # Shuffled faces, a fin on one edge (an edge of three faces) and an unused vertex.
    v = np.concatenate([mesh.vertices, [[0.1, 0.2, 2.0], [9.0, 9.0, 9.0]]])
    inner = mesh.faces[len(mesh.faces) // 2]
    f = np.concatenate([mesh.faces, [[inner[0], inner[1], len(mesh.vertices)]]])
    f = f[rng.permutation(len(f))]
    got = mesh_features(Mesh(v, f))
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for i, tri in enumerate(f.tolist()):
        for e in range(3):
            edge_faces.setdefault(tuple(sorted((tri[e], tri[(e + 1) % 3]))), []).append(i)
    edges = sorted(edge_faces)
    assert got.edges.tolist() == [list(e) for e in edges]
    for i, tri in enumerate(f.tolist()):
        for e in range(3):
            assert edges[got.face_edges[i, e]] == tuple(sorted((tri[e], tri[(e + 1) % 3])))
    assert got.boundary_edge.tolist() == [len(edge_faces[e]) == 1 for e in edges]
    assert 3 in {len(faces) for faces in edge_faces.values()}
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    unit = cross / np.linalg.norm(cross, axis=1)[:, None]
    np.testing.assert_allclose(got.face_normals, unit, atol=1e-15)
    np.testing.assert_allclose(got.face_areas, 0.5 * np.linalg.norm(cross, axis=1), atol=1e-15)
    np.testing.assert_allclose(got.edge_normals, [unit[edge_faces[e]].sum(axis=0) for e in edges], atol=1e-14)
    vertex = np.zeros_like(v)
    for i, tri in enumerate(f.tolist()):
        for k in range(3):
            u, w = v[tri[(k + 1) % 3]] - v[tri[k]], v[tri[(k + 2) % 3]] - v[tri[k]]
            vertex[tri[k]] += np.arccos(np.clip(u @ w / np.linalg.norm(u) / np.linalg.norm(w), -1, 1)) * unit[i]
    length = np.linalg.norm(vertex, axis=1)
    np.testing.assert_allclose(got.vertex_normals, vertex / np.where(length > 0, length, 1)[:, None], atol=1e-14)
    assert not got.vertex_normals[-1].any()
    boundary_vertices = {x for e in edges if len(edge_faces[e]) == 1 for x in e}
    assert set(np.flatnonzero(got.boundary_vertex).tolist()) == boundary_vertices


def test_bad_input_is_rejected_clearly():
    mesh = height_field(bumpy, 3.0, 5)
    with pytest.raises(InputRejected, match="reference: has no triangles"):
        SurfaceIndex(Mesh(mesh.vertices, np.zeros((0, 3), np.int64)), name="reference")
    with pytest.raises(InputRejected, match="non-finite"):
        signed_distance(np.array([[0.0, np.nan, 0.0]]), mesh)
    with pytest.raises(ValueError, match="shape"):
        signed_distance(np.zeros((3, 2)), mesh)
    with pytest.raises(ValueError, match="normals_from"):
        signed_distance(np.zeros((1, 3)), mesh, normals_from="corners")  # type: ignore[arg-type]


# --- bounded work per query (issue 12) ---------------------------------------------------------


class _CountingTree:
    """Wraps the index's kd-tree and counts the neighbours asked for (points x k per query)."""

    def __init__(self, tree) -> None:
        self.tree = tree
        self.asked = 0

    def query(self, p, k, distance_upper_bound):
        self.asked += len(p) * k
        return self.tree.query(p, k=k, distance_upper_bound=distance_upper_bound)


def _uneven(seed: int) -> Mesh:
    """Fine "teeth" (0.13 mm grid) beside coarse 'gingiva' (2.5 mm grid), one huge triangle below
    both and a fan of slivers (8 mm long, 1 um wide) through the fine part."""
    rng = np.random.default_rng(seed)
    fine = height_field(lambda x, y: 0.4 * np.sin(3 * x) * np.cos(2 * y), 2.0, 31)
    xx, yy = np.meshgrid(np.linspace(2.0, 17.0, 7), np.linspace(-2.0, 2.0, 3))
    coarse_v = np.stack([xx.ravel(), yy.ravel(), 0.3 * np.sin(xx.ravel())], axis=1)
    i = np.arange(21).reshape(3, 7)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    coarse_f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    huge_v = np.array([[-60.0, -60, -4], [60, -60, -4], [0, 80, -4]])
    start = rng.uniform(-2, 2, (20, 3)) * [1, 1, 0.2]
    along = rng.normal(size=(20, 3))
    along /= np.linalg.norm(along, axis=1)[:, None]
    side = np.cross(along, rng.normal(size=(20, 3)))
    side /= np.linalg.norm(side, axis=1)[:, None]
    sliver_v = np.concatenate([start, start + 8 * along, start + 4 * along + 1e-3 * side])
    n0, n1, n2 = len(fine.vertices), 21, 3
    sliver_f = np.stack([np.arange(20), np.arange(20) + 20, np.arange(20) + 40], axis=1) + n0 + n1 + n2
    v = np.concatenate([fine.vertices, coarse_v, huge_v, sliver_v])
    f = np.concatenate([fine.faces, coarse_f + n0, [[n0 + n1, n0 + n1 + 1, n0 + n1 + 2]], sliver_f])
    return Mesh(v, f.astype(np.int64))


def _rounding_cutoffs(rho: float, lo: float = 0.05, hi: float = 3.0) -> np.ndarray:
    """Cutoffs for which (limit + rho) - rho < limit: the old code's stopping rule never held."""
    c = np.linspace(lo, hi, 50_000)
    return c[(c + rho) - rho < c]


def _neighbour_bound(index: SurfaceIndex, mesh: Mesh, pts: np.ndarray, limit: float) -> int:
    """The stated worst case: sum over points of 4 * max(_FIRST_K, 4 * proxies within limit + rho)."""
    from scipy.spatial import cKDTree

    from occlutrace_compute.analysis.distance import _proxies

    proxies, _, _ = _proxies(mesh.vertices, mesh.faces)
    within = cKDTree(proxies).query_ball_point(pts, (limit + index.rho) * (1 + 1e-6), return_length=True)
    return int(np.sum(4 * np.maximum(_FIRST_K, 4 * within)))


def test_rounding_cutoffs_exist_for_an_uneven_mesh():
    index = SurfaceIndex(_uneven(0))
    assert len(_rounding_cutoffs(index.rho)) > 100


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), cutoff=st.floats(0.02, 3.0), rounding=st.booleans(), pick=st.floats(0, 1))
def test_uneven_meshes_any_cutoff_exact_and_bounded(seed, cutoff, rounding, pick):
    mesh = _uneven(seed % 7)
    index = SurfaceIndex(mesh)
    if rounding:
        bad = _rounding_cutoffs(index.rho)
        cutoff = float(bad[int(pick * (len(bad) - 1))])
        assert (cutoff + index.rho) - index.rho < cutoff
    rng = np.random.default_rng(seed)
    fine_pts = rng.uniform(-2, 2, (90, 3)) * [1, 1, 0] + [0, 0, 1] * rng.uniform(-4, 4, (90, 1))
    box_pts = rng.uniform([-5, -5, -6], [20, 5, 5], (60, 3))
    pts = np.concatenate([fine_pts, box_pts])
    counter = _CountingTree(index._tree)
    index._tree = counter
    got = index.query(pts, max_distance=cutoff)
    assert counter.asked <= _neighbour_bound(index, mesh, pts, cutoff)
    want, _, _ = _brute_force(mesh, pts)
    near = np.abs(want) <= cutoff - 1e-6
    far = np.abs(want) > cutoff + 1e-6
    np.testing.assert_allclose(np.abs(got.distance[near]), np.abs(want[near]), rtol=0, atol=1e-6)
    assert np.isnan(got.distance[far]).all()


def test_far_points_on_a_fine_mesh_cost_one_small_query_at_any_cutoff():
    # 400 points 2.5-4 mm off a fine surface (150k faces): none has surface within the cutoff.
    # The old stopping rule compared (limit + rho) - rho with limit; where that rounds down, each
    # point asked for more and more proxies up to the whole mesh (seconds to minutes).
    mesh = height_field(bumpy, 12.0, 275)
    index = SurfaceIndex(mesh)
    rng = np.random.default_rng(12)
    xy = rng.uniform(-10, 10, (400, 2))
    pts = np.column_stack([xy, bumpy(xy[:, 0], xy[:, 1]) + rng.choice([-1, 1], 400) * rng.uniform(2.5, 4, 400)])
    cutoffs = [0.2, 0.5, 1.0, 1.5, 2.0, *_rounding_cutoffs(index.rho, 0.2, 2.0)[[0, -1]]]
    counter = _CountingTree(index._tree)
    index._tree = counter
    for cutoff in cutoffs:
        counter.asked = 0
        t0 = time.perf_counter()
        got = index.query(pts, max_distance=cutoff)
        took = time.perf_counter() - t0
        assert np.isnan(got.distance).all()
        assert counter.asked == 400 * _FIRST_K, cutoff  # one round of _FIRST_K neighbours each
        assert took < 1.0, (cutoff, took)  # generous (about 5 ms here); the old code: > 10 s


@pytest.mark.parametrize("normals_from", ["faces", "vertices"])
def test_features_built_around_the_hit_faces_equal_the_whole_meshes(normals_from):
    # A query that hits few faces signs them from the faces around their vertices only; the
    # signs and boundary flags must be those of the whole mesh's features (holes and rims too).
    mesh = height_field(bumpy, 6.0, 61)
    keep = np.ones(mesh.n_faces, dtype=bool)
    keep[np.random.default_rng(13).choice(mesh.n_faces, 300, replace=False)] = False  # holes
    mesh = Mesh(mesh.vertices, mesh.faces[keep])
    rng = np.random.default_rng(14)
    pts = np.column_stack([rng.uniform(-7, 7, 400), rng.uniform(-7, 7, 400), rng.uniform(-1.5, 1.5, 400)])
    local = SurfaceIndex(mesh, normals_from).query(pts, max_distance=0.6)
    whole_index = SurfaceIndex(mesh, normals_from)
    _ = whole_index.features  # built first: the query then uses the whole mesh's
    whole = whole_index.query(pts, max_distance=0.6)
    hit = np.isfinite(whole.distance)
    assert hit.sum() > 50 and len(np.unique(whole.face[hit])) < mesh.n_faces // 4
    assert whole.on_boundary.any()
    np.testing.assert_array_equal(np.isfinite(local.distance), hit)
    np.testing.assert_array_equal(np.sign(local.distance[hit]), np.sign(whole.distance[hit]))
    np.testing.assert_allclose(local.distance[hit], whole.distance[hit], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(local.on_boundary, whole.on_boundary)


def _map_case(shape: str) -> tuple[Mesh, np.ndarray]:
    """A deviation map's query: points near every part of a surface (most faces hit). "sphere": a
    coarse closed icosphere, points inside and outside (many edge and corner hits, signed by
    pseudo-normals); "holed": an open bumpy field with holes (rims: boundary edges and corners)."""
    rng = np.random.default_rng(21)
    if shape == "sphere":
        sphere = trimesh.creation.icosphere(subdivisions=2, radius=2.0)
        mesh = Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces, dtype=np.int64))
        d = rng.normal(size=(3000, 3))
        return mesh, d / np.linalg.norm(d, axis=1)[:, None] * rng.uniform(1.2, 2.8, (3000, 1))
    field = height_field(bumpy, 6.0, 61)
    keep = np.ones(field.n_faces, dtype=bool)
    keep[rng.choice(field.n_faces, 300, replace=False)] = False
    mesh = Mesh(field.vertices, field.faces[keep])
    xy = rng.uniform(-7, 7, (6000, 2))
    return mesh, np.column_stack([xy, bumpy(xy[:, 0], xy[:, 1]) + rng.uniform(-0.1, 0.1, 6000)])


@pytest.mark.parametrize("normals_from", ["faces", "vertices"])
@pytest.mark.parametrize("shape", ["sphere", "holed"])
def test_a_map_query_signs_edge_and_corner_hits_like_the_whole_meshes_features(shape, normals_from):
    # A query hitting most faces signs a closest point inside its face by that face's normal and
    # builds pseudo-normals and boundary flags only around the edge and corner hits: the answer
    # must be the one from the whole mesh's features (signs, rims), and where those hits are on
    # few faces the whole mesh's features are not built (the old code built them for any map).
    mesh, pts = _map_case(shape)
    index = SurfaceIndex(mesh, normals_from)
    got = index.query(pts, max_distance=1.0)
    whole_index = SurfaceIndex(mesh, normals_from)
    _ = whole_index.features
    want = whole_index.query(pts, max_distance=1.0)
    hit = np.isfinite(want.distance)
    assert len(np.unique(want.face[hit])) > mesh.n_faces // 4
    f = mesh.faces[want.face[hit]]
    regions = closest_on_triangles(pts[hit], *(mesh.vertices[f[:, k]] for k in range(3))).region
    assert ((regions >= 1) & (regions <= 3)).sum() > 20 and (regions >= 4).sum() > 5  # edges and corners
    if shape == "holed" and normals_from == "faces":  # edge and corner hits on few faces: only theirs
        assert len(np.unique(want.face[hit][regions > 0])) <= mesh.n_faces // 4
        assert "features" not in index.__dict__
    if shape == "sphere":
        # inside the inscribed ball: negative; outside the circumscribed one (radius 2): positive
        a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
        n = np.cross(b - a, c - a)
        inner = np.min(np.abs(np.einsum("ij,ij->i", n, a)) / np.linalg.norm(n, axis=1))
        r = np.linalg.norm(pts[hit], axis=1)
        assert (r < inner).sum() > 100 and (r > 2.0).sum() > 100
        assert (want.distance[hit][r < inner] < 0).all() and (want.distance[hit][r > 2.0] > 0).all()
    else:
        assert want.on_boundary.sum() > 20
    # the pieces, bit for bit: the edge and corner pseudo-normals and flags built around the hits,
    # and the face normals of the interior hits from their corners' columns
    feat, hit_face = whole_index.features, want.face[hit]
    normal, rim = index._feature_signs(hit_face[regions > 0], regions[regions > 0])
    np.testing.assert_array_equal(normal, feature_normal(feat, mesh.faces, hit_face[regions > 0], regions[regions > 0]))
    np.testing.assert_array_equal(rim, on_boundary(feat, mesh.faces, hit_face[regions > 0], regions[regions > 0]))
    corners = (tuple(np.ascontiguousarray(mesh.vertices[f[:, k]].T)) for k in range(3))
    np.testing.assert_array_equal(face_normal_columns(*corners), feat.face_normals[hit_face])
    np.testing.assert_array_equal(np.isfinite(got.distance), hit)
    np.testing.assert_array_equal(np.sign(got.distance[hit]), np.sign(want.distance[hit]))
    np.testing.assert_allclose(got.distance[hit], want.distance[hit], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.face, want.face)
    np.testing.assert_array_equal(got.on_boundary, want.on_boundary)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), spread=st.floats(0.002, 0.6), cutoff=st.one_of(st.none(), st.floats(0.05, 3.0)))
def test_uneven_map_queries_match_brute_force_in_sign_and_rim(seed, spread, cutoff):
    # A map over an uneven mesh (fine teeth, coarse gingiva, one huge face, slivers through the
    # fine part, an open rim): points scattered around its vertices, so most faces are hit and
    # edge and corner hits are signed from the features built around them only. Distance,
    # sign and rim flag as the float64 brute force's (signed by the whole mesh's features)
    # wherever the same closest point wins, and every answer as the whole-feature path's.
    mesh = _uneven(seed % 7)
    rng = np.random.default_rng(seed)
    pts = mesh.vertices[rng.choice(mesh.n_vertices, 200)] + rng.normal(0, spread, (200, 3))
    index = SurfaceIndex(mesh)
    got = index.query(pts, max_distance=cutoff)
    whole_index = SurfaceIndex(mesh)
    _ = whole_index.features
    whole = whole_index.query(pts, max_distance=cutoff)
    np.testing.assert_array_equal(got.face, whole.face)
    np.testing.assert_array_equal(got.distance, whole.distance)
    np.testing.assert_array_equal(got.on_boundary, whole.on_boundary)
    want, want_p, want_b = _brute_force(mesh, pts)
    limit = np.inf if cutoff is None else cutoff
    near = np.abs(want) <= limit - 1e-6
    np.testing.assert_allclose(np.abs(got.distance[near]), np.abs(want[near]), rtol=0, atol=1e-6)
    assert np.isnan(got.distance[np.abs(want) > limit + 1e-6]).all()
    same = near & np.all(np.abs(got.closest - want_p) <= 1e-9, axis=1)  # the same closest point won
    assert same.sum() >= 0.9 * near.sum()
    clear = same & (np.abs(want) > 1e-6)
    np.testing.assert_array_equal(np.sign(got.distance[clear]), np.sign(want[clear]))
    np.testing.assert_array_equal(got.on_boundary[same], want_b[same])


def _face_distances(mesh: Mesh, points: np.ndarray) -> np.ndarray:
    """(M,) float64 distance of each face to its nearest point, by brute force."""
    m, n = mesh.n_faces, len(points)
    v, f = mesh.vertices, mesh.faces
    tri = np.repeat(f, n, axis=0)
    res = closest_on_triangles(np.tile(points, (m, 1)), v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]])
    return np.sqrt(res.sq_distance.reshape(m, n).min(axis=1))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), reach=st.floats(0.005, 3.0), spread=st.floats(0.5, 20.0))
def test_faces_near_keeps_every_face_within_reach_of_a_point(seed, reach, spread):
    # Uneven meshes (fine, coarse, one huge face, slivers) and points scattered around a random
    # spot, some placed at reach (to 1e-12 relative) off a face or beyond its bounding box: every
    # face within reach of a point is kept (the contacts index is built over these only), and an
    # index over them answers as the whole mesh's.
    mesh = _uneven(seed % 7)
    rng = np.random.default_rng(seed)
    centre = mesh.vertices[rng.integers(mesh.n_vertices)]
    pts = centre + rng.normal(0, spread, (60, 3)) * [1, 1, 0.3]
    on = rng.choice(mesh.n_faces, 20)  # a point straight off a face's interior, at reach
    a, b, c = (mesh.vertices[mesh.faces[on, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    length = np.linalg.norm(normal, axis=1)
    ok = length > 1e-9 * np.linalg.norm(b - a, axis=1) * np.linalg.norm(c - a, axis=1)
    edge = (a + b + c)[ok] / 3 + (normal[ok] / length[ok][:, None]) * reach * (1 - 1e-12)
    # and points just inside reach of a face's extreme corner along an axis: beyond its box by reach
    axis, sign = rng.integers(0, 3, 20), rng.choice([-1.0, 1.0], 20)
    corners = mesh.vertices[mesh.faces[on]]  # (20, 3 corners, 3)
    pick = np.argmax(sign[:, None] * corners[np.arange(20), :, axis], axis=1)
    out = corners[np.arange(20), pick] + np.eye(3)[axis] * (sign * reach * (1 - 1e-12))[:, None]
    pts = np.concatenate([pts, edge, out])
    kept = faces_near(mesh, pts, reach)
    assert np.all(np.diff(kept) > 0)
    want = np.flatnonzero(_face_distances(mesh, pts) <= reach)
    assert np.isin(want, kept).all(), np.setdiff1d(want, kept)
    index, whole = SurfaceIndex(mesh, faces=kept), SurfaceIndex(mesh)
    got, full = index.query(pts, max_distance=reach), whole.query(pts, max_distance=reach)
    np.testing.assert_array_equal(np.isnan(got.distance), np.isnan(full.distance))
    np.testing.assert_allclose(got.distance, full.distance, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.on_boundary, full.on_boundary)


def test_faces_near_drops_the_far_part_and_takes_empty_and_unbounded_cases():
    mesh = height_field(bumpy, 6.0, 61)  # 7200 faces over 12 x 12 mm
    pts = np.array([[-5.5, -5.5, 0.0], [-5.0, -5.2, 0.3]])
    kept = faces_near(mesh, pts, 0.3)
    assert 0 < len(kept) < mesh.n_faces // 20
    np.testing.assert_array_equal(faces_near(mesh, pts, np.inf), np.arange(mesh.n_faces))
    assert len(faces_near(mesh, np.zeros((0, 3)), 0.3)) == 0
    far = SurfaceIndex(mesh, faces=np.zeros(0, dtype=np.int64)).query(pts + [0, 0, 50], max_distance=0.3)
    assert np.isnan(far.distance).all()
    with pytest.raises(ValueError, match="face ids"):
        SurfaceIndex(mesh, faces=np.array([mesh.n_faces]))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), squash=st.floats(1e-6, 1.0), scale=st.floats(1e-3, 1e3))
def test_every_point_of_every_triangle_is_within_its_proxies_cover(seed, squash, scale):
    # The proof's premise (module docstring): each triangle lies within cover of one of its own
    # proxies (its centroid, or sub-triangle centroids where it is split): checked on acute,
    # right, obtuse, needle, sliver and degenerate (repeated or collinear corners) triangles.
    from occlutrace_compute.analysis.distance import _proxies

    rng = np.random.default_rng(seed)
    corners = rng.normal(0, 1, (400, 3, 3)) * [1, 1, squash]
    corners[:40, 1] = corners[:40, 0] + [1, 0, 0]  # right angles at corner 0
    corners[:40, 2] = corners[:40, 0] + [0, rng.uniform(0.01, 5), 0]
    corners[40:60, 2] = corners[40:60, 1]  # a repeated corner
    corners[60:80, 2] = 0.5 * (corners[60:80, 0] + corners[60:80, 1])  # collinear
    corners[80:90] = corners[80:90, :1]  # a point
    corners[90:100, 2] = corners[90:100, 0] + 1e-7 * rng.normal(size=(10, 3))  # needles
    corners[100] *= 200  # one huge triangle among small ones: split
    corners *= scale
    vertices, faces = corners.reshape(-1, 3), np.arange(1200).reshape(-1, 3)
    proxies, owner, cover = _proxies(vertices, faces)
    assert np.array_equal(np.unique(owner), np.arange(400))
    assert len(proxies) <= 4 * 400 + 4096
    w = rng.dirichlet([0.5, 0.5, 0.5], (400, 64))  # points all over each triangle, corners and edges too
    w[:, :3] = np.eye(3)
    on = np.einsum("fsk,fkj->fsj", w, corners)  # (faces, samples, 3)
    reach = np.full((400, 64), np.inf)
    for f in range(400):
        mine = owner == f
        d = np.linalg.norm(on[f][:, None, :] - proxies[mine][None, :, :], axis=2) - cover[mine][None, :]
        reach[f] = d.min(axis=1)
    assert (reach <= 1e-9 * scale).all()


def test_proxies_stay_within_budget_on_a_mesh_uneven_beyond_the_rho_search():
    # 350 triangles of 1 nm beside 50 of 1 m: rho starts at a nanometre and 64 rounds of 15 %
    # growth leave it near 10 um, where each big triangle would need ~10^10 sub-triangles (the old
    # search then built them, or their template, without end). Now every triangle stays whole.
    from occlutrace_compute.analysis.distance import _proxies

    rng = np.random.default_rng(15)
    corners = rng.normal(0, 1, (400, 3, 3))
    corners[:350] = corners[:350, :1] + 1e-6 * corners[:350]
    corners[350:] *= 1e3
    t0 = time.perf_counter()
    proxies, owner, cover = _proxies(corners.reshape(-1, 3), np.arange(1200).reshape(-1, 3))
    assert time.perf_counter() - t0 < 5.0  # generous: milliseconds
    assert len(proxies) <= 4 * 400 + 4096
    assert np.array_equal(np.unique(owner), np.arange(400))
    far = corners[350:] - proxies[owner >= 350][np.argsort(owner[owner >= 350])][:, None, :]
    assert (
        np.linalg.norm(far, axis=2).max(axis=1) <= cover[owner >= 350][np.argsort(owner[owner >= 350])] * (1 + 1e-12)
    ).all()


def test_smallest_balls_are_no_larger_than_the_centroids_and_hold_the_corners():
    from occlutrace_compute.analysis.distance import _balls

    rng = np.random.default_rng(16)
    corners = rng.normal(0, 1, (2000, 3, 3)) * [1, 1, 0.01]
    corners[::7, 2] = corners[::7, 1]  # segments
    corners[::11, 1:] = corners[::11, :1]  # points
    a, b, c = (tuple(corners[:, k].T) for k in range(3))
    centre, radius = _balls(a, b, c)
    to_corners = np.linalg.norm(corners - centre[:, None, :], axis=2).max(axis=1)
    np.testing.assert_allclose(radius, to_corners, rtol=1e-12, atol=0)
    centroid = corners.mean(axis=1)
    assert (radius <= np.linalg.norm(corners - centroid[:, None, :], axis=2).max(axis=1) * (1 + 1e-12)).all()
    # the smallest ball: its radius is at least half the longest side (a lower bound of any ball)
    longest = np.max(
        [np.linalg.norm(corners[:, i] - corners[:, j], axis=1) for i, j in ((0, 1), (1, 2), (2, 0))], axis=0
    )
    assert (radius >= 0.5 * longest * (1 - 1e-12)).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    n_big=st.integers(0, 6),
    squash=st.floats(1e-6, 1.0),
    cutoff=st.one_of(st.none(), st.floats(0.01, 5.0)),
)
def test_triangle_soups_of_every_size_match_brute_force(seed, n_big, squash, cutoff):
    # Small, huge, flat, needle and degenerate triangles at random, points near and far, any
    # cutoff: the answer is the brute force's (to float32 ranking of near-ties) and NaN beyond.
    rng = np.random.default_rng(seed)
    n = 150
    centre = rng.uniform(-3, 3, (n, 1, 3))
    size = np.exp(rng.uniform(np.log(0.02), np.log(0.6), (n, 1, 1)))
    corners = centre + size * rng.normal(0, 1, (n, 3, 3)) * [1, 1, squash]
    corners[:n_big] = rng.uniform(-30, 30, (n_big, 3, 3))
    corners[n_big : n_big + 5, 2] = corners[n_big : n_big + 5, 0] + 1e-7  # needles
    corners[n_big + 5 : n_big + 8, 1:] = corners[n_big + 5 : n_big + 8, :1]  # points
    mesh = Mesh(corners.reshape(-1, 3), np.arange(3 * n).reshape(-1, 3))
    on = np.einsum("fk,fkj->fj", rng.dirichlet([1, 1, 1], n), corners)
    pts = np.concatenate([on + rng.normal(0, 0.05, on.shape), rng.uniform(-6, 6, (100, 3))])
    got = SurfaceIndex(mesh).query(pts, max_distance=cutoff)
    want, _, _ = _brute_force(mesh, pts)
    limit = np.inf if cutoff is None else cutoff
    near = np.abs(want) <= limit - 1e-6
    np.testing.assert_allclose(np.abs(got.distance[near]), np.abs(want[near]), rtol=0, atol=1e-6)
    assert np.isnan(got.distance[np.abs(want) > limit + 1e-6]).all()


def _segment_distance(p: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Distance of p[i] to segment a[i]-c[i], by the textbook clamp (independent of _closest)."""
    ac = c - a
    t = np.clip(np.einsum("ij,ij->i", p - a, ac) / np.einsum("ij,ij->i", ac, ac), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ac), axis=1)


@pytest.mark.parametrize("order", ["aac", "aca", "caa"])
def test_a_triangle_with_two_equal_corners_is_its_segment(order):
    # Ericson's edge-AB test holds vacuously when a == b (d1 = d3 = vc = 0): every point got
    # corner a, e.g. 5 mm instead of 1 mm from the segment (0,0,0)-(10,0,0)
    rng = np.random.default_rng(11)
    a, c = rng.normal(0, 10, (200, 3)), rng.normal(0, 10, (200, 3))
    p = a + rng.uniform(-0.5, 1.5, (200, 1)) * (c - a) + rng.normal(0, 2, (200, 3))
    corners = {"a": a, "c": c}
    got = closest_on_triangles(p, *(corners[k] for k in order))
    np.testing.assert_allclose(np.sqrt(got.sq_distance), _segment_distance(p, a, c), rtol=1e-9, atol=1e-9)


def test_corners_that_float32_merges_do_not_hide_the_nearest_face():
    # two corners 1e-13 mm apart are one float32 point: the float32 scoring saw the face's
    # corner a only (245 mm from a point 0.02 mm from the face) and answered the other face, 5 mm away
    a, c = np.array([3.6, -13.6, 16.4]), np.array([-63.3, 299.4, -135.0])
    p = a + 0.7 * (c - a) + np.array([0.0, 0.0, 0.02])
    other = p + np.array([[0.0, 0.0, 5.0], [1.0, 0.0, 5.0], [0.0, 1.0, 5.0]])
    mesh = Mesh(np.vstack([a, a + 1e-13, c, other]), np.array([[0, 1, 2], [3, 4, 5]]))
    want = _segment_distance(p[None], a[None], c[None])
    got = signed_distance(p[None], mesh)
    np.testing.assert_allclose(np.abs(got.distance), want, atol=UM)


def _sides_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Distance of p[i] to the union of the three sides of triangle i (textbook clamps)."""
    return np.minimum.reduce([_segment_distance(p, x, y) for x, y in ((a, b), (b, c), (c, a))])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    offset=st.sampled_from([0.0, 1e3]),
)
def test_a_straight_line_triangle_is_its_longest_side(seed, scale, offset):
    # Three distinct collinear corners (zero area, any order, any spacing): Ericson's interior
    # answer divides by |ab x ac|^2 = 0 and answered corner a; rounding also sent ~1 % of such
    # triangles past every side test (up to 75x too far on 100k random cases)
    rng = np.random.default_rng(seed)
    n = 400
    o = rng.normal(0, scale, (n, 3)) + offset
    d = rng.normal(0, 1, (n, 3))
    s = rng.uniform(-1, 1, (n, 3)) * scale
    a, b, c = (o + s[:, k : k + 1] * d for k in range(3))
    p = o + rng.uniform(-1.5, 1.5, (n, 1)) * scale * d + rng.normal(0, 0.3 * scale, (n, 3))
    got = closest_on_triangles(p, a, b, c)
    want = _sides_distance(p, a, b, c)
    np.testing.assert_allclose(np.sqrt(got.sq_distance), want, rtol=1e-7, atol=1e-9 * (scale + offset))
    on = got.point  # the answer is a point of the triangle: on the segment of its extreme corners
    assert np.all(_sides_distance(on, a, b, c) <= 1e-7 * (scale + offset))


def test_a_near_straight_triangle_answers_a_point_on_it():
    # corners off a line by 1e-9 of their spacing: the interior ratio is rounding noise; the
    # answer must be a point of the triangle, within its height of the nearest side
    rng = np.random.default_rng(5)
    n = 2000
    a, d = rng.normal(0, 10, (n, 3)), rng.normal(0, 1, (n, 3))
    b = a + 3 * d
    c = a + rng.uniform(-2, 2, (n, 1)) * d + rng.normal(0, 1e-9, (n, 3))
    p = a + rng.uniform(-1, 4, (n, 1)) * d + rng.normal(0, 0.5, (n, 3))
    got = closest_on_triangles(p, a, b, c)
    assert np.all(got.bary >= -1e-6) and np.all(got.bary.sum(axis=1) <= 1 + 1e-9)
    np.testing.assert_allclose(np.sqrt(got.sq_distance), _sides_distance(p, a, b, c), rtol=0, atol=1e-7)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), size=st.floats(1.0, 200.0), cutoff=st.sampled_from([0.0, 1e-7, 1e-4, 0.2, 1.0]))
def test_the_cutoff_is_decided_on_the_exact_distance_not_the_float32_score(seed, size, cutoff):
    # Candidates are scored in float32; whether a point is within the cutoff must come from its
    # float64 distance: a point on a big face with cutoff 0 was NaN, and a point just past the
    # cutoff was reported at a distance beyond it (the float32 score under the cutoff).
    rng = np.random.default_rng(seed)
    v = np.array([[-size, -size, 0.0], [size, -size, 0.0], [0.0, size, 0.0], [0.0, 0.0, size]])
    mesh = Mesh(v + rng.normal(size=3) * size, np.array([[0, 1, 2], [0, 3, 1]]))
    bary = rng.dirichlet(np.ones(3), size=200)
    on = bary @ mesh.vertices[:3]
    normal = np.cross(v[1] - v[0], v[2] - v[0])
    normal /= np.linalg.norm(normal)
    offsets = cutoff + rng.choice([-1.0, 1.0], size=200) * rng.uniform(0, 1e-6, size=200) * size
    offsets = np.where(np.arange(200) < 50, 0.0, np.maximum(offsets, 0.0))  # a quarter on the face
    pts = on + offsets[:, None] * normal
    vm, fm = mesh.vertices, mesh.faces
    exact = np.min(
        [
            np.sqrt(closest_on_triangles(pts, *(np.repeat(vm[[c]], len(pts), axis=0) for c in f)).sq_distance)
            for f in fm
        ],
        axis=0,
    )
    got = SurfaceIndex(mesh).query(pts, max_distance=cutoff).distance
    within = exact <= cutoff
    np.testing.assert_array_equal(np.isnan(got), ~within)
    np.testing.assert_allclose(np.abs(got[within]), exact[within], rtol=0, atol=1e-9 * size)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), cutoff=st.sampled_from([1e-9, 1e-6, 1e-5]))
def test_points_on_slivers_are_within_any_cutoff_whatever_their_float32_score(seed, cutoff):
    # Slivers 1e-7..0.1 mm thick 50 mm from the centre: float32 merges or bends their corners, so
    # a winner's float32 score can be far above its exact distance (NaN for a point on it).
    rng = np.random.default_rng(seed)
    m = 60
    a = rng.uniform(-50, 50, (m, 3))
    d1 = rng.normal(size=(m, 3)) * rng.choice([0.01, 1.0, 30.0])
    d2 = d1 * rng.uniform(0.2, 3, (m, 1)) + rng.normal(size=(m, 3)) * 10 ** rng.uniform(-7, -1, (m, 1))
    mesh = Mesh(np.concatenate([a, a + d1, a + d2]), np.arange(3 * m).reshape(3, m).T)
    w = rng.dirichlet(np.ones(3), m)
    on = w[:, :1] * a + w[:, 1:2] * (a + d1) + w[:, 2:] * (a + d2)
    pts = np.concatenate([on, on + rng.normal(size=on.shape) * 1e-6])
    v = mesh.vertices
    exact = np.min(
        [
            np.sqrt(closest_on_triangles(pts, *(np.repeat(v[[c]], len(pts), axis=0) for c in f)).sq_distance)
            for f in mesh.faces
        ],
        axis=0,
    )
    got = SurfaceIndex(mesh).query(pts, max_distance=cutoff).distance
    within = exact <= cutoff
    np.testing.assert_array_equal(np.isnan(got), ~within)
    np.testing.assert_allclose(np.abs(got[within]), exact[within], rtol=0, atol=1e-9)
