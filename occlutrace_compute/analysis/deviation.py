"""Deviation of an aligned scan from its reference (pair jobs): map, statistics, histogram, outputs.

Only the overlap counts: a vertex of the aligned scan is measured when its closest reference point
is within max_distance_mm AND not on the reference's open boundary. A rescan covering a different
part of the arch than the reference would otherwise add its whole non-overlapping part as large
"deviations" clamped to the reference's rim. A vertex farther than max_distance_mm but facing the
reference's interior (not its rim; searched up to FAR_FACTOR x max_distance_mm) is "beyond": left
out of the statistics like the non-overlap, but its signed value is kept (`values`, the PLY's
`quality`) and drawn in the beyond-the-scale colour, so a deep preparation does not read as
missing scan.
"""

from __future__ import annotations

import functools
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from occlutrace_compute.analysis.colormap import ColorRamp, deviation_ramp
from occlutrace_compute.analysis.distance import SurfaceDistance, SurfaceIndex, one_openmp_thread
from occlutrace_compute.analysis.frame import ArchFrame, arch_frame
from occlutrace_compute.analysis.preview import Raster, SheetGeometry, sheet_geometry, write_arch_sheet
from occlutrace_compute.analysis.stats import DistanceStats, Histogram, histogram, summarize
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.export import export_mesh
from occlutrace_compute.meshes.model import Mesh

if TYPE_CHECKING:
    from occlutrace_compute.analysis.distance_device import DistanceIndex

FAR_FACTOR = 3.0
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
    values: np.ndarray | None = None  # (N,) mm: distance, plus the beyond-max-distance values; NaN: no overlap
    band_mm: float = 0.0
    arch: str | None = None  # "upper" | "lower" | None (unknown: patient sides not named)
    aligned_frame: ArchFrame | None = field(default=None, repr=False, compare=False)  # arch_frame(aligned), if known

    @functools.cached_property
    def frame(self) -> ArchFrame:
        """The aligned scan's arch frame (computed once: the preview and the report's 3D view
        both orient by it). arch_frame reads only the geometry, so a caller that computed it for
        the aligned mesh (a job: beside the deviation query) hands it in as aligned_frame."""
        return self.aligned_frame if self.aligned_frame is not None else arch_frame(self.colored)

    @property
    def shown(self) -> np.ndarray:
        """Per-vertex values of the map and the PLY's quality (mm; NaN: no overlap)."""
        return self.distance if self.values is None else self.values

    @property
    def beyond_share(self) -> float:
        """Share of vertices farther than max_distance_mm from the reference's interior."""
        if not len(self.overlap):
            return 0.0
        return float(np.mean(np.isfinite(self.shown) & ~self.overlap))

    @property
    def overlap_share(self) -> float:
        return float(self.overlap.mean()) if len(self.overlap) else 0.0

    def to_dict(self) -> dict:
        """The `deviation` block of result.json."""
        return {
            **self.stats.to_dict(),
            "overlap_share": self.overlap_share,
            "beyond_max_distance_share": self.beyond_share,
            "band_mm": self.band_mm,
            "arch": self.arch,
            "n_vertices": int(len(self.overlap)),
            "max_distance_mm": self.max_distance_mm,
            "color_scale_mm": [self.ramp.vmin, self.ramp.vmax],
            "sign": SIGN_CONVENTION,
            "histogram": self.histogram.to_dict(),
        }

    def write_ply(self, path: str | Path) -> Path:
        """Coloured deviation mesh (grey outside overlap, clipped beyond the colour scale)."""
        return export_mesh(self.colored, path, "ply", quality=self.shown)

    def write_preview(self, path: str | Path, geometry: SheetGeometry | None = None) -> Path:
        """1400x960 PNG: occlusal, frontal and buccal views coloured by deviation, colour bar with
        units and tolerance band, histogram; key statistics in the title.

        geometry: preview_geometry(the aligned mesh, its frame, arch) made beforehand (a job:
        beside the deviation query); the same PNG as without it, which makes it here."""
        s = self.stats
        if s.count:
            title = (
                f"deviation  RMS {s.rms_mm:.3f} mm   mean {s.mean_mm:+.3f} mm   "
                f"within \u00b1{s.tolerance_mm:.3f} mm: {100 * (s.within_tolerance_share or 0.0):.1f} %   "
                f"overlap {100 * self.overlap_share:.0f} %"
            )
        else:
            title = "deviation: no overlap with the reference"
        subtitle = (
            f"aligned rescan vs reference; positive = rescan outside the reference; grey = no overlap; "
            f"farther than {self.max_distance_mm:g} mm: beyond-the-scale colours, not in the statistics"
        )
        frame = self.frame
        superior = patient_up(frame, self.arch)
        arch_name = f"{self.arch} arch" if self.arch else "arch (upper/lower not stated: sides not named)"
        return write_arch_sheet(
            path,
            self.colored,
            self.shown,
            frame,
            superior,
            self.ramp,
            title,
            subtitle,
            arch_name,
            self.histogram.to_dict(),
            self.band_mm or None,
            s.tolerance_mm,
            geometry=geometry,
        )


