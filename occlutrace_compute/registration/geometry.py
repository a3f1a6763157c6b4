"""Small geometry shared by the pair and bite engines: the angle between two poses' rotations, how
far two poses put the same points apart, and an arch scan's occlusal direction."""

from __future__ import annotations

import math

import numpy as np


def rotation_angle_deg(T_a: np.ndarray, T_b: np.ndarray) -> float:
    """Angle (degrees, 0..180) of the rotation taking pose T_a's rotation to T_b's (4x4 or 3x3,
    same frames), from the trace of R_a^T R_b (clipped against rounding)."""
    R = T_a[:3, :3].T @ T_b[:3, :3]
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2))))


def pose_offsets(T_a: np.ndarray, T_b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(n,3) where pose T_a (4,4) puts each of `points` (n,3) less where T_b puts it (same frames):
    one product with the difference of the poses, not two moved copies. O(n) time and memory."""
    return points @ (T_a[:3, :3] - T_b[:3, :3]).T + (T_a[:3, 3] - T_b[:3, 3])


def occlusal_direction(
    points: np.ndarray, normals: np.ndarray, min_mean_normal: float, scatter: np.ndarray | None = None
) -> np.ndarray:
    """Unit vector out of an arch scan's occlusal side, in the scan's frame.

    An intraoral scan is an open 'tent' seen from the occlusal side, so its unit normals (n,3)
    average to that direction, stable under partial overlap. When their mean is shorter than
    `min_mean_normal` (the normals cancel out) the thinnest principal axis of the points (n,3)
    stands in, its sign arbitrary: the smallest eigenvector of `scatter`, any positive multiple
    of the points' covariance (3,3) when the caller has one, else their centred scatter matrix.
    O(n) time, O(n) memory."""
    mean = normals.mean(0)
    length = np.linalg.norm(mean)
    if length >= min_mean_normal:
        return mean / length
    if scatter is None:
        centred = points - points.mean(0)
        scatter = centred.T @ centred
    return np.linalg.eigh(scatter)[1][:, 0]
