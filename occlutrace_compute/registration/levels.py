"""Named surface samples at the densities the engines work on (numpy, in each scan's own frame).

`Cloud` is one set of samples with normals; `Levels` one scan of the pair engine at its pyramid
levels; `Samples` one scan of the bite engine at its three densities. `subset` draws the smaller
clouds the ICP rounds run on, reproducibly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Cloud(NamedTuple):
    """Surface samples: points (n,3) and their unit normals (n,3). A tuple, so `points, normals
    = cloud` and `pack([cloud, ...])` work as on a plain (points, normals) pair."""

    points: np.ndarray
    normals: np.ndarray


@dataclass(frozen=True)
class Levels:
    """One scan of a pair at every pyramid level of the pair engine.

    coarse: voxel cloud at `coarse_voxel` (features, hypotheses, distinctness centres);
    coarse_icp: the coarse ICP's subset of it (the fixed side keeps the whole cloud: it is only
    searched, in a tree); mid: voxel cloud at `mid_voxel` (the moving side: its ICP subset);
    fine: every sample drawn from the surface."""

    coarse: Cloud
    coarse_icp: Cloud
    mid: Cloud
    fine: Cloud


@dataclass
class Samples:
    """One scan of the bite engine at three densities (its own file frame): coarse for the
    search, mid, fine; and the scan's surface area."""

    fine: Cloud
    mid: Cloud
    coarse: Cloud
    area_mm2: float


def subset(cloud: Cloud, n: int, rng: np.random.Generator | int) -> Cloud:
    """At most `n` rows, drawn without replacement and kept in order; the cloud itself when it
    has no more. `rng`: a generator (advanced by the draw, so successive subsets differ) or a
    seed (a fresh generator: the same rows every time)."""
    if cloud[0].shape[0] <= n:
        return Cloud(*cloud)
    keep = np.sort(np.random.default_rng(rng).choice(cloud[0].shape[0], n, replace=False))
    return Cloud(cloud[0][keep], cloud[1][keep])
