"""signed_distance: exact point-to-triangle distances, checked against trimesh.proximity."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from test_analysis_surfaces import bowl, bumpy, height_field

from occlutrace_compute.analysis.distance import SurfaceIndex, signed_distance
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
