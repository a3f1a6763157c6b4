"""Global-search pieces: RANSAC consistency and inlier counts, pose distinctness, local steps."""

from __future__ import annotations

import math

import numpy as np
import torch
from registration_cases import FAST, pair_case  # changed_case: a fixture (conftest.py)
from scipy.spatial.transform import Rotation

from occlutrace_compute.registration import hypotheses as hyp, register
from occlutrace_compute.registration.batch import pack
from occlutrace_compute.registration.features import fpfh
from occlutrace_compute.registration.sampling import sample_surface, voxel_downsample
from occlutrace_compute.synth.score import pointwise_rms_um, rotation_error_deg


def _pose(rng: np.random.Generator, deg: float, mm: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) / math.sqrt(3) * math.radians(deg)).as_matrix()
    T[:3, 3] = rng.normal(0, mm, 3)
    return T


def test_inlier_counts_equal_a_direct_count():
    rng = np.random.default_rng(0)
    src = torch.from_numpy(rng.uniform(-20, 20, (2, 300, 3)))
    dst = src + torch.from_numpy(rng.normal(0, 1.0, src.shape))
    use = torch.from_numpy(rng.random((2, 300)) < 0.6)
    T = torch.from_numpy(np.stack([[_pose(rng, 2, 0.5) for _ in range(40)] for _ in range(2)]))
    counts = hyp._inlier_counts(T, src, dst, use, 1.5)
    for b in range(2):
        for e in range(40):
            moved = src[b] @ T[b, e, :3, :3].T + T[b, e, :3, 3]
            expect = int((((moved - dst[b]).norm(dim=1) < 1.5) & use[b]).sum())
            assert int(counts[b, e]) == expect


def test_consistency_keeps_rigid_triplets_and_drops_flipped_normals():
    rng = np.random.default_rng(1)
    T = _pose(rng, 90, 10)
    s = rng.uniform(-15, 15, (1, 50, 3, 3))
    ns = rng.normal(size=(1, 50, 3, 3))
    ns /= np.linalg.norm(ns, axis=-1, keepdims=True)
    d, nd = s @ T[:3, :3].T + T[:3, 3], ns @ T[:3, :3].T
    bad = nd.copy()
    bad[:, :, 1] *= -1  # one correspondence's normal points the other way
    t = torch.from_numpy
    rigid = hyp._consistent(t(s), t(d), t(ns), t(nd), min_edge_mm=1.0, normal_tol=0.35)
    long_edges = np.all(
        [np.linalg.norm(s[..., i, :] - s[..., j, :], axis=-1) > 1.0 for i, j in ((0, 1), (1, 2), (0, 2))], 0
    )
    assert bool((rigid.numpy() == long_edges).all()) and long_edges.sum() > 40
    flipped = hyp._consistent(t(s), t(d), t(ns), t(bad), min_edge_mm=1.0, normal_tol=0.35)
    assert int(flipped.sum()) < 0.2 * int(rigid.sum())


def test_same_pose_compares_translation_at_the_scan_centre():
    far = np.array([90.0, 0.0, 0.0])  # a scan lying 90 mm from its file's origin
    a = np.eye(4)
    b = np.eye(4)
    b[:3, :3] = Rotation.from_rotvec([0, 0, math.radians(0.8)]).as_matrix()
    b[:3, 3] = far - b[:3, :3] @ far  # rotated about the scan's own centre
    assert hyp.same_pose(a, b, far)
    assert not hyp.same_pose(a, b, np.zeros(3))  # raw translations differ by ~1.3 mm
    c = b.copy()
    c[:3, 3] += [1.5, 0, 0]
    assert not hyp.same_pose(a, c, far)


def test_steps_around_a_pose_turn_about_the_centre():
    rng = np.random.default_rng(2)
    T = _pose(rng, 40, 20)
    centre = np.array([30.0, -12.0, 8.0])
    steps = hyp.around(T, centre, 200, rot_deg=2.5, trans_mm=0.7, seed=5)
    assert steps.shape == (201, 4, 4) and np.allclose(steps[0], T)
    assert np.allclose(steps[:, :3, :3] @ steps[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-9)
    angles = [rotation_error_deg(S, T) for S in steps[1:]]
    shifts = np.linalg.norm((steps[1:, :3, :3] @ centre + steps[1:, :3, 3]) - (T[:3, :3] @ centre + T[:3, 3]), axis=1)
    # 3-D normal steps: mean angle ~1.6 x sigma, mean shift ~1.6 x sigma
    assert 3.0 < np.mean(angles) < 5.0
    assert 0.85 < np.mean(shifts) < 1.4
    assert np.array_equal(steps, hyp.around(T, centre, 200, 2.5, 0.7, seed=5))


def test_ransac_finds_the_pose_between_two_samplings_of_one_surface():
    case = pair_case(4, "clean", (0.9, 1.0), noise_mm=0.0)
    clouds = []
    for mesh, seed in ((case.moving, 0), (case.fixed, 1)):
        p, n = sample_surface(mesh, 20000, seed=seed)
        clouds.append(pack([voxel_downsample(p, n, 1.6)], torch.device("cpu")))
    feats = [fpfh(c, 8.0) for c in clouds]
    poses = hyp.ransac_hypotheses(
        clouds[0], clouds[1], feats[0], feats[1], 30000, 8, inlier_mm=2.4, min_edge_mm=6.4, seed=0
    )[0]
    best = min(rotation_error_deg(T, case.T_fixed_moving) for T in poses)
    assert best < 3.0


def test_local_search_keeps_a_good_answer(changed_case):
    """Forced on every pair (min_confidence above 1), the search around a right answer may
    only move it within the right basin."""
    plain = register(changed_case.fixed, changed_case.moving, FAST.updated(starts=0), device="cpu")
    forced = register(changed_case.fixed, changed_case.moving, FAST.updated(min_confidence=1.01), device="cpu")
    c = changed_case
    for r in (plain, forced):
        assert pointwise_rms_um(r.matrix, c.T_fixed_moving, c.moving.vertices[c.moving_unchanged]) < 15.0
    assert forced.doubtful and "low confidence" in forced.reason
