"""`Matcher` built with one transfer of the fixed clouds' lengths (its own constructor reads them
one pair at a time)."""

from __future__ import annotations

import numpy as np
from pykdtree.kdtree import KDTree

from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.matcher import Matcher
from occlutrace_compute.registration.tracking import CandidateCache


class FlatMatcher(Matcher):
    def __init__(self, fixed: Clouds, backend: str = "auto") -> None:
        self.fixed = fixed
        dev = fixed.points.device
        self.backend = "kdtree" if backend == "auto" and dev.type == "cpu" else backend
        self._trees: list[KDTree] = []
        self._ref32 = fixed.points.float() if dev.type == "cuda" else fixed.points
        if self.backend == "kdtree":
            pts = fixed.points.cpu().numpy()
            # kd-trees exist on the CPU only, one per pair (a GPU uses the nn.knn backends instead)
            self._trees = [KDTree(np.ascontiguousarray(pts[j, :n])) for j, n in enumerate(fixed.lengths.tolist())]
            self._cache = CandidateCache(pts, self._search_rows)
