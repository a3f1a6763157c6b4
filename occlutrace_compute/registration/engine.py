"""`register` / `register_batch`: global search + coarse-to-fine robust ICP for rescans.

Pipeline, all pairs of a batch moving through each stage together:
  1. sample both surfaces (area-weighted, face normals); voxel pyramid (coarse, mid);
  2. hypotheses per pair: FPFH+RANSAC poses, surface-frame poses turned about the occlusal
     axis, caller landmarks;
  3. every (pair, hypothesis) refined as ONE padded batch at the coarse level, scored;
  4. the best few DISTINCT poses per pair refined at the mid level and re-scored: the winner
     and its runner-up decide the confidence (near-symmetric arches give mirror-like rivals);
  5. the winner refined at full density in float64 (sub-micrometre accuracy needs many points),
     beside its runner-up when the mid level could not separate them (finals.py);
  6. residuals give fitness, RMSE and the changed regions (rejected though inside the overlap);
     doubtful answers are searched again around themselves (finals.py, verdict.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.nn.threads import cpu_threads
from occlutrace_compute.registration import hypotheses as hyp
from occlutrace_compute.registration.batch import Clouds, pack
from occlutrace_compute.registration.features import fpfh
from occlutrace_compute.registration.finals import mid_and_fine, search_around_doubtful
from occlutrace_compute.registration.icp import refine, score
from occlutrace_compute.registration.levels import subset
from occlutrace_compute.registration.matcher import Matcher
from occlutrace_compute.registration.options import RegistrationOptions
from occlutrace_compute.registration.prepare import Prepared, prepare_all, scan_centres
from occlutrace_compute.registration.result import RegistrationResult
from occlutrace_compute.registration.schedule import coarse_levels, prescreen_level
from occlutrace_compute.registration.selection import PER_PAIR, Choices
from occlutrace_compute.timing import stopwatch


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" picks CUDA when present; asking for CUDA without one is the caller's error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputRejected("device", "'cuda' requested but no CUDA device is available")
    return dev


def register(
    fixed: Mesh,
    moving: Mesh,
    options: RegistrationOptions | None = None,
    landmarks=None,
    device: str | torch.device = "auto",
) -> RegistrationResult:
    """Align `moving` onto `fixed` from any pose; the result's matrix maps MOVING into FIXED."""
    return register_batch([(fixed, moving)], options, device=device, landmarks=[landmarks])[0]


def register_batch(
    pairs: list[tuple[Mesh, Mesh]],
    options: RegistrationOptions | None = None,
    device: str | torch.device = "auto",
    landmarks: list | None = None,
    prepared: list[Prepared] | None = None,
) -> list[RegistrationResult]:
    """Align many (fixed, moving) pairs; every stage runs all pairs x hypotheses as one batch.

    `landmarks`, if given, holds per pair None or (moving_points (k,3), fixed_points (k,3)).
    `prepared`, if given, is `prepare.prepare_all(pairs, options)` made earlier (elsewhere: the
    device worker samples on its CPU workers), used instead of sampling here."""
    if not pairs:
        return []
    opt = options or RegistrationOptions()
    dev = resolve_device(device)
    if dev.type == "cuda" and len(pairs) > 1:
        # Many pairs on a GPU: the flat path, whose torch calls and transfers do not grow with the
        # batch (per-op launches and syncs are what a GPU batch pays for; bench/RESULTS.md, issue 16).
        # Same matrices within 0.1 um (tests/test_batch_flat.py); on CPU it costs as much as this
        # path, which stays the reference there.
        from occlutrace_compute.registration import batched

        return batched.register_batch(pairs, opt, device=dev, landmarks=landmarks, prepared=prepared)
    # inference_mode: no autograd bookkeeping (version counters, views' metadata) on the
    # thousands of small-tensor ops of a pair (~5 % of its CPU time); results leave as numpy.
    threads = (opt.runtime.cpu_threads, opt.runtime.tree_threads) if dev.type == "cpu" else (None, None)
    with cpu_threads(*threads), torch.inference_mode():
        return _register_batch(pairs, opt, dev, landmarks, prepared)


