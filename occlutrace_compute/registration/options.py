"""Tunable knobs of the engine, with defaults measured on synthetic dental rescans, grouped by the
stage they tune (as KISS-ICP groups its config): sampling, hypotheses, ICP levels, verdict, local
search, runtime. `RegistrationOptions().updated(fine_points=8000)` changes fields by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingOptions:
    """The pyramid: coarse_voxel -> mid_voxel -> fine samples (sizes in mm)."""

    fine_points: int = 20000  # moving samples at the finest level
    fixed_points: int = 32000  # fixed samples (denser than moving: closer tangent planes)
    coarse_voxel: float = 1.6
    mid_voxel: float = 0.6
    coarse_icp_points: int = 400  # moving samples per hypothesis in the coarse ICP
    mid_icp_points: int = 2000


@dataclass(frozen=True)
class HypothesisOptions:
    """Global starting poses, refined together at the coarse level; the best few go on to mid."""

    fpfh_radius_factor: float = 5.0  # feature radius = factor x coarse_voxel
    ransac_trials: int = 30000  # drawn triplets; only the consistent ones (<= 500) are scored
    fpfh_hypotheses: int = 8
    pca_angles: int = 12  # rotations about the occlusal normal, per normal sign
    anchors: int = 12  # placements of the moving centroid on the fixed scan (partial overlap)
    prescreen_points: int = 128  # moving samples scoring each (rotation, anchor) guess
    axis_hypotheses: int = 8  # best pre-screened guesses refined by ICP
    keep_after_prune: int = 8  # distinct hypotheses surviving the first coarse round
    keep_after_coarse: int = 3  # distinct hypotheses carried to the mid level


@dataclass(frozen=True)
class LevelOptions:
    """ICP at each level (registration/schedule.py builds the levels from these)."""

    coarse_iterations: int = 10
    mid_iterations: int = 8
    fine_iterations: int = 10
    normal_max_angle_deg: float = 60.0  # correspondences whose normals disagree more are dropped
    # Coarse and mid kernel scale in units of the residuals' MAD sigma. Tight: when changed
    # anatomy (prepared crowns, 1-1.5 mm lower) covers most of the overlap, a wider kernel lets
    # it pull the fit ~1 mm / 3-4 deg off, into a basin the finer levels cannot leave.
    search_mad_factor: float = 0.6
    final_scale_mm: float = 0.03  # floor of the robust kernel's scale at the finest level
    fine_mad_factor: float = 1.0  # finest-level kernel scale in units of the residuals' MAD sigma
    inlier_mm: float = 0.1  # |residual| under which a fine-level correspondence is an inlier
    converge_rot_rad: float = 1e-5  # finest-level step under which ICP has converged (0.3 um at 30 mm)
    converge_trans_mm: float = 3e-4


@dataclass(frozen=True)
class VerdictOptions:
    """What the answer reports: changed regions, and when it is doubtful."""

    changed_mm: float = 0.15  # residual over which an overlapped moving sample counts as changed
    change_max_mm: float = 4.0  # farther than this from the fixed surface is outside the overlap
    min_region_area_mm2: float = 2.0  # smaller clusters of changed samples are not reported
    ambiguity_margin: float = 0.15  # relative score gap under which two distinct poses are ambiguous
    min_fitness: float = 0.25
    min_confidence: float = 0.8  # under this the result is flagged doubtful even if no single signal is


@dataclass(frozen=True)
class LocalSearchOptions:
    """Doubtful answers (confidence under min_confidence) are searched again from `starts` random
    rigid steps around them (sigmas step_deg, step_mm), for up to `rounds` rounds: rescues poses
    pulled ~1 mm / 3-4 deg off by changed anatomy covering most of the overlap; a fraction of a
    second a round (bench/RESULTS.md), on those pairs only."""

    starts: int = 32
    rounds: int = 3
    step_deg: float = 2.5
    step_mm: float = 0.7


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how it runs; `seed` makes every random draw repeatable."""

    seed: int = 0
    knn_backend: str = "auto"  # "kdtree" on CPU, nn.knn backends on GPU
    # torch and BLAS threads on CPU: per-iteration tensors are small (< 100k rows), where OpenMP
    # fork/join costs more than it saves and stalls badly on shared cores (tree searches still
    # use `tree_threads`). None keeps the process setting.
    cpu_threads: int | None = 1
    # OpenMP threads of the CPU kd-tree searches (pykdtree), this thread only, while cpu_threads
    # is set. 1: in a pair job the reference's distance index builds on the second core, where a
    # 2-thread query team waits for the busy core (spinning) and ICP's 300-20k-row searches gain
    # nothing (bench/RESULTS.md, register stage). None: the process setting (every core).
    tree_threads: int | None = 1


@dataclass(frozen=True)
class RegistrationOptions:
    """Defaults suit full-arch intraoral scans in millimetres (about 40-70 mm across).

    Global hypotheses are refined together at the coarse level, the best few at the mid level,
    and only the winner at full density (where sub-micrometre accuracy comes from).
    """

    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    hypotheses: HypothesisOptions = field(default_factory=HypothesisOptions)
    levels: LevelOptions = field(default_factory=LevelOptions)
    verdict: VerdictOptions = field(default_factory=VerdictOptions)
    local_search: LocalSearchOptions = field(default_factory=LocalSearchOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def updated(self, **changes: Any) -> RegistrationOptions:
        """A copy with fields changed by their names, whichever section holds them
        (`updated(fine_points=8000, knn_backend="torch")`); an unknown name is a TypeError."""
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            section = _SECTION_OF.get(name)
            if section is None:
                raise TypeError(f"RegistrationOptions has no field {name!r}")
            by_section.setdefault(section, {})[name] = value
        return dataclasses.replace(
            self, **{s: dataclasses.replace(getattr(self, s), **values) for s, values in by_section.items()}
        )


def _sections_of_fields() -> dict[str, str]:
    """Field name -> the section holding it; names must be unique across sections."""
    out: dict[str, str] = {}
    defaults = RegistrationOptions()
    for section in dataclasses.fields(RegistrationOptions):
        for f in dataclasses.fields(getattr(defaults, section.name)):
            if f.name in out:
                raise TypeError(f"field {f.name!r} is in sections {out[f.name]!r} and {section.name!r}")
            out[f.name] = section.name
    return out


_SECTION_OF = _sections_of_fields()
