"""`register` / `register_batch`: global search + coarse-to-fine robust ICP for rescans.

Pipeline, all pairs of a batch moving through each stage together:
  1. sample both surfaces (area-weighted, face normals); voxel pyramid (coarse, mid);
  2. hypotheses per pair: FPFH+RANSAC poses, surface-frame poses turned about the occlusal
     axis, caller landmarks;
  3. every (pair, hypothesis) refined as ONE padded batch at the coarse level, scored;
  4. the best few DISTINCT poses per pair refined at the mid level and re-scored: the winner
     and its runner-up decide the confidence (near-symmetric arches give mirror-like rivals);
  5. the winner refined at full density in float64 (sub-micrometre accuracy needs many points);
  6. residuals give fitness, RMSE and the changed regions (rejected though inside the overlap).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.nn.threads import thread_budget
from occlutrace_compute.registration import hypotheses as hyp
from occlutrace_compute.registration.batch import Clouds, pack
from occlutrace_compute.registration.features import fpfh
from occlutrace_compute.registration.icp import IcpOutcome, Level, Scores, refine, score
from occlutrace_compute.registration.matcher import Matcher
from occlutrace_compute.registration.options import RegistrationOptions
from occlutrace_compute.registration.regions import changed_regions
from occlutrace_compute.registration.result import RegistrationResult
from occlutrace_compute.registration.sampling import check_mesh, sample_surface_area, voxel_downsample

MIN_COARSE_POINTS = 30
MIN_FACES = 50


@dataclass
class _Prepared:
    """One pair's samples at every pyramid level (numpy, in each mesh's own frame).

    Levels: 0 coarse voxel cloud (features), 1 its subset for the hypothesis ICP, 2 mid voxel
    subset, 3 fine samples. The fixed side keeps full clouds (it is only searched, in a tree).
    """

    moving: list[tuple[np.ndarray, np.ndarray]]
    fixed: list[tuple[np.ndarray, np.ndarray]]
    spacing: float  # mean distance between fine moving samples (mm)
    area_per_sample: float


def _subset(cloud: tuple[np.ndarray, np.ndarray], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if cloud[0].shape[0] <= n:
        return cloud
    keep = np.sort(rng.choice(cloud[0].shape[0], n, replace=False))
    return cloud[0][keep], cloud[1][keep]


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" picks CUDA when present; asking for CUDA without one is the caller's error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputRejected("device", "'cuda' requested but no CUDA device is available")
    return dev


def _scan_levels(mesh: Mesh, n: int, seed: int, opt: RegistrationOptions, source: str) -> tuple[list, float]:
    """One scan's samples at every pyramid level (coarse, coarse, mid, fine) and its area."""
    check_mesh(mesh, source, MIN_FACES)
    p, nrm, area = sample_surface_area(mesh, n, seed=seed, source=source)
    coarse = voxel_downsample(p, nrm, opt.coarse_voxel)
    if coarse[0].shape[0] < MIN_COARSE_POINTS:
        raise InputRejected(source, f"surface too small to register: {coarse[0].shape[0]} coarse samples "
                            f"at {opt.coarse_voxel} mm, need {MIN_COARSE_POINTS}")
    return [coarse, coarse, voxel_downsample(p, nrm, opt.mid_voxel), (p, nrm)], area


def _prepare_all(pairs: list[tuple[Mesh, Mesh]], opt: RegistrationOptions) -> list[_Prepared]:
    """Sample every scan of the batch; the moving scan gets the ICP subsets of its levels.

    Sampling is host-side numpy work (~20 ms per 150k-vertex scan) that releases the GIL: a
    batch spreads it over the process's thread budget, so a GPU batch is not fed by one core."""
    many = len(pairs) > 1
    jobs = []
    for i, (fixed, moving) in enumerate(pairs):
        label = f"pair {i}: " if many else ""
        jobs += [(moving, opt.fine_points, opt.seed, opt, f"{label}moving mesh"),
                 (fixed, opt.fixed_points, opt.seed + 1, opt, f"{label}fixed mesh")]
    threads = min(len(jobs), thread_budget())
    if not many or threads < 2:
        scans = [_scan_levels(*job) for job in jobs]
    else:
        with ThreadPoolExecutor(threads) as pool:
            scans = list(pool.map(lambda job: _scan_levels(*job), jobs))
    prepared = []
    for (mov, area), (fix, _) in zip(scans[::2], scans[1::2]):
        rng = np.random.default_rng(opt.seed)
        mov[1] = _subset(mov[0], opt.coarse_icp_points, rng)
        mov[2] = _subset(mov[2], opt.mid_icp_points, rng)
        per_sample = area / opt.fine_points
        prepared.append(_Prepared(mov, fix, math.sqrt(per_sample), per_sample))
    return prepared


