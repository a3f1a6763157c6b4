"""Choosing among scored poses as batched tensor ops: the same choices as `selection.py`, in a
number of torch calls that does not grow with the number of pairs.

Items (pair, pose) are laid out in a (pairs, H) table, each row sorted best first (stable, so ties
keep item order exactly as `selection.py`'s numpy argsort does); greedy choices then take `keep`
rounds over the whole table. Time O(N log N + keep x pairs x H), memory O(pairs x H) for N items,
H the most items of any pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from occlutrace_compute.registration.selection import Choices


def rotation_angle_deg(T_a: torch.Tensor, T_b: torch.Tensor) -> torch.Tensor:
    """(...) angle in degrees between the rotations of poses (...,4,4) (trace of R_a^T R_b, clipped)."""
    trace = (T_a[..., :3, :3] * T_b[..., :3, :3]).sum((-1, -2))
    return torch.rad2deg(torch.acos(((trace - 1) / 2).clamp(-1.0, 1.0)))


def same_pose(
    T1_fixed_moving: torch.Tensor,
    T2_fixed_moving: torch.Tensor,
    centre_moving: torch.Tensor,
    rot_deg: float = 2.0,
    trans_mm: float = 1.0,
) -> torch.Tensor:
    """`hypotheses.same_pose` broadcast over leading dims: poses (...,4,4), centres (...,3)."""
    a, b = T1_fixed_moving, T2_fixed_moving
    shift = ((a[..., :3, :3] - b[..., :3, :3]) @ centre_moving[..., None])[..., 0] + a[..., :3, 3] - b[..., :3, 3]
    return (rotation_angle_deg(a, b) < rot_deg) & (shift.norm(dim=-1) < trans_mm)


@dataclass
class Table:
    """Items of each pair, best score first: item[p, r] is pair p's r-th best (valid[p, r])."""

    item: torch.Tensor  # (pairs, H) int64 item indices (0 where not valid)
    valid: torch.Tensor  # (pairs, H) bool
    count: torch.Tensor  # (pairs,) items per pair


def table(pair_of: torch.Tensor, scores: torch.Tensor, n_pairs: int) -> Table:
    """Lay items out per pair, best first; ties keep item order. One transfer (the widest pair)."""
    dev = pair_of.device
    by_score = torch.sort(-scores, stable=True).indices
    order = by_score[torch.sort(pair_of[by_score], stable=True).indices]
    count = torch.bincount(pair_of, minlength=n_pairs)
    start = torch.cumsum(count, 0) - count
    rank = torch.arange(order.numel(), device=dev) - start[pair_of[order]]
    width = max(1, int(count.max())) if n_pairs else 1
    item = torch.zeros(n_pairs, width, dtype=torch.int64, device=dev)
    valid = torch.zeros(n_pairs, width, dtype=torch.bool, device=dev)
    item[pair_of[order], rank] = order
    valid[pair_of[order], rank] = True
    return Table(item, valid, count)


def greedy_distinct(T_slots: torch.Tensor, alive: torch.Tensor, keep: int, centres: torch.Tensor) -> torch.Tensor:
    """(pairs, H) bool: per row, walking the slots in order, the first `keep` poses (pairs,H,4,4)
    not the same pose as one taken before (`alive`: slots that may be taken). `keep` rounds: each
    takes every row's first live slot and kills the slots that are the same pose as it."""
    alive = alive.clone()
    taken = torch.zeros_like(alive)
    rows = torch.arange(alive.shape[0], device=alive.device)
    for _ in range(keep):
        has = alive.any(1)
        first = alive.to(torch.int8).argmax(1)
        taken[rows, first] |= has
        same = same_pose(T_slots, T_slots[rows, first][:, None], centres[:, None])
        alive &= ~same & has[:, None]
        alive[rows, first] = False
    return taken


