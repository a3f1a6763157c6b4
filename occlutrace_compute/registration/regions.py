"""Group the moving samples that were rejected as changed into connected regions."""

from __future__ import annotations

import numpy as np

from occlutrace_compute.registration.result import ChangedRegion


def _xyz(p: np.ndarray) -> tuple[float, float, float]:
    return float(p[0]), float(p[1]), float(p[2])


def changed_regions(
    points: np.ndarray,
    mask: np.ndarray,
    deviation: np.ndarray,
    link_mm: float,
    area_per_sample: float,
    min_area_mm2: float,
) -> list[ChangedRegion]:
    """Clusters of masked samples linked within `link_mm`, largest first; tiny ones dropped."""
    sel = np.nonzero(mask)[0]
    if sel.size * area_per_sample < min_area_mm2:
        return []  # even all of them in one cluster would be dropped as tiny (a clean pair's few outliers)
    # imported here, past that return: scipy.sparse and scipy.spatial cost ~0.4 s of imports on
    # the critical path of `align`'s registration process (jobs/registrar.py), for changed pairs only
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pts = points[sel]
    pairs = cKDTree(pts).query_pairs(link_mm, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(sel), len(sel)))
    n, labels = connected_components(graph, directed=False)
    counts = np.bincount(labels, minlength=n)
    regions = []
    for lab in np.argsort(-counts):
        area = counts[lab] * area_per_sample
        if area < min_area_mm2:
            break
        members = labels == lab
        regions.append(
            ChangedRegion(
                centroid_mm=_xyz(pts[members].mean(0)),
                n_points=int(counts[lab]),
                area_mm2=float(area),
                mean_deviation_mm=float(np.abs(deviation[sel][members]).mean()),
            )
        )
    return regions
