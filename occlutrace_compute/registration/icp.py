"""Robust point-to-plane ICP over a padded batch of (pair, hypothesis) items, in torch.

Every item carries its own 4x4 pose; all items advance together, so the same code serves one
pair on a CPU and hundreds of pairs x hypotheses on a GPU. Outliers (changed anatomy, the parts
outside the overlap) are handled twice: trimming by a correspondence distance that shrinks over
the iterations, and a Geman-McClure kernel whose scale follows the residuals' spread (MAD) down
to a floor, so changed regions end with ~zero weight instead of pulling the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.matcher import Matcher


@dataclass(frozen=True)
class Level:
    """One pyramid level: how ICP runs there and how its poses are matched and scored
    (distances in mm). Built by `level`, which takes the normal angle in degrees."""

    iterations: int  # ICP iterations (0: the level only matches and scores)
    dmax_start: float  # correspondence distance cut at the first iteration
    dmax_end: float  # ... reached half-way, then held (convergence is only judged there)
    scale_floor: float  # smallest robust-kernel scale
    mad_factor: float  # robust scale = factor x 1.4826 x median |residual| (not under the floor)
    converge_rot_rad: float  # an item whose step (after the first half) is under both has converged
    converge_trans_mm: float
    cos_normals: float  # min cosine between matched normals
    tau: float  # score: |residual| under which a correspondence counts (MSAC band, inliers)
    near: float  # match and score: no correspondence farther than this


def level(
    *,
    near: float,
    tau: float | None = None,
    iterations: int = 0,
    dmax_start: float = math.nan,
    dmax_end: float = math.nan,
    scale_floor: float = math.nan,
    mad_factor: float = 2.5,
    converge_rot_rad: float = 1e-6,
    converge_trans_mm: float = 1e-5,
    normal_max_angle_deg: float = 60.0,
) -> Level:
    """A `Level`, every value named. A level that only matches and scores (no `iterations`)
    needs `near` (and `tau` to score, default `near`); an ICP level also its correspondence cuts
    and kernel floor. Correspondences whose normals differ by more than `normal_max_angle_deg`
    are dropped."""
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if iterations and not (dmax_start > 0 and dmax_end > 0 and scale_floor > 0):
        raise ValueError(
            "an ICP level needs positive dmax_start, dmax_end and scale_floor, got "
            f"{dmax_start}, {dmax_end}, {scale_floor}"
        )
    return Level(
        iterations,
        dmax_start,
        dmax_end,
        scale_floor,
        mad_factor,
        converge_rot_rad,
        converge_trans_mm,
        math.cos(math.radians(normal_max_angle_deg)),
        near if tau is None else tau,
        near,
    )


@dataclass
class IcpOutcome:
    T_fixed_moving: torch.Tensor  # (B,4,4) float64: x_fixed = T_fixed_moving @ [x_moving, 1]
    iterations: torch.Tensor  # (B,) iterations until convergence (or all)
    converged: torch.Tensor  # (B,) bool
    hessian: torch.Tensor  # (B,6,6) last normal-equation matrix (centred, for degeneracy checks)


def _skew_exp(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (B,3) rotation vectors -> (B,3,3) rotation matrices. The cross-product matrix
    K of the unit axis is built in one op (column j = axis x e_j) rather than six scattered
    writes: on a CPU each small-tensor op costs microseconds whatever its size, and this runs
    every ICP iteration (~0.1 ms saved per call). Time and memory O(B)."""
    theta = torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(1e-15)
    k = w / theta
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(w.shape[0], 3, 3)
    K = torch.linalg.cross(k[:, :, None].expand(-1, 3, 3), eye, dim=1)
    s = torch.sin(theta)[..., None]
    c = torch.cos(theta)[..., None]
    return eye + s * K + (1 - c) * (K @ K)


