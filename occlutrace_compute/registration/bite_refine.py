"""From per-arch candidates to the occlusion: pick the (upper, lower) candidate pair that explains
the bite best, split the bite into its two bands, refine each band on its arch at full density,
and solve the lower arch against every bite's lower band at once.

The pair choice is what the single-arch search cannot do: a wrong candidate usually puts the
bite's OTHER band on the arch, so it claims the same bite points as its partner (covered twice,
not once), turns the arches the same way, or drives teeth through the antagonist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from occlutrace_compute.registration.batch import pack
from occlutrace_compute.registration.bite_contact import UpperSurface, penetrating_share
from occlutrace_compute.registration.bite_search import Candidates, transforms
from occlutrace_compute.registration.geometry import pose_offsets
from occlutrace_compute.registration.icp import Level, level, match, refine, score
from occlutrace_compute.registration.levels import Cloud, Samples, subset
from occlutrace_compute.registration.matcher import Matcher


def apply(T: np.ndarray, cloud: Cloud) -> Cloud:
    """The cloud (or any (points, normals) pair) moved by T (4,4): points rotated and shifted,
    normals rotated."""
    points, normals = cloud
    return Cloud(points @ T[:3, :3].T + T[:3, 3], normals @ T[:3, :3].T)


def pose_gap_mm(A: np.ndarray, B: np.ndarray, points: np.ndarray) -> float:
    """RMS distance between points moved by A and by B."""
    d = pose_offsets(A, B, points)
    return float(np.sqrt(np.mean(np.einsum("ij,ij->i", d, d))))


@dataclass
class PairChoice:
    T_upper_bite: np.ndarray
    T_lower_bite: np.ndarray
    score: float  # bite share explained once (by exactly one arch), minus penalties
    runner_up_ratio: float  # best distinct relative pose's score / this one's (0 if none)
    facing: bool  # the arches' occlusal directions oppose (False: no candidate pair did)


def choose_pair(
    upper: Candidates,
    lower: Candidates,
    upper_surface_coarse: UpperSurface,
    lower_coarse: np.ndarray,
    up_upper: np.ndarray,
    up_lower: np.ndarray,
    penetration_weight: float = 2.0,
) -> PairChoice:
    """Rank every (upper, lower) candidate pair by the bite points explained by one arch only,
    with the arches facing each other and not interpenetrating (facing is dropped only when no
    pair achieves it: the result is then reported as doubtful)."""
    if len(upper.T_arch_bite) == 0 or len(lower.T_arch_bite) == 0:
        raise ValueError("choose_pair needs at least one candidate per arch")
    rows = _pair_rows(upper, lower, upper_surface_coarse, lower_coarse, up_upper, up_lower, penetration_weight, True)
    facing = bool(rows)
    if not facing:
        rows = _pair_rows(
            upper, lower, upper_surface_coarse, lower_coarse, up_upper, up_lower, penetration_weight, False
        )
    rows.sort(key=lambda r: -r[0])
    best = rows[0]
    ratio = 0.0
    for s, _, _, T_ul in rows[1:]:
        if pose_gap_mm(T_ul, best[3], lower_coarse) > 1.0:
            ratio = max(0.0, s / best[0]) if best[0] > 0 else 1.0
            break
    return PairChoice(upper.T_arch_bite[best[1]], lower.T_arch_bite[best[2]], best[0], ratio, facing)


def _pair_rows(
    upper: Candidates,
    lower: Candidates,
    upper_surface_coarse: UpperSurface,
    lower_coarse: np.ndarray,
    up_upper: np.ndarray,
    up_lower: np.ndarray,
    penetration_weight: float,
    facing: bool,
) -> list:
    rows = []
    for i in range(len(upper.T_arch_bite)):
        for j in range(len(lower.T_arch_bite)):
            T_ul = upper.T_arch_bite[i] @ np.linalg.inv(lower.T_arch_bite[j])
            if facing and float((T_ul[:3, :3] @ up_lower) @ up_upper) > -0.5:  # occlusal directions oppose
                continue
            wu, wl = upper.weights[i], lower.weights[j]
            once = float(np.mean(np.maximum(wu, wl)) - np.mean(np.minimum(wu, wl)))
            moved = lower_coarse @ T_ul[:3, :3].T + T_ul[:3, 3]
            pen = penetrating_share(upper_surface_coarse, moved, depth_mm=0.5)
            rows.append((once - penetration_weight * pen, i, j, T_ul))
    return rows


def consistent_pair(
    upper: Candidates, lower: Candidates, T_upper_lower: np.ndarray, lower_coarse: np.ndarray, max_gap_mm: float = 1.5
) -> PairChoice | None:
    """The candidate pair of a bite whose relative pose lies nearest a pose another bite
    settled on (None if none within max_gap_mm): two bites of one patient share ONE occlusion."""
    best: tuple[float, int, int] | None = None
    for i in range(len(upper.T_arch_bite)):
        for j in range(len(lower.T_arch_bite)):
            gap = pose_gap_mm(upper.T_arch_bite[i] @ np.linalg.inv(lower.T_arch_bite[j]), T_upper_lower, lower_coarse)
            if gap < max_gap_mm and (best is None or gap < best[0]):
                best = (gap, i, j)
    if best is None:
        return None
    _, i, j = best
    wu, wl = upper.weights[i], lower.weights[j]
    once = float(np.mean(np.maximum(wu, wl)) - np.mean(np.minimum(wu, wl)))
    return PairChoice(upper.T_arch_bite[i], lower.T_arch_bite[j], once, 0.0, True)


def refinement_level(
    iterations: int, *, dmax_start: float, dmax_end: float, scale_floor: float, near: float, tau: float | None = None
) -> Level:
    """The ICP level of every refinement here (a band on its arch at mid or full density, the
    lower arch on all bites' lower bands): the Geman-McClure scale at 2.5 MADs, and converged
    only when a step turns less than 1e-7 rad and moves less than 1e-6 mm (ten times under
    `icp.level`'s defaults). `near`:
    the band split's and the score's reach; `tau`: the score's inlier band (default `near`)."""
    return level(
        iterations=iterations,
        dmax_start=dmax_start,
        dmax_end=dmax_end,
        scale_floor=scale_floor,
        mad_factor=2.5,
        converge_rot_rad=1e-7,
        converge_trans_mm=1e-6,
        near=near,
        tau=tau,
    )


@dataclass
class BandFit:
    """One band of a bite on its arch."""

    T_arch_bite: np.ndarray  # (4,4) bite file -> arch file
    rmse_mm: float  # RMS point-to-plane residual of the band's inliers
    fitness: float  # share of the band's samples within inlier_mm of the arch
    band_share: float  # share of the bite's samples assigned to this band

    def to_json(self) -> dict:
        return {
            "matrix": self.T_arch_bite.tolist(),
            "rmse_mm": self.rmse_mm,
            "fitness": self.fitness,
            "band_share": self.band_share,
        }


@dataclass
class BiteFit:
    upper: BandFit
    lower: BandFit
    lower_band: Cloud  # fine samples of the bite's lower band, in the bite's frame
    pair: PairChoice


def _bands(
    cloud: Cloud, matchers: list[Matcher], poses: list[np.ndarray], split: Level
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of bite points lying on the upper / on the lower (nearer to that arch, within
    `split.near`)."""
    dist = []
    for m, T_arch_bite in zip(matchers, poses):
        dev = m.fixed.points.device
        mm = match(
            pack([cloud], dev),
            torch.zeros(1, dtype=torch.int64, device=dev),
            transforms(T_arch_bite[None], dev),
            m,
            split,
        )
        d = torch.where(mm.compatible, mm.dist2, torch.full_like(mm.dist2, math.inf))[0].cpu().numpy()
        dist.append(d)
    near = split.near * split.near
    return (dist[0] < dist[1]) & (dist[0] < near), (dist[1] <= dist[0]) & (dist[1] < near)


def refine_bite(
    bite: Samples,
    upper: Samples,
    lower: Samples,
    pair: PairChoice,
    dev: torch.device,
    inlier_mm: float,
    seed: int = 0,
    fine_points: int = 8000,
) -> BiteFit:
    """Both bands refined on their arches (one batch of two items), mid level then fine."""
    fixed = [pack([upper.fine], dev), pack([lower.fine], dev)]
    matchers = [Matcher(f) for f in fixed]
    both = pack([upper.fine, lower.fine], dev)
    both_matcher = Matcher(both)
    poses = [pair.T_upper_bite, pair.T_lower_bite]  # T_arch_bite of each band
    # Per level: the bite's samples split into bands within `near` of their arch, then refined.
    mid = refinement_level(15, dmax_start=1.0, dmax_end=0.3, scale_floor=0.05, near=1.0)
    fine = refinement_level(20, dmax_start=0.4, dmax_end=0.15, scale_floor=0.01, near=0.5)
    for cloud, n_max, band_level in ((bite.mid, 3000, mid), (bite.fine, fine_points, fine)):
        up_mask, lo_mask = _bands(cloud, matchers, poses, band_level)
        bands = [subset(Cloud(cloud.points[m], cloud.normals[m]), n_max, seed) for m in (up_mask, lo_mask)]
        if min(b.points.shape[0] for b in bands) < 6:
            break
        mov = pack(bands, dev)
        out = refine(mov, torch.arange(2, device=dev), transforms(np.stack(poses), dev), both_matcher, band_level)
        poses = list(out.T_fixed_moving.cpu().numpy())
    up_mask, lo_mask = _bands(bite.fine, matchers, poses, level(near=0.3))
    scored = level(tau=inlier_mm, near=0.5)
    bands = [Cloud(bite.fine.points[m], bite.fine.normals[m]) for m in (up_mask, lo_mask)]
    fits = []
    n_all = bite.fine.points.shape[0]
    for k, band in enumerate(bands):
        if band.points.shape[0] == 0:
            fits.append(BandFit(poses[k], math.inf, 0.0, 0.0))
            continue
        sc = score(
            pack([band], dev),
            torch.zeros(1, dtype=torch.int64, device=dev),
            transforms(poses[k][None], dev),
            matchers[k],
            scored,
        )
        fits.append(BandFit(poses[k], float(sc.trimmed_rmse[0]), float(sc.fitness[0]), band.points.shape[0] / n_all))
    return BiteFit(fits[0], fits[1], bands[1], pair)


@dataclass
class LowerFit:
    T_upper_lower: np.ndarray
    rmse_mm: float
    fitness: float
    bite_disagreement_mm: float  # two bites: RMS gap over the lower arch between their own poses


def joint_lower(
    fits: list[BiteFit], lower: Samples, dev: torch.device, inlier_mm: float, seed: int = 0, max_points: int = 12000
) -> LowerFit:
    """The lower arch's pose in the occlusion frame fitted to every bite's lower band at once
    (each band placed in the upper frame by its own upper fit): one rigid pose, all overlaps."""
    bands = [apply(f.upper.T_arch_bite, f.lower_band) for f in fits]
    moving = subset(
        Cloud(np.concatenate([b.points for b in bands]), np.concatenate([b.normals for b in bands])), max_points, seed
    )
    starts = [f.lower.T_arch_bite @ np.linalg.inv(f.upper.T_arch_bite) for f in fits]  # T_lower_upper, per bite
    gap = (
        pose_gap_mm(np.linalg.inv(starts[0]), np.linalg.inv(starts[-1]), lower.coarse.points)
        if len(starts) > 1
        else 0.0
    )
    fixed = pack([lower.fine], dev)
    matcher = Matcher(fixed)
    b = len(starts)
    zeros = torch.zeros(b, dtype=torch.int64, device=dev)
    mov = pack([moving], dev).index(zeros)
    joint = refinement_level(20, dmax_start=0.5, dmax_end=0.15, scale_floor=0.01, near=0.5, tau=inlier_mm)
    out = refine(mov, zeros, transforms(np.stack(starts), dev), matcher, joint)
    sc = score(mov, zeros, out.T_fixed_moving, matcher, joint)
    best = int(torch.argmax(sc.score))
    T_lower_upper = out.T_fixed_moving[best].cpu().numpy()
    return LowerFit(np.linalg.inv(T_lower_upper), float(sc.trimmed_rmse[best]), float(sc.fitness[best]), gap)
