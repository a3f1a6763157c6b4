"""Deviation of an aligned scan from its reference (pair jobs): map, statistics, histogram, outputs.

Only the overlap counts: a vertex of the aligned scan is measured when its closest reference point
is within max_distance_mm AND not on the reference's open boundary. A rescan covering a different
part of the arch than the reference would otherwise add its whole non-overlapping part as large
"deviations" clamped to the reference's rim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occlutrace_compute.analysis.colormap import ColorRamp, deviation_ramp
from occlutrace_compute.analysis.distance import SurfaceIndex
from occlutrace_compute.analysis.frame import arch_frame
from occlutrace_compute.analysis.preview import Panel, write_preview
from occlutrace_compute.analysis.stats import DistanceStats, Histogram, histogram, summarize
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.export import export_mesh
from occlutrace_compute.meshes.model import Mesh

SIGN_CONVENTION = "positive: aligned surface lies outside the reference (along its outward normals)"


@dataclass(frozen=True)
class DeviationReport:
    """Per-vertex deviation of the aligned scan (NaN outside the overlap) and its summary."""

    distance: np.ndarray  # (N,) mm, NaN outside overlap
    overlap: np.ndarray  # (N,) bool
    stats: DistanceStats
    histogram: Histogram
    max_distance_mm: float
    ramp: ColorRamp
    colored: Mesh  # the aligned mesh with deviation vertex colours

    @property
    def overlap_share(self) -> float:
        return float(self.overlap.mean()) if len(self.overlap) else 0.0

    def to_dict(self) -> dict:
        """The `deviation` block of result.json."""
        return {
            **self.stats.to_dict(),
            "overlap_share": self.overlap_share,
            "n_vertices": int(len(self.overlap)),
            "max_distance_mm": self.max_distance_mm,
            "color_scale_mm": [self.ramp.vmin, self.ramp.vmax],
            "sign": SIGN_CONVENTION,
            "histogram": self.histogram.to_dict(),
        }

    def write_ply(self, path: str | Path) -> Path:
        """Coloured deviation mesh (grey outside overlap, clipped beyond the colour scale)."""
        return export_mesh(self.colored, path, "ply")

    def write_preview(self, path: str | Path) -> Path:
        """800x600 PNG: occlusal view coloured by deviation, key statistics in the title."""
        s = self.stats
        if s.count:
            title = (
                f"deviation  RMS {s.rms_mm:.3f} mm   mean {s.mean_mm:+.3f} mm   "
                f"within \u00b1{s.tolerance_mm:g} mm: {100 * s.within_tolerance_share:.1f} %   "
                f"overlap {100 * self.overlap_share:.0f} %"
            )
        else:
            title = "deviation: no overlap with the reference"
        panel = Panel(self.colored, self.distance, arch_frame(self.colored), "occlusal view (grey: outside overlap)")
        return write_preview(path, [panel], self.ramp, title)


def deviation(
    aligned: Mesh,
    reference: Mesh,
    tolerance_mm: float = 0.05,
    max_distance_mm: float = 1.0,
    color_scale_mm: float = 0.2,
    reference_index: SurfaceIndex | None = None,
) -> DeviationReport:
    """Signed distance of each aligned vertex to the reference surface, restricted to the overlap.

    reference_index: the reference's SurfaceIndex when the caller built it already (a job builds
    it beside the registration, which does not need it); built here otherwise. Time: one index
    build (O(M log M)) and one bounded query of the N aligned vertices at max_distance_mm.
    """
    if aligned.n_vertices == 0:
        raise InputRejected("aligned", "has no vertices")
    if not tolerance_mm > 0 or not max_distance_mm > 0:
        raise ValueError(f"tolerance and max distance must be positive, got {tolerance_mm}, {max_distance_mm}")
    if reference_index is None:
        reference_index = SurfaceIndex(reference, name="reference")
    elif reference_index.mesh is not reference:
        raise ValueError("reference_index was built for another mesh than reference")
    measured = reference_index.query(aligned.vertices, max_distance=max_distance_mm)
    overlap = np.isfinite(measured.distance) & ~measured.on_boundary
    distance = np.where(overlap, measured.distance, np.nan)
    ramp = deviation_ramp(color_scale_mm)
    colored = Mesh(aligned.vertices, aligned.faces, ramp.rgba8(distance))
    return DeviationReport(
        distance=distance,
        overlap=overlap,
        stats=summarize(distance, tolerance_mm),
        histogram=histogram(distance, color_scale_mm),
        max_distance_mm=float(max_distance_mm),
        ramp=ramp,
        colored=colored,
    )
