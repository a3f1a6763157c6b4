"""A pair's answer from its fine-level item: fitness, RMSE, changed regions, confidence."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.icp import IcpOutcome, Scores
from occlutrace_compute.registration.options import RegistrationOptions
from occlutrace_compute.registration.prepare import Prepared
from occlutrace_compute.registration.regions import changed_regions
from occlutrace_compute.registration.result import ChangedRegion, RegistrationResult


def degeneracy_ratio(hessian: np.ndarray, radius: float) -> float:
    """Smallest / largest eigenvalue of the normal equations with rotation scaled to mm."""
    D = np.diag([1 / radius, 1 / radius, 1 / radius, 1.0, 1.0, 1.0])
    ev = np.linalg.eigvalsh(D @ hessian @ D)
    return float(ev[0] / ev[-1]) if ev[-1] > 0 else 0.0


Scalar = TypeVar("Scalar", float, torch.Tensor)


def confidence_of(runner_ratio: Scalar, fitness: Scalar, degeneracy: Scalar, opt: RegistrationOptions) -> Scalar:
    """Confidence in [0, 1] from the runner-up's score ratio, the fitness and the degeneracy ratio:
    floats (one pair) or tensors of any shape (a batch, elementwise, `batched.summary`)."""

    def capped(x: Scalar) -> Scalar:
        return x.clamp_max(1.0) if isinstance(x, torch.Tensor) else min(1.0, x)

    return (
        capped((1 - runner_ratio) / (2 * opt.verdict.ambiguity_margin))
        * capped(fitness / (2 * opt.verdict.min_fitness))
        * capped(degeneracy / 1e-2)
    )


def doubts(
    runner_ratio: float,
    runner_angle: float,
    fitness: float,
    degeneracy: float,
    confidence: float,
    opt: RegistrationOptions,
) -> list[str]:
    """Why a pair's answer is doubtful, in words (empty: it is not)."""
    reasons = []
    if runner_ratio > 1 - opt.verdict.ambiguity_margin:
        reasons.append(
            f"a distinct pose {runner_angle:.0f} deg away fits almost as well (score ratio {runner_ratio:.2f})"
        )
    if fitness < opt.verdict.min_fitness:
        reasons.append(f"low overlap: only {fitness:.0%} of the moving scan matches the fixed scan")
    if degeneracy < 1e-3:
        reasons.append("geometry does not constrain every direction (flat, symmetric or featureless surface)")
    if not reasons and confidence < opt.verdict.min_confidence:
        # Each signal alone is under its limit but together they are weak: on 100 changed rescans
        # every wrong answer scored <= 0.77 here and every right one 1.0 (bench/RESULTS.md).
        reasons.append(
            f"low confidence {confidence:.2f}: partial overlap ({fitness:.0%} matched) "
            f"with a rival pose at score ratio {runner_ratio:.2f}"
        )
    return reasons


def result(
    i: int,
    prep: Prepared,
    out: IcpOutcome,
    sc: Scores,
    fine_m: Clouds,
    opt: RegistrationOptions,
    runner_ratio: float,
    runner_angle: float,
    n_hyp: int,
) -> RegistrationResult:
    """The result of fine-level item `i` (one of `prep`'s pair)."""
    n = int(fine_m.lengths[i])
    m = sc.matches
    r = m.residual[i, :n].cpu().numpy()
    d2 = m.dist2[i, :n].cpu().numpy()
    compatible = m.compatible[i, :n].cpu().numpy()
    tang2 = m.tangential2[i, :n].cpu().numpy()
    moved = m.moved[i, :n].cpu().numpy()
    # Inside the overlap: close to the fixed surface and over it (not beyond its border).
    over = compatible & (d2 < opt.verdict.change_max_mm**2) & (tang2 < (3 * prep.spacing) ** 2)
    outliers = over & (np.abs(r) > opt.verdict.changed_mm)
    regions = changed_regions(
        moved, outliers, r, 3 * prep.spacing, prep.area_per_sample, opt.verdict.min_region_area_mm2
    )
    fitness = float(sc.fitness[i])
    pts = prep.moving.fine.points
    radius = float(np.sqrt(((pts - pts.mean(0)) ** 2).sum(1).mean()))
    degeneracy = degeneracy_ratio(out.hessian[i].cpu().numpy(), radius)
    return written(
        prep,
        opt,
        T_fixed_moving=out.T_fixed_moving[i].cpu().numpy(),
        rmse_mm=float(sc.trimmed_rmse[i]),
        fitness=fitness,
        iterations=int(out.iterations[i]),
        converged=bool(out.converged[i]),
        degeneracy=degeneracy,
        confidence=confidence_of(runner_ratio, fitness, degeneracy, opt),
        runner_ratio=runner_ratio,
        runner_angle=runner_angle,
        n_hyp=n_hyp,
        outliers=outliers,
        regions=regions,
    )


def written(
    prep: Prepared,
    opt: RegistrationOptions,
    *,
    T_fixed_moving: np.ndarray,
    rmse_mm: float,
    fitness: float,
    iterations: int,
    converged: bool,
    degeneracy: float,
    confidence: float,
    runner_ratio: float,
    runner_angle: float,
    n_hyp: int,
    outliers: np.ndarray,
    regions: list[ChangedRegion],
) -> RegistrationResult:
    """A pair's result from its values (per pair here, fetched for the whole batch in
    `batched.summary`), with the reasons for doubt (`doubts`) written beside them."""
    reasons = doubts(runner_ratio, runner_angle, fitness, degeneracy, confidence, opt)
    return RegistrationResult(
        T_fixed_moving=T_fixed_moving,
        rmse_mm=float(rmse_mm),
        fitness=float(fitness),
        iterations=int(iterations),
        converged=bool(converged),
        confidence=float(confidence),
        doubtful=bool(reasons),
        reason="; ".join(reasons),
        runner_up_score_ratio=float(runner_ratio),
        hypotheses=n_hyp,
        moving_samples=prep.moving.fine.points,
        outlier_mask=outliers,
        changed_regions=regions,
    )
