"""`register_batch` with no per-pair host work between loading and results.

The stages of `registration.engine` (read its docstring for the method), with every choice made
as tensor ops over the whole batch (`select.py`, `ransac.py`, `summary.py`): the number of torch
calls and of device->host transfers per call does not grow with the number of pairs
(tests/test_batch_flat.py counts them at batch 8 and 128). What the host still does per pair:
sampling each scan and drawing its ICP subsets (`prepare.prepare_all`, `subset`), packing, and writing each result with its changed
regions (clustered for the whole batch at once: `batched.regions`); on CPU the kd-trees are searched per pair (on a GPU the
`nn.knn` backends run over the whole batch). Figures: bench/RESULTS.md, issue 16.

One implementation of each stage serves both paths: the coarse level (`engine.coarse_search`),
the pre-screen's scoring (`engine.prescreen_items`), the FPFH+RANSAC settings
(`engine.feature_poses`), the mid and fine levels (`finals.mid_and_fine`), the triplet scoring
(`hypotheses.triplet_poses`) and the verdict's confidence and wording (`verdict`); this module
passes them `select.BATCHED`, the same choices as `selection.PER_PAIR` made as tensor ops. What
stays its own: the starting poses as tensors (`axes`, `ransac`: other draws, see below), the
summaries (`summary`) and the local search (`search_around_doubtful`), each of which loops over
pairs on the host in the per-pair path. The per-pair path is not this one at batch size 1: its
RANSAC draws differ (below), and at one pair on CPU this path took ~7 % more CPU time.

Answers: the RANSAC draws come from one shared uniform stream (not `hypotheses._draw`'s per-pair
`randint`), so starting poses differ from `registration.engine`'s; final matrices agree within
0.1 um on the test cases (tests/test_batch_flat.py).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.nn.threads import cpu_threads
from occlutrace_compute.registration import hypotheses as hyp
from occlutrace_compute.registration.batch import Clouds, pack
from occlutrace_compute.registration.batched import axes, select
from occlutrace_compute.registration.batched.fpfh import fpfh
from occlutrace_compute.registration.batched.ransac import ransac_hypotheses
from occlutrace_compute.registration.batched.select import BATCHED
from occlutrace_compute.registration.batched.summary import summarize
from occlutrace_compute.registration.engine import (
    StageSettings,
    coarse_search,
    feature_poses,
    prescreen_items,
    resolve_device,
    samples_and_landmarks,
)
from occlutrace_compute.registration.finals import Final, mid_and_fine
from occlutrace_compute.registration.matcher import Matcher
from occlutrace_compute.registration.options import RegistrationOptions
from occlutrace_compute.registration.prepare import Prepared
from occlutrace_compute.registration.result import RegistrationResult
from occlutrace_compute.timing import stopwatch


def register_batch(
    pairs: list[tuple[Mesh, Mesh]],
    options: RegistrationOptions | None = None,
    device: str | torch.device = "auto",
    landmarks: list | None = None,
    prepared: list[Prepared] | None = None,
) -> list[RegistrationResult]:
    """`registration.register_batch`'s contract: align many (fixed, moving) pairs; `landmarks`, if
    given, holds per pair None or (moving_points (k,3), fixed_points (k,3)); `prepared`, if given,
    is `prepare_all(pairs, options)` made earlier, used instead of sampling here."""
    if not pairs:
        return []
    opt = options or RegistrationOptions()
    dev = resolve_device(device)
    landmarks = landmarks or [None] * len(pairs)
    if len(landmarks) != len(pairs):
        raise ValueError(f"{len(landmarks)} landmark sets for {len(pairs)} pairs")
    with cpu_threads(opt.runtime.cpu_threads if dev.type == "cpu" else None), gc_paused():
        return _register_batch(pairs, opt, dev, landmarks, prepared)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the call (restored after, as it was). A batch
    makes tens of thousands of short-lived objects (tensors, arrays) and no reference cycles, yet
    every 700 of them start a collection, and one in ten of those a wider one: a full one traverses
    every object of the process (~0.1 s with torch imported), charged to whichever pair is running.
    After the call the collector resumes and counts as before: only the passes are saved. Calls
    overlapping in threads leave it on once the first of them ends (each restores what it found)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _register_batch(
    pairs: list[tuple[Mesh, Mesh]],
    opt: RegistrationOptions,
    dev: torch.device,
    landmarks: list,
    prepared: list[Prepared] | None = None,
) -> list[RegistrationResult]:
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    with stopwatch(stages, "sampling"):
        prepared, lm_poses = samples_and_landmarks(pairs, opt, landmarks, prepared)
    b = len(prepared)

    with stopwatch(stages, "hypotheses"):
        full_coarse_m = pack([p.moving.coarse for p in prepared], dev)
        coarse_f = pack([p.fixed.coarse for p in prepared], dev)
        centres = _centres(full_coarse_m)
        T_start, real = _hypotheses(prepared, full_coarse_m, coarse_f, centres, lm_poses, opt)
        if not bool(real.any(1).all()):
            raise ValueError(
                "no starting pose: feature and axis hypotheses are switched off and no landmarks were given"
            )
        n_hyp = real.sum(1).tolist()

    with stopwatch(stages, "coarse"):
        pair_of = torch.arange(b, device=dev)[:, None].expand(real.shape)[real]
        T_fixed_moving = T_start[real]
        coarse_m = pack([p.moving.coarse_icp for p in prepared], dev)
        matcher = Matcher(coarse_f, opt.runtime.knn_backend)
        how = StageSettings(opt, centres, BATCHED)
        pair_of, T_fixed_moving = coarse_search(coarse_m, matcher, pair_of, T_fixed_moving, how)

    fin = mid_and_fine(prepared, pair_of, T_fixed_moving, opt, dev, stages, centres=centres, choices=BATCHED)
    with stopwatch(stages, "summary"):
        results = summarize(prepared, fin.chosen, fin.out, fin.scores, fin.fine_m, opt, fin.ratio, fin.angle, n_hyp)
    with stopwatch(stages, "local search"):
        done = search_around_doubtful(prepared, centres, results, fin, opt, dev, n_hyp)
    per_pair = {k: v / b for k, v in stages.items()}
    for r in done:
        r.seconds = (time.perf_counter() - t0) / b
        r.stage_seconds = per_pair
    return done


def _centres(coarse: Clouds) -> torch.Tensor:
    """(B,3) centroid of each moving coarse cloud (`prepare.scan_centres`, on the device)."""
    return (coarse.points * coarse.mask[..., None]).sum(1) / coarse.lengths.clamp_min(1)[:, None].to(
        coarse.points.dtype
    )


def _hypotheses(
    prepared: list[Prepared],
    coarse_m: Clouds,
    coarse_f: Clouds,
    centres: torch.Tensor,
    lm_poses: list,
    opt: RegistrationOptions,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting poses T_fixed_moving (B,H,4,4) and which are real (B,H), per pair in
    `engine._hypotheses`' order: FPFH+RANSAC, pre-screened surface-frame poses, landmarks."""
    b, dev, dt = len(prepared), coarse_m.points.device, coarse_m.points.dtype
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    if opt.hypotheses.fpfh_hypotheses > 0:
        parts.append(feature_poses(coarse_m, coarse_f, opt, fpfh, ransac_hypotheses))
    if opt.hypotheses.axis_hypotheses > 0:
        guesses = axes.axis_hypotheses(coarse_m, coarse_f, opt.hypotheses.pca_angles, opt.hypotheses.anchors)
        parts.append(_prescreen(prepared, coarse_f, centres, guesses, opt))
    if any(lm is not None for lm in lm_poses):
        lm = np.stack([np.eye(4) if p is None else p for p in lm_poses])[:, None]
        given = torch.tensor([p is not None for p in lm_poses], device=dev)[:, None]
        parts.append((torch.from_numpy(lm).to(dev), given))
    if not parts:
        return torch.zeros(b, 0, 4, 4, dtype=dt, device=dev), torch.zeros(b, 0, dtype=torch.bool, device=dev)
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)


