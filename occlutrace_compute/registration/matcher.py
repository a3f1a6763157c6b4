"""Nearest fixed sample for every moving sample, for many (pair, hypothesis) items at once.

Each item belongs to a pair (`pair_of`); all items of a pair share that pair's fixed cloud.
On CPU a kd-tree per pair is built once per pyramid level and reused by every iteration (the
fixed cloud never moves), answering all of that pair's hypotheses in one query; iterative
callers (ICP) ask with `track=True` and are answered from cached candidates where that is exact
(see tracking.py). Elsewhere the `occlutrace_compute.nn.knn` backends ("auto": the best for the
device) run over the padded batch.

The CPU trees are pykdtree's: its OpenMP queries spread even a 2k-row query over the cores,
where scipy's per-call worker threads only pay off on far larger ones (figures: bench/RESULTS.md, "Measurements behind choices in the code").
ICP asks thousands of such small queries per pair.
"""

from __future__ import annotations

import numpy as np
import torch
from pykdtree.kdtree import KDTree

from occlutrace_compute.nn import knn
from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.tracking import CandidateCache


class Matcher:
    """Nearest-sample queries against a batch's fixed clouds (see the module docstring).

    `trees_of`: a matcher over the same `fixed` batch whose kd-trees this one reuses (a tree is
    read-only once built, and pykdtree's query keeps its state in the call, so threads may share
    it: storpipfugl/pykdtree#125; each matcher keeps its own candidate cache, so threads and
    levels may each have one). Building a tree costs O(R log R) per pair, so a cloud searched at several
    stages is indexed once."""

    _cache: CandidateCache  # the CPU kd-tree backend's

    def __init__(self, fixed: Clouds, backend: str = "auto", trees_of: Matcher | None = None) -> None:
        self.fixed = fixed
        dev = fixed.points.device
        self.backend = "kdtree" if backend == "auto" and dev.type == "cpu" else backend
        self._trees: list[KDTree] = []
        self._ref32 = fixed.points.float() if dev.type == "cuda" else fixed.points
        if self.backend == "kdtree":
            if trees_of is not None and trees_of.fixed is fixed and trees_of.backend == "kdtree":
                self._trees, pts = trees_of._trees, trees_of._cache.fixed_points
            else:
                pts = fixed.points.cpu().numpy()
                # kd-trees exist on the CPU only, one per pair (a GPU uses the nn.knn backends
                # instead); the lengths come over in one transfer, not one per pair
                self._trees = [KDTree(np.ascontiguousarray(pts[j, :n])) for j, n in enumerate(fixed.lengths.tolist())]
            self._cache = CandidateCache(pts, self._search_rows)

    def sibling(self) -> Matcher:
        """A matcher over the same fixed clouds and trees with its own (empty) candidate cache."""
        return Matcher(self.fixed, self.backend, trees_of=self)

    def nearest(
        self,
        query: torch.Tensor,
        lengths: torch.Tensor,
        pair_of: torch.Tensor,
        max_dist: float = float("inf"),
        track: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distance (B,P) and index (B,P) into the pair's fixed cloud.

        Padded rows, and rows with nothing within `max_dist` (a bound that prunes the tree
        search), get distance inf and index 0. `track`: the same batch will be asked again
        after small moves (the CPU path then keeps candidates; results are the same)."""
        if self.backend == "kdtree":
            q_np = query.detach().cpu().numpy()
            real = np.arange(q_np.shape[1])[None, :] < lengths.cpu().numpy()[:, None]
            pairs = pair_of.cpu().numpy()
            d2_np, idx_np = (
                self._cache.nearest(q_np, real, pairs, max_dist)
                if track
                else self._nearest_rows(q_np, real, pairs, max_dist)
            )
            return torch.from_numpy(d2_np).to(query.device), torch.from_numpy(idx_np).to(query.device)
        single = query.is_cuda  # float32 on GPUs: searching, not fitting, so precision is ample
        q = query.float() if single else query
        ref = (self._ref32 if single else self.fixed.points)[pair_of]
        res = knn(q, ref, lengths, self.fixed.lengths[pair_of], k=1, backend=self.backend)
        d2 = res.dists2[..., 0].to(query.dtype)
        d2 = torch.where(d2 <= max_dist * max_dist, d2, torch.full_like(d2, float("inf")))
        return d2, res.idx[..., 0].clamp_min(0)

    def _nearest_rows(
        self, q: np.ndarray, real: np.ndarray, pairs: np.ndarray, max_dist: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B,P) squared distance and index of the nearest fixed sample of every real row."""
        if real.size and real.all() and (pairs == pairs[0]).all():
            # Every row real and one pair (a single-pair engine's batches): one query of the whole
            # batch, no row gathering or scattering back (same answers).
            b, p, _ = q.shape
            found_d2, found_idx = self._search_rows(q.reshape(b * p, 3), pairs[:1], 1, max_dist)
            return found_d2.reshape(b, p), found_idx.reshape(b, p)
        d2 = np.full(real.shape, np.inf)
        idx = np.zeros(real.shape, dtype=np.int64)
        bi, pi = np.nonzero(real)
        found_d2, found_idx = self._search_rows(q[bi, pi], pairs[bi], 1, max_dist)
        d2[bi, pi], idx[bi, pi] = found_d2[:, 0], found_idx[:, 0]
        return d2, idx

    def _search_rows(
        self, pts: np.ndarray, pairs: np.ndarray, k: int, max_dist: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest within `max_dist` of rows `pts` (n,3), each in its own pair's tree
        (distance inf and index 0 past the last neighbour found). `pairs` (n,) gives each row's
        pair, or has length 1 when every row belongs to that one pair."""
        bound = max_dist if np.isfinite(max_dist) else None
        n = pts.shape[0]
        if n == 0:
            return np.full((0, k), np.inf), np.zeros((0, k), dtype=np.int64)
        if len(pairs) == 1 or (pairs == pairs[0]).all():
            # One pair: query the rows as they are (np.unique and the row gathers cost as much as
            # a small search; the bite search asks 100k-row batches of one pair).
            dist2, ii = self._trees[int(pairs[0])].query(
                np.ascontiguousarray(pts), k=k, distance_upper_bound=bound, sqr_dists=True
            )
            found = np.isfinite(dist2)
            return (
                dist2.reshape(n, k).astype(np.float64, copy=False),
                np.where(found, ii, 0).reshape(n, k).astype(np.int64),
            )
        d2 = np.full((n, k), np.inf)
        idx = np.zeros((n, k), dtype=np.int64)
        for j in np.unique(pairs):
            rows = np.nonzero(pairs == j)[0]
            dist2, ii = self._trees[j].query(pts[rows], k=k, distance_upper_bound=bound, sqr_dists=True)
            d2[rows] = dist2.reshape(len(rows), k)
            idx[rows] = np.where(np.isfinite(dist2), ii, 0).reshape(len(rows), k)
        return d2, idx