def _register_batch(
    pairs: list[tuple[Mesh, Mesh]],
    opt: RegistrationOptions,
    dev: torch.device,
    landmarks: list | None,
    prepared: list[Prepared] | None = None,
) -> list[RegistrationResult]:
    landmarks = landmarks or [None] * len(pairs)
    if len(landmarks) != len(pairs):
        raise ValueError(f"{len(landmarks)} landmark sets for {len(pairs)} pairs")
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    with stopwatch(stages, "sampling"):
        prepared, lm_poses = samples_and_landmarks(pairs, opt, landmarks, prepared)

    with stopwatch(stages, "hypotheses"):
        full_coarse_m = pack([p.moving.coarse for p in prepared], dev)
        coarse_f = pack([p.fixed.coarse for p in prepared], dev)
        # One index of the fixed coarse clouds for the pre-screen and the coarse level (the
        # pre-screen only scores, so the coarse level's candidate cache starts empty either way).
        coarse_matcher = Matcher(coarse_f, opt.runtime.knn_backend)
        starts_fixed_moving = _hypotheses(prepared, full_coarse_m, coarse_matcher, lm_poses, opt)

    # Coarse level: every hypothesis of every pair in one batch; a short round prunes the
    # hopeless ones, the survivors converge.
    with stopwatch(stages, "coarse"):
        pair_of = torch.tensor([i for i, s in enumerate(starts_fixed_moving) for _ in range(len(s))], device=dev)
        T_fixed_moving = torch.from_numpy(np.concatenate(starts_fixed_moving)).to(dev)
        coarse_m = pack([p.moving.coarse_icp for p in prepared], dev)
        how = StageSettings(opt, scan_centres(prepared))
        pair_of, T_fixed_moving = coarse_search(coarse_m, coarse_matcher, pair_of, T_fixed_moving, how)

    fin = mid_and_fine(prepared, pair_of, T_fixed_moving, opt, dev, stages)
    with stopwatch(stages, "summary"):
        n_hyp = [len(s) for s in starts_fixed_moving]
        results = [fin.result(i, prepared[i], opt, n_hyp[i]) for i in range(len(prepared))]
    with stopwatch(stages, "local search"):
        search_around_doubtful(prepared, results, fin, opt, dev, n_hyp)
    per_pair = {k: v / len(prepared) for k, v in stages.items()}
    for r in results:
        r.seconds = (time.perf_counter() - t0) / len(prepared)
        r.stage_seconds = per_pair
    return results


def samples_and_landmarks(
    pairs: list[tuple[Mesh, Mesh]], opt: RegistrationOptions, landmarks: list, prepared: list[Prepared] | None
) -> tuple[list[Prepared], list]:
    """The pairs' samples (`prepared` when given, checked against the pairs, else sampled here)
    and each pair's landmark pose T_fixed_moving (4,4) (None where it has no landmarks)."""
    if prepared is None:
        prepared = prepare_all(pairs, opt)
    elif len(prepared) != len(pairs):
        raise ValueError(f"{len(prepared)} prepared pairs for {len(pairs)} pairs")
    return prepared, [None if lm is None else hyp.landmark_pose(lm) for lm in landmarks]


@dataclass(frozen=True)
class StageSettings:
    """What the stages shared by the per-pair and the flat batch path (`coarse_search`,
    `prescreen_items`) take beside their items: the options, the moving centroids (n_pairs,3) in
    `choices`' kind (numpy for `selection.PER_PAIR`, a tensor on the items' device for
    `batched.select.BATCHED`) and the choices themselves (see `finals.mid_and_fine`)."""

    opt: RegistrationOptions
    centres: Any
    choices: Choices = PER_PAIR


