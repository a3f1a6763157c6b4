"""Every pair's answer from its fine-level item, computed for the whole batch at once: fitness,
RMSE, the changed-sample mask, degeneracy and confidence as tensor ops, fetched to the host in a
fixed number of transfers; the changed regions of all pairs are clustered in one kd-tree
(`batched.regions`, the same regions as `regions.changed_regions` per pair), and the host then
only writes each pair's result (its reasons and its regions).

Same values as `verdict.result` (up to rounding of sums). Time O(B x P) on the device plus the
clustering (O(N log N + E) for N changed samples, E links), memory O(B x P)."""

from __future__ import annotations

import numpy as np
import torch

from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.batched.regions import changed_regions_batch
from occlutrace_compute.registration.icp import IcpOutcome, Scores
from occlutrace_compute.registration.options import RegistrationOptions
from occlutrace_compute.registration.prepare import Prepared
from occlutrace_compute.registration.result import ChangedRegion, RegistrationResult
from occlutrace_compute.registration.verdict import confidence_of, written

_COLUMNS = ("length", "fitness", "rmse", "iterations", "converged", "confidence", "degeneracy", "ratio", "angle")


def summarize(
    prepared: list[Prepared],
    items: torch.Tensor,
    out: IcpOutcome,
    sc: Scores,
    fine_m: Clouds,
    opt: RegistrationOptions,
    ratio: torch.Tensor,
    angle: torch.Tensor,
    n_hyp: list[int],
    which: list[int] | None = None,
) -> list[RegistrationResult | None]:
    """Results of pairs `which` (default all; None for the others): pair k's answer is fine-level
    item `items[k]`, its runner-up score ratio and angle `ratio[k]`, `angle[k]`."""
    dev, dt = out.T_fixed_moving.device, out.T_fixed_moving.dtype
    m = sc.matches
    n = fine_m.lengths[items]
    real = torch.arange(m.residual.shape[1], device=dev)[None] < n[:, None]
    r = m.residual[items]
    link = torch.tensor([3 * p.spacing for p in prepared], dtype=dt, device=dev)
    # Inside the overlap: close to the fixed surface and over it (not beyond its border).
    over = (
        real
        & m.compatible[items]
        & (m.dist2[items] < opt.verdict.change_max_mm**2)
        & (m.tangential2[items] < (link * link)[:, None])
    )
    outliers = over & (r.abs() > opt.verdict.changed_mm)
    fitness, rmse = sc.fitness[items], sc.trimmed_rmse[items]
    pts = fine_m.points[items]
    nf = n.to(dt)
    centre = (pts * real[..., None]).sum(1) / nf[:, None]
    radius = torch.sqrt((((pts - centre[:, None]) ** 2).sum(-1) * real).sum(1) / nf)
    scale = torch.ones(len(prepared), 6, dtype=dt, device=dev)
    scale[:, :3] = 1 / radius[:, None]
    ev = torch.linalg.eigvalsh(scale[:, :, None] * out.hessian[items] * scale[:, None, :])
    degeneracy = torch.where(ev[:, -1] > 0, ev[:, 0] / ev[:, -1], torch.zeros_like(ev[:, 0]))
    confidence = confidence_of(ratio, fitness, degeneracy, opt)
    table = (
        torch.stack(
            [
                nf,
                fitness.to(dt),
                rmse.to(dt),
                out.iterations[items].to(dt),
                out.converged[items].to(dt),
                confidence.to(dt),
                degeneracy,
                ratio.to(dt),
                angle.to(dt),
            ],
            1,
        )
        .cpu()
        .numpy()
    )
    T_all = out.T_fixed_moving[items].cpu().numpy()
    outliers_h, r_h, moved_h = outliers.cpu().numpy(), r.cpu().numpy(), m.moved_c[items].cpu().numpy()
    todo = list(range(len(prepared))) if which is None else list(which)
    wanted = np.zeros(len(prepared), dtype=bool)
    wanted[todo] = True
    regions = changed_regions_batch(  # all pairs in one kd-tree: same regions as per pair
        moved_h.transpose(0, 2, 1),
        outliers_h & wanted[:, None],
        r_h,
        np.array([3 * p.spacing for p in prepared]),
        np.array([p.area_per_sample for p in prepared]),
        opt.verdict.min_region_area_mm2,
    )
    rows = table.tolist()
    results: list[RegistrationResult | None] = [None] * len(prepared)
    for k in todo:
        row = dict(zip(_COLUMNS, rows[k]))
        results[k] = _write(prepared[k], opt, row, T_all[k], outliers_h[k], regions[k], n_hyp[k])
    return results


def _write(
    prep: Prepared,
    opt: RegistrationOptions,
    row: dict,
    T_fixed_moving: np.ndarray,
    outliers: np.ndarray,
    regions: list[ChangedRegion],
    n_hyp: int,
) -> RegistrationResult:
    """One pair's result from its fetched values (`verdict.written`, as `verdict.result` writes it)."""
    return written(
        prep,
        opt,
        T_fixed_moving=T_fixed_moving,
        rmse_mm=row["rmse"],
        fitness=row["fitness"],
        iterations=row["iterations"],
        converged=row["converged"],
        degeneracy=row["degeneracy"],
        confidence=row["confidence"],
        runner_ratio=row["ratio"],
        runner_angle=row["angle"],
        n_hyp=n_hyp,
        outliers=outliers[: int(row["length"])],
        regions=regions,
    )
