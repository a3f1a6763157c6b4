"""arch_frame on coordinate columns (fifth session) gives the frame of the rule's row formulas:
the same axes, signs, origin and extent within rounding, on arches and hostile meshes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from scipy.spatial.transform import Rotation

from occlutrace_compute.analysis.frame import ArchFrame, arch_frame
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth.arch import make_arch


def _rows_frame(mesh: Mesh) -> ArchFrame:
    """The rule as first written (on (F, 3) rows, np.cross, np.average, BLAS products)."""
    v, f = mesh.vertices, mesh.faces
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        centers, weights = v, np.ones(len(v))
    else:
        centers, weights = (a + b + c) / 3.0, area
    mean = np.average(centers, axis=0, weights=weights)
    d = centers - mean
    cov = (d * weights[:, None]).T @ d / weights.sum()
    _, vecs = np.linalg.eigh(cov)
    occlusal, second, width = vecs[:, 0], vecs[:, 1], vecs[:, 2]
    if np.dot(cross.sum(axis=0), occlusal) < 0:
        occlusal = -occlusal
    proj_w, proj_s = v @ width, v @ second
    w_mid = 0.5 * (proj_w.min() + proj_w.max())
    w_half = 0.5 * (proj_w.max() - proj_w.min())
    near_mid = np.abs(proj_w - w_mid) <= 0.1 * w_half
    s_mid = 0.5 * (proj_s.min() + proj_s.max())
    if near_mid.any() and proj_s[near_mid].mean() < s_mid:
        second = -second
    x = np.cross(second, occlusal)
    axes = np.stack([x, second, occlusal], axis=1)
    local = v @ axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    return ArchFrame(origin=axes @ (0.5 * (lo + hi)), x=x, anterior=second, occlusal=occlusal, extent=hi - lo)


def _assert_same(a: ArchFrame, b: ArchFrame, scale: float) -> None:
    for name in ("x", "anterior", "occlusal"):
        assert np.abs(getattr(a, name) - getattr(b, name)).max() < 1e-9, name
    for name in ("origin", "extent"):
        assert np.abs(getattr(a, name) - getattr(b, name)).max() < 1e-9 * max(scale, 1.0), name


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(["upper", "lower"]), st.integers(0, 10_000))
def test_columns_frame_is_the_rows_frame_on_arches_in_any_pose(arch, seed):
    base = make_arch(arch, seed % 7, 0.8).mesh
    R = Rotation.random(random_state=seed).as_matrix()
    shift = np.random.default_rng(seed).uniform(-200, 200, 3)
    mesh = Mesh(base.vertices @ R.T + shift, base.faces)
    _assert_same(arch_frame(mesh), _rows_frame(mesh), 300.0)


def _uneven(rng: np.random.Generator, n_fine: int) -> Mesh:
    """Fine teeth-like strip, a coarse gingiva of few large faces, slivers and one huge face."""
    t = np.linspace(0, np.pi, n_fine)
    fine = np.column_stack([25 * np.cos(t), 30 * np.sin(t), rng.normal(0, 0.3, n_fine)])
    fine2 = fine + [0, 0, 2.0]
    v = np.concatenate([fine, fine2])
    i = np.arange(n_fine - 1)
    faces = [np.column_stack([i, i + 1, i + n_fine]), np.column_stack([i + 1, i + n_fine + 1, i + n_fine])]
    base = len(v)
    coarse = rng.uniform(-40, 40, (6, 3)) * [1, 1, 0.1]
    sliver = np.array([[0, 0, 0], [50, 0, 0], [25, 1e-7, 0]])
    huge = np.array([[-500, -500, -3], [500, -500, -3], [0, 800, -3]])
    v = np.concatenate([v, coarse, sliver, huge])
    faces += [
        base + np.array([[0, 1, 2], [2, 3, 4], [3, 4, 5]]),
        base + 6 + np.array([[0, 1, 2]]),
        base + 9 + np.array([[0, 1, 2]]),
    ]
    return Mesh(v, np.concatenate(faces).astype(np.int64))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 400))
def test_columns_frame_is_the_rows_frame_on_uneven_meshes(seed, n_fine):
    mesh = _uneven(np.random.default_rng(seed), n_fine)
    _assert_same(arch_frame(mesh), _rows_frame(mesh), 1000.0)


def test_no_area_falls_back_to_the_vertices_as_before():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(50, 3)) * [30, 20, 2]
    line = np.column_stack([np.arange(10), np.arange(10), np.arange(10)])  # all faces degenerate
    for faces in (np.zeros((0, 3), dtype=np.int64), line.astype(np.int64)):
        mesh = Mesh(v, faces)
        _assert_same(arch_frame(mesh), _rows_frame(mesh), 50.0)


def test_a_pickled_frame_leaves_its_cross_products_behind():
    import pickle

    mesh = make_arch("upper", 1, 0.8).mesh
    frame = arch_frame(mesh)
    assert frame.face_cross(mesh.vertices, mesh.faces) is not None
    back = pickle.loads(pickle.dumps(frame))
    assert back.cross is None  # the axes, origin and extent travel
    for name in ("origin", "x", "anterior", "occlusal", "extent"):
        assert np.array_equal(getattr(back, name), getattr(frame, name))
    assert len(pickle.dumps(frame)) < 2_000
