"""Every scan of a batch sampled once into the pyramid levels the engine works on."""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.nn.threads import thread_budget
from occlutrace_compute.registration.levels import Cloud, Levels, subset
from occlutrace_compute.registration.options import RegistrationOptions
from occlutrace_compute.registration.sampling import sample_surface_area, voxel_downsample

MIN_COARSE_POINTS = 30
MIN_FACES = 50


@dataclass
class Prepared:
    """One pair's samples at every pyramid level (numpy, in each mesh's own frame). The moving
    side's coarse_icp and mid levels are ICP subsets; the fixed side keeps full clouds (it is only
    searched, in a tree)."""

    moving: Levels
    fixed: Levels
    spacing: float  # mean distance between fine moving samples (mm)
    area_per_sample: float


def scan_levels(mesh: Mesh, n: int, seed: int, opt: RegistrationOptions, source: str) -> tuple[Levels, float]:
    """One scan's samples at every pyramid level (coarse_icp: the whole coarse cloud) and its area."""
    p, nrm, area = sample_surface_area(mesh, n, seed=seed, source=source, min_faces=MIN_FACES)
    coarse = Cloud(*voxel_downsample(p, nrm, opt.sampling.coarse_voxel))
    if coarse.points.shape[0] < MIN_COARSE_POINTS:
        raise InputRejected(
            source,
            f"surface too small to register: {coarse.points.shape[0]} coarse samples "
            f"at {opt.sampling.coarse_voxel} mm, need {MIN_COARSE_POINTS}",
        )
    return Levels(coarse, coarse, Cloud(*voxel_downsample(p, nrm, opt.sampling.mid_voxel)), Cloud(p, nrm)), area


def prepare_all(pairs: list[tuple[Mesh, Mesh]], opt: RegistrationOptions) -> list[Prepared]:
    """Sample every scan of the batch; the moving scan gets the ICP subsets of its levels.

    Sampling is host-side numpy work that releases the GIL, so the scans are sampled side by side
    on the process's thread budget: even a single pair gains (figures: bench/RESULTS.md, "Measurements behind choices in the code"),
    and a GPU batch is not fed by one core."""
    many = len(pairs) > 1
    jobs = []
    for i, (fixed, moving) in enumerate(pairs):
        label = f"pair {i}: " if many else ""
        jobs += [
            (moving, opt.sampling.fine_points, opt.runtime.seed, opt, f"{label}moving mesh"),
            (fixed, opt.sampling.fixed_points, opt.runtime.seed + 1, opt, f"{label}fixed mesh"),
        ]
    threads = min(len(jobs), thread_budget())
    if threads < 2:
        scans = [scan_levels(*job) for job in jobs]
    else:
        with ThreadPoolExecutor(threads) as pool:
            scans = list(pool.map(lambda job: scan_levels(*job), jobs))
    prepared = []
    for (mov, area), (fix, _) in zip(scans[::2], scans[1::2]):
        rng = np.random.default_rng(opt.runtime.seed)
        coarse_icp = subset(mov.coarse, opt.sampling.coarse_icp_points, rng)  # drawn first: the same rng draws mid's
        mov = dataclasses.replace(mov, coarse_icp=coarse_icp, mid=subset(mov.mid, opt.sampling.mid_icp_points, rng))
        per_sample = area / opt.sampling.fine_points
        prepared.append(Prepared(mov, fix, math.sqrt(per_sample), per_sample))
    return prepared


def scan_centres(prepared: list[Prepared]) -> np.ndarray:
    """(n_pairs, 3) centroid of each moving scan's coarse cloud, for the distinctness tests."""
    return np.stack([p.moving.coarse.points.mean(0) for p in prepared])
