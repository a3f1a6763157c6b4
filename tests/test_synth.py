"""Synthetic scans: anatomy, openness, ground-truth consistency, changes, occlusion, bite scans."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth import (
    make_arch,
    make_bite_case,
    make_pair_case,
    pointwise_rms_um,
    rotation_error_deg,
    translation_error_um,
    write_bite_case,
    write_pair_case,
)
from occlutrace_compute.synth.occlusion import contact_truth, signed_distance_to

COARSE = 0.3


def _surface_distance(surface: Mesh, points: np.ndarray) -> np.ndarray:
    tm = trimesh.Trimesh(surface.vertices, surface.faces, process=False)
    return trimesh.proximity.closest_point(tm, points)[1]


def _boundary_edges(mesh: Mesh) -> int:
    e = np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return int((counts == 1).sum())


@pytest.fixture(scope="module")
def arches():
    return make_arch("upper", 11, spacing_mm=COARSE), make_arch("lower", 11, spacing_mm=COARSE)


@pytest.fixture(scope="module")
def clean_pair():
    return make_pair_case(5, "clean", spacing_mm=COARSE)


@pytest.fixture(scope="module")
def changed_pair():
    return make_pair_case(6, "changed", spacing_mm=COARSE)


@pytest.fixture(scope="module")
def bite():
    return make_bite_case(7, n_bites=2, spacing_mm=COARSE)


def test_full_resolution_arch_is_a_dense_open_surface():
    arch = make_arch("upper", 1)
    assert 100_000 <= arch.mesh.n_vertices <= 300_000
    edges = arch.mesh.vertices[arch.mesh.faces[:, 1]] - arch.mesh.vertices[arch.mesh.faces[:, 0]]
    assert 0.08 <= float(np.median(np.linalg.norm(edges, axis=1))) <= 0.25


def test_arches_have_fourteen_teeth_and_are_open(arches):
    upper, lower = arches
    for arch, quads in ((upper, (1, 2)), (lower, (3, 4))):
        expected = {10 * q + p for q in quads for p in range(1, 8)}
        assert set(np.unique(arch.tooth)) - {0} == expected
        assert (arch.tooth == 0).any()  # gingiva
        assert arch.tooth.shape == (arch.mesh.n_vertices,)
        assert arch.mesh.faces.max() < arch.mesh.n_vertices
        tm = trimesh.Trimesh(arch.mesh.vertices, arch.mesh.faces, process=False)
        assert not tm.is_watertight
        assert _boundary_edges(arch.mesh) > 100
        size = arch.mesh.vertices.max(0) - arch.mesh.vertices.min(0)
        assert 45 < size[0] < 70 and 40 < size[1] < 60  # ~50 mm wide, ~45 mm deep


def test_spacing_parameter_controls_density():
    coarse = make_arch("upper", 2, spacing_mm=0.4).mesh.n_vertices
    fine = make_arch("upper", 2, spacing_mm=0.2).mesh.n_vertices
    assert 3.3 < fine / coarse < 4.7


def _peaks(arch, fdi: int, occlusal_sign: float, radius: float = 1.2) -> int:
    """Local maxima of the occlusal height on a crown, ignoring its lower half."""
    m = arch.tooth == fdi
    v = arch.mesh.vertices[m]
    h = occlusal_sign * v[:, 2]
    top = h > np.percentile(h, 50)
    tree = cKDTree(v[:, :2])
    count = 0
    for i in np.flatnonzero(top):
        nb = tree.query_ball_point(v[i, :2], radius)
        if h[i] >= h[nb].max():
            count += 1
    return count


def test_crowns_have_cusps():
    upper = make_arch("upper", 11, spacing_mm=0.2)
    lower = make_arch("lower", 11, spacing_mm=0.2)
    for fdi in (16, 26, 17):
        assert _peaks(upper, fdi, -1.0) >= 3
    for fdi in (36, 46):
        assert _peaks(lower, fdi, 1.0) >= 4
    for fdi in (14, 25):
        assert _peaks(upper, fdi, -1.0) >= 2
    assert _peaks(upper, 13, -1.0, radius=2.5) == 1  # canine: one pointed cusp


def test_generation_is_deterministic_per_seed():
    a = make_arch("lower", 4, spacing_mm=0.5)
    b = make_arch("lower", 4, spacing_mm=0.5)
    c = make_arch("lower", 5, spacing_mm=0.5)
    np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
    assert a.mesh.vertices.shape != c.mesh.vertices.shape or not np.allclose(a.mesh.vertices, c.mesh.vertices)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="jaw"):
        make_arch("middle", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spacing"):
        make_arch("upper", 1, spacing_mm=0.0)
    with pytest.raises(ValueError, match="overlap"):
        make_pair_case(1, overlap=(0.9, 0.5))
    with pytest.raises(ValueError, match="scenario"):
        make_pair_case(1, scenario="broken")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_bites"):
        make_bite_case(1, n_bites=3)  # type: ignore[arg-type]


def _is_rigid(t: np.ndarray) -> bool:
    r = t[:3, :3]
    orthonormal = np.allclose(r @ r.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(r), 1.0)
    return orthonormal and np.allclose(t[3], [0, 0, 0, 1])


def test_pair_ground_truth_lands_rescan_on_scan(clean_pair):
    case = clean_pair
    assert _is_rigid(case.T_fixed_moving)
    assert case.moving_unchanged.all() and case.changes == []
    moved = case.moving.transformed(case.T_fixed_moving).vertices
    # inside the fixed scan's coverage (its gum border and holes are independent of the rescan's)
    near, _ = cKDTree(case.fixed.vertices).query(moved, distance_upper_bound=1.0)
    covered = np.flatnonzero(np.isfinite(near))
    assert covered.size > 0.9 * len(moved)
    pick = np.random.default_rng(0).choice(covered, 3000, replace=False)
    d = _surface_distance(case.fixed, moved[pick])
    assert np.median(d) < 0.03
    assert np.percentile(d, 95) < 0.07
    # without the transform the scans are far apart (unrelated scanner frames)
    raw, _ = cKDTree(case.fixed.vertices).query(case.moving.vertices[pick])
    assert np.median(raw) > 1.0


def test_rescans_are_independent_samplings(clean_pair):
    case = clean_pair
    moved = case.moving.transformed(case.T_fixed_moving).vertices
    d, _ = cKDTree(case.fixed.vertices).query(moved)
    assert np.median(d) > 0.03  # no shared vertices: different grid phase and spacing


@pytest.mark.parametrize("overlap", [(0.35, 0.45), (0.75, 0.8)])
def test_overlap_is_honoured(overlap):
    case = make_pair_case(8, "clean", overlap=overlap, spacing_mm=0.4)
    assert overlap[0] <= case.overlap <= overlap[1]
    moved = case.moving.transformed(case.T_fixed_moving).vertices
    crowns = case.fixed.vertices[case.fixed_tooth > 0]
    d, _ = cKDTree(moved).query(crowns)
    covered = float((d < 0.6).mean())
    assert abs(covered - case.overlap) < 0.12


def test_changed_regions_are_masked(changed_pair):
    case = changed_pair
    assert 3 <= len(case.changes) <= 6
    assert any("fragment" in c for c in case.changes)
    assert case.moving_unchanged.shape == (case.moving.n_vertices,)
    share = 1.0 - case.moving_unchanged.mean()
    assert 0.01 < share < 0.6
    moved = case.moving.transformed(case.T_fixed_moving).vertices
    near, _ = cKDTree(case.fixed.vertices).query(moved, distance_upper_bound=1.0)
    covered = np.isfinite(near)
    rng = np.random.default_rng(1)
    same = rng.choice(np.flatnonzero(covered & case.moving_unchanged), 2000, replace=False)
    assert np.percentile(_surface_distance(case.fixed, moved[same]), 95) < 0.07
    changed = np.flatnonzero(~case.moving_unchanged)
    d_changed = _surface_distance(case.fixed, moved[changed])
    assert np.median(d_changed) > 0.1  # the mask marks real geometric change


def test_fragments_are_disconnected_from_the_arch(changed_pair):
    case = changed_pair
    tm = trimesh.Trimesh(case.moving.vertices, case.moving.faces, process=False)
    labels = trimesh.graph.connected_component_labels(tm.face_adjacency, node_count=len(tm.faces))
    sizes = np.bincount(labels)
    assert (sizes > 50).sum() >= 2
    on_vertex = np.full(len(tm.vertices), -1)
    on_vertex[tm.faces.ravel()] = np.repeat(labels, 3)
    arch = cKDTree(tm.vertices[on_vertex == sizes.argmax()])
    for k in np.flatnonzero(sizes > 50):
        if k != sizes.argmax():
            assert arch.query(tm.vertices[on_vertex == k])[0].min() > 0.5  # loose, not touching
            assert not case.moving_unchanged[on_vertex == k].any()


def test_bite_arches_in_occlusion_touch_without_interpenetrating(bite):
    case = bite
    assert _is_rigid(case.T_upper_lower)
    c = case.contacts
    assert c.count["left"] >= 1 and c.count["right"] >= 1
    assert 2.0 < c.area_mm2["total"] < 200.0
    assert c.max_penetration_mm < 0.06
    assert len(c.regions) == c.count["left"] + c.count["right"]
    # independent check on the noisy files: lower moved into the upper's frame
    lower = case.lower.transformed(case.T_upper_lower)
    d = signed_distance_to(case.upper, lower.vertices, 1.0)
    finite = d[np.isfinite(d)]
    assert (finite < 0.1).sum() > 50
    assert finite.min() > -0.15  # noise only: no deep interpenetration
    noisy = contact_truth(case.upper, lower, case.lower_tooth)
    assert 0.4 < noisy.area_mm2["total"] / c.area_mm2["total"] < 2.5


def test_bite_scans_cover_both_arches_on_their_side(bite):
    case = bite
    assert len(case.bites) == 2 and len(case.T_upper_bites) == 2
    lower = case.lower.transformed(case.T_upper_lower)
    sides = {
        side: np.array([r.centroid for r in case.contacts.regions if r.side == side]).mean(0)
        for side in ("left", "right")
    }
    for bite_mesh, t, side, other in zip(case.bites, case.T_upper_bites, ("left", "right"), ("right", "left")):
        pts = bite_mesh.transformed(t).vertices
        d_up = np.abs(signed_distance_to(case.upper, pts, 1.0))
        d_low = np.abs(signed_distance_to(lower, pts, 1.0))
        assert (d_up < 0.08).mean() > 0.2
        assert (d_low < 0.08).mean() > 0.2
        assert (np.minimum(d_up, d_low) < 0.08).mean() > 0.95
        # bite 1 on the patient's left, bite 2 on the right: nearer that side's contacts
        near_side = np.linalg.norm(pts - sides[side], axis=1) < np.linalg.norm(pts - sides[other], axis=1)
        assert near_side.mean() > 0.98


def test_write_and_read_back(tmp_path, clean_pair, bite):
    write_pair_case(clean_pair, tmp_path / "pair", fmt="ply")
    truth = json.loads((tmp_path / "pair" / "truth.json").read_text())
    np.testing.assert_allclose(np.array(truth["T_fixed_moving"]), clean_pair.T_fixed_moving)
    moving = trimesh.load(tmp_path / "pair" / "moving.ply", process=False)
    np.testing.assert_allclose(moving.vertices, clean_pair.moving.vertices, atol=1e-5)
    mask = np.load(tmp_path / "pair" / truth["moving_unchanged"])
    assert mask.shape == (clean_pair.moving.n_vertices,)
    write_bite_case(bite, tmp_path / "bite", fmt="stl")
    truth = json.loads((tmp_path / "bite" / "truth.json").read_text())
    names = sorted(p.name for p in (tmp_path / "bite").iterdir())
    assert names == ["bite1.stl", "bite2.stl", "lower.stl", "truth.json", "upper.stl"]
    assert len(truth["T_upper_bites"]) == 2 and truth["contacts"]["count"]["left"] >= 1
    upper = trimesh.load(tmp_path / "bite" / "upper.stl", process=False)
    assert len(upper.faces) == bite.upper.n_faces
    write_pair_case(clean_pair, tmp_path / "obj", fmt="obj")
    assert len(trimesh.load(tmp_path / "obj" / "fixed.obj", process=False).faces) == clean_pair.fixed.n_faces


def test_scores():
    t_gt = np.eye(4)
    t_gt[:3, 3] = [10.0, -5.0, 2.0]
    a = np.deg2rad(5.0)
    t_est = t_gt.copy()
    t_est[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    assert rotation_error_deg(t_est, t_gt) == pytest.approx(5.0)
    shifted = t_gt.copy()
    shifted[:3, 3] += [0.003, 0.004, 0.0]
    assert translation_error_um(shifted, t_gt) == pytest.approx(5.0)
    pts = np.random.default_rng(0).normal(size=(100, 3))
    assert pointwise_rms_um(shifted, t_gt, pts) == pytest.approx(5.0)
    p = np.array([[1.0, 0.0, 0.0]])
    assert pointwise_rms_um(t_est, t_gt, p) == pytest.approx(2 * np.sin(a / 2) * 1000.0)