def to_slots(pair_of: torch.Tensor, items: torch.Tensor, n_pairs: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items grouped by pair (pair_of[items] non-decreasing) laid out as (n_pairs, width) slots,
    in order: item indices and which slots are real."""
    pairs = pair_of[items]
    count = torch.bincount(pairs, minlength=n_pairs)
    rank = torch.arange(items.numel(), device=items.device) - (torch.cumsum(count, 0) - count)[pairs]
    slot = torch.zeros(n_pairs, width, dtype=torch.int64, device=items.device)
    real = torch.zeros(n_pairs, width, dtype=torch.bool, device=items.device)
    slot[pairs, rank] = items
    real[pairs, rank] = True
    return slot, real


def _prescreen(
    prepared: list[Prepared], coarse_f: Clouds, centres: torch.Tensor, guesses: torch.Tensor, opt: RegistrationOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """`engine._prescreen` over the (B,G,4,4) guesses: the `axis_hypotheses` best distinct per
    pair, (B,axis_hypotheses,4,4) and which are real."""
    b, g = guesses.shape[:2]
    pair_of = torch.arange(b, device=coarse_f.points.device).repeat_interleave(g)
    matcher = Matcher(coarse_f, opt.runtime.knn_backend)
    pair_of, T_fixed_moving, kept = prescreen_items(
        prepared, matcher, pair_of, guesses.reshape(b * g, 4, 4), StageSettings(opt, centres, BATCHED)
    )
    slot, real = to_slots(pair_of, kept, b, opt.hypotheses.axis_hypotheses)
    return T_fixed_moving[slot], real


def around(
    T_fixed_moving: torch.Tensor, centres: torch.Tensor, n: int, rot_deg: float, trans_mm: float, seed: int
) -> torch.Tensor:
    """`hypotheses.around` for K poses at once: (K, n+1, 4, 4), the pose then n steps about each centre."""
    R_np, shift_np = hyp.random_steps(n, rot_deg, trans_mm, seed)
    k, dev, dt = T_fixed_moving.shape[0], T_fixed_moving.device, T_fixed_moving.dtype
    R, shift = torch.from_numpy(R_np).to(dev, dt), torch.from_numpy(shift_np).to(dev, dt)
    steps = torch.eye(4, dtype=dt, device=dev).repeat(k, n + 1, 1, 1)
    steps[:, 1:, :3, :3] = R
    steps[:, 1:, :3, 3] = centres[:, None] - (R[None] @ centres[:, None, :, None])[..., 0] + shift
    return T_fixed_moving[:, None] @ steps


def search_around_doubtful(
    prepared: list[Prepared],
    centres: torch.Tensor,
    results: list,
    first: Final,
    opt: RegistrationOptions,
    dev: torch.device,
    n_hyp: list[int],
) -> list[RegistrationResult]:
    """`finals.search_around_doubtful` for all doubtful pairs at once, each round one batch."""
    results = list(results)
    todo = [i for i, r in enumerate(results) if r.confidence < opt.verdict.min_confidence]
    best = first.scores.score[first.chosen].clone()
    T_now = first.out.T_fixed_moving[first.chosen].clone()
    for rnd in range(opt.local_search.rounds if opt.local_search.starts > 0 else 0):
        if not todo:
            break
        idx = torch.tensor(todo, device=dev)
        sub = [prepared[i] for i in todo]
        c = centres[idx]
        starts = around(
            T_now[idx],
            c,
            opt.local_search.starts,
            opt.local_search.step_deg,
            opt.local_search.step_mm,
            opt.runtime.seed + rnd,
        )
        pair_of = torch.arange(len(todo), device=dev).repeat_interleave(starts.shape[1])
        found = mid_and_fine(
            sub,
            pair_of,
            starts.reshape(-1, 4, 4),
            opt,
            dev,
            {},
            finalists=4,
            margin=1.0,
            reach_mm=2 * opt.local_search.step_mm,
            centres=c,
            choices=BATCHED,
        )
        old, new = best[idx], found.scores.score[found.chosen]
        T_new = found.out.T_fixed_moving[found.chosen]
        better = new > old
        rival = better & ~select.same_pose(T_now[idx], T_new, c) & (old / new > found.ratio)
        ratio = torch.where(rival, old / new, found.ratio)
        angle = torch.where(rival, select.rotation_angle_deg(T_now[idx], T_new), found.angle)
        which = [k for k, up in enumerate(better.tolist()) if up]
        redone = summarize(
            sub,
            found.chosen,
            found.out,
            found.scores,
            found.fine_m,
            opt,
            ratio,
            angle,
            [n_hyp[i] + (rnd + 1) * opt.local_search.starts for i in todo],
            which,
        )
        for k in which:
            results[todo[k]] = redone[k]
        best[idx] = torch.where(better, new, old)
        T_now[idx] = torch.where(better[:, None, None], T_new, T_now[idx])
        todo = [todo[k] for k in which if results[todo[k]].confidence < opt.verdict.min_confidence]
    return results
