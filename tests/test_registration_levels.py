"""Named pyramid levels, the subsets the ICP rounds run on (levels.py), and the levels' schedules
(icp.level, schedule.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.registration import RegistrationOptions
from occlutrace_compute.registration.icp import level
from occlutrace_compute.registration.levels import Cloud, subset
from occlutrace_compute.registration.prepare import prepare_all
from occlutrace_compute.registration.schedule import (
    SEARCH_CONVERGENCE_FACTOR,
    coarse_levels,
    fine_level,
    mid_level,
    prescreen_level,
)


def _cloud(n: int, seed: int) -> Cloud:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3))
    normals = points / np.linalg.norm(points, axis=1, keepdims=True)  # each normal tied to its point
    return Cloud(points, normals)


@settings(max_examples=40, deadline=None)
@given(n_rows=st.integers(0, 300), n=st.integers(0, 400), seed=st.integers(0, 2**32 - 1))
def test_subset_keeps_rows_in_order_with_their_normals(n_rows, n, seed):
    cloud = _cloud(n_rows, seed)
    got = subset(cloud, n, seed)
    assert isinstance(got, Cloud)
    assert got.points.shape == got.normals.shape == (min(n, n_rows), 3)
    rows = [int(np.nonzero((cloud.points == p).all(1))[0][0]) for p in got.points]
    assert rows == sorted(set(rows))  # distinct rows of the cloud, in the cloud's order
    assert np.array_equal(got.normals, cloud.normals[rows])
    assert np.array_equal(subset(cloud, n, seed).points, got.points)  # a seed: the same rows again


def test_subset_from_a_generator_advances_it():
    cloud = _cloud(500, 1)
    rng = np.random.default_rng(7)
    first, second = subset(cloud, 50, rng), subset(cloud, 50, rng)
    assert not np.array_equal(first.points, second.points)
    assert np.array_equal(first.points, subset(cloud, 50, np.random.default_rng(7)).points)
    assert np.array_equal(first.points, subset(cloud, 50, 7).points)  # a seed is a fresh generator


def _grid(n: int, step: float) -> Mesh:
    x, y = np.meshgrid(np.arange(n) * step, np.arange(n) * step, indexing="ij")
    v = np.stack([x.ravel(), y.ravel(), 0.3 * np.sin(x.ravel()) * np.cos(y.ravel())], 1)
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a = (i * n + j).ravel()
    return Mesh(v, np.concatenate([np.stack([a, a + n, a + n + 1], 1), np.stack([a, a + n + 1, a + 1], 1)]))


def test_prepared_levels_are_named_subsets_of_each_other():
    opt = RegistrationOptions().updated(fine_points=3000, fixed_points=4000, coarse_icp_points=40, mid_icp_points=300)
    (p,) = prepare_all([(_grid(40, 0.5), _grid(30, 0.5))], opt)
    assert p.moving.fine.points.shape == (3000, 3) and p.fixed.fine.points.shape == (4000, 3)
    # The moving side's ICP levels are subsets of its voxel clouds; the fixed side keeps them whole.
    assert len(p.moving.coarse_icp.points) == 40 < len(p.moving.coarse.points)
    assert len(p.moving.mid.points) == 300
    assert np.isin(p.moving.coarse_icp.points, p.moving.coarse.points).all()
    assert p.fixed.coarse_icp is p.fixed.coarse
    assert len(p.fixed.mid.points) > 300


def test_an_icp_level_needs_its_cuts_and_floor():
    with pytest.raises(ValueError, match="dmax_start, dmax_end and scale_floor"):
        level(iterations=5, near=1.0, dmax_start=2.0)
    with pytest.raises(ValueError, match="iterations"):
        level(iterations=-1, near=1.0)
    scoring = level(near=2.0)  # matches and scores only
    assert scoring.iterations == 0 and scoring.tau == 2.0


@settings(max_examples=20, deadline=None)
@given(angle=st.floats(1.0, 89.0), rot=st.floats(1e-8, 1e-3), trans=st.floats(1e-7, 1e-2))
def test_pair_schedule_shares_the_normal_angle_and_loosens_search_convergence(angle, rot, trans):
    opt = RegistrationOptions().updated(normal_max_angle_deg=angle, converge_rot_rad=rot, converge_trans_mm=trans)
    levels = [prescreen_level(opt), *coarse_levels(opt), mid_level(opt), fine_level(opt)]
    assert {lv.cos_normals for lv in levels} == {math.cos(math.radians(angle))}
    fine = fine_level(opt)
    assert (fine.converge_rot_rad, fine.converge_trans_mm) == (rot, trans)
    for search in (*coarse_levels(opt), mid_level(opt)):
        assert search.converge_rot_rad == rot * SEARCH_CONVERGENCE_FACTOR
        assert search.converge_trans_mm == trans * SEARCH_CONVERGENCE_FACTOR
    assert mid_level(opt, reach_mm=1.4).dmax_start == 1.4
    assert mid_level(opt).dmax_start == 1.5 * opt.sampling.coarse_voxel
