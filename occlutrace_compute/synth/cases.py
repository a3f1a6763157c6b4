"""Pair cases (a scan and a partial rescan, optionally with clinical changes) and bite cases
(upper, lower and buccal bite scans), each file in its own random scanner frame, with ground truth.

Every scan is an independent sampling of the same continuous arch model (its own grid spacing
and phase), so no vertex of one scan coincides with a vertex of another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from occlutrace_compute.meshes.model import Mesh, vertex_normals
from occlutrace_compute.synth.arch import (
    SEG_GUM_B,
    SEG_NECK_B,
    SEG_TOP,
    ArchModel,
    ArchSample,
    arch_models,
    column_positions,
    columns,
    sample,
)
from occlutrace_compute.synth.changes import fragment, gingiva_patches, move_teeth, plan_changes, prepare_teeth
from occlutrace_compute.synth.occlusion import ContactTruth, closest_on_surface, contact_truth
from occlutrace_compute.synth.scan import add_noise, crop, random_pose, scan_extent

# A vertex counts as changed when it lies farther than this from the unchanged surface.
CHANGE_TOLERANCE_MM = 0.01


@dataclass
class PairCase:
    """A scan (fixed) and a partial rescan (moving) of one arch, in unrelated scanner frames."""

    fixed: Mesh
    moving: Mesh
    T_fixed_moving: np.ndarray  # 4x4: moving-file coordinates -> fixed-file coordinates
    moving_unchanged: np.ndarray  # (n_moving,) bool: geometry identical at both visits
    overlap: float  # share of the arch length the rescan covers
    changes: list[str]
    jaw: str = "upper"
    fixed_tooth: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    moving_tooth: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)


@dataclass
class BiteCase:
    """Upper, lower and buccal bite scans, each in its own frame; occlusion frame = upper's."""

    upper: Mesh
    lower: Mesh
    bites: list[Mesh]
    T_upper_lower: np.ndarray  # lower-file -> upper-file coordinates, in occlusion
    T_upper_bites: list[np.ndarray]  # bite-file -> upper-file coordinates
    contacts: ContactTruth
    upper_tooth: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    lower_tooth: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)


def _check(spacing_mm: float, noise_mm: float) -> None:
    if not 0.05 <= spacing_mm <= 2.0:
        raise ValueError(f"spacing_mm must lie in [0.05, 2.0], got {spacing_mm}")
    if not 0.0 <= noise_mm <= 0.5:
        raise ValueError(f"noise_mm must lie in [0, 0.5], got {noise_mm}")


def _scan(model: ArchModel, spacing_mm: float, rng: np.random.Generator) -> ArchSample:
    """An independent sampling: spacing jittered +-8 %, random grid phases."""
    return sample(model, spacing_mm * rng.uniform(0.92, 1.08), rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95))