def coarse_search(
    coarse_m: Clouds, matcher: Matcher, pair_of: torch.Tensor, T_fixed_moving: torch.Tensor, how: StageSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """The coarse level: items (pair_of (N,), starting poses T_fixed_moving (N,4,4)) of every pair
    in one batch against `matcher`'s fixed coarse clouds; a short round prunes the hopeless ones
    (keep_after_prune distinct per pair), the survivors converge (keep_after_coarse kept). Returns
    the kept items' pair_of and poses."""
    opt = how.opt
    prune, converge = coarse_levels(opt)
    for level, keep in ((prune, opt.hypotheses.keep_after_prune), (converge, opt.hypotheses.keep_after_coarse)):
        out = refine(coarse_m.index(pair_of), pair_of, T_fixed_moving, matcher, level)
        sc = score(coarse_m.index(pair_of), pair_of, out.T_fixed_moving, matcher, level, track=True)
        kept = how.choices.top_distinct(pair_of, out.T_fixed_moving, sc.score, keep, how.centres)
        pair_of, T_fixed_moving = pair_of[kept], out.T_fixed_moving[kept]
    return pair_of, T_fixed_moving


def feature_poses(
    coarse_m: Clouds, coarse_f: Clouds, opt: RegistrationOptions, fpfh_of: Callable, ransac: Callable
) -> Any:
    """FPFH + RANSAC starting poses of every pair from its coarse clouds, with the search's settings
    (descriptor radius, inlier band 1.5 and shortest triplet edge 4 coarse voxels): `fpfh_of` and
    `ransac` are `features.fpfh` and `hypotheses.ransac_hypotheses` here, their batched versions
    in `batched.engine`; what `ransac` returns."""
    radius = opt.hypotheses.fpfh_radius_factor * opt.sampling.coarse_voxel
    return ransac(
        coarse_m,
        coarse_f,
        fpfh_of(coarse_m, radius, backend=opt.runtime.knn_backend),
        fpfh_of(coarse_f, radius, backend=opt.runtime.knn_backend),
        opt.hypotheses.ransac_trials,
        opt.hypotheses.fpfh_hypotheses,
        inlier_mm=1.5 * opt.sampling.coarse_voxel,
        min_edge_mm=4 * opt.sampling.coarse_voxel,
        seed=opt.runtime.seed,
    )


def _hypotheses(
    prepared: list[Prepared], coarse_m: Clouds, coarse_matcher: Matcher, lm_poses: list, opt: RegistrationOptions
) -> list[np.ndarray]:
    """Per pair, (k,4,4) starting poses T_fixed_moving: FPFH+RANSAC poses, the best pre-screened
    surface-frame poses, landmarks. `coarse_matcher` searches the fixed coarse clouds."""
    coarse_f = coarse_matcher.fixed
    empty = [np.zeros((0, 4, 4)) for _ in prepared]
    ransac, axes = empty, empty
    if opt.hypotheses.fpfh_hypotheses > 0:
        ransac = feature_poses(coarse_m, coarse_f, opt, fpfh, hyp.ransac_hypotheses)
    if opt.hypotheses.axis_hypotheses > 0:
        guesses = [
            hyp.axis_hypotheses(
                *p.moving.coarse,
                *p.fixed.coarse,
                opt.hypotheses.pca_angles,
                hyp.anchor_centroids(p.fixed.coarse.points, p.moving.coarse.points.shape[0], opt.hypotheses.anchors),
            )
            for p in prepared
        ]
        axes = _prescreen(prepared, coarse_matcher, guesses, opt)
    starts = []
    for i in range(len(prepared)):
        parts = [ransac[i], axes[i]]
        if lm_poses[i] is not None:
            parts.append(lm_poses[i][None])
        poses = np.concatenate(parts)
        if poses.shape[0] == 0:
            raise ValueError(
                "no starting pose: feature and axis hypotheses are switched off and no landmarks were given"
            )
        starts.append(poses)
    return starts


def _prescreen(
    prepared: list[Prepared], matcher: Matcher, poses_fixed_moving: list[np.ndarray], opt: RegistrationOptions
) -> list[np.ndarray]:
    """Keep the `axis_hypotheses` best poses (T_fixed_moving) per pair by a one-shot score on a few samples:
    hundreds of (rotation, anchor) guesses cost one tree query each, not an ICP run. A first
    pass on a quarter of the samples drops the clearly wrong four fifths (half the queries)."""
    dev = matcher.fixed.points.device
    pair_of = torch.tensor([i for i, T in enumerate(poses_fixed_moving) for _ in range(len(T))], device=dev)
    T_fixed_moving = torch.from_numpy(np.concatenate(poses_fixed_moving)).to(dev)
    pair_of, T_fixed_moving, kept = prescreen_items(
        prepared, matcher, pair_of, T_fixed_moving, StageSettings(opt, scan_centres(prepared))
    )
    by_pair = pair_of[kept].cpu().numpy()
    kept_fixed_moving = T_fixed_moving[kept].cpu().numpy()
    return [kept_fixed_moving[by_pair == i] for i in range(len(poses_fixed_moving))]


def prescreen_items(
    prepared: list[Prepared], matcher: Matcher, pair_of: torch.Tensor, T_fixed_moving: torch.Tensor, how: StageSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_prescreen`'s scoring over items (pair_of (N,), guesses T_fixed_moving (N,4,4)), the same
    number of guesses for every pair: the survivors of the quick pass (pair_of, poses) and which
    of them are kept (items grouped by pair, best first)."""
    opt, choices = how.opt, how.choices
    few = pack(
        [
            subset(p.moving.coarse, opt.hypotheses.prescreen_points, np.random.default_rng(opt.runtime.seed))
            for p in prepared
        ],
        matcher.fixed.points.device,
    )
    level = prescreen_level(opt)
    q = max(8, opt.hypotheses.prescreen_points // 4)
    quick = Clouds(few.points[:, :q], few.normals[:, :q], few.lengths.clamp(max=q))
    sc = score(quick.index(pair_of), pair_of, T_fixed_moving, matcher, level)
    n = len(prepared)
    survivors = choices.top_per_pair(
        pair_of, sc.score, max(4 * opt.hypotheses.axis_hypotheses, len(T_fixed_moving) // (5 * n)), n
    )
    pair_of, T_fixed_moving = pair_of[survivors], T_fixed_moving[survivors]
    sc = score(few.index(pair_of), pair_of, T_fixed_moving, matcher, level)
    kept = choices.top_distinct(pair_of, T_fixed_moving, sc.score, opt.hypotheses.axis_hypotheses, how.centres)
    return pair_of, T_fixed_moving, kept
