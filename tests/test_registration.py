"""Registration engine: sampling, global search from any pose, robust ICP, batching, verdicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from registration_cases import FAST  # clean_case, changed_case: fixtures (conftest.py)
from scipy.spatial.transform import Rotation

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.registration import (
    register,
    register_batch,
    sample_surface,
    voxel_downsample,
)
from occlutrace_compute.synth.cases import PairCase
from occlutrace_compute.synth.score import pointwise_rms_um, rotation_error_deg


def _error_um(T: np.ndarray, case: PairCase) -> float:
    return pointwise_rms_um(T, case.T_fixed_moving, case.moving.vertices[case.moving_unchanged])


def _grid(nx: int, ny: int, step: float, height=lambda x, y: 0.0 * x) -> Mesh:
    x, y = np.meshgrid(np.arange(nx) * step, np.arange(ny) * step, indexing="ij")
    v = np.stack([x.ravel(), y.ravel(), height(x, y).ravel()], 1)
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), indexing="ij")
    a = (i * ny + j).ravel()
    faces = np.concatenate([np.stack([a, a + ny, a + ny + 1], 1), np.stack([a, a + ny + 1, a + 1], 1)])
    return Mesh(v, faces.astype(np.int64))


def _moved(case: PairCase, T_extra: np.ndarray) -> PairCase:
    """The same case with the moving scan moved by T_extra (ground truth updated)."""
    return dataclasses.replace(
        case, moving=case.moving.transformed(T_extra), T_fixed_moving=case.T_fixed_moving @ np.linalg.inv(T_extra)
    )


def test_sample_surface_is_area_weighted_reproducible_with_face_normals():
    # two triangles in different planes, the second three times the area of the first
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 3, 1], [0, 0, 3]], float)
    mesh = Mesh(v, np.array([[0, 1, 2], [3, 4, 5]]))
    p, n = sample_surface(mesh, 20000, seed=3)
    on_first = np.abs(p[:, 2]) < 1e-12
    assert abs(on_first.mean() - 0.5 / (0.5 + 3.0)) < 0.01  # areas 0.5 and 3 mm^2
    assert np.allclose(n[on_first], [0, 0, 1])
    assert np.allclose(np.abs(n[~on_first]), [1, 0, 0])
    p2, _ = sample_surface(mesh, 20000, seed=3)
    assert np.array_equal(p, p2)
    assert not np.array_equal(p, sample_surface(mesh, 20000, seed=4)[0])


def test_voxel_downsample_keeps_one_unit_normal_per_cell():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 10, (5000, 3))
    nrm = rng.normal(size=(5000, 3))
    q, m = voxel_downsample(pts, nrm, 2.0)
    cells = np.floor((q - pts.min(0)) / 2.0).astype(int)
    assert len(np.unique(cells, axis=0)) == len(q) <= 125
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0)


def test_clean_rescan_from_random_pose(clean_case):
    r = register(clean_case.fixed, clean_case.moving, FAST, device="cpu")
    assert _error_um(r.matrix, clean_case) < 10.0
    assert r.fitness > 0.8 and r.rmse_mm < 0.05 and r.converged
    assert not r.doubtful and r.confidence > 0.5, r.reason
    metrics = r.to_json()["metrics"]
    assert set(metrics) >= {"rmse_mm", "fitness", "iterations", "converged", "confidence", "doubtful"}


def test_changed_rescan_leaves_out_changed_regions(changed_case):
    r = register(changed_case.fixed, changed_case.moving, FAST, device="cpu")
    assert _error_um(r.matrix, changed_case) < 15.0
    assert r.changed_regions and r.outlier_mask.any()
    # outlier samples lie on changed geometry: near a vertex the ground truth marks changed
    from scipy.spatial import cKDTree

    changed_vertices = changed_case.moving.vertices[~changed_case.moving_unchanged]
    d, _ = cKDTree(changed_vertices).query(r.moving_samples[r.outlier_mask])
    assert np.mean(d < 1.0) > 0.8
    assert r.to_json()["changed_regions"][0]["area_mm2"] > 0


@pytest.mark.parametrize("angle_deg", [179.5, 90.0])
def test_recovers_large_rotations(clean_case, angle_deg):
    axis = np.array([0.3, -0.8, 0.52])
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(np.radians(angle_deg) * axis / np.linalg.norm(axis)).as_matrix()
    T[:3, 3] = [40.0, -15.0, 8.0]
    case = _moved(clean_case, T)
    r = register(case.fixed, case.moving, FAST, device="cpu")
    assert _error_um(r.matrix, case) < 10.0
    assert rotation_error_deg(r.matrix, case.T_fixed_moving) < 0.05


def test_ragged_batch_matches_single_pairs(clean_case, changed_case):
    pairs = [(changed_case.fixed, changed_case.moving), (clean_case.fixed, clean_case.moving)]
    batch = register_batch(pairs, FAST, device="cpu")
    for (fixed, moving), got, case in zip(pairs, batch, (changed_case, clean_case)):
        alone = register(fixed, moving, FAST, device="cpu")
        assert np.allclose(got.matrix, alone.matrix, atol=1e-5)
        assert abs(got.fitness - alone.fitness) < 1e-3
        assert _error_um(got.matrix, case) < 15.0


def test_torch_backend_matches_kdtree(clean_case):
    """The GPU path (padded torch nearest neighbours) agrees with the CPU tree path."""
    opt = FAST.updated(
        knn_backend="torch",
        fine_points=2000,
        fixed_points=3000,
        mid_icp_points=400,
        coarse_icp_points=200,
        prescreen_points=64,
        mid_voxel=1.0,
        anchors=4,
    )
    a = register(clean_case.fixed, clean_case.moving, opt, device="cpu")
    b = register(clean_case.fixed, clean_case.moving, opt.updated(knn_backend="kdtree"), device="cpu")
    assert pointwise_rms_um(a.matrix, b.matrix, clean_case.moving.vertices) < 1.0


def test_landmarks_alone_start_the_search(changed_case):
    rng = np.random.default_rng(5)
    idx = rng.choice(np.flatnonzero(changed_case.moving_unchanged), 4, replace=False)
    mov_pts = changed_case.moving.vertices[idx]
    fix_pts = mov_pts @ changed_case.T_fixed_moving[:3, :3].T + changed_case.T_fixed_moving[:3, 3]
    fix_pts += rng.normal(0, 0.3, fix_pts.shape)  # a user's clicks are off by a few tenths
    only_landmarks = FAST.updated(fpfh_hypotheses=0, axis_hypotheses=0)
    r = register(changed_case.fixed, changed_case.moving, only_landmarks, landmarks=(mov_pts, fix_pts), device="cpu")
    assert r.hypotheses == 1
    assert _error_um(r.matrix, changed_case) < 15.0
    with pytest.raises(ValueError, match="no starting pose"):
        register(changed_case.fixed, changed_case.moving, only_landmarks, device="cpu")


def test_flat_patch_is_doubtful():
    """A plane slides freely along itself: any answer is a guess and must say so."""
    fixed = _grid(60, 60, 0.5)
    moving = _grid(40, 40, 0.5).transformed(np.array([[0, -1, 0, 3], [1, 0, 0, 2], [0, 0, 1, 1], [0, 0, 0, 1.0]]))
    r = register(fixed, moving, FAST, device="cpu")
    assert r.doubtful
    assert "constrain" in r.reason
    assert r.confidence < 0.5


def test_periodic_ridges_are_ambiguous():
    """Identical ridges every 4 mm: poses one period apart fit equally well."""
    fixed = _grid(100, 40, 0.4, lambda x, y: np.sin(2 * np.pi * x / 4.0) + 0.3 * np.sin(2 * np.pi * y / 16.0))
    moving = _grid(50, 40, 0.4, lambda x, y: np.sin(2 * np.pi * (x + 8.0) / 4.0) + 0.3 * np.sin(2 * np.pi * y / 16.0))
    r = register(fixed, moving, FAST, device="cpu")
    assert r.doubtful and r.runner_up_score_ratio > 0.85
    assert r.confidence < 0.5


def test_bad_inputs_are_rejected_clearly(clean_case):
    bad = clean_case.moving.vertices.copy()
    bad[7] = np.nan
    with pytest.raises(InputRejected, match="moving mesh: vertices contain NaN"):
        register(clean_case.fixed, Mesh(bad, clean_case.moving.faces), FAST, device="cpu")
    few = Mesh(clean_case.fixed.vertices, clean_case.fixed.faces[:10])
    with pytest.raises(InputRejected, match="fixed mesh: only 10 faces"):
        register(few, clean_case.moving, FAST, device="cpu")
    tiny = _grid(8, 8, 0.1)
    with pytest.raises(InputRejected, match="moving mesh: surface too small"):
        register(clean_case.fixed, tiny, FAST, device="cpu")
    with pytest.raises(InputRejected, match="landmarks: need at least 3"):
        register(
            clean_case.fixed, clean_case.moving, FAST, landmarks=(np.zeros((2, 3)), np.zeros((2, 3))), device="cpu"
        )
    with pytest.raises(InputRejected, match="pair 1: moving mesh"):
        register_batch(
            [(clean_case.fixed, clean_case.moving), (clean_case.fixed, Mesh(bad, clean_case.moving.faces))],
            FAST,
            device="cpu",
        )


@pytest.mark.gpu
def test_cuda_matches_cpu(clean_case, changed_case):
    """The CUDA path (float32 searches, float64 fits) lands on the CPU path's pose and verdict."""
    cases = (clean_case, changed_case)
    pairs = [(c.fixed, c.moving) for c in cases]
    gpu = register_batch(pairs, FAST, device="cuda")
    cpu = register_batch(pairs, FAST, device="cpu")
    for on_gpu, on_cpu, case in zip(gpu, cpu, cases):
        assert _error_um(on_gpu.matrix, case) < 15.0
        assert _error_um(on_cpu.matrix, case) < 15.0
        apart_um = pointwise_rms_um(on_gpu.matrix, on_cpu.matrix, case.moving.vertices[case.moving_unchanged])
        assert apart_um < 10.0, f"CUDA and CPU poses {apart_um:.1f} um apart"
        assert on_gpu.doubtful == on_cpu.doubtful, (on_gpu.reason, on_cpu.reason)
