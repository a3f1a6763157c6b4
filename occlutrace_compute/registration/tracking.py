"""Exact nearest neighbours of slowly moving queries, answered from cached candidates.

ICP moves every sample a little per iteration (micrometres near convergence) while fixed samples
lie ~0.3 mm apart, so the tree search each iteration mostly re-finds the same neighbours. A row
keeps the k nearest fixed samples of its anchor position x0 (distances d1 <= ... <= dk). After
moving by e = |x - x0|, every other sample is at least dk - e away and the best candidate at most
d1 + e, so when dk - d1 > 2e the nearest neighbour is among the candidates (triangle inequality).
Only rows failing that test are searched again (and re-anchored): results equal a fresh search up
to distance ties, at a fraction of its cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# search(rows_points (n,3), pair of each row (n,), k, max_dist) -> (dist2 (n,k), idx (n,k)),
# inf / index 0 past the last neighbour within max_dist.
Search = Callable[[np.ndarray, np.ndarray, int, float], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Anchors:
    """Per row, component-major ((3,B,P...) arrays: numpy, like torch, is slow over a length-3
    trailing axis)."""

    key: tuple
    x0: np.ndarray  # (3,B,P) anchor positions
    cand: np.ndarray  # (B,P,k) candidate indices into the pair's fixed cloud
    cpos: np.ndarray  # (3,B,P,k) candidate positions
    d1: np.ndarray  # (B,P) distance to the first candidate (inf: none within bound)
    dk: np.ndarray  # (B,P) distance to the k-th candidate (inf: fewer than k within bound)
    bound: np.ndarray  # (B,P) search radius of the anchor query


class CandidateCache:
    """Per (batch shape, pair assignment) anchors; a new batch layout starts afresh."""

    def __init__(self, fixed_points: np.ndarray, search: Search, k: int = 3) -> None:
        self.fixed_points = fixed_points  # (pairs, R, 3) padded, as the searches index it
        self.search = search
        self.k = k
        self._anchors: _Anchors | None = None

    def nearest(
        self, q: np.ndarray, real: np.ndarray, pairs: np.ndarray, max_dist: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B,P) squared distance and index of the nearest fixed sample within `max_dist`
        (inf and 0 when none, and on padded rows) for query points q (B,P,3)."""
        key = (q.shape, pairs.tobytes())
        qc = [q[..., c] for c in range(3)]
        a = self._anchors
        if a is None or a.key != key:
            a = self._anchors = self._empty(key, q.shape)
            stale = real
        else:
            e = np.sqrt(sum((qc[c] - a.x0[c]) ** 2 for c in range(3)))
            with np.errstate(invalid="ignore"):  # inf - inf where a row has no candidate
                inside = np.where(np.isfinite(a.dk), a.dk - a.d1 > 2 * e, e + max_dist <= a.bound)
            stale = real & ~inside
        if stale.any():
            self._reanchor(a, q, stale, pairs, max_dist)
        d2c = sum((a.cpos[c] - qc[c][..., None]) ** 2 for c in range(3))  # missing candidates sit at inf
        best = np.argmin(d2c, axis=-1)[..., None]
        d2 = np.take_along_axis(d2c, best, -1)[..., 0]
        idx = np.take_along_axis(a.cand, best, -1)[..., 0]
        miss = ~real | ~(d2 <= max_dist * max_dist)
        d2[miss] = np.inf
        idx[miss] = 0
        return d2, idx

    def _empty(self, key: tuple, shape: tuple) -> _Anchors:
        b, p, _ = shape
        k = self.k
        return _Anchors(
            key,
            np.zeros((3, b, p)),
            np.zeros((b, p, k), dtype=np.int64),
            np.full((3, b, p, k), np.inf),
            np.full((b, p), np.inf),
            np.full((b, p), np.inf),
            np.zeros((b, p)),
        )

    def _reanchor(self, a: _Anchors, q: np.ndarray, rows: np.ndarray, pairs: np.ndarray, max_dist: float) -> None:
        bi, pi = np.nonzero(rows)
        pts = np.ascontiguousarray(q[bi, pi])
        row_pair = pairs[bi]
        dist2, idx = self.search(pts, row_pair, self.k, max_dist)
        found = np.isfinite(dist2)
        cpos = self.fixed_points[row_pair[:, None], idx]
        cpos[~found] = np.inf  # never the nearest
        a.x0[:, bi, pi] = pts.T
        a.cand[bi, pi] = idx
        a.cpos[:, bi, pi] = cpos.transpose(2, 0, 1)
        dist = np.sqrt(dist2)
        a.d1[bi, pi] = dist[:, 0]
        a.dk[bi, pi] = dist[:, -1]
        a.bound[bi, pi] = max_dist
