"""The arch curve: the crown centre line of a dental arch in the occlusal plane.

Frame (shared by every synthetic arch, see `arch.py`): x = patient's right, y = anterior,
z = superior (a right-handed RAS frame), occlusal plane near z = 0. The curve runs from the
patient's right distal end (s < 0) over the midline (s = 0) to the left distal end (s > 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class ArchCurve:
    """A densely sampled plane curve, parametrised by arc length s (mm, 0 at the midline).

    normal is the unit buccal (outward, cheek-side) direction in the plane.
    """

    s: np.ndarray  # (K,)
    xy: np.ndarray  # (K, 2)
    tangent: np.ndarray  # (K, 2)
    normal: np.ndarray  # (K, 2)

    @staticmethod
    def from_points(xy: np.ndarray) -> ArchCurve:
        """Curve through points ordered right -> left; s = 0 where x crosses 0."""
        seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        s -= np.interp(0.0, -xy[:, 0], s)  # x decreases along the curve
        tangent = np.gradient(xy, s, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)  # clockwise: outward
        return ArchCurve(s, xy, tangent, normal)

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xy, tangent, normal) at arc lengths s, linearly interpolated (extrapolated at ends)."""
        s = np.asarray(s, dtype=np.float64)
        xy = np.stack([_interp_lin(s, self.s, self.xy[:, i]) for i in range(2)], axis=-1)
        t = np.stack([np.interp(s, self.s, self.tangent[:, i]) for i in range(2)], axis=-1)
        t /= np.linalg.norm(t, axis=-1, keepdims=True)
        return xy, t, np.stack([t[..., 1], -t[..., 0]], axis=-1)

    @cached_property
    def _tree(self) -> cKDTree:
        return cKDTree(self.xy[::_COARSE])

    def offset(self, d: np.ndarray) -> ArchCurve:
        """The curve moved lingually (inwards) by d(s) mm."""
        return ArchCurve.from_points(self.xy - np.asarray(d)[:, None] * self.normal)

    def project(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arch coordinates (s, u) of plane points: u is the signed buccal offset from the curve.

        Nearest point of a coarse copy of the curve, then Newton steps on s (converges for
        |u| below the radius of curvature, ~10 mm, which bounds every cross-section).
        """
        _, i = self._tree.query(xy, k=1)
        s = self.s[::_COARSE][i]
        for _ in range(3):
            c, t, _ = self.at(s)
            s = s + np.einsum("ij,ij->i", xy - c, t)
        c, _, n = self.at(s)
        return s, np.einsum("ij,ij->i", xy - c, n)


_COARSE = 16


def _interp_lin(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp with linear extrapolation past both ends."""
    y = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    y[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


def upper_curve(rng: np.random.Generator, half_length_mm: float) -> ArchCurve:
    """A power-law arch form y = D (1 - |x/W|^p): flat-ish incisor segment, diverging molars.

    W ~ 24-26 mm (half width at the distal molars), D ~ 42-46 mm (depth); p ~ 2.6-3.0 keeps the
    tightest radius of curvature near 10 mm, wider than the lingual extent of any cross-section.
    The curve is extended until each side is at least half_length_mm long.
    """
    w = rng.uniform(24.0, 26.0)
    d = rng.uniform(42.0, 46.0)
    p = rng.uniform(2.6, 3.0)
    x_max = 1.1 * w
    while True:
        x = np.linspace(x_max, -x_max, 8001)
        curve = ArchCurve.from_points(np.stack([x, d * (1.0 - np.abs(x / w) ** p)], axis=1))
        if min(-curve.s[0], curve.s[-1]) >= half_length_mm or x_max > 3 * w:
            return curve
        x_max *= 1.05