def register(fixed: Mesh, moving: Mesh, options: RegistrationOptions | None = None, landmarks=None,
             device: str | torch.device = "auto") -> RegistrationResult:
    """Align `moving` onto `fixed` from any pose; the result's matrix maps MOVING into FIXED."""
    return register_batch([(fixed, moving)], options, device=device, landmarks=[landmarks])[0]


def register_batch(pairs: list[tuple[Mesh, Mesh]], options: RegistrationOptions | None = None,
                   device: str | torch.device = "auto", landmarks: list | None = None) -> list[RegistrationResult]:
    """Align many (fixed, moving) pairs; every stage runs all pairs x hypotheses as one batch.

    `landmarks`, if given, holds per pair None or (moving_points (k,3), fixed_points (k,3))."""
    if not pairs:
        return []
    opt = options or RegistrationOptions()
    dev = resolve_device(device)
    with _cpu_threads(opt.cpu_threads if dev.type == "cpu" else None):
        return _register_batch(pairs, opt, dev, landmarks)


@contextmanager
def _cpu_threads(n: int | None):
    """Run torch's and the BLAS's CPU ops on `n` threads, restoring the process settings
    afterwards. (A BLAS thread left spinning after numpy's one matrix product doubled the
    sampling and hypothesis stages' time on 2 cores.)"""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def _register_batch(pairs: list[tuple[Mesh, Mesh]], opt: RegistrationOptions, dev: torch.device,
                    landmarks: list | None) -> list[RegistrationResult]:
    landmarks = landmarks or [None] * len(pairs)
    if len(landmarks) != len(pairs):
        raise ValueError(f"{len(landmarks)} landmark sets for {len(pairs)} pairs")
    t0 = time.perf_counter()
    prepared = _prepare_all(pairs, opt)
    lm_poses = [None if lm is None else hyp.landmark_pose(lm) for lm in landmarks]

    stages: dict[str, float] = {"sampling": time.perf_counter() - t0}
    t = time.perf_counter()
    full_coarse_m = pack([p.moving[0] for p in prepared], dev)
    coarse_f = pack([p.fixed[0] for p in prepared], dev)
    starts = _hypotheses(prepared, full_coarse_m, coarse_f, lm_poses, opt)
    stages["hypotheses"] = time.perf_counter() - t

    # Coarse level: every hypothesis of every pair in one batch; a short round prunes the
    # hopeless ones, the survivors converge.
    t = time.perf_counter()
    pair_of = torch.tensor([i for i, s in enumerate(starts) for _ in range(len(s))], device=dev)
    T = torch.from_numpy(np.concatenate(starts)).to(dev)
    cos_n = math.cos(math.radians(opt.normal_max_angle_deg))
    cv, mv = opt.coarse_voxel, opt.mid_voxel
    centres = _centres(prepared)
    coarse_m = pack([p.moving[1] for p in prepared], dev)
    matcher = Matcher(coarse_f, opt.knn_backend)
    rounds = ((opt.coarse_iterations // 3, 4.0 * cv, 2.0 * cv, opt.keep_after_prune), (opt.coarse_iterations, 2.0 * cv, cv, opt.keep_after_coarse))
    for iterations, d0, d1, keep in rounds:
        # Kernel floor cv / 8: tight enough to reject prepared crowns 1-1.5 mm off (see options).
        level = Level(iterations, d0, d1, cv / 8, cos_n, opt.search_mad_factor)
        out = refine(coarse_m.index(pair_of), coarse_f, pair_of, T, matcher, level,
                     opt.converge_rot_rad * 10, opt.converge_trans_mm * 10)
        sc = score(coarse_m.index(pair_of), coarse_f, pair_of, out.T, matcher, tau=cv / 2, cos_normals=cos_n, near=cv, track=True)
        kept = _top_distinct(pair_of, out.T, sc.score, keep, centres)
        pair_of, T = pair_of[kept], out.T[kept]
    stages["coarse"] = time.perf_counter() - t

    fin = _mid_and_fine(prepared, pair_of, T, opt, dev, stages)
    t = time.perf_counter()
    n_hyp = [len(s) for s in starts]
    results = [fin.result(i, prepared[i], opt, n_hyp[i]) for i in range(len(prepared))]
    stages["summary"] = time.perf_counter() - t
    t = time.perf_counter()
    _search_around_doubtful(prepared, results, fin, opt, dev, n_hyp)
    stages["local search"] = time.perf_counter() - t
    per_pair = {k: v / len(prepared) for k, v in stages.items()}
    for r in results:
        r.seconds = (time.perf_counter() - t0) / len(prepared)
        r.stage_seconds = per_pair
    return results


@dataclass
class _Final:
    """Fine-level outcome: item `chosen[p]` is pair p's answer; runner-up ratio/angle per pair."""

    out: IcpOutcome
    scores: Scores
    fine_m: Clouds
    chosen: np.ndarray
    ratio: np.ndarray
    angle: np.ndarray

    def score_of(self, p: int) -> float:
        return float(self.scores.score[int(self.chosen[p])])

    def result(self, p: int, prep: _Prepared, opt: RegistrationOptions, n_hyp: int) -> RegistrationResult:
        return _result(int(self.chosen[p]), prep, self.out, self.scores, self.fine_m, opt, float(self.ratio[p]),
                       float(self.angle[p]), n_hyp)


def _mid_and_fine(prepared: list[_Prepared], pair_of: torch.Tensor, T: torch.Tensor, opt: RegistrationOptions,
                  dev: torch.device, stages: dict[str, float], finalists: int = 2, margin: float | None = None,
                  reach_mm: float | None = None) -> _Final:
    """Mid level: the given poses refined and ranked, the best `finalists` distinct ones per
    pair kept. Fine level: the winner at full density, with every finalist whose mid score is
    within `margin` (default: ambiguity_margin) of it: under heavy change the true pose and a
    rival 3-4 deg off score alike at 0.6 mm, while over 20k samples and a 0.1 mm inlier band the
    true one wins. `reach_mm`: first correspondence cut of the mid level (default 1.5 coarse
    voxels)."""
    t = time.perf_counter()
    cos_n = math.cos(math.radians(opt.normal_max_angle_deg))
    cv, mv = opt.coarse_voxel, opt.mid_voxel
    centres = _centres(prepared)
    mid_m = pack([p.moving[2] for p in prepared], dev)
    mid_f = pack([p.fixed[2] for p in prepared], dev)
    matcher = Matcher(mid_f, opt.knn_backend)
    out = refine(mid_m.index(pair_of), mid_f, pair_of, T, matcher,
                 Level(opt.mid_iterations, reach_mm or 1.5 * cv, 2.0 * mv, mv / 6, cos_n, opt.search_mad_factor), opt.converge_rot_rad * 10,
                 opt.converge_trans_mm * 10)
    sc = score(mid_m.index(pair_of), mid_f, pair_of, out.T, matcher, tau=mv / 2, cos_normals=cos_n, near=mv, track=True)
    ranked = _top_distinct(pair_of, out.T, sc.score, finalists, centres)
    items, ratio, angle = _finalists(pair_of, ranked, out.T, sc.score, len(prepared),
                                     opt.ambiguity_margin if margin is None else margin)
    stages["mid"] = stages.get("mid", 0.0) + time.perf_counter() - t

    t = time.perf_counter()
    pair_of = pair_of[items]
    fine_m = pack([p.moving[3] for p in prepared], dev).index(pair_of)
    fine_f = pack([p.fixed[3] for p in prepared], dev)
    matcher = Matcher(fine_f, opt.knn_backend)
    fine_level = Level(opt.fine_iterations, 2.0 * mv, max(4 * opt.changed_mm, 0.3), opt.final_scale_mm, cos_n, opt.fine_mad_factor)
    out = refine(fine_m, fine_f, pair_of, out.T[items], matcher, fine_level, opt.converge_rot_rad, opt.converge_trans_mm)
    sc = score(fine_m, fine_f, pair_of, out.T, matcher, tau=opt.inlier_mm, cos_normals=cos_n, near=opt.change_max_mm, track=True)
    chosen = _fine_duels(pair_of, out.T, sc.score, ratio, angle, centres)
    stages["fine"] = stages.get("fine", 0.0) + time.perf_counter() - t
    return _Final(out, sc, fine_m, chosen, ratio, angle)


def _search_around_doubtful(prepared: list[_Prepared], results: list[RegistrationResult], first: _Final,
                            opt: RegistrationOptions, dev: torch.device, n_hyp: list[int]) -> None:
    """Search harder where the answer is doubtful: when changed anatomy covers most of the
    overlap the true pose can sit in a narrow basin ~1 mm / 3-4 deg beside the one found, which
    no global hypothesis reached. Random rigid steps around the answer (about its centroid) go
    through the mid level (correspondences cut at two step sigmas) and the fine level again; a
    better fine score replaces the answer, and the old answer, if a different pose, becomes a
    rival. Up to `local_search_rounds` rounds, each from the last improvement. In place."""
    todo = [i for i, r in enumerate(results) if r.confidence < opt.min_confidence]
    best = {i: first.score_of(i) for i in todo}
    for rnd in range(opt.local_search_rounds if opt.local_search_starts > 0 else 0):
        if not todo:
            return
        sub = [prepared[i] for i in todo]
        centres = _centres(sub)
        starts = [hyp.around(results[i].matrix, centres[k], opt.local_search_starts, opt.local_search_deg, opt.local_search_mm,
                             opt.seed + rnd) for k, i in enumerate(todo)]
        pair_of = torch.tensor([k for k, s in enumerate(starts) for _ in range(len(s))], device=dev)
        found = _mid_and_fine(sub, pair_of, torch.from_numpy(np.concatenate(starts)).to(dev), opt, dev, {},
                              finalists=4, margin=1.0, reach_mm=2 * opt.local_search_mm)
        improved = []
        for k, i in enumerate(todo):
            old, new = best[i], found.score_of(k)
            if new <= old:
                continue
            T = found.out.T[int(found.chosen[k])].cpu().numpy()
            if not hyp.same_pose(results[i].matrix, T, centres[k]) and old / new > found.ratio[k]:
                found.ratio[k], found.angle[k] = old / new, _angle_deg(results[i].matrix, T)
            results[i] = found.result(k, sub[k], opt, n_hyp[i] + (rnd + 1) * opt.local_search_starts)
            best[i] = new
            if results[i].confidence < opt.min_confidence:
                improved.append(i)
        todo = improved


def _hypotheses(prepared: list[_Prepared], coarse_m: Clouds, coarse_f: Clouds, lm_poses: list, opt: RegistrationOptions) -> list[np.ndarray]:
    """Per pair: FPFH+RANSAC poses, the best pre-screened surface-frame poses, landmarks."""
    empty = [np.zeros((0, 4, 4)) for _ in prepared]
    ransac, axes = empty, empty
    if opt.fpfh_hypotheses > 0:
        radius = opt.fpfh_radius_factor * opt.coarse_voxel
        feat_m = fpfh(coarse_m, radius, backend=opt.knn_backend)
        feat_f = fpfh(coarse_f, radius, backend=opt.knn_backend)
        ransac = hyp.ransac_hypotheses(coarse_m, coarse_f, feat_m, feat_f, opt.ransac_trials, opt.fpfh_hypotheses,
                                       inlier_mm=1.5 * opt.coarse_voxel, min_edge_mm=4 * opt.coarse_voxel, seed=opt.seed)
    if opt.axis_hypotheses > 0:
        guesses = [hyp.axis_hypotheses(*p.moving[0], *p.fixed[0], opt.pca_angles,
                                       hyp.anchor_centroids(p.fixed[0][0], p.moving[0][0].shape[0], opt.anchors))
                   for p in prepared]
        axes = _prescreen(prepared, coarse_f, guesses, opt)
    starts = []
    for i in range(len(prepared)):
        parts = [ransac[i], axes[i]]
        if lm_poses[i] is not None:
            parts.append(lm_poses[i][None])
        poses = np.concatenate(parts)
        if poses.shape[0] == 0:
            raise ValueError("no starting pose: feature and axis hypotheses are switched off and no landmarks were given")
        starts.append(poses)
    return starts


def _prescreen(prepared: list[_Prepared], coarse_f: Clouds, poses: list[np.ndarray], opt: RegistrationOptions) -> list[np.ndarray]:
    """Keep the `axis_hypotheses` best poses per pair by a one-shot score on a few samples:
    hundreds of (rotation, anchor) guesses cost one tree query each, not an ICP run. A first
    pass on a quarter of the samples drops the clearly wrong four fifths (half the queries)."""
    dev = coarse_f.points.device
    few = pack([_subset(p.moving[0], opt.prescreen_points, np.random.default_rng(opt.seed)) for p in prepared], dev)
    pair_of = torch.tensor([i for i, T in enumerate(poses) for _ in range(len(T))], device=dev)
    T = torch.from_numpy(np.concatenate(poses)).to(dev)
    cv = opt.coarse_voxel
    matcher = Matcher(coarse_f, opt.knn_backend)
    cos_n = math.cos(math.radians(opt.normal_max_angle_deg))
    q = max(8, opt.prescreen_points // 4)
    quick = Clouds(few.points[:, :q], few.normals[:, :q], few.lengths.clamp(max=q))
    sc = score(quick.index(pair_of), coarse_f, pair_of, T, matcher, tau=2 * cv, cos_normals=cos_n, near=2 * cv)
    survivors = _top_per_pair(pair_of, sc.score, max(4 * opt.axis_hypotheses, len(T) // (5 * len(poses))))
    pair_of, T = pair_of[survivors], T[survivors]
    sc = score(few.index(pair_of), coarse_f, pair_of, T, matcher, tau=2 * cv, cos_normals=cos_n, near=2 * cv)
    kept = _top_distinct(pair_of, T, sc.score, opt.axis_hypotheses, _centres(prepared))
    by_pair = pair_of[kept].cpu().numpy()
    Tk = T[kept].cpu().numpy()
    return [Tk[by_pair == i] for i in range(len(poses))]


def _top_per_pair(pair_of: torch.Tensor, scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` best-scoring items of every pair."""
    pairs = pair_of.cpu().numpy()
    s = scores.cpu().numpy()
    chosen = [items[np.argsort(-s[items], kind="stable")[:keep]] for items in (np.nonzero(pairs == p)[0] for p in np.unique(pairs))]
    return torch.from_numpy(np.sort(np.concatenate(chosen))).to(pair_of.device)


def _centres(prepared: list[_Prepared]) -> np.ndarray:
    """(n_pairs, 3) centroid of each moving scan's coarse cloud, for the distinctness tests."""
    return np.stack([p.moving[0][0].mean(0) for p in prepared])


def _top_distinct(pair_of: torch.Tensor, T: torch.Tensor, scores: torch.Tensor, keep: int, centres: np.ndarray) -> torch.Tensor:
    """Indices of the `keep` best-scoring items per pair that are distinct poses, best first."""
    pairs = pair_of.cpu().numpy()
    s = scores.cpu().numpy()
    Ts = T.cpu().numpy()
    chosen: list[int] = []
    for p in np.unique(pairs):
        items = np.nonzero(pairs == p)[0]
        mine: list[int] = []
        for i in items[np.argsort(-s[items], kind="stable")]:
            if len(mine) >= keep:
                break
            if all(not hyp.same_pose(Ts[i], Ts[j], centres[p]) for j in mine):
                mine.append(int(i))
        chosen.extend(mine)
    return torch.tensor(chosen, dtype=torch.int64, device=pair_of.device)


def _finalists(pair_of: torch.Tensor, ranked: torch.Tensor, T: torch.Tensor, scores: torch.Tensor, n_pairs: int,
               margin: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Items going to the fine level (each pair's winner, then its finalists scoring within
    `margin` of it), and per pair the runner-up's mid score ratio and rotation difference (deg)."""
    pairs = pair_of.cpu().numpy()
    s = scores.cpu().numpy()
    Ts = T.cpu().numpy()
    order = ranked.cpu().numpy()  # grouped by pair, best first within each pair
    ratio = np.zeros(n_pairs)
    angle = np.zeros(n_pairs)
    winners, others = [], []
    for p in range(n_pairs):
        items = [int(i) for i in order[pairs[order] == p]]
        winners.append(items[0])
        if len(items) > 1 and s[items[0]] > 0:
            ratio[p] = max(0.0, s[items[1]] / s[items[0]])
            angle[p] = _angle_deg(Ts[items[0]], Ts[items[1]])
            others += [i for i in items[1:] if s[i] / s[items[0]] > 1 - margin]
    return torch.tensor(winners + others, dtype=torch.int64, device=pair_of.device), ratio, angle


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    R = a[:3, :3].T @ b[:3, :3]
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2))))


def _fine_duels(pair_of: torch.Tensor, T: torch.Tensor, scores: torch.Tensor, ratio: np.ndarray, angle: np.ndarray,
                centres: np.ndarray) -> np.ndarray:
    """Fine-level item chosen per pair: the best fine score among the pair's items (item p is
    pair p's mid winner). Where several items competed, their fine scores replace the runner-up
    ratio and angle (in place); one that converged onto the winner's pose is no rival."""
    n = len(centres)
    pairs = pair_of.cpu().numpy()
    s = scores.cpu().numpy()
    Ts = T.cpu().numpy()
    chosen = np.arange(n)
    for p in np.unique(pairs[n:]):
        items = np.nonzero(pairs == p)[0]
        items = items[np.argsort(-s[items], kind="stable")]
        best = chosen[p] = int(items[0])
        rival = next((int(j) for j in items[1:] if not hyp.same_pose(Ts[best], Ts[j], centres[p])), None)
        if rival is None:
            ratio[p], angle[p] = 0.0, 0.0
        else:
            ratio[p] = max(0.0, s[rival] / s[best]) if s[best] > 0 else 1.0
            angle[p] = _angle_deg(Ts[best], Ts[rival])
    return chosen


def _degeneracy(hessian: np.ndarray, radius: float) -> float:
    """Smallest / largest eigenvalue of the normal equations with rotation scaled to mm."""
    D = np.diag([1 / radius, 1 / radius, 1 / radius, 1.0, 1.0, 1.0])
    ev = np.linalg.eigvalsh(D @ hessian @ D)
    return float(ev[0] / ev[-1]) if ev[-1] > 0 else 0.0


def _result(i: int, prep: _Prepared, out, sc: Scores, fine_m: Clouds, opt: RegistrationOptions,
            runner_ratio: float, runner_angle: float, n_hyp: int) -> RegistrationResult:
    """The result of fine-level item `i` (one of `prep`'s pair)."""
    n = int(fine_m.lengths[i])
    m = sc.matches
    r = m.residual[i, :n].cpu().numpy()
    d2 = m.dist2[i, :n].cpu().numpy()
    compatible = m.compatible[i, :n].cpu().numpy()
    tang2 = m.tangential2[i, :n].cpu().numpy()
    moved = m.moved[i, :n].cpu().numpy()
    # Inside the overlap: close to the fixed surface and over it (not beyond its border).
    over = compatible & (d2 < opt.change_max_mm**2) & (tang2 < (3 * prep.spacing) ** 2)
    outliers = over & (np.abs(r) > opt.changed_mm)
    regions = changed_regions(moved, outliers, r, 3 * prep.spacing, prep.area_per_sample, opt.min_region_area_mm2)
    fitness = float(sc.fitness[i])
    pts = prep.moving[3][0]
    radius = float(np.sqrt(((pts - pts.mean(0)) ** 2).sum(1).mean()))
    degeneracy = _degeneracy(out.hessian[i].cpu().numpy(), radius)
    reasons = []
    if runner_ratio > 1 - opt.ambiguity_margin:
        reasons.append(f"a distinct pose {runner_angle:.0f} deg away fits almost as well (score ratio {runner_ratio:.2f})")
    if fitness < opt.min_fitness:
        reasons.append(f"low overlap: only {fitness:.0%} of the moving scan matches the fixed scan")
    if degeneracy < 1e-3:
        reasons.append("geometry does not constrain every direction (flat, symmetric or featureless surface)")
    confidence = (min(1.0, (1 - runner_ratio) / (2 * opt.ambiguity_margin)) * min(1.0, fitness / (2 * opt.min_fitness))
                  * min(1.0, degeneracy / 1e-2))
    if not reasons and confidence < opt.min_confidence:
        # Each signal alone is under its limit but together they are weak: on 100 changed rescans
        # every wrong answer scored <= 0.77 here and every right one 1.0 (bench/RESULTS.md).
        reasons.append(f"low confidence {confidence:.2f}: partial overlap ({fitness:.0%} matched) "
                       f"with a rival pose at score ratio {runner_ratio:.2f}")
    return RegistrationResult(
        matrix=out.T[i].cpu().numpy(),
        rmse_mm=float(sc.trimmed_rmse[i]),
        fitness=fitness,
        iterations=int(out.iterations[i]),
        converged=bool(out.converged[i]),
        confidence=float(confidence),
        doubtful=bool(reasons),
        reason="; ".join(reasons),
        trimmed_error_mm=float(sc.trimmed_rmse[i]),
        runner_up_score_ratio=runner_ratio,
        hypotheses=n_hyp,
        moving_samples=prep.moving[3][0],
        outlier_mask=outliers,
        changed_regions=regions,
    )
