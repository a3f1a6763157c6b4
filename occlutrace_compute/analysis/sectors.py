"""Where a point lies on the dental arch: sector (anterior / premolar / molar), patient side, arch.

Rule, in the arch's own frame (analysis.frame, of a FULL-arch scan): the depth fraction t of a
point, from the incisal front (0) to the most distal point (1). Anterior (incisors and canine)
t < 0.30, premolar 0.30 <= t < 0.57, molar t >= 0.57. The cut points sit between the canine and
first premolar and between the second premolar and first molar of arches of typical proportions
(calibrated on generated arches, tested on others, see tests/test_analysis_sectors.py: >= 90 % of
tooth vertices agree with their FDI tooth number). The patient's side needs to know which arch it
is (upper or lower): an upper arch's occlusal surface faces down. A partial (quadrant) reference
scan has no reliable front or back, so sectors are then unreliable; single tooth positions are not
reported at all (neighbouring teeth are too alike in depth to tell apart reliably).
O(N) for N points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occlutrace_compute.analysis.frame import ArchFrame

ANTERIOR_END = 0.30
PREMOLAR_END = 0.57


@dataclass(frozen=True)
class ArchLocator:
    """Locates points on one arch (frame of the full-arch reference; arch "upper"/"lower"/None)."""

    frame: ArchFrame
    arch: str | None = None

    @property
    def superior(self) -> np.ndarray | None:
        return {"upper": -self.frame.occlusal, "lower": self.frame.occlusal}.get(self.arch or "")

    def depth_fraction(self, points: np.ndarray) -> np.ndarray:
        local = self.frame.local(np.atleast_2d(points))
        front = 0.5 * self.frame.extent[1]
        return np.clip((front - local[:, 1]) / max(float(self.frame.extent[1]), 1e-9), 0.0, 1.0)

    def sectors(self, points: np.ndarray) -> list[str]:
        t = self.depth_fraction(points)
        return ["anterior" if x < ANTERIOR_END else "premolar" if x < PREMOLAR_END else "molar" for x in t]

    def sides(self, points: np.ndarray) -> list[str | None]:
        sup = self.superior
        if sup is None:
            return [None] * len(np.atleast_2d(points))
        right = np.cross(self.frame.anterior, sup)
        d = (np.atleast_2d(points) - self.frame.origin) @ right
        return ["right" if x > 0 else "left" for x in d]

    def describe(self, point: np.ndarray) -> dict:
        """{"arch", "side", "sector", "text"} of one point, e.g. "upper right premolar"."""
        p = np.asarray(point, dtype=np.float64).reshape(1, 3)
        sector, side = self.sectors(p)[0], self.sides(p)[0]
        words = [w for w in (self.arch, side, sector) if w]
        text = " ".join(words) + ("" if side else " (side unknown: arch not stated)")
        return {"arch": self.arch, "side": side, "sector": sector, "text": text}


def locate_regions(regions: list[dict], frame: ArchFrame, arch: str | None) -> list[dict]:
    """Each region dict (with "centroid_mm" in the frame's coordinates) plus its "location"."""
    locator = ArchLocator(frame, arch)
    return [{**r, "location": locator.describe(np.asarray(r["centroid_mm"]))} for r in regions]
