"""Robust point-to-plane ICP over a padded batch of (pair, hypothesis) items, in torch.

Every item carries its own 4x4 pose; all items advance together, so the same code serves one
pair on a CPU and hundreds of pairs x hypotheses on a GPU. Outliers (changed anatomy, the parts
outside the overlap) are handled twice: trimming by a correspondence distance that shrinks over
the iterations, and a Geman-McClure kernel whose scale follows the residuals' spread (MAD) down
to a floor, so changed regions end with ~zero weight instead of pulling the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from occlutrace_compute.registration.batch import Clouds, rotate, transform
from occlutrace_compute.registration.matcher import Matcher


@dataclass
class Level:
    """One pyramid level's schedule (distances in mm)."""

    iterations: int
    dmax_start: float  # correspondence distance cut at the first iteration
    dmax_end: float  # ... reached half-way, then held (convergence is only judged there)
    scale_floor: float  # smallest robust-kernel scale
    cos_normals: float  # min cosine between matched normals
    mad_factor: float = 2.5  # robust scale = factor x 1.4826 x median |residual| (not under the floor)


@dataclass
class IcpOutcome:
    T: torch.Tensor  # (B,4,4) float64, moving -> fixed
    iterations: torch.Tensor  # (B,) iterations until convergence (or all)
    converged: torch.Tensor  # (B,) bool
    hessian: torch.Tensor  # (B,6,6) last normal-equation matrix (centred, for degeneracy checks)