def patient_up(frame: ArchFrame, arch: str | None) -> np.ndarray | None:
    """The patient's up in the frame of an upper or lower arch (None: arch not stated)."""
    return {"upper": -frame.occlusal, "lower": frame.occlusal}.get(arch or "")


def preview_geometry(aligned: Mesh, frame: ArchFrame, arch: str | None, large: Raster | None = None) -> SheetGeometry:
    """The deviation sheet's views before colour (preview.sheet_geometry): they need the pose
    and the aligned scan's frame, not the deviation, so a job draws them beside the query.
    DeviationReport.write_preview uses it when `aligned` is the report's mesh (its very arrays)
    and `frame` its frame. large: the large view made beforehand (preview.occlusal_raster).
    Time and memory: sheet_geometry's (O(N log N + F + H * W))."""
    return sheet_geometry(aligned, frame, patient_up(frame, arch), large=large)


SPLIT_MIN_POINTS = 20_000  # below this one thread does the whole query (thread start costs more)


def _query_halves(index: DistanceIndex, points: np.ndarray, max_distance: float, pool: Executor) -> SurfaceDistance:
    """index.query on two threads, one half of the points each (each tree query on one OpenMP
    thread): the exact scoring is numpy work that releases the GIL, so two cores share it.
    Same answer as one query (points are independent); same worst case, split in two.
    pool: two threads to run them on (deviation's, which also colours beside the statistics)."""
    if len(points) < SPLIT_MIN_POINTS:
        return index.query(points, max_distance=max_distance)
    half = len(points) // 2

    def part(rows: np.ndarray) -> SurfaceDistance:
        with one_openmp_thread():
            return index.query(rows, max_distance=max_distance)

    first, second = pool.map(part, (points[:half], points[half:]))
    return SurfaceDistance(
        *(
            np.concatenate([a, b])
            for a, b in zip(
                (first.distance, first.closest, first.face, first.on_boundary),
                (second.distance, second.closest, second.face, second.on_boundary),
            )
        )
    )


def deviation(
    aligned: Mesh,
    reference: Mesh,
    tolerance_mm: float = 0.05,
    max_distance_mm: float = 1.0,
    color_scale_mm: float = 0.2,
    band_mm: float = 0.0,
    arch: str | None = None,
    reference_index: DistanceIndex | None = None,
    aligned_frame: ArchFrame | None = None,
) -> DeviationReport:
    """Signed distance of each aligned vertex to the reference surface, restricted to the overlap.

    band_mm: the flat green tolerance band of the map; arch: "upper"/"lower" names the patient's
    sides on the views (None: not named). reference_index: the reference's SurfaceIndex when the
    caller built it already (a job builds it beside the registration, which does not need it);
    built here otherwise. aligned_frame: arch_frame(aligned) when the caller has it (the report's
    frame; computed on first use otherwise). Time: one index build (O(M log M)) and one bounded query of the N
    aligned vertices at FAR_FACTOR * max_distance_mm.
    """
    if aligned.n_vertices == 0:
        raise InputRejected("aligned", "has no vertices")
    if not tolerance_mm > 0 or not max_distance_mm > 0:
        raise ValueError(f"tolerance and max distance must be positive, got {tolerance_mm}, {max_distance_mm}")
    if reference_index is None:
        reference_index = SurfaceIndex(reference, name="reference")
    elif reference_index.mesh is not reference:
        raise ValueError("reference_index was built for another mesh than reference")
    ramp = deviation_ramp(color_scale_mm, band_mm)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="occlutrace-deviation") as pool:
        measured = _query_halves(reference_index, aligned.vertices, FAR_FACTOR * max_distance_mm, pool)
        facing = np.isfinite(measured.distance) & ~measured.on_boundary
        overlap = facing & (np.abs(np.nan_to_num(measured.distance, nan=np.inf)) <= max_distance_mm)
        distance = np.where(overlap, measured.distance, np.nan)
        values = np.where(facing, measured.distance, np.nan)
        # The vertex colours on a thread beside the statistics (numpy releases the GIL; each is
        # ~0.015 s CPU at 150k vertices, on the job's path after the query); small meshes: here.
        colouring = pool.submit(ramp.rgba8, values) if len(values) >= SPLIT_MIN_POINTS else None
        stats, hist = summarize(distance, tolerance_mm), histogram(distance, color_scale_mm)
        colors = colouring.result() if colouring is not None else ramp.rgba8(values)
    colored = Mesh(aligned.vertices, aligned.faces, colors)
    return DeviationReport(
        distance=distance,
        overlap=overlap,
        stats=stats,
        histogram=hist,
        max_distance_mm=float(max_distance_mm),
        ramp=ramp,
        colored=colored,
        values=values,
        band_mm=float(band_mm),
        arch=arch,
        aligned_frame=aligned_frame,
    )
