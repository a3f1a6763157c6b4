"""Scoring an estimated rigid transform against the ground truth (4x4, x' = T @ [x, 1])."""

from __future__ import annotations

import numpy as np


def rotation_error_deg(T_est: np.ndarray, T_gt: np.ndarray) -> float:
    """Angle of the rotation R_est R_gt^T, in degrees."""
    r = np.asarray(T_est, dtype=np.float64)[:3, :3] @ np.asarray(T_gt, dtype=np.float64)[:3, :3].T
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


def translation_error_um(T_est: np.ndarray, T_gt: np.ndarray) -> float:
    """Distance between the translation parts, in micrometres (frame-dependent: prefer
    pointwise_rms_um over the case's own points for accuracy figures)."""
    return float(np.linalg.norm(np.asarray(T_est)[:3, 3] - np.asarray(T_gt)[:3, 3]) * 1000.0)


def pointwise_rms_um(T_est: np.ndarray, T_gt: np.ndarray, points: np.ndarray) -> float:
    """RMS over points of ||T_est p - T_gt p||, in micrometres."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if p.shape[0] == 0:
        raise ValueError("pointwise_rms_um needs at least one point")
    diff = np.asarray(T_est, dtype=np.float64) - np.asarray(T_gt, dtype=np.float64)
    d = p @ diff[:3, :3].T + diff[:3, 3]
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))) * 1000.0)
