"""The pair engine's levels as data: every ICP round's iterations, correspondence cuts, kernel
floor, convergence thresholds and scoring, derived from `RegistrationOptions` in one place
(distances in mm)."""

from __future__ import annotations

from occlutrace_compute.registration.icp import Level, level
from occlutrace_compute.registration.options import RegistrationOptions

# The coarse and mid levels only choose a basin for the finest level: their ICP stops once a step
# is under this many times the finest level's thresholds (`converge_rot_rad`, `converge_trans_mm`).
SEARCH_CONVERGENCE_FACTOR = 10


def _search_level(opt: RegistrationOptions, **values) -> Level:
    return level(
        mad_factor=opt.levels.search_mad_factor,
        normal_max_angle_deg=opt.levels.normal_max_angle_deg,
        converge_rot_rad=opt.levels.converge_rot_rad * SEARCH_CONVERGENCE_FACTOR,
        converge_trans_mm=opt.levels.converge_trans_mm * SEARCH_CONVERGENCE_FACTOR,
        **values,
    )


def prescreen_level(opt: RegistrationOptions) -> Level:
    """Scores the (rotation, anchor) guesses in one shot, before any ICP: a wide band."""
    cv = opt.sampling.coarse_voxel
    return level(tau=2 * cv, near=2 * cv, normal_max_angle_deg=opt.levels.normal_max_angle_deg)


def coarse_levels(opt: RegistrationOptions) -> tuple[Level, Level]:
    """The coarse ICP rounds over every hypothesis: a short one that prunes the hopeless, then
    the survivors' full one. Kernel floor cv / 8: tight enough to reject prepared crowns 1-1.5 mm
    off (see options)."""
    cv = opt.sampling.coarse_voxel
    prune = _search_level(
        opt,
        iterations=opt.levels.coarse_iterations // 3,
        dmax_start=4.0 * cv,
        dmax_end=2.0 * cv,
        scale_floor=cv / 8,
        tau=cv / 2,
        near=cv,
    )
    converge = _search_level(
        opt,
        iterations=opt.levels.coarse_iterations,
        dmax_start=2.0 * cv,
        dmax_end=cv,
        scale_floor=cv / 8,
        tau=cv / 2,
        near=cv,
    )
    return prune, converge


def mid_level(opt: RegistrationOptions, reach_mm: float | None = None) -> Level:
    """The best few distinct poses per pair; `reach_mm`: the first correspondence cut (default
    1.5 coarse voxels; the local search starts closer)."""
    cv, mv = opt.sampling.coarse_voxel, opt.sampling.mid_voxel
    return _search_level(
        opt,
        iterations=opt.levels.mid_iterations,
        dmax_start=reach_mm or 1.5 * cv,
        dmax_end=2.0 * mv,
        scale_floor=mv / 6,
        tau=mv / 2,
        near=mv,
    )


def fine_level(opt: RegistrationOptions) -> Level:
    """The winner (and close rivals) at full density: the finest kernel floor and convergence,
    scored by the inlier band; matches reach out to `change_max_mm` to find changed regions."""
    mv = opt.sampling.mid_voxel
    return level(
        iterations=opt.levels.fine_iterations,
        dmax_start=2.0 * mv,
        dmax_end=max(4 * opt.verdict.changed_mm, 0.3),
        scale_floor=opt.levels.final_scale_mm,
        mad_factor=opt.levels.fine_mad_factor,
        converge_rot_rad=opt.levels.converge_rot_rad,
        converge_trans_mm=opt.levels.converge_trans_mm,
        normal_max_angle_deg=opt.levels.normal_max_angle_deg,
        tau=opt.levels.inlier_mm,
        near=opt.verdict.change_max_mm,
    )