def top_distinct(
    pair_of: torch.Tensor, T_fixed_moving: torch.Tensor, scores: torch.Tensor, keep: int, centres: torch.Tensor
) -> torch.Tensor:
    """`selection.top_distinct`: the `keep` best distinct items per pair, grouped by pair, best first."""
    tab = table(pair_of, scores, centres.shape[0])
    taken = greedy_distinct(T_fixed_moving[tab.item], tab.valid, keep, centres)
    return tab.item[taken]


def top_per_pair(pair_of: torch.Tensor, scores: torch.Tensor, keep: int, n_pairs: int) -> torch.Tensor:
    """`selection.top_per_pair`: the `keep` best items of every pair, in item order."""
    tab = table(pair_of, scores, n_pairs)
    rank = torch.arange(tab.item.shape[1], device=pair_of.device)[None]
    return torch.sort(tab.item[tab.valid & (rank < keep)]).values


def pick_finalists(
    pair_of: torch.Tensor,
    ranked: torch.Tensor,
    T_fixed_moving: torch.Tensor,
    scores: torch.Tensor,
    n_pairs: int,
    margin: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`selection.pick_finalists` (`ranked` grouped by pair, best first): items for the fine level
    (every pair's winner, then the finalists within `margin` of it) and per pair the runner-up's
    score ratio and angle (deg) as (pairs,) tensors. Every pair needs an item."""
    dev = pair_of.device
    pairs = pair_of[ranked]
    count = torch.bincount(pairs, minlength=n_pairs)
    start = torch.cumsum(count, 0) - count
    rank = torch.arange(ranked.numel(), device=dev) - start[pairs]
    width = max(1, int(count.max()))
    item = torch.zeros(n_pairs, width, dtype=torch.int64, device=dev)
    valid = torch.zeros(n_pairs, width, dtype=torch.bool, device=dev)
    item[pairs, rank] = ranked
    valid[pairs, rank] = True
    s = scores[item]
    best = s[:, 0]
    rival = (count > 1) & (best > 0)
    second = item[:, min(1, width - 1)]
    ratio = torch.where(rival, (scores[second] / best).clamp_min(0.0), torch.zeros_like(best))
    angle = torch.where(
        rival, rotation_angle_deg(T_fixed_moving[item[:, 0]], T_fixed_moving[second]), torch.zeros_like(best)
    )
    slot = torch.arange(width, device=dev)[None]
    others = valid & (slot >= 1) & rival[:, None] & (s / best[:, None] > 1 - margin)
    return torch.cat([item[:, 0], item[others]]), ratio, angle


def fine_duels(
    pair_of: torch.Tensor,
    T_fixed_moving: torch.Tensor,
    scores: torch.Tensor,
    ratio: torch.Tensor,
    angle: torch.Tensor,
    centres: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`selection.fine_duels` without the in-place numpy update: (chosen item, ratio, angle) per
    pair; item p is pair p's mid winner."""
    n = centres.shape[0]
    dev = pair_of.device
    tab = table(pair_of, scores, n)
    duel = tab.count > 1
    best = tab.item[:, 0]
    chosen = torch.where(duel, best, torch.arange(n, device=dev))
    T_slots = T_fixed_moving[tab.item]
    slot = torch.arange(tab.item.shape[1], device=dev)[None]
    other = tab.valid & (slot >= 1) & ~same_pose(T_slots, T_slots[:, :1], centres[:, None])
    has_rival = other.any(1)
    rival = tab.item[torch.arange(n, device=dev), other.to(torch.int8).argmax(1)]
    s_best, s_rival = scores[best], scores[rival]
    r = torch.where(s_best > 0, (s_rival / s_best).clamp_min(0.0), torch.ones_like(s_best))
    a = rotation_angle_deg(T_fixed_moving[best], T_fixed_moving[rival])
    zero = torch.zeros_like(ratio)
    ratio = torch.where(duel, torch.where(has_rival, r, zero), ratio)
    angle = torch.where(duel, torch.where(has_rival, a, zero), angle)
    return chosen, ratio, angle


BATCHED = Choices(top_distinct, top_per_pair, pick_finalists, fine_duels)
