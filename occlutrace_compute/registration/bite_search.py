"""Global search for one bite on one arch: anatomical starting poses, a one-shot pre-screen,
then two rounds of batched trimmed point-to-plane ICP (the pair engine's building blocks).

Scores here cannot pick the answer alone: the bite's OTHER band (the antagonist's teeth) can sit
on this arch's buccal surface almost as well as the right band. So the search returns a few
distinct candidates with per-point residual weights, and `bite_refine.choose_pair` decides on
both arches at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from occlutrace_compute.registration.batch import Clouds, pack
from occlutrace_compute.registration.bite_frames import Anchors, BiteFrame, anchor_poses
from occlutrace_compute.registration.icp import Level, level, refine, score
from occlutrace_compute.registration.levels import Cloud, Samples, subset
from occlutrace_compute.registration.matcher import Matcher


@dataclass(frozen=True)
class SearchOptions:
    """Sizes in mm. Defaults measured on synthetic bite cases (see bench/bench_bite.py)."""

    coarse_voxel: float = 1.0
    anchor_spacing: float = 2.0
    tilts_deg: tuple[float, ...] = (-15.0, 0.0, 15.0)
    keypoint_offsets_mm: tuple[float, ...] = (-5.0, 5.0)  # whole bite: one keypoint per band
    band_min_points: int = 30  # coarse samples a band needs for its own search
    patch_radius: float = 6.0  # bite patch around a keypoint scoring its starts
    prescreen_tau: float = 1.0
    prescreen_points: int = 60  # 120 before issue 12: same answers on the bench seeds, half the pre-screen
    keep_prescreen: int = 400
    round1_points: int = 150
    keep_round1: int = 24
    round2_points: int = 800
    candidates: int = 6


@dataclass
class Candidates:
    """Distinct bite -> arch poses, best first, with the MSAC weight of every probe point."""

    T_arch_bite: np.ndarray  # (k,4,4): x_arch = T_arch_bite @ [x_bite, 1]
    score: np.ndarray  # (k,)
    weights: np.ndarray  # (k, n_probe) in [0,1]: how well each probe point lies on the arch

    def extended(self, other: Candidates) -> Candidates:
        return Candidates(
            np.concatenate([self.T_arch_bite, other.T_arch_bite]),
            np.concatenate([self.score, other.score]),
            np.concatenate([self.weights, other.weights]),
        )


class Workers:
    """Threads that share out a search's starts: every start is scored and refined on its own
    (the batch is only vectorisation), so cutting the starts into chunks and running each chunk
    with its own matcher on its own thread gives the same poses and scores as one batch.

    CPU only (one thread elsewhere: a GPU batch is already parallel). Inside a worker the
    kd-tree's OpenMP runs on one thread (N threads x N OpenMP threads would oversubscribe the
    cores); torch and the BLAS are capped by the caller (`cpu_threads`)."""

    def __init__(self, threads: int, dev: torch.device) -> None:
        self.threads = max(1, threads) if dev.type == "cpu" else 1
        self.dev = dev
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bite") if self.threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, fn: Callable[..., object], items: Sequence) -> list:
        """fn(item) for every item, in order; on the pool when there is one (one OpenMP thread
        inside each worker)."""
        if self._pool is None or len(items) < 2:
            return [fn(x) for x in items]

        def one(x: object) -> object:
            with threadpool_limits(limits=1, user_api="openmp"):
                return fn(x)

        return list(self._pool.map(one, items))

    def chunks(self, n_items: int, row_cost: int, min_rows: int = 20000) -> list[slice]:
        """Consecutive slices of n_items starts, one per thread, each worth at least `min_rows`
        matched rows (`row_cost` rows a start): a small batch stays whole (threads cost more)."""
        k = int(min(self.threads, max(1, n_items * row_cost // min_rows), max(1, n_items)))
        edges = np.linspace(0, n_items, k + 1).round().astype(int)
        return [slice(int(a), int(b)) for a, b in pairwise(edges)]


SERIAL = Workers(1, torch.device("cpu"))


class _Untracked(Matcher):
    """A matcher that searches the tree afresh every iteration. Round 1's starts move by
    millimetres per iteration, so ~70 % of its rows fail the candidate cache's test and are
    searched again for 3 neighbours: the cache then costs more than it saves (same answers)."""

    def nearest(
        self,
        query: torch.Tensor,
        lengths: torch.Tensor,
        pair_of: torch.Tensor,
        max_dist: float = float("inf"),
        track: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return super().nearest(query, lengths, pair_of, max_dist, False)


def transforms(T: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(T, dtype=np.float64)).to(dev)


def repeat_cloud(cloud: Cloud, b: int, dev: torch.device) -> Clouds:
    return pack([cloud], dev).index(torch.zeros(b, dtype=torch.int64, device=dev))


def _scored(tau: float) -> Level:
    """Scores by the band `tau`, matching within 2 tau."""
    return level(tau=tau, near=2 * tau)


def _levels(opt: SearchOptions) -> tuple[Level, Level, Level]:
    """The search's rounds as data: the one-shot pre-screen, then two ICP rounds (a coarse
    subset, then a mid one with tighter cuts and kernel floor)."""
    cv = opt.coarse_voxel
    prescreen = level(tau=opt.prescreen_tau, near=1.5 * opt.prescreen_tau)
    round1 = level(
        iterations=10,
        dmax_start=4.0 * cv,
        dmax_end=1.5 * cv,
        scale_floor=0.3 * cv,
        converge_rot_rad=1e-5,
        converge_trans_mm=1e-4,
        tau=0.5 * cv,
        near=2 * (0.5 * cv),
    )
    round2 = level(
        iterations=15,
        dmax_start=2.0 * cv,
        dmax_end=0.6 * cv,
        scale_floor=0.15 * cv,
        converge_rot_rad=1e-5,
        converge_trans_mm=1e-4,
        tau=0.4 * cv,
        near=2 * (0.4 * cv),
    )
    return prescreen, round1, round2


def point_weights(moving: Cloud, matcher: Matcher, T_fixed_moving: np.ndarray, tau: float) -> np.ndarray:
    """(B, n) MSAC weights max(0, 1 - r^2/tau^2) of the moving points under each pose (B,4,4)
    (0 where nothing compatible lies within 2 tau)."""
    dev = matcher.fixed.points.device
    b = T_fixed_moving.shape[0]
    zeros = torch.zeros(b, dtype=torch.int64, device=dev)
    sc = score(repeat_cloud(moving, b, dev), zeros, transforms(T_fixed_moving, dev), matcher, _scored(tau))
    m = sc.matches
    valid = m.compatible & (m.dist2 < 4 * tau * tau)
    return (valid * (1 - m.residual**2 / (tau * tau)).clamp_min(0)).cpu().numpy()


def top_distinct(
    T: np.ndarray, scores: np.ndarray, keep: int, rot_deg: float = 4.0, trans_mm: float = 1.0
) -> np.ndarray:
    """Indices of the `keep` best-scoring poses that are pairwise distinct, best first."""
    cos_limit = 2 * np.cos(np.radians(rot_deg)) + 1  # trace of a rotation by rot_deg
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(chosen) >= keep:
            break
        if chosen:
            Tc = T[chosen]
            trace = np.einsum("kij,ij->k", Tc[:, :3, :3], T[i, :3, :3])
            near = np.linalg.norm(Tc[:, :3, 3] - T[i, :3, 3], axis=1) < trans_mm
            if np.any((trace > cos_limit) & near):
                continue
        chosen.append(int(i))
    return np.asarray(chosen, dtype=np.int64)


def _round(
    moving: Cloud,
    fixed: Clouds,
    T_fixed_moving: np.ndarray,
    round_level: Level,
    workers: Workers = SERIAL,
    tracked: bool = True,
    trees: Matcher | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pose (B,4,4) refined and scored: the refined poses and their scores (B,). The
    score reuses the refinement's tracked neighbours (exact, see tracking.py); `tracked`
    False: every iteration searches the tree afresh (same answers, cheaper for far moves).
    `trees`: a matcher over `fixed` whose kd-tree every chunk's matcher shares."""
    dev = fixed.points.device

    def one(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        matcher = Matcher(fixed, trees_of=trees) if tracked else _Untracked(fixed, trees_of=trees)
        T = T_fixed_moving[rows]
        zeros = torch.zeros(T.shape[0], dtype=torch.int64, device=dev)
        mov = repeat_cloud(moving, T.shape[0], dev)
        out = refine(mov, zeros, transforms(T, dev), matcher, round_level)
        sc = score(mov, zeros, out.T_fixed_moving, matcher, round_level, track=True)
        return out.T_fixed_moving.cpu().numpy(), sc.score.cpu().numpy()

    parts = workers.map(one, workers.chunks(T_fixed_moving.shape[0], moving.points.shape[0] * round_level.iterations))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _prescreen(
    coarse: Cloud,
    frame: BiteFrame,
    T_arch_bite: np.ndarray,
    fixed: Clouds,
    prescreen: Level,
    opt: SearchOptions,
    seed: int,
    workers: Workers = SERIAL,
    trees: Matcher | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One-shot score of every start by the bite patch around its keypoint only: that patch
    must lie on this arch, while the rest of the bite (the other band) would only add noise.
    `trees`: a matcher over `fixed` whose kd-tree every job shares (scoring keeps no cache)."""
    dev = fixed.points.device
    n_keys = frame.keypoints.shape[0]
    T = T_arch_bite.reshape(-1, n_keys, 4, 4)  # (starts, keypoint, 4, 4)
    patches = []
    for k, key in enumerate(frame.keypoints):
        near = np.linalg.norm(coarse.points - key, axis=1) < opt.patch_radius
        patches.append(subset(Cloud(coarse.points[near], coarse.normals[near]), opt.prescreen_points, seed + k))

    def one(job: tuple[int, slice]) -> np.ndarray:
        k, rows = job
        Tk = T[rows, k]
        zeros = torch.zeros(Tk.shape[0], dtype=torch.int64, device=dev)
        matcher = Matcher(fixed, trees_of=trees)
        sc = score(repeat_cloud(patches[k], Tk.shape[0], dev), zeros, transforms(Tk, dev), matcher, prescreen)
        return sc.score.cpu().numpy()

    jobs = [(k, rows) for k in range(n_keys) for rows in workers.chunks(T.shape[0], opt.prescreen_points)]
    parts = workers.map(one, jobs)
    scores = np.stack([np.concatenate([p for (k, _), p in zip(jobs, parts) if k == key]) for key in range(n_keys)], 1)
    return T.reshape(-1, 4, 4), scores.reshape(-1)


def search(
    bite: Samples,
    frame: BiteFrame,
    arch: Samples,
    anchors: Anchors,
    probe: Cloud,
    dev: torch.device,
    opt: SearchOptions,
    seed: int = 0,
    workers: Workers = SERIAL,
) -> Candidates:
    """Candidate poses T_arch_bite of the bite on this arch (bite file -> arch file), best first.

    `workers` share out the starts of the pre-screen and of both rounds (same result)."""
    cv = opt.coarse_voxel
    fixed = pack([arch.coarse], dev)
    trees = Matcher(fixed)  # the arch's one kd-tree: every job, chunk and round below shares it
    T_arch_bite = anchor_poses(frame, anchors, opt.tilts_deg)
    if T_arch_bite.shape[0] == 0:
        return Candidates(np.zeros((0, 4, 4)), np.zeros(0), np.zeros((0, probe.points.shape[0])))
    prescreen, round1, round2 = _levels(opt)
    T_arch_bite, pre = _prescreen(bite.coarse, frame, T_arch_bite, fixed, prescreen, opt, seed, workers, trees)
    T_arch_bite = T_arch_bite[top_distinct(T_arch_bite, pre, opt.keep_prescreen)]
    T_arch_bite, s = _round(
        subset(bite.coarse, opt.round1_points, seed + 1), fixed, T_arch_bite, round1, workers, False, trees
    )
    T_arch_bite = T_arch_bite[top_distinct(T_arch_bite, s, opt.keep_round1)]
    T_arch_bite, s = _round(
        subset(bite.mid, opt.round2_points, seed + 2), fixed, T_arch_bite, round2, workers, True, trees
    )
    keep = top_distinct(T_arch_bite, s, opt.candidates)
    T_arch_bite = T_arch_bite[keep]
    return Candidates(T_arch_bite, s[keep], point_weights(probe, trees.sibling(), T_arch_bite, 0.5 * cv))
