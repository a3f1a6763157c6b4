"""Reference-region alignment: refine a registration on a chosen region of the FIXED scan only.

Clinicians superimpose orthodontic follow-ups on stable anatomy (palatal rugae, teeth that did not
move): the whole-arch best fit spreads the real tooth movement over every tooth, the region fit
does not. The region is a vertex mask of the fixed scan, built from vertex indices, arch sectors
(analysis.sectors) or spheres around points (`region_mask`).

`refine_on_region` starts from the whole-arch pose (the global search stays the engine's job) and
runs trimmed point-to-plane ICP of the moving scan's vertices against the region's vertices
(with area-weighted normals). Bounded: at most `max_iterations` rounds, each a k-d tree query
of at most `max_points` points: O(max_iterations * max_points * log R) time, O(N + R) memory.

Why not the engine's ICP (`icp.refine`): that is a different estimator, and it gives a different
pose. It weights correspondences by a Geman-McClure kernel scaled by the residuals' MAD, gates
them by normal agreement, averages the two normals and steps about the weighted centroid (made to
shrug off changed anatomy inside a whole-arch overlap); this fit is plain least squares over the
best 90 % of point-to-plane residuals (a hard trim, no kernel), on the mesh's vertices and vertex
normals, for a region the caller names as stable. Run on the same start, points and region
(tests/test_reference_region.py's case, seed 2), `icp.refine` lands 1.9 um RMS away on the moved
segment and took ~7x the CPU time (40k moving points, one pair: the batch machinery does not pay
off here), so swapping it in would change every region result. What is shared: the pose
comparison (`geometry.pose_offsets`, also the bite search's `pose_gap_mm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh, vertex_normals
from occlutrace_compute.registration.geometry import pose_offsets


@dataclass(frozen=True)
class RegionFit:
    matrix: np.ndarray  # (4, 4) T_fixed_moving refined on the region
    n_region_vertices: int
    region_share: float  # of the fixed scan's vertices
    matched_points: int
    rmse_mm: float
    iterations: int
    change_from_whole_arch_mm: float  # largest move of a moving vertex between the two poses

    def to_json(self, spec: dict) -> dict:
        return {
            "spec": spec,
            "matrix": np.round(self.matrix, 10).tolist(),
            "fixed_vertices": self.n_region_vertices,
            "fixed_share": round(self.region_share, 4),
            "matched_points": self.matched_points,
            "rmse_um": round(1000 * self.rmse_mm, 2),
            "iterations": self.iterations,
            "change_from_whole_arch_um": round(1000 * self.change_from_whole_arch_mm, 1),
        }


def region_mask(
    fixed: Mesh,
    vertices: list[int] | None = None,
    sectors: list[str] | None = None,
    spheres: list[list[float]] | None = None,
    arch: str | None = None,
) -> np.ndarray:
    """(N,) bool over the fixed scan's vertices: the union of the given vertex indices, arch
    sectors ("molar", "left premolar", "right anterior", ...) and spheres [x, y, z, radius_mm]
    (fixed frame). InputRejected when a part is invalid or the region is empty."""
    n = fixed.n_vertices
    mask = np.zeros(n, dtype=bool)
    if vertices:
        idx = np.asarray(vertices, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= n:
            raise InputRejected("reference_region", f"vertex indices must lie in 0..{n - 1}")
        mask[idx] = True
    if sectors:
        from occlutrace_compute.analysis.frame import arch_frame
        from occlutrace_compute.analysis.sectors import ArchLocator

        loc = ArchLocator(arch_frame(fixed), arch)
        sec, side = np.array(loc.sectors(fixed.vertices)), np.array(loc.sides(fixed.vertices), dtype=object)
        for name in sectors:
            words = name.lower().split()
            want_side = [w for w in words if w in ("left", "right")]
            want_sector = [w for w in words if w in ("anterior", "premolar", "molar")]
            if len(words) != len(want_side) + len(want_sector) or len(want_side) > 1 or len(want_sector) != 1:
                raise InputRejected(
                    "reference_region", f"sector '{name}': expected [left|right] anterior|premolar|molar"
                )
            if want_side and arch is None:
                raise InputRejected("reference_region", f"sector '{name}' names a side: state the arch (upper/lower)")
            sel = sec == want_sector[0]
            if want_side:
                sel &= side == want_side[0]
            mask |= sel
    for s in spheres or []:
        if len(s) != 4 or not np.all(np.isfinite(s)) or not s[3] > 0:
            raise InputRejected("reference_region", f"sphere {s}: expected [x, y, z, radius_mm > 0]")
        mask |= np.linalg.norm(fixed.vertices - np.asarray(s[:3]), axis=1) <= s[3]
    if mask.sum() < 100:
        raise InputRejected(
            "reference_region", f"the region holds {int(mask.sum())} vertices of the fixed scan; need at least 100"
        )
    return mask


def refine_on_region(
    fixed: Mesh,
    moving: Mesh,
    T_whole: np.ndarray,
    mask: np.ndarray,
    max_iterations: int = 40,
    max_points: int = 40_000,
    start_cap_mm: float = 1.0,
    trim: float = 0.9,
) -> RegionFit:
    """Trimmed point-to-plane ICP of MOVING onto the masked part of FIXED, from T_whole."""
    region = np.flatnonzero(mask)
    P, N = fixed.vertices[region], vertex_normals(fixed)[region]
    tree = cKDTree(P)
    m = moving.vertices[:: max(1, moving.n_vertices // max_points)]
    T = np.asarray(T_whole, dtype=np.float64).copy()
    cap, rmse, used, it = start_cap_mm, float("nan"), 0, 0
    for it in range(1, max_iterations + 1):  # noqa: B007 (reported after the loop); bounded, stops early when the update is negligible
        q = m @ T[:3, :3].T + T[:3, 3]
        d, j = tree.query(q, distance_upper_bound=cap)
        ok = np.isfinite(d)
        if ok.sum() < 50:
            break
        q, j = q[ok], j[ok]
        n = N[j]
        r = np.einsum("ij,ij->i", q - P[j], n)
        keep = np.abs(r) <= np.quantile(np.abs(r), trim)
        q, n, r = q[keep], n[keep], r[keep]
        A = np.concatenate([np.cross(q, n), n], axis=1)
        x, *_ = np.linalg.lstsq(A, -r, rcond=None)
        wx, wy, wz, tx, ty, tz = x
        dR = np.array([[1, -wz, wy], [wz, 1, -wx], [-wy, wx, 1]])
        u, _, vt = np.linalg.svd(dR)
        dT = np.eye(4)
        dT[:3, :3], dT[:3, 3] = u @ vt, (tx, ty, tz)
        T = dT @ T
        used, rmse = len(r), float(np.sqrt(np.mean(r * r)))
        cap = max(0.25, cap * 0.7)
        if np.abs(x[:3]).max() < 1e-8 and np.abs(x[3:]).max() < 1e-7:
            break
    moved = pose_offsets(T, T_whole, moving.vertices)
    return RegionFit(
        T,
        int(len(region)),
        float(len(region) / max(fixed.n_vertices, 1)),
        int(used),
        rmse,
        it,
        float(np.linalg.norm(moved, axis=1).max()) if moving.n_vertices else 0.0,
    )
