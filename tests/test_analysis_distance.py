"""signed_distance: exact point-to-triangle distances, checked against trimesh.proximity."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from test_analysis_surfaces import bowl, bumpy, height_field

from occlutrace_compute.analysis.distance import SurfaceIndex, signed_distance
from occlutrace_compute.analysis.triangles import (
    closest_on_triangles,
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
