"""Nearest fixed sample for every moving sample, for many (pair, hypothesis) items at once.

Each item belongs to a pair (`pair_of`); all items of a pair share that pair's fixed cloud.
On CPU a scipy cKDTree per pair is built once per pyramid level and reused by every iteration
(the fixed cloud never moves), answering all of that pair's hypotheses in one query. Elsewhere
the `occlutrace_compute.nn.knn` backends ("auto": the best for the device) run over the padded
batch.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from occlutrace_compute.nn import knn
from occlutrace_compute.nn.threads import tree_workers
from occlutrace_compute.registration.batch import Clouds


class Matcher:
    def __init__(self, fixed: Clouds, backend: str = "auto") -> None:
        self.fixed = fixed
        dev = fixed.points.device
        self.backend = "kdtree" if backend == "auto" and dev.type == "cpu" else backend
        self._trees: list[cKDTree] = []
        self._ref32 = fixed.points.float() if dev.type == "cuda" else fixed.points
        if self.backend == "kdtree":
            pts = fixed.points.cpu().numpy()
            self._trees = [cKDTree(pts[j, : int(n)]) for j, n in enumerate(fixed.lengths.cpu())]

    def nearest(self, query: torch.Tensor, lengths: torch.Tensor, pair_of: torch.Tensor,
                max_dist: float = float("inf")) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distance (B,P) and index (B,P) into the pair's fixed cloud.

        Padded rows, and rows with nothing within `max_dist` (a bound that prunes the tree
        search), get distance inf and index 0."""
        if self.backend == "kdtree":
            return self._nearest_kdtree(query, lengths, pair_of, max_dist)
        single = query.is_cuda  # float32 on GPUs: searching, not fitting, so precision is ample
        q = query.float() if single else query
        ref = (self._ref32 if single else self.fixed.points)[pair_of]
        res = knn(q, ref, lengths, self.fixed.lengths[pair_of], k=1, backend=self.backend)
        d2 = res.dists2[..., 0].to(query.dtype)
        d2 = torch.where(d2 <= max_dist * max_dist, d2, torch.full_like(d2, float("inf")))
        return d2, res.idx[..., 0].clamp_min(0)

    def _nearest_kdtree(self, query: torch.Tensor, lengths: torch.Tensor, pair_of: torch.Tensor, max_dist: float):
        b, p, _ = query.shape
        q = query.detach().cpu().numpy()
        lens = lengths.cpu().numpy()
        pairs = pair_of.cpu().numpy()
        d2 = np.full((b, p), np.inf)
        idx = np.zeros((b, p), dtype=np.int64)
        for j, tree in enumerate(self._trees):
            items = np.nonzero(pairs == j)[0]
            if items.size == 0:
                continue
            rows = [q[i, : lens[i]] for i in items]
            queries = np.concatenate(rows)
            dist, ii = tree.query(queries, k=1, distance_upper_bound=max_dist, workers=tree_workers() if len(queries) > 20000 else 1)
            ii = np.minimum(ii, tree.n - 1)
            start = 0
            for i, r in zip(items, rows):
                n = len(r)
                d2[i, :n] = dist[start : start + n] ** 2
                idx[i, :n] = ii[start : start + n]
                start += n
        return torch.from_numpy(d2).to(query.device), torch.from_numpy(idx).to(query.device)