def make_pair_case(
    seed: int,
    scenario: Literal["clean", "changed"] = "clean",
    overlap: tuple[float, float] = (0.6, 1.0),
    noise_mm: float = 0.015,
    spacing_mm: float = 0.15,
) -> PairCase:
    """Scan + rescan of one arch (upper or lower, chosen by seed).

    fixed: the full arch (gum cropped at a ragged depth, 0-2 holes). moving: a contiguous
    stretch covering `overlap` (drawn from the range) of the arch length, ragged ends, 1-4
    holes; scenario "changed" adds 3-6 changes (`changes.py`) whose vertices, and loose
    fragments, are False in moving_unchanged.
    """
    _check(spacing_mm, noise_mm)
    if scenario not in ("clean", "changed"):
        raise ValueError(f"scenario must be 'clean' or 'changed', got {scenario!r}")
    if not 0.1 <= overlap[0] <= overlap[1] <= 1.0:
        raise ValueError(f"overlap must be (lo, hi) with 0.1 <= lo <= hi <= 1, got {overlap}")
    rng = np.random.default_rng([int(seed), 1])
    jaw = "upper" if rng.random() < 0.5 else "lower"
    model = arch_models(seed)[0 if jaw == "upper" else 1]

    fx = _scan(model, spacing_mm, rng)
    fixed, fixed_idx = crop(fx.mesh, scan_extent(fx, rng, None, (5.0, 8.0), (0, 2)))

    lo, hi = model.s_range
    share = float(rng.uniform(*overlap))
    start = float(rng.uniform(lo, hi - share * (hi - lo)))
    window = (start, start + share * (hi - lo))
    changes: list[str] = []
    plan = plan_changes(model, rng, window) if scenario == "changed" else None
    moving_model = model
    if plan is not None and plan.prepared:
        moving_model, notes = prepare_teeth(model, plan.prepared, rng)
        changes += notes
    spacing = spacing_mm * rng.uniform(0.92, 1.08)
    phase_t = rng.uniform(0.05, 0.95)
    grid = column_positions(model, lo, hi, spacing, rng.uniform(0.05, 0.95))  # also for the reference
    mv = sample(moving_model, spacing, phase_t=phase_t, s_columns=grid)
    keep = scan_extent(mv, rng, window, (4.0, 7.0), (1, 4))
    verts = mv.vertices
    if plan is not None:
        if plan.moved:
            verts, notes = move_teeth(model, mv, verts, plan.moved, rng)
            changes += notes
        if plan.gingiva:
            verts, notes = gingiva_patches(mv, Mesh(verts, mv.faces), plan.gingiva, window, rng)
            changes += notes
    moving, moving_idx = crop(Mesh(verts, mv.faces), keep)
    tooth = mv.tooth[moving_idx]
    unchanged = np.ones(moving.n_vertices, dtype=bool)
    if plan is not None:
        reference = sample(model, spacing, phase_t=phase_t, s_columns=grid, n_rows=mv.grid_shape[1])
        unchanged = _unchanged(moving.vertices, reference.mesh, reference.vertices[moving_idx], spacing)
        pieces = [moving]
        for _ in range(plan.fragments):
            frag, note = fragment(model, window, spacing_mm, rng)
            pieces.append(frag)
            changes.append(note)
        moving = _concat(pieces)
        extra = moving.n_vertices - unchanged.size
        unchanged = np.concatenate([unchanged, np.zeros(extra, dtype=bool)])
        tooth = np.concatenate([tooth, np.zeros(extra, dtype=np.int64)])

    T_f, T_m = random_pose(rng), random_pose(rng)
    fixed_file = add_noise(fixed, noise_mm, rng).transformed(T_f)
    moving_file = add_noise(moving, noise_mm, rng).transformed(T_m)
    return PairCase(
        fixed=fixed_file,
        moving=moving_file,
        T_fixed_moving=T_f @ np.linalg.inv(T_m),
        moving_unchanged=unchanged,
        overlap=share,
        changes=changes,
        jaw=jaw,
        fixed_tooth=fx.tooth[fixed_idx],
        moving_tooth=tooth,
    )


def _unchanged(points: np.ndarray, reference: Mesh, same_grid: np.ndarray, spacing_mm: float) -> np.ndarray:
    """True where a point lies on the reference surface (within CHANGE_TOLERANCE_MM).

    Only points that moved relative to the same grid sample of the unchanged model can differ;
    their exact distance to the reference surface is checked.
    """
    moved = np.flatnonzero(np.linalg.norm(points - same_grid, axis=1) > 1e-9)
    out = np.ones(len(points), dtype=bool)
    out[moved] = False
    near, _ = cKDTree(reference.vertices).query(points[moved], distance_upper_bound=2.0 * spacing_mm)
    cand = moved[np.isfinite(near)]  # the others are farther than that from every vertex: changed
    if cand.size:
        # on-surface points have their triangle among the nearest few (a miss only over-marks)
        dist, _, _ = closest_on_surface(reference, points[cand], k=6)
        out[cand] = dist <= CHANGE_TOLERANCE_MM
    return out


def _concat(meshes: list[Mesh]) -> Mesh:
    offsets = np.cumsum([0] + [m.n_vertices for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.vertices for m in meshes]), np.concatenate([m.faces + o for m, o in zip(meshes, offsets)])
    )


