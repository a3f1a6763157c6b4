"""An arch's own anatomical axes, from its shape alone (no landmarks).

Rule (principal axes of the area-weighted surface):
- occlusal axis = smallest principal axis, signed along the surface's vector area (the summed
  area-weighted normals of an open scan point out of the occlusal/outer surface);
- width axis = largest principal axis (an arch is wider than deep);
- anterior = second axis, signed towards the end of the arch that crosses the midline (a U-shaped
  arch has surface on the midline only at the incisors);
- x = anterior x occlusal, so (x, anterior, occlusal) is right-handed and a view from the occlusal
  side with anterior up has x to the right (never mirrored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occlutrace_compute.meshes.model import Mesh


@dataclass(frozen=True)
class ArchFrame:
    origin: np.ndarray  # (3,) centre of the arch's extent along each axis
    x: np.ndarray  # (3,) unit, across the arch
    anterior: np.ndarray  # (3,) unit, towards the incisors
    occlusal: np.ndarray  # (3,) unit, out of the occlusal surface
    extent: np.ndarray  # (3,) size along x, anterior, occlusal (mm)

    def local(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) coordinates along (x, anterior, occlusal), relative to origin."""
        return (np.asarray(points) - self.origin) @ np.stack([self.x, self.anterior, self.occlusal], axis=1)


def arch_frame(mesh: Mesh) -> ArchFrame:
    """Principal-axis frame of an arch (see module docstring for the rule)."""
    v, f = mesh.vertices, mesh.faces
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        centers, weights = v, np.ones(len(v))
    else:
        centers, weights = (a + b + c) / 3.0, area
    mean = np.average(centers, axis=0, weights=weights)
    d = centers - mean
    cov = (d * weights[:, None]).T @ d / weights.sum()
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    occlusal, second, width = vecs[:, 0], vecs[:, 1], vecs[:, 2]
    if np.dot(cross.sum(axis=0), occlusal) < 0:
        occlusal = -occlusal
    proj_w, proj_s = v @ width, v @ second
    w_mid = 0.5 * (proj_w.min() + proj_w.max())
    w_half = 0.5 * (proj_w.max() - proj_w.min())
    near_mid = np.abs(proj_w - w_mid) <= 0.1 * w_half
    s_mid = 0.5 * (proj_s.min() + proj_s.max())
    if near_mid.any() and proj_s[near_mid].mean() < s_mid:
        second = -second
    x = np.cross(second, occlusal)
    axes = np.stack([x, second, occlusal], axis=1)
    local = v @ axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    origin = axes @ (0.5 * (lo + hi))
    return ArchFrame(origin=origin, x=x, anterior=second, occlusal=occlusal, extent=hi - lo)
