"""Choosing among scored poses: the best distinct ones per pair, finalists, fine-level duels.

`PER_PAIR` bundles these functions as the `Choices` the shared stages take (engine.coarse_search,
engine.prescreen_items, finals.mid_and_fine); `batched.select.BATCHED` bundles the same choices
made as tensor ops over the whole batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from occlutrace_compute.registration import hypotheses as hyp
from occlutrace_compute.registration.geometry import rotation_angle_deg


def top_per_pair(pair_of: torch.Tensor, scores: torch.Tensor, keep: int, n_pairs: int = 0) -> torch.Tensor:
    """Indices of the `keep` best-scoring items of every pair. `n_pairs`: `Choices.top_per_pair`'s
    argument (the batched version sizes its table by it); the pairs present are found here."""
    pairs = pair_of.cpu().numpy()
    s = scores.cpu().numpy()
    chosen = [
        items[np.argsort(-s[items], kind="stable")[:keep]]
        for items in (np.nonzero(pairs == p)[0] for p in np.unique(pairs))
    ]
    return torch.from_numpy(np.sort(np.concatenate(chosen))).to(pair_of.device)


def top_distinct(
    pair_of: torch.Tensor, T_fixed_moving: torch.Tensor, scores: torch.Tensor, keep: int, centres: np.ndarray
) -> torch.Tensor:
    """Indices of the `keep` best-scoring items per pair that are distinct poses, best first
    (`centres`: (n_pairs,3) moving centroids, in the moving frame)."""
    pairs = pair_of.cpu().numpy()
    s = scores.cpu().numpy()
    poses = T_fixed_moving.cpu().numpy()
    chosen: list[int] = []
    for p in np.unique(pairs):
        items = np.nonzero(pairs == p)[0]
        mine: list[int] = []
        for i in items[np.argsort(-s[items], kind="stable")]:
            if len(mine) >= keep:
                break
            if all(not hyp.same_pose(poses[i], poses[j], centres[p]) for j in mine):
                mine.append(int(i))
        chosen.extend(mine)
    return torch.tensor(chosen, dtype=torch.int64, device=pair_of.device)


def pick_finalists(
    pair_of: torch.Tensor,
    ranked: torch.Tensor,
    T_fixed_moving: torch.Tensor,
    scores: torch.Tensor,
    n_pairs: int,
    margin: float,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Items going to the fine level (each pair's winner, then its finalists scoring within
    `margin` of it), and per pair the runner-up's mid score ratio and rotation difference (deg)."""
    pairs = pair_of.cpu().numpy()
    s = scores.cpu().numpy()
    poses = T_fixed_moving.cpu().numpy()
    order = ranked.cpu().numpy()  # grouped by pair, best first within each pair
    ratio = np.zeros(n_pairs)
    angle = np.zeros(n_pairs)
    winners, others = [], []
    for p in range(n_pairs):
        items = [int(i) for i in order[pairs[order] == p]]
        winners.append(items[0])
        if len(items) > 1 and s[items[0]] > 0:
            ratio[p] = max(0.0, s[items[1]] / s[items[0]])
            angle[p] = rotation_angle_deg(poses[items[0]], poses[items[1]])
            others += [i for i in items[1:] if s[i] / s[items[0]] > 1 - margin]
    return torch.tensor(winners + others, dtype=torch.int64, device=pair_of.device), ratio, angle


def fine_duels(
    pair_of: torch.Tensor,
    T_fixed_moving: torch.Tensor,
    scores: torch.Tensor,
    ratio: np.ndarray,
    angle: np.ndarray,
    centres: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine-level item chosen per pair: the best fine score among the pair's items (item p is
    pair p's mid winner). Where several items competed, their fine scores replace the runner-up
    ratio and angle (in place); one that converged onto the winner's pose is no rival. Returns
    (chosen, ratio, angle) as `Choices.fine_duels` does: ratio and angle are the arrays given."""
    n = len(centres)
    pairs = pair_of.cpu().numpy()
    s = scores.cpu().numpy()
    poses = T_fixed_moving.cpu().numpy()
    chosen = np.arange(n)
    for p in np.unique(pairs[n:]):
        items = np.nonzero(pairs == p)[0]
        items = items[np.argsort(-s[items], kind="stable")]
        best = chosen[p] = int(items[0])
        rival = next((int(j) for j in items[1:] if not hyp.same_pose(poses[best], poses[j], centres[p])), None)
        if rival is None:
            ratio[p], angle[p] = 0.0, 0.0
        else:
            ratio[p] = max(0.0, s[rival] / s[best]) if s[best] > 0 else 1.0
            angle[p] = rotation_angle_deg(poses[best], poses[rival])
    return chosen, ratio, angle


@dataclass(frozen=True)
class Choices:
    """The choices a stage makes among scored items (pair_of (N,), poses T_fixed_moving (N,4,4),
    scores (N,)), one implementation for each path. `centres` (n_pairs,3): moving centroids, a numpy
    array (`PER_PAIR`) or a tensor on the items' device (`batched.select.BATCHED`); ratio and angle
    come back in the same kind."""

    # (pair_of, T_fixed_moving, scores, keep, centres) -> items grouped by pair, best first
    top_distinct: Callable[..., torch.Tensor]
    # (pair_of, scores, keep, n_pairs) -> the keep best items of every pair, in item order
    top_per_pair: Callable[..., torch.Tensor]
    # (pair_of, ranked, T_fixed_moving, scores, n_pairs, margin) -> (fine items, ratio, angle)
    pick_finalists: Callable[..., tuple[torch.Tensor, Any, Any]]
    # (pair_of, T_fixed_moving, scores, ratio, angle, centres) -> (chosen item per pair, ratio, angle)
    fine_duels: Callable[..., tuple[Any, Any, Any]]


PER_PAIR = Choices(top_distinct, top_per_pair, pick_finalists, fine_duels)
