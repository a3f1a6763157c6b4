"""What the engine returns for one pair; `to_json` is the `metrics` part of result.json."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ChangedRegion:
    """A connected cluster of moving samples left out of the fit although inside the overlap."""

    centroid_mm: tuple[float, float, float]  # in FIXED's frame (where the aligned scan lives)
    n_points: int
    area_mm2: float
    mean_deviation_mm: float  # mean unsigned distance of its samples to the fixed surface

    def to_json(self) -> dict:
        return {
            "centroid_mm": [round(c, 4) for c in self.centroid_mm],
            "n_points": self.n_points,
            "area_mm2": round(self.area_mm2, 3),
            "mean_deviation_mm": round(self.mean_deviation_mm, 4),
        }


@dataclass
class RegistrationResult:
    """`T_fixed_moving` maps MOVING into FIXED (x_fixed = T_fixed_moving @ [x_moving, 1]),
    row-major 4x4; result.json calls it `matrix` (the contract's name, also kept as a property)."""

    T_fixed_moving: np.ndarray
    # result.json's metrics.rmse_mm (the contract's name): RMS point-to-plane residual at the finest
    # level over the final score's inliers (|residual| < tau, within `near`, compatible normals), so
    # trimmed: changed anatomy and the part outside the overlap do not count. It is the ranking
    # score's error term too (one number, once called trimmed_error_mm as well).
    rmse_mm: float
    fitness: float  # share of moving samples with an inlier correspondence (overlap share)
    iterations: int  # ICP iterations at the finest level (until convergence)
    converged: bool
    confidence: float  # 0..1
    doubtful: bool
    reason: str  # why doubtful ("" when not)
    runner_up_score_ratio: float  # best distinct alternative's score / winner's (0 if none)
    hypotheses: int
    moving_samples: np.ndarray = field(repr=False)  # (n,3) in MOVING's frame
    outlier_mask: np.ndarray = field(repr=False)  # (n,) bool: changed (inside overlap, rejected)
    changed_regions: list[ChangedRegion] = field(default_factory=list)
    seconds: float = 0.0  # wall time per pair (a batch's time divided by its pairs)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def matrix(self) -> np.ndarray:
        """`T_fixed_moving` under the JSON contract's name."""
        return self.T_fixed_moving

    def to_json(self) -> dict:
        return {
            "matrix": np.asarray(self.T_fixed_moving).tolist(),
            "metrics": {
                "rmse_mm": self.rmse_mm,
                "fitness": self.fitness,
                "iterations": self.iterations,
                "converged": self.converged,
                "confidence": self.confidence,
                "doubtful": self.doubtful,
                "reason": self.reason,
                "hypotheses": self.hypotheses,
                "changed_share": float(self.outlier_mask.mean()) if self.outlier_mask.size else 0.0,
            },
            "changed_regions": [r.to_json() for r in self.changed_regions],
        }
