"""The colour maps of every analysis output, in one place, so meshes, previews and colour bars agree.

A map is a piecewise-linear ramp over fixed millimetre anchors (not data-scaled), so colours mean
the same thing in every case. Equal adjacent anchor positions make a hard step (contact maps change
colour exactly at 0 and at the threshold; the deviation map's tolerance band is one flat green).
Values beyond the ends take the ramp's own "beyond the scale" colours where it has them (magenta
above, violet below: a 1.5 mm preparation must not look like missing scan), else are clipped;
NaN (no measurement, no overlap) is grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib only for callers that draw with it: a job's outputs do not import it
    from matplotlib.colors import ListedColormap, Normalize

GREY = (0.72, 0.72, 0.72)
BEYOND_ABOVE = (0.85, 0.0, 0.85)  # magenta: above the scale
BEYOND_BELOW = (0.33, 0.0, 0.50)  # violet: below the scale


@dataclass(frozen=True)
class ColorRamp:
    """Piecewise-linear RGB ramp over millimetre anchors (positions non-decreasing)."""

    positions: tuple[float, ...]
    colors: tuple[tuple[float, float, float], ...]
    label: str
    grey_above: bool = False  # True: values above vmax are "out of range" (grey), not clipped
    above: tuple[float, float, float] | None = None  # colour of values above vmax (None: clipped)
    below: tuple[float, float, float] | None = None  # colour of values below vmin (None: clipped)
    nan_label: str = "no measurement"

    @property
    def vmin(self) -> float:
        return self.positions[0]

    @property
    def vmax(self) -> float:
        return self.positions[-1]

    def rgb(self, values: np.ndarray) -> np.ndarray:
        """(N, 3) float RGB in [0, 1]; NaN values grey. O(N) time and memory (a few (N,) columns)."""
        x = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(x)
        xc = np.clip(np.where(finite, x, self.vmin), self.vmin, self.vmax)
        pos = np.asarray(self.positions)
        cols = np.asarray(self.colors, dtype=np.float64)
        # Segment index: the last anchor at or below x (a hard step takes the right-hand colour),
        # at most the last segment: the inner anchors at or below x (positions non-decreasing,
        # x clipped to [vmin, vmax]); a few (N,) comparisons instead of a binary search each.
        seg = np.zeros(len(xc), dtype=np.intp)
        for p in pos[1:-1]:
            seg += xc >= p
        lo, width = pos[seg], (pos[1:] - pos[:-1])[seg]
        t = np.divide(xc - lo, width, out=np.zeros_like(xc), where=width > 0)
        # cols[seg] + t * (cols[seg + 1] - cols[seg]) per channel, element for element the same
        # numbers: (N,) gathers from each segment's start and step (a gather of (N, 3) rows by an
        # index costs several times as much; a job colours 150k vertices and 250k pixels).
        out = np.empty((len(xc), 3))
        for c in range(3):
            start, step = cols[:-1, c], cols[1:, c] - cols[:-1, c]
            out[:, c] = start[seg] + t * step[seg]
        out[~finite] = GREY
        if self.grey_above:
            out[finite & (x > self.vmax)] = GREY
        if self.above is not None:
            out[finite & (x > self.vmax)] = self.above
        if self.below is not None:
            out[finite & (x < self.vmin)] = self.below
        return out

    @property
    def ticks(self) -> list[float]:
        """The anchor positions worth a label on a colour bar (each once, 0 included)."""
        return sorted(set(self.positions) | ({0.0} if self.vmin < 0 < self.vmax else set()))

    def rgba8(self, values: np.ndarray) -> np.ndarray:
        """(N, 4) uint8 RGBA for mesh vertex colours."""
        rgb = self.rgb(values)
        rgb *= 255.0
        out = np.empty((len(rgb), 4), dtype=np.uint8)
        out[:, :3] = np.round(rgb, out=rgb)  # values in [0, 255]: the cast is exact
        out[:, 3] = 255
        return out

    def matplotlib(self, samples: int = 512) -> tuple[ListedColormap, Normalize]:
        """The same ramp as a matplotlib colormap + norm, for colour bars."""
        from matplotlib.colors import ListedColormap, Normalize

        grid = np.linspace(self.vmin, self.vmax, samples)
        return ListedColormap(self.rgb(grid)), Normalize(self.vmin, self.vmax)


def deviation_ramp(scale_mm: float = 0.2, band_mm: float = 0.0) -> ColorRamp:
    """Symmetric diverging map over +/-scale: blue (below) - cyan - green (0) - yellow - red (above),
    with one flat green over the tolerance band +/-band_mm (0: no band), magenta above the scale
    and violet below it.

    The dental-CAD convention: green means on the reference, warm means the scan lies outside it
    (material excess), cold inside (deficit).
    """
    s, b = float(scale_mm), float(band_mm)
    if not s > 0:
        raise ValueError(f"colour scale must be positive, got {scale_mm}")
    if not 0 <= b < s:
        raise ValueError(f"the tolerance band must be in [0, scale), got {band_mm} for a scale of {scale_mm}")
    blue, cyan, green, yellow, red = (
        (0.05, 0.15, 0.75),
        (0.0, 0.75, 0.95),
        (0.15, 0.78, 0.2),
        (0.98, 0.85, 0.05),
        (0.85, 0.05, 0.05),
    )
    positions: tuple[float, ...]
    colors: tuple[tuple[float, float, float], ...]
    if b > 0:
        positions, colors = (-s, -b, -b, b, b, s), (blue, cyan, green, green, yellow, red)
    else:
        positions, colors = (-s, -s / 2, 0.0, s / 2, s), (blue, cyan, green, yellow, red)
    return ColorRamp(
        positions=positions,
        colors=colors,
        label="signed deviation [mm]",
        above=BEYOND_ABOVE,
        below=BEYOND_BELOW,
        nan_label="no overlap",
    )


def contact_ramp(threshold_mm: float = 0.1, cutoff_mm: float = 0.5, depth_mm: float = 0.3) -> ColorRamp:
    """Occlusal distance map: red = penetration (darker deeper, clipped at -depth), green = contact
    (0..threshold), light to dark blue = open (threshold..cutoff); beyond cutoff grey, as far
    surfaces say nothing about the bite."""
    t, c, d = float(threshold_mm), float(cutoff_mm), float(depth_mm)
    if not (t > 0 and c > t and d > 0):
        raise ValueError(f"need 0 < threshold < cutoff and depth > 0, got {t}, {c}, {d}")
    return ColorRamp(
        positions=(-d, 0.0, 0.0, t, t, c),
        colors=(
            (0.4, 0.0, 0.0),
            (1.0, 0.1, 0.1),
            (0.1, 0.8, 0.15),
            (0.55, 0.9, 0.2),
            (0.55, 0.8, 1.0),
            (0.05, 0.1, 0.55),
        ),
        label="distance to opposing arch [mm]",
        grey_above=True,
        nan_label=f"farther than {c:g} mm",
    )