def make_bite_case(
    seed: int, n_bites: Literal[1, 2] = 1, noise_mm: float = 0.015, spacing_mm: float = 0.15
) -> BiteCase:
    """Upper + lower arches and 1-2 buccal bite scans (bite 1: patient's left, bite 2: right)."""
    _check(spacing_mm, noise_mm)
    if n_bites not in (1, 2):
        raise ValueError(f"n_bites must be 1 or 2, got {n_bites!r}")
    rng = np.random.default_rng([int(seed), 2])
    upper_model, lower_model = arch_models(seed)
    up = _scan(upper_model, spacing_mm, rng)
    low = _scan(lower_model, spacing_mm, rng)
    upper, up_idx = crop(up.mesh, scan_extent(up, rng, None, (5.0, 8.0), (0, 2)))
    lower, low_idx = crop(low.mesh, scan_extent(low, rng, None, (5.0, 8.0), (0, 2)))
    contacts = contact_truth(upper, lower, low.tooth[low_idx])

    T_u, T_l = random_pose(rng), random_pose(rng)
    bites, T_bites = [], []
    for side in ("left", "right")[:n_bites]:
        bite = _bite_surface(upper_model, lower_model, side, spacing_mm, rng)
        T_b = random_pose(rng)
        bites.append(add_noise(bite, noise_mm, rng).transformed(T_b))
        T_bites.append(T_u @ np.linalg.inv(T_b))
    for region in contacts.regions:  # into the occlusion frame = the upper file's frame
        region.centroid = [float(x) for x in T_u[:3, :3] @ np.array(region.centroid) + T_u[:3, 3]]
    return BiteCase(
        upper=add_noise(upper, noise_mm, rng).transformed(T_u),
        lower=add_noise(lower, noise_mm, rng).transformed(T_l),
        bites=bites,
        T_upper_lower=T_u @ np.linalg.inv(T_l),
        T_upper_bites=T_bites,
        contacts=contacts,
        upper_tooth=up.tooth[up_idx],
        lower_tooth=low.tooth[low_idx],
    )


def _bite_surface(upper: ArchModel, lower: ArchModel, side: str, spacing_mm: float, rng: np.random.Generator) -> Mesh:
    """The cheek-side surfaces of both arches, teeth closed, over premolars and molars of one side.

    Visibility is a per-column depth test seen from the buccal side: in the (arch position,
    height) plane, a point is kept when nothing of either arch lies more than 0.8 mm further
    buccally in its cell or the cells beside it along the arch (the upper buccal cusps hide the
    lower's; the scanner's tilt during the sweep still reaches the cervical undercuts).
    """
    parts: list[tuple[ArchSample, np.ndarray]] = []
    for model in (upper, lower):
        lay = model.layout
        quad_left = 2 if model.jaw == "upper" else 3
        quad_right = 1 if model.jaw == "upper" else 4
        q = quad_left if side == "left" else quad_right
        slots = [k for k in range(len(lay.fdi)) if lay.fdi[k] // 10 == q and lay.fdi[k] % 10 >= 4]
        lo = min(lay.boundary[k] for k in slots)
        hi = max(lay.boundary[k + 1] for k in slots)
        lo, hi = lo - rng.uniform(0.0, 2.0), hi + rng.uniform(-2.0, 0.5)
        smp = sample(
            model,
            spacing_mm * rng.uniform(0.92, 1.08),
            rng.uniform(0.05, 0.95),
            rng.uniform(0.05, 0.95),
            s_limits=(lo, hi),
        )
        depth_limit = rng.uniform(3.0, 5.0)
        col = columns(model, smp.s)
        buccal = (
            ((smp.segment == SEG_TOP) & (smp.u > 0.2 * col.b))
            | (smp.segment == SEG_NECK_B)
            | ((smp.segment == SEG_GUM_B) & (smp.depth > -depth_limit))
        )
        parts.append((smp, buccal))

    # depth test in upper-curve coordinates: view axis = buccal normal, image = (s, z)
    coords = []
    for smp, _ in parts:
        s_u, u_u = upper.curve.project(smp.vertices[:, :2])
        coords.append((s_u, u_u, smp.vertices[:, 2]))
    cell = 0.25
    all_s = np.concatenate([c[0] for c in coords])
    all_z = np.concatenate([c[2] for c in coords])
    s0, z0 = all_s.min() - 1, all_z.min() - 1
    shape = (int((all_s.max() - s0) / cell) + 3, int((all_z.max() - z0) / cell) + 3)
    front = np.full(shape, -np.inf)
    for (_smp, cand), (s_u, u_u, z) in zip(parts, coords):
        i = ((s_u[cand] - s0) / cell).astype(int)
        j = ((z[cand] - z0) / cell).astype(int)
        np.maximum.at(front, (i, j), u_u[cand])
    grown = np.maximum(front, np.maximum(np.roll(front, 1, 0), np.roll(front, -1, 0)))
    meshes = []
    for (smp, cand), (s_u, u_u, z) in zip(parts, coords):
        i = ((s_u - s0) / cell).astype(int)
        j = ((z - z0) / cell).astype(int)
        visible = cand & (u_u >= grown[i, j] - 0.8)
        normals = vertex_normals(smp.mesh)
        _, _, n_xy = upper.curve.at(s_u)
        facing = np.einsum("ij,ij->i", normals[:, :2], n_xy) > 0.05
        keep = visible & facing
        keep &= scan_extent(smp, rng, None, (99.0, 99.0), (0, 2))
        meshes.append(crop(smp.mesh, keep)[0])
    return _concat(meshes)
