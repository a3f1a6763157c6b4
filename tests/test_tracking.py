"""Cached-candidate nearest neighbours must answer exactly what a fresh tree search answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.matcher import Matcher
from occlutrace_compute.registration.tracking import CandidateCache


def _surface(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 30, (n, 2))
    return np.c_[xy, 2 * np.sin(xy[:, 0] / 4) * np.cos(xy[:, 1] / 5)]


def _fixed(rng: np.random.Generator, sizes: list[int]) -> Clouds:
    p = max(sizes)
    pts = np.zeros((len(sizes), p, 3))
    for i, n in enumerate(sizes):
        pts[i, :n] = _surface(rng, n)
    t = torch.from_numpy(pts)
    return Clouds(t, torch.zeros_like(t), torch.tensor(sizes))


@pytest.mark.parametrize("step_mm", [0.002, 0.05, 0.5, 5.0])
def test_tracked_search_equals_fresh_search_over_a_moving_batch(step_mm):
    rng = np.random.default_rng(7)
    fixed = _fixed(rng, [3000, 2200])
    matcher = Matcher(fixed)
    pair_of = torch.tensor([0, 0, 1])
    lengths = torch.tensor([900, 700, 900])
    query = torch.from_numpy(np.stack([_surface(rng, 900) for _ in range(3)]) + rng.normal(0, 0.2, (3, 900, 3)))
    for it in range(12):
        max_dist = 3.0 * (0.8**it) if it % 5 else float("inf")  # shrinking, then unbounded
        d2_t, idx_t = matcher.nearest(query, lengths, pair_of, max_dist, track=True)
        d2_f, idx_f = matcher.nearest(query, lengths, pair_of, max_dist)
        assert torch.equal(torch.isinf(d2_t), torch.isinf(d2_f))
        fin = torch.isfinite(d2_f)
        assert torch.allclose(d2_t[fin], d2_f[fin], rtol=1e-12, atol=1e-12)
        same = idx_t[fin] == idx_f[fin]
        assert bool(same.all())  # random data has no distance ties
        assert bool((idx_t[~fin] == 0).all())
        query = query + torch.from_numpy(rng.normal(0, step_mm, query.shape))


def test_small_moves_are_answered_without_searching_again():
    rng = np.random.default_rng(3)
    fixed = _surface(rng, 4000)
    searched: list[int] = []

    def search(pts, pairs, k, max_dist):
        from scipy.spatial import cKDTree

        searched.append(len(pts))
        dist, idx = cKDTree(fixed).query(pts, k=k, distance_upper_bound=max_dist)
        return dist**2, np.where(np.isfinite(dist), idx, 0)

    cache = CandidateCache(fixed[None], search)
    q = _surface(rng, 2000)[None]
    real = np.ones((1, 2000), dtype=bool)
    pairs = np.zeros(1, dtype=np.int64)
    cache.nearest(q, real, pairs, 1.0)
    for _ in range(5):
        q = q + rng.normal(0, 0.001, q.shape)  # micrometre steps, as near ICP convergence
        cache.nearest(q, real, pairs, 1.0)
    assert searched[0] == 2000
    assert sum(searched[1:]) < 0.02 * 2000 * 5
