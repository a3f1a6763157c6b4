"""FPFH + RANSAC starting poses for every pair at once: draws, consistency, scoring, the greedy
choice of distinct poses and their refits as tensor ops over the batch (`hypotheses.py` does the
draws and the choice per pair).

Draws: one uniform stream from the seed, shared by every pair and scaled to each pair's count of
usable rows, so a pair draws the same triplets alone or inside any batch (as before, though not
the same triplets as `hypotheses.ransac_hypotheses`). Refits: every proposal's inlier set solved
at once, one weighted Kabsch per round over (pairs, keep).

Time O(B x (trials + E x U + keep x E)), memory O(B x (trials + keep x U)) for E <= `max_eval`
scored triplets and U usable rows per pair.
"""

from __future__ import annotations

import torch

from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.batched.select import greedy_distinct
from occlutrace_compute.registration.hypotheses import feature_matches, rigid_from_covariance, triplet_poses


def mutual_nearest(
    feat_a: torch.Tensor, feat_b: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor, budget: int = 1 << 26
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest descriptor in b (B,R,F) of every row of a (B,P,F) and in a of every row of b, by
    |y|^2 - 2 x.y from batched matrix products (the numpy path's formula; padded rows get 0).

    Memory: one (b', P, R) float32 block, reused by every chunk, b' pairs chosen so the block has
    at most `budget` entries (256 MB of float32; two chunks at batch 128 of 1k-point coarse clouds:
    the call count grows with the batch only where memory requires it)."""
    fa, fb = feat_a.float(), feat_b.float()
    inf = torch.tensor(float("inf"), device=fa.device)
    aa = torch.where(mask_a, (fa * fa).sum(-1), inf)  # padded rows never nearest
    bb = torch.where(mask_b, (fb * fb).sum(-1), inf)
    b, p, r = fa.shape[0], fa.shape[1], fb.shape[1]
    step = min(b, max(1, budget // max(1, p * r)))
    # One block buffer for every chunk and both directions: a fresh block per product would be
    # allocated and freed each time (glibc maps blocks over 32 MB and unmaps them on free: ~10 ms
    # of host time per 128 MB on CPU).
    block = torch.empty(step * p * r, dtype=fa.dtype, device=fa.device)
    fwd_parts, back_parts = [], []
    for s in range(0, b, step):
        e = min(b, s + step)
        out = block[: (e - s) * p * r].view(e - s, p, r)
        fwd_parts.append(torch.baddbmm(bb[s:e, None, :], fa[s:e], fb[s:e].transpose(1, 2), alpha=-2, out=out).argmin(2))
        out = block[: (e - s) * p * r].view(e - s, r, p)
        back_parts.append(
            torch.baddbmm(aa[s:e, None, :], fb[s:e], fa[s:e].transpose(1, 2), alpha=-2, out=out).argmin(2)
        )
    fwd, back = torch.cat(fwd_parts), torch.cat(back_parts)
    return torch.where(mask_a, fwd, 0), torch.where(mask_b, back, 0)


def draw(use: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(B,n) row indices drawn uniformly with replacement among each row's True entries of `use`
    (B,P) (0 where a row has none)."""
    dev = use.device
    u = torch.rand(n, generator=torch.Generator(device=dev).manual_seed(seed), device=dev, dtype=torch.float64)
    count = use.sum(1)
    k = torch.minimum((u[None] * count[:, None]).long(), (count - 1).clamp_min(0)[:, None])
    rows = torch.searchsorted(use.long().cumsum(1), k + 1)
    return torch.where(count[:, None] > 0, rows.clamp_max(use.shape[1] - 1), 0)


def weighted_kabsch(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Rigid T_dst_src (...,4,4) minimising sum w |R src + t - dst|^2 over rows (...,N,3)."""
    wsum = w.sum(-1, keepdim=True).clamp_min(1e-300)[..., None]
    cs = (src * w[..., None]).sum(-2, keepdim=True) / wsum
    cd = (dst * w[..., None]).sum(-2, keepdim=True) / wsum
    return rigid_from_covariance(((src - cs) * w[..., None]).transpose(-1, -2) @ (dst - cd), cs, cd)


def ransac_hypotheses(
    moving: Clouds,
    fixed: Clouds,
    feat_m: torch.Tensor,
    feat_f: torch.Tensor,
    trials: int,
    keep: int,
    inlier_mm: float,
    min_edge_mm: float,
    seed: int,
    max_eval: int = 500,
    normal_tol: float = 0.35,
    refit_rounds: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair up to `keep` distinct poses T_fixed_moving: (B,keep,4,4) and which are real (B,keep),
    in the order `hypotheses.ransac_hypotheses` would list them."""
    b = moving.points.shape[0]
    dev, dt = moving.points.device, moving.points.dtype
    none = torch.zeros(b, 0, 4, 4, dtype=dt, device=dev), torch.zeros(b, 0, dtype=torch.bool, device=dev)
    if keep == 0:
        return none
    fwd, back = mutual_nearest(feat_m, feat_f, moving.mask, fixed.mask)
    bi = torch.arange(b, device=dev)[:, None]
    use, src_all, dst_all = feature_matches(moving, fixed, feat_m, fwd, back)
    pick = draw(use, 3 * trials, seed).view(b, trials, 3)
    triplets = triplet_poses(moving, fixed, fwd, dst_all, use, pick, inlier_mm, min_edge_mm, normal_tol, max_eval)
    if triplets is None:
        return none
    T_fixed_moving, counts = triplets  # (B,E,4,4), (B,E)
    by_count = torch.sort(-counts, dim=1, stable=True).indices  # best first, ties in triplet order
    T_sorted = T_fixed_moving[bi, by_count]
    centre = (src_all * moving.mask[..., None]).sum(1) / moving.lengths.clamp_min(1)[:, None].to(dt)
    proposed = greedy_distinct(T_sorted, counts[bi, by_count] >= 3, keep, centre)
    # the proposals, in order, packed to the left of (B, keep)
    slots = torch.argsort((~proposed).to(torch.int8), dim=1, stable=True)[:, :keep]
    real = proposed[bi, slots]
    T_prop = T_sorted[bi, slots]
    # refits: every proposal on all the correspondences it brings within inlier_mm, rounds at once
    src, dst = src_all[:, None], dst_all[:, None]  # (B,1,P,3)
    width = slots.shape[1]  # keep, or fewer when fewer triplets were scored
    active = real.clone()
    for _ in range(refit_rounds):
        moved = src @ T_prop[..., :3, :3].transpose(-1, -2) + T_prop[..., None, :3, 3]
        close = use[:, None] & ((moved - dst).norm(dim=-1) < inlier_mm)  # (B,width,P)
        active = active & (close.sum(-1) >= 3)
        fitted = weighted_kabsch(src.expand(-1, width, -1, -1), dst.expand(-1, width, -1, -1), close.to(dt))
        T_prop = torch.where(active[..., None, None], fitted, T_prop)
    chosen = greedy_distinct(T_prop, real, width, centre)
    slots = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)
    return T_prop[bi, slots], chosen[bi, slots]
