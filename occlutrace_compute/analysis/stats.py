"""Summary statistics of signed distances, JSON-ready (undefined values are None, never NaN)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class DistanceStats:
    """Statistics of the measured signed distances (mm); None when nothing was measured."""

    count: int
    rms_mm: float | None
    mean_mm: float | None
    median_mm: float | None
    p5_mm: float | None
    p95_mm: float | None
    max_abs_mm: float | None
    within_tolerance_share: float | None
    tolerance_mm: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(values: np.ndarray, tolerance_mm: float) -> DistanceStats:
    """RMS, mean, median, 5th/95th percentiles, max |d| and share with |d| <= tolerance."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return DistanceStats(0, None, None, None, None, None, None, None, float(tolerance_mm))
    p5, median, p95 = np.percentile(x, [5.0, 50.0, 95.0])
    return DistanceStats(
        count=int(len(x)),
        rms_mm=float(np.sqrt(np.mean(x * x))),
        mean_mm=float(np.mean(x)),
        median_mm=float(median),
        p5_mm=float(p5),
        p95_mm=float(p95),
        max_abs_mm=float(np.max(np.abs(x))),
        within_tolerance_share=float(np.mean(np.abs(x) <= tolerance_mm)),
        tolerance_mm=float(tolerance_mm),
    )


@dataclass(frozen=True)
class Histogram:
    """Counts in fixed bins over [edges[0], edges[-1]); below/above count values outside."""

    edges_mm: list[float]
    counts: list[int]
    below: int
    above: int

    def to_dict(self) -> dict:
        return asdict(self)


def histogram(values: np.ndarray, limit_mm: float, bins: int = 40) -> Histogram:
    """Histogram over the fixed range +/-limit (the colour scale), so cases compare bin by bin."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    edges = np.linspace(-limit_mm, limit_mm, bins + 1)
    inside = (x >= edges[0]) & (x < edges[-1])
    counts, _ = np.histogram(x[inside], bins=edges)
    return Histogram(
        edges_mm=[round(float(e), 6) for e in edges],
        counts=[int(c) for c in counts],
        below=int(np.sum(x < edges[0])),
        above=int(np.sum(x >= edges[-1])),
    )
