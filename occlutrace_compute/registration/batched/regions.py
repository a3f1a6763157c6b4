"""`regions.changed_regions` for many pairs in one kd-tree and one connected-components call.

The changed samples of every pair go into one 4-D kd-tree whose fourth coordinate is the pair
index times a power of two larger than twice the longest link, so no two pairs are ever linked
and the distance of two samples of one pair is their 3-D distance plus an exact zero. One radius
query at the longest link finds every candidate; an edge is kept when its squared distance,
summed in the same order as the kd-tree's (x, y, z), is within the pair's own link, so a pair with
a shorter link gets the edges its own tree would give (up to the kd-tree's own shortcut of
accepting whole boxes, which can differ from a point check only at a rounding tie). Components
are labelled in order of their lowest sample, so each pair's labels, sizes and argsort order are
those of `regions.changed_regions` on that pair alone, and each region's centroid and mean
deviation are computed from the same rows in the same order (bit-identical).

Time O(N log N + E) for N changed samples and E linked pairs of the whole batch, plus O(regions)
host work to write the results; memory O(N + E).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from occlutrace_compute.registration.result import ChangedRegion


def changed_regions_batch(
    points: np.ndarray,
    mask: np.ndarray,
    deviation: np.ndarray,
    link_mm: np.ndarray,
    area_per_sample: np.ndarray,
    min_area_mm2: float,
) -> list[list[ChangedRegion]]:
    """Per pair b, `regions.changed_regions(points[b], mask[b], deviation[b], link_mm[b],
    area_per_sample[b], min_area_mm2)`. points (B,P,3), mask (B,P) bool (False on padding and on
    pairs not wanted), deviation (B,P), link_mm and area_per_sample (B,)."""
    b = mask.shape[0]
    out: list[list[ChangedRegion]] = [[] for _ in range(b)]
    bi, pi = np.nonzero(mask)  # grouped by pair, samples in order: each pair's `sel`
    if bi.size == 0:
        return out
    pts = points[bi, pi]  # (N,3)
    dev = np.abs(deviation[bi, pi])
    link = np.asarray(link_mm, dtype=np.float64)
    r = float(link[np.unique(bi)].max())
    sep = 2.0 ** math.ceil(math.log2(2 * r + 1))  # exact multiples, > 2r apart
    pts4 = np.concatenate([pts, (bi * sep).astype(np.float64)[:, None]], 1)
    edges = cKDTree(pts4).query_pairs(r, output_type="ndarray")
    if edges.size:
        diff = pts[edges[:, 0]] - pts[edges[:, 1]]
        d2 = (diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1]) + diff[:, 2] * diff[:, 2]
        lk = link[bi[edges[:, 0]]]
        edges = edges[(lk == r) | (d2 <= lk * lk)]  # the longest link: the tree's own judgement
    n = bi.size
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    counts = np.bincount(labels)
    by_label = np.argsort(labels, kind="stable")  # each region's rows in sample order
    first = np.cumsum(counts) - counts
    # Components are numbered by their lowest row and no edge crosses pairs, so each pair's labels
    # run from its first row's label up to the next pair's first row's label.
    present = np.unique(bi)
    lows = labels[np.searchsorted(bi, present)].tolist() + [len(counts)]
    for j, k in enumerate(present.tolist()):
        lo = lows[j]
        local = counts[lo : lows[j + 1]]
        area = local * area_per_sample[k]
        # largest first in `np.argsort(-counts)`'s own order (ties included), the tiny ones dropped
        for lab in np.argsort(-local)[: int((area >= min_area_mm2).sum())].tolist():
            g = lo + lab
            n = int(counts[g])
            rows = by_label[first[g] : first[g] + n]  # the rows `mean` saw per pair, in order
            # `ndarray.mean` is this sum over the count; called bare it skips mean's Python checks
            c = (np.add.reduce(pts[rows], axis=0) / n).tolist()
            out[k].append(
                ChangedRegion(
                    centroid_mm=(c[0], c[1], c[2]),
                    n_points=n,
                    area_mm2=float(area[lab]),
                    mean_deviation_mm=float(np.add.reduce(dev[rows]) / n),
                )
            )
    return out