def _masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.nanmedian(torch.where(mask, x, torch.full_like(x, float("nan"))), dim=1).values.nan_to_num(0.0)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of component-major (B,3,P) vectors -> (B,P): a product and a sum
    over dim 1 (2 ops; picking the components out one by one took 8, 3x the time at these sizes)."""
    return (a * b).sum(1)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [
            a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
            a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
            a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0],
        ],
        1,
    )


@dataclass
class _Packed:
    """A batch in component-major layout: moving samples (B,3,P), fixed samples and normals
    flattened to (6, pairs*R) for one gather. torch's products and sums over a length-3
    trailing axis cost several times the same arithmetic over dim 1 (figures: bench/RESULTS.md, "Measurements behind choices in the code"),
    and this arithmetic is most of an iteration."""

    points: torch.Tensor
    normals: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    fixed: torch.Tensor
    stride: int  # R, the padded length of one fixed cloud

    @classmethod
    def of(cls, moving: Clouds, fixed: Clouds) -> _Packed:
        b, r, _ = fixed.points.shape
        flat = torch.cat([fixed.points, fixed.normals], -1).reshape(b * r, 6).T.contiguous()
        return cls(
            moving.points.transpose(1, 2).contiguous(),
            moving.normals.transpose(1, 2).contiguous(),
            moving.lengths,
            moving.mask,
            flat,
            r,
        )


@dataclass
class Matches:
    residual: torch.Tensor  # (B,P) signed point-to-plane residual
    dist2: torch.Tensor  # (B,P) squared distance to the nearest fixed sample
    compatible: torch.Tensor  # (B,P) real row with normals agreeing
    moved_c: torch.Tensor  # (B,3,P) moving samples in fixed frame
    normal_c: torch.Tensor  # (B,3,P) plane normal of each correspondence
    tangential2: torch.Tensor  # (B,P) squared offset to the match along its tangent plane

    @property
    def moved(self) -> torch.Tensor:
        """(B,P,3) view of `moved_c`."""
        return self.moved_c.transpose(1, 2)


def match(
    moving: Clouds,
    pair_of: torch.Tensor,
    T_fixed_moving: torch.Tensor,
    matcher: Matcher,
    level: Level,
    track: bool = False,
) -> Matches:
    """Nearest sample of the item's fixed cloud (the matcher's) for every moving sample moved
    by its item's `T_fixed_moving` (B,4,4), none beyond `level.near`, and its residuals."""
    return _match(
        _Packed.of(moving, matcher.fixed), pair_of, T_fixed_moving, matcher, level.cos_normals, level.near, track
    )


def _match(
    pk: _Packed,
    pair_of: torch.Tensor,
    T_fixed_moving: torch.Tensor,
    matcher: Matcher,
    cos_normals: float,
    max_dist: float,
    track: bool,
) -> Matches:
    R, t = T_fixed_moving[:, :3, :3], T_fixed_moving[:, :3, 3]
    moved = torch.baddbmm(t[:, :, None], R, pk.points)
    d2, idx = matcher.nearest(moved.transpose(1, 2), pk.lengths, pair_of, max_dist, track)
    b, p = idx.shape
    g = pk.fixed.index_select(1, (pair_of[:, None] * pk.stride + idx).reshape(-1)).view(6, b, p).transpose(0, 1)
    diff = moved - g[:, :3]
    n_fix = g[:, 3:]
    n_moved = R @ pk.normals
    cos = _dot(n_moved, n_fix)
    n = n_fix + n_moved
    n = n / torch.sqrt(_dot(n, n)).clamp_min(1e-12)[:, None]
    r = _dot(diff, n)
    finite = torch.isfinite(d2)
    compatible = pk.mask & (cos > cos_normals) & finite
    d2 = torch.where(finite, d2, torch.full_like(d2, 1e12))
    return Matches(r, d2, compatible, moved, n, (d2 - r * r).clamp_min(0.0))


