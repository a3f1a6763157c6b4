"""Geometry shared by the pair and bite engines (registration/geometry.py), and the CPU thread cap
both engines run under (nn/threads.cpu_threads)."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings, strategies as st
from scipy.spatial.transform import Rotation
from threadpoolctl import threadpool_info, threadpool_limits

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.nn.threads import cpu_threads
from occlutrace_compute.registration import bite
from occlutrace_compute.registration.geometry import occlusal_direction, rotation_angle_deg
from occlutrace_compute.registration.hypotheses import same_pose


def _pose(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    T[:3, 3] = rng.uniform(-80, 80, 3)
    return T


@settings(max_examples=50, deadline=None)
@given(angle=st.floats(0.0, 179.0), seed=st.integers(0, 2**32 - 1))
def test_rotation_angle_is_the_angle_of_the_relative_rotation(angle, seed):
    rng = np.random.default_rng(seed)
    base = _pose(rng)
    axis = rng.normal(size=3)
    turn = np.eye(4)
    turn[:3, :3] = Rotation.from_rotvec(math.radians(angle) * axis / np.linalg.norm(axis)).as_matrix()
    turn[:3, 3] = rng.uniform(-5, 5, 3)  # translation plays no part
    assert abs(rotation_angle_deg(base, base @ turn) - angle) < 1e-5
    assert abs(rotation_angle_deg(base @ turn, base) - angle) < 1e-5
    # same_pose's rotation test is this angle: under 2 deg and the centre kept in place
    centre = rng.uniform(-30, 30, 3)
    still = turn.copy()
    still[:3, 3] = centre - turn[:3, :3] @ centre
    assert same_pose(base, base @ still, centre) == (angle < 2.0)


def test_occlusal_direction_is_the_mean_normal_or_the_thinnest_axis():
    rng = np.random.default_rng(3)
    # a low dome over a 40 x 20 mm patch: normals lean out of the top
    xy = rng.uniform([-20, -10], [20, 10], (4000, 2))
    z = 2.0 - 0.004 * (xy**2).sum(1)
    points = np.column_stack([xy, z])
    normals = np.column_stack([0.008 * xy, np.ones(len(xy))])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    up = occlusal_direction(points, normals, min_mean_normal=0.2)
    assert np.allclose(up, normals.mean(0) / np.linalg.norm(normals.mean(0)))
    assert up[2] > 0.99
    # normals that cancel out (each sample seen from both sides): the thinnest axis, either sign
    axis = occlusal_direction(
        np.concatenate([points, points]), np.concatenate([normals, -normals]), min_mean_normal=0.05
    )
    assert abs(axis[2]) > 0.99
    # the threshold decides: the same normals, a threshold above their mean's length
    length = float(np.linalg.norm(normals.mean(0)))
    assert abs(occlusal_direction(points, normals, min_mean_normal=length + 1e-6)[2]) > 0.99
    # a caller's covariance gives the same axis as the scatter computed here
    cov = np.cov((points - points.mean(0)).T)
    none = np.zeros_like(normals)
    a = occlusal_direction(points, none, 0.05, scatter=cov)
    assert abs(abs(a @ occlusal_direction(points, none, 0.05)) - 1.0) < 1e-9


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_cpu_threads_caps_torch_and_the_blas_and_restores_them():
    before = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):
        outside = _blas_threads()
        with cpu_threads(1):
            assert torch.get_num_threads() == 1
            assert set(_blas_threads()) <= {1}
        assert torch.get_num_threads() == before
        assert _blas_threads() == outside
        with cpu_threads(None):  # None: the process settings stay
            assert torch.get_num_threads() == before and _blas_threads() == outside


def test_the_bite_path_runs_under_the_engines_thread_cap(monkeypatch):
    """The bite engine used to cap torch only; the BLAS kept its threads."""
    seen = {}

    def spy(*args, **kwargs):
        seen["torch"], seen["blas"] = torch.get_num_threads(), _blas_threads()
        return "registered"

    monkeypatch.setattr(bite, "_register", spy)
    x, y = np.meshgrid(np.arange(10.0), np.arange(10.0), indexing="ij")
    v = np.column_stack([x.ravel(), y.ravel(), np.zeros(100)])
    a = (np.arange(9)[:, None] * 10 + np.arange(9)[None]).ravel()
    mesh = Mesh(v, np.concatenate([np.stack([a, a + 10, a + 11], 1), np.stack([a, a + 11, a + 1], 1)]))
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        assert bite.register_bite(mesh, mesh, [mesh], device="cpu") == "registered"
        assert _blas_threads() == before
    assert seen["torch"] == 1
    assert set(seen["blas"]) <= {1}


def _tree_threads() -> list[int]:
    """OpenMP threads of pykdtree's runtime (its own libgomp copy), as this thread sees them."""
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp" and "pykdtree" in p["filepath"]]


def test_cpu_threads_caps_the_tree_searches_only_when_asked_and_restores_them():
    """`tree_threads` caps pykdtree's OpenMP queries in this thread (a 2-thread team waiting for
    a core the job's index build holds spins); without it they keep the process setting."""
    import pykdtree.kdtree  # noqa: F401  (loaded, as the engines load it)

    with threadpool_limits(limits=2, user_api="openmp"):
        outside = _tree_threads()
        assert outside == [2]
        with cpu_threads(1, tree_threads=1):
            assert _tree_threads() == [1] and torch.get_num_threads() == 1
        assert _tree_threads() == outside
        with cpu_threads(1):
            assert _tree_threads() == outside


def test_tree_threads_leave_torch_on_cpu_threads():
    """The OpenMP cap of `tree_threads` reached torch's own OpenMP runtime too: with
    cpu_threads(1, tree_threads=2) torch ran on 2 threads, with (2, 1) on 1."""
    import pykdtree.kdtree  # noqa: F401  (loaded, as the engines load it)

    before = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="openmp"):
        with cpu_threads(1, tree_threads=2):
            assert torch.get_num_threads() == 1 and _tree_threads() == [2]
        with cpu_threads(2, tree_threads=1):
            assert torch.get_num_threads() == 2 and _tree_threads() == [1]
    assert torch.get_num_threads() == before


def test_the_pair_engine_searches_its_trees_on_one_openmp_thread_by_default(monkeypatch):
    """Every kd-tree query of a pair registration runs under `tree_threads` (default 1; None:
    the process setting). Fails on the engine before the register-stage session (2 threads)."""
    from occlutrace_compute.registration import RegistrationOptions, matcher, register
    from occlutrace_compute.synth.cases import make_pair_case

    seen: list[list[int]] = []
    original = matcher.Matcher._search_rows

    def spy(self, *args, **kwargs):
        seen.append(_tree_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matcher.Matcher, "_search_rows", spy)
    case = make_pair_case(2, "clean", (0.6, 1.0), noise_mm=0.015, spacing_mm=0.5)
    opt = RegistrationOptions().updated(fine_points=4000, fixed_points=6000)
    with threadpool_limits(limits=2, user_api="openmp"):
        register(case.fixed, case.moving, opt, device="cpu")
        assert seen and all(s == [1] for s in seen)
        seen.clear()
        register(case.fixed, case.moving, opt.updated(tree_threads=None), device="cpu")
        assert seen and all(s == [2] for s in seen)
        assert _tree_threads() == [2]
