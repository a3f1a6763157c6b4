"""Interpenetration of the arches in occlusion, and `settle`: the smallest translation of the
lower arch that lifts it out of the upper.

Depth is measured point-to-plane against the nearest upper sample's face normal, only where a
lower point projects onto the upper surface (within `reach_mm` and a small tangential offset),
so points beyond the upper scan's border never count as penetrating.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from occlutrace_compute.registration.levels import Cloud


@dataclass
class UpperSurface:
    """The upper arch's samples in the occlusion frame, with a search tree."""

    points: np.ndarray
    normals: np.ndarray
    tree: cKDTree
    spacing_mm: float  # mean distance between samples

    @classmethod
    def of(cls, cloud: Cloud, area_mm2: float) -> UpperSurface:
        points, normals = cloud  # a Cloud or any (points, normals) pair
        return cls(points, normals, cKDTree(points), float(np.sqrt(area_mm2 / max(len(points), 1))))


def signed_depths(
    upper: UpperSurface, points: np.ndarray, reach_mm: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance of points to the upper surface (negative = inside the upper), the normal
    there, and whether the point projects onto the surface (others get distance +inf)."""
    d, idx = upper.tree.query(points, k=1, distance_upper_bound=reach_mm)
    found = np.isfinite(d)
    idx = np.minimum(idx, len(upper.points) - 1)
    diff = points - upper.points[idx]
    n = upper.normals[idx]
    signed = np.einsum("ij,ij->i", diff, n)
    tangential2 = np.einsum("ij,ij->i", diff, diff) - signed**2
    over = found & (tangential2 < (1.5 * upper.spacing_mm) ** 2)
    return np.where(over, signed, np.inf), n, over


def max_penetration(upper: UpperSurface, lower_points: np.ndarray) -> float:
    """Deepest point of the lower inside the upper (mm, >= 0)."""
    signed, _, _ = signed_depths(upper, lower_points)
    return float(max(0.0, -signed.min())) if signed.size else 0.0


def penetrating_share(upper: UpperSurface, lower_points: np.ndarray, depth_mm: float) -> float:
    """Share of lower points deeper than depth_mm inside the upper: a wrong relative pose
    drives whole teeth through the antagonist, a right one only grazes it."""
    signed, _, _ = signed_depths(upper, lower_points, reach_mm=3.0 * depth_mm + 1.0)
    return float(np.mean(signed < -depth_mm))


@dataclass
class Settled:
    translation: np.ndarray  # (3,) mm, applied to the lower in the occlusion frame
    before_mm: float
    after_mm: float
    iterations: int


def settle(
    upper: UpperSurface,
    lower_points: np.ndarray,
    tolerance_mm: float = 0.005,
    max_iterations: int = 30,
    damping: float = 1e-3,
) -> Settled:
    """Translate the lower out of the upper: each round solves the damped least-squares step
    that brings every point deeper than `tolerance_mm` back onto the upper's tangent plane.
    A translation only (no rotation): the bite fit fixed the orientation well, and contacts
    spread over both sides of the arch would turn any rotation into new penetration elsewhere."""
    before = max_penetration(upper, lower_points)
    t = np.zeros(3)
    it = 0
    for it in range(1, max_iterations + 1):
        signed, n, _ = signed_depths(upper, lower_points + t)
        deep = signed < -tolerance_mm
        if not deep.any():
            it -= 1
            break
        A = n[deep]
        b = -signed[deep]  # push each deep point out along its normal by its depth
        step = np.linalg.solve(A.T @ A + damping * len(b) * np.eye(3), A.T @ b)
        t = t + step
    return Settled(t, before, max_penetration(upper, lower_points + t), it)