def refine(
    moving: Clouds, pair_of: torch.Tensor, init_T_fixed_moving: torch.Tensor, matcher: Matcher, level: Level
) -> IcpOutcome:
    """Run one level's iterations on every item from its `init_T_fixed_moving` (B,4,4), against
    its pair's fixed cloud (the matcher's); items stop moving once converged. Each step is found
    in the fixed frame and applied on the left.

    Worst case: exactly `level.iterations` rounds (the loop's only bound; convergence can only
    end it sooner), each one nearest-neighbour query of the B x P rows (at most B x P tree
    searches of 3 neighbours, fewer from cached candidates) plus O(B x P) arithmetic and a 6x6
    solve per item; memory O(B x P + pairs x R)."""
    pk = _Packed.of(moving, matcher.fixed)
    T_fixed_moving = init_T_fixed_moving.clone()
    b = T_fixed_moving.shape[0]
    dev, dt = T_fixed_moving.device, T_fixed_moving.dtype
    iterations = torch.full((b,), level.iterations, dtype=torch.int64, device=dev)
    converged = torch.zeros(b, dtype=torch.bool, device=dev)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    hessian = torch.zeros(b, 6, 6, dtype=dt, device=dev)
    eye6 = torch.eye(6, dtype=dt, device=dev)
    settle = max(1, level.iterations // 2)
    for it in range(level.iterations):
        frac = min(1.0, it / settle)
        dmax = level.dmax_start * (level.dmax_end / level.dmax_start) ** frac
        m = _match(pk, pair_of, T_fixed_moving, matcher, level.cos_normals, dmax, track=True)
        valid = m.compatible & (m.dist2 < dmax * dmax)
        mad_scale = level.mad_factor * 1.4826 * _masked_median(m.residual.abs(), valid)
        scale = torch.clamp(mad_scale, min=level.scale_floor, max=dmax / 2)
        s2 = (scale * scale)[:, None]
        w = valid * (s2 / (s2 + m.residual**2)) ** 2
        wsum = w.sum(1).clamp_min(1e-12)
        centre = torch.bmm(m.moved_c, w[:, :, None])[..., 0] / wsum[:, None]
        pc = m.moved_c - centre[:, :, None]
        # The normal equations and their right-hand side from ONE weighted product: rows of
        # [J; r] (B,7,P) times their weighted transpose gives [[A, g], [g', r'Wr]] (B,7,7).
        Jr = torch.cat([_cross(pc, m.normal_c), m.normal_c, m.residual[:, None]], 1)
        M = (Jr * w[:, None]) @ Jr.transpose(1, 2)
        A, g = M[:, :6, :6], M[:, :6, 6]
        reg = 1e-9 * A.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-12)
        x = -torch.linalg.solve(A + reg[:, None, None] * eye6, g[..., None])[..., 0]
        ok = (valid.sum(1) >= 6) & active & torch.isfinite(x).all(1)
        x = torch.where(ok[:, None], x, torch.zeros_like(x))
        R = _skew_exp(x[:, :3])
        # The step [R | centre - R centre + x_t] (in the fixed frame, about `centre`) applied on
        # the left: the last row of T_fixed_moving is (0,0,0,1), so only its top rows change.
        t = centre - (R @ centre[..., None])[..., 0] + x[:, 3:]
        top = R @ T_fixed_moving[:, :3] + t[:, :, None] * T_fixed_moving[:, 3:]
        T_fixed_moving = torch.cat([top, T_fixed_moving[:, 3:]], 1)
        hessian = torch.where(active[:, None, None], A, hessian)
        if it >= settle:
            small = (x[:, :3].norm(dim=1) < level.converge_rot_rad) & (x[:, 3:].norm(dim=1) < level.converge_trans_mm)
            newly = small & active
            iterations = torch.where(newly, torch.full_like(iterations, it + 1), iterations)
            converged |= newly
            active &= ~newly
            if not bool(active.any()):
                break
    return IcpOutcome(T_fixed_moving, iterations, converged, hessian)


@dataclass
class Scores:
    score: torch.Tensor  # (B,) MSAC-style: mean over moving samples of max(0, 1 - r^2/tau^2)
    fitness: torch.Tensor  # (B,) share of moving samples with |r| < tau (compatible, near)
    trimmed_rmse: torch.Tensor  # (B,) RMS residual over those inliers
    matches: Matches


def score(
    moving: Clouds,
    pair_of: torch.Tensor,
    T_fixed_moving: torch.Tensor,
    matcher: Matcher,
    level: Level,
    track: bool = False,
) -> Scores:
    """Rank poses `T_fixed_moving` (B,4,4) by `level.tau` and `level.near`: rewards overlap and
    penalises residual at once, so a mirror-like pose that lies near the surface but off by a
    fraction of a millimetre loses to the true one. `track`: the poses come from `refine` on the
    same batch (its search candidates are reused)."""
    tau, near = level.tau, level.near
    m = match(moving, pair_of, T_fixed_moving, matcher, level, track)
    valid = m.compatible & (m.dist2 < near * near)
    r2 = m.residual**2
    inl = valid & (r2 < tau * tau)
    n = moving.lengths.to(T_fixed_moving.dtype)
    s = (valid * (1 - r2 / (tau * tau)).clamp_min(0)).sum(1) / n
    cnt = inl.sum(1)
    rmse = torch.sqrt((r2 * inl).sum(1) / cnt.clamp_min(1))
    return Scores(s, cnt / n, rmse, m)