def _skew_exp(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (B,3) rotation vectors -> (B,3,3) rotation matrices."""
    theta = w.norm(dim=1, keepdim=True).clamp_min(1e-15)
    k = w / theta
    K = torch.zeros(w.shape[0], 3, 3, dtype=w.dtype, device=w.device)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    s = torch.sin(theta)[..., None]
    c = torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    return eye + s * K + (1 - c) * (K @ K)


def _masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.nanmedian(torch.where(mask, x, torch.full_like(x, float("nan"))), dim=1).values.nan_to_num(0.0)


@dataclass
class Matches:
    residual: torch.Tensor  # (B,P) signed point-to-plane residual
    dist2: torch.Tensor  # (B,P) squared distance to the nearest fixed sample
    compatible: torch.Tensor  # (B,P) real row with normals agreeing
    moved: torch.Tensor  # (B,P,3) moving samples in fixed frame
    target_normal: torch.Tensor  # (B,P,3)
    tangential2: torch.Tensor  # (B,P) squared offset to the match along its tangent plane


def match(moving: Clouds, fixed: Clouds, pair_of: torch.Tensor, T: torch.Tensor, matcher: Matcher, cos_normals: float,
          max_dist: float, track: bool = False) -> Matches:
    """Nearest fixed sample of every moved sample (none beyond `max_dist`) and its residuals."""
    moved = transform(moving.points, T)
    d2, idx = matcher.nearest(moved, moving.lengths, pair_of, max_dist, track)
    q = fixed.points[pair_of[:, None], idx]
    n = fixed.normals[pair_of[:, None], idx]
    diff = moved - q
    n_moved = rotate(moving.normals, T)
    cos = (n_moved * n).sum(-1)
    n = n + n_moved
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    r = (diff * n).sum(-1)
    compatible = moving.mask & (cos > cos_normals) & torch.isfinite(d2)
    d2 = torch.where(torch.isfinite(d2), d2, torch.full_like(d2, 1e12))
    return Matches(r, d2, compatible, moved, n, (d2 - r * r).clamp_min(0.0))


def refine(moving: Clouds, fixed: Clouds, pair_of: torch.Tensor, T0: torch.Tensor, matcher: Matcher, level: Level,
           converge_rot: float = 1e-6, converge_trans: float = 1e-5) -> IcpOutcome:
    """Run one level's iterations on every item; items stop moving once converged."""
    T = T0.clone()
    b = T.shape[0]
    dev, dt = T.device, T.dtype
    iterations = torch.full((b,), level.iterations, dtype=torch.int64, device=dev)
    converged = torch.zeros(b, dtype=torch.bool, device=dev)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    hessian = torch.zeros(b, 6, 6, dtype=dt, device=dev)
    settle = max(1, level.iterations // 2)
    for it in range(level.iterations):
        frac = min(1.0, it / settle)
        dmax = level.dmax_start * (level.dmax_end / level.dmax_start) ** frac
        m = match(moving, fixed, pair_of, T, matcher, level.cos_normals, dmax, track=True)
        valid = m.compatible & (m.dist2 < dmax * dmax)
        absr = m.residual.abs()
        mad_scale = level.mad_factor * 1.4826 * _masked_median(absr, valid)
        scale = torch.minimum(torch.clamp(mad_scale, min=level.scale_floor), torch.tensor(dmax / 2, dtype=dt, device=dev))
        s2 = (scale * scale)[:, None]
        w = valid * (s2 / (s2 + m.residual**2)) ** 2
        wsum = w.sum(1).clamp_min(1e-12)
        centre = (w[..., None] * m.moved).sum(1) / wsum[:, None]
        pc = m.moved - centre[:, None]
        J = torch.cat([torch.cross(pc, m.target_normal, dim=-1), m.target_normal], dim=-1)
        Jw = J * w[..., None]
        A = Jw.transpose(1, 2) @ J
        g = (Jw * m.residual[..., None]).sum(1)
        reg = 1e-9 * A.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-12)
        A_reg = A + reg[:, None, None] * torch.eye(6, dtype=dt, device=dev)
        x = -torch.linalg.solve(A_reg, g[..., None])[..., 0]
        ok = (valid.sum(1) >= 6) & active & torch.isfinite(x).all(1)
        x = torch.where(ok[:, None], x, torch.zeros_like(x))
        R = _skew_exp(x[:, :3])
        step = torch.eye(4, dtype=dt, device=dev).repeat(b, 1, 1)
        step[:, :3, :3] = R
        step[:, :3, 3] = centre - (R @ centre[..., None])[..., 0] + x[:, 3:]
        T = step @ T
        hessian = torch.where(active[:, None, None], A, hessian)
        if it >= settle:
            small = (x[:, :3].norm(dim=1) < converge_rot) & (x[:, 3:].norm(dim=1) < converge_trans)
            newly = small & active
            iterations = torch.where(newly, torch.full_like(iterations, it + 1), iterations)
            converged |= newly
            active &= ~newly
            if not bool(active.any()):
                break
    return IcpOutcome(T, iterations, converged, hessian)


@dataclass
class Scores:
    score: torch.Tensor  # (B,) MSAC-style: mean over moving samples of max(0, 1 - r^2/tau^2)
    fitness: torch.Tensor  # (B,) share of moving samples with |r| < tau (compatible, near)
    trimmed_rmse: torch.Tensor  # (B,) RMS residual over those inliers
    matches: Matches


def score(moving: Clouds, fixed: Clouds, pair_of: torch.Tensor, T: torch.Tensor, matcher: Matcher, tau: float,
          cos_normals: float, near: float, track: bool = False) -> Scores:
    """Rank poses: rewards overlap and penalises residual at once, so a mirror-like pose that
    lies near the surface but off by a fraction of a millimetre loses to the true one.
    `track`: the poses come from `refine` on the same batch (its search candidates are reused)."""
    m = match(moving, fixed, pair_of, T, matcher, cos_normals, near, track)
    valid = m.compatible & (m.dist2 < near * near)
    r2 = m.residual**2
    inl = valid & (r2 < tau * tau)
    n = moving.lengths.to(T.dtype)
    s = (valid * (1 - r2 / (tau * tau)).clamp_min(0)).sum(1) / n
    cnt = inl.sum(1)
    rmse = torch.sqrt((r2 * inl).sum(1) / cnt.clamp_min(1))
    return Scores(s, cnt / n, rmse, m)
