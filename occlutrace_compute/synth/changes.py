"""Clinical changes between two visits, applied to a rescan ("changed" pair cases).

Kinds: a prepared tooth (crown reduced: material removed), swollen or receded gingiva (a normal
offset over a patch), a tooth moved by treatment (a few tenths of a mm and a few degrees about
its own long axis, blended smoothly into the gingiva and the contacts), and loose soft-tissue
fragments (tongue or cheek) captured by the scanner, disconnected from the arch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occlutrace_compute.meshes.model import Mesh, vertex_normals
from occlutrace_compute.synth.arch import ArchModel, ArchSample, columns


@dataclass
class Plan:
    """Which changes a rescan gets, chosen before it is sampled."""

    prepared: list[int]  # slot indices
    moved: list[int]
    gingiva: int
    fragments: int


def plan_changes(model: ArchModel, rng: np.random.Generator, s_window: tuple[float, float]) -> Plan:
    """3-6 changes inside the rescan's window, at least one fragment."""
    lay = model.layout
    inside = [k for k in range(len(lay.center)) if lay.fdi[k] and s_window[0] + 2 < lay.center[k] < s_window[1] - 2]
    total = int(rng.integers(3, 7))
    fragments = int(rng.integers(1, 3))
    kinds = rng.choice(["prepared", "moved", "gingiva"], size=total - fragments)
    teeth = list(rng.permutation(inside)) if inside else []
    prepared: list[int] = []
    moved: list[int] = []
    gingiva = 0
    for kind in kinds:
        if kind in ("prepared", "moved") and teeth:
            (prepared if kind == "prepared" else moved).append(int(teeth.pop()))
        else:
            gingiva += 1
    return Plan(prepared, moved, gingiva, fragments)


def prepare_teeth(model: ArchModel, slots: list[int], rng: np.random.Generator) -> tuple[ArchModel, list[str]]:
    """The model with these crowns reduced: walls ~0.9 mm, occlusal ~1.2-1.8 mm, cusps flattened."""
    lay = model.layout.copy()
    notes = []
    for k in slots:
        occlusal = rng.uniform(1.2, 1.8)
        lay.c_b[k] = max(0.5 * lay.c_b[k], lay.c_b[k] - 0.9)
        lay.c_top[k] -= occlusal
        lay.topo_scale[k] = 0.15
        notes.append(f"tooth {lay.fdi[k]} prepared: crown reduced by ~{occlusal:.1f} mm occlusally and ~0.9 mm axially")
    return model.with_layout(lay), notes


def move_teeth(
    model: ArchModel, smp: ArchSample, vertices: np.ndarray, slots: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Rigid motion of each crown about its own vertical axis, faded out toward the contacts
    (last 30 % of the half width) and into the gingiva (within ~1 mm below the margin)."""
    col = columns(model, smp.s)
    out = vertices.copy()
    notes = []
    for k in slots:
        in_slot = col.slot == k
        w_a = np.clip((1.0 - np.abs(col.a)) / 0.3, 0.0, 1.0)
        w_a = w_a * w_a * (3 - 2 * w_a)
        w_d = np.where(smp.depth >= 0, 1.0, np.exp(-((smp.depth / 1.0) ** 2)))
        weight = np.where(in_slot, w_a * w_d, 0.0)
        xy, _, _ = model.curve.at(np.array([model.layout.center[k]]))
        axis_point = np.array([xy[0, 0], xy[0, 1], 0.0])
        angle = np.deg2rad(rng.uniform(2.0, 4.0) * rng.choice([-1, 1]))
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        direction = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(0.2, 0.4)
        t = np.array([shift * np.cos(direction), shift * np.sin(direction), rng.uniform(-0.1, 0.1)])
        moved = (vertices - axis_point) @ rot.T + axis_point + t
        out += weight[:, None] * (moved - vertices)
        notes.append(
            f"tooth {model.layout.fdi[k]} moved: {shift:.2f} mm and {np.rad2deg(angle):+.1f} deg about its long axis"
        )
    return out, notes


def gingiva_patches(
    smp: ArchSample, mesh: Mesh, count: int, s_window: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Swelling (+) or recession (-) of 0.1-0.4 mm along the normal over Gaussian patches of the
    gingiva near the margin; faded to zero at the margin so the surface stays continuous."""
    out = mesh.vertices.copy()
    normals = vertex_normals(mesh)
    gum = (smp.tooth == 0) & (smp.depth < 0)
    cand = np.flatnonzero(gum & (smp.depth > -3.0) & (smp.s > s_window[0] + 2) & (smp.s < s_window[1] - 2))
    notes = []
    for _ in range(count):
        if cand.size == 0:
            break
        centre = mesh.vertices[rng.choice(cand)]
        amp = rng.uniform(0.1, 0.4) * rng.choice([-1.0, 1.0])
        sigma = rng.uniform(1.0, 2.0)
        d2 = ((mesh.vertices - centre) ** 2).sum(axis=1)
        weight = np.exp(-0.5 * d2 / sigma**2) * np.clip(-smp.depth / 0.8, 0.0, 1.0) * gum
        out += (amp * weight)[:, None] * normals
        kind = "swollen" if amp > 0 else "receded"
        notes.append(f"gingiva {kind} by {abs(amp):.2f} mm over a patch of ~{2 * sigma:.1f} mm radius")
    return out, notes


def fragment(
    model: ArchModel, s_window: tuple[float, float], spacing_mm: float, rng: np.random.Generator
) -> tuple[Mesh, str]:
    """A loose soft-tissue surface patch (tongue lingually or cheek buccally), 1.5-4 mm off the arch."""
    side = rng.choice(["tongue", "cheek"])
    s0 = rng.uniform(*s_window)
    col = columns(model, np.array([s0]))
    xy, tangent, normal = model.curve.at(np.array([s0]))
    out_dir = normal[0] if side == "cheek" else -normal[0]
    gap = rng.uniform(1.5, 4.0)
    reach = col.b[0] + (model.gum_buccal if side == "cheek" else model.gum_lingual) + gap
    centre_w = col.margin[0] - rng.uniform(0.0, 3.0) + col.lift[0]
    centre = np.array([*(xy[0] + out_dir * reach), model.z_sign * centre_w])
    radius = rng.uniform(6.0, 12.0)
    half_w, half_h = rng.uniform(2.5, 5.0), rng.uniform(2.0, 4.0)
    n_a = max(4, int(2 * half_w / spacing_mm))
    n_b = max(4, int(2 * half_h / spacing_mm))
    a, b = np.meshgrid(np.linspace(-half_w, half_w, n_a), np.linspace(-half_h, half_h, n_b), indexing="ij")
    bulge = (a**2 + b**2) / (2 * radius) - 0.3 * np.sin(a / 1.7 + rng.uniform(0, 6)) * np.cos(b / 1.3)
    t3 = np.array([tangent[0, 0], tangent[0, 1], 0.0])
    o3 = np.array([out_dir[0], out_dir[1], 0.0])
    z3 = np.array([0.0, 0.0, 1.0])
    pts = centre + a[..., None] * t3 + b[..., None] * z3 + bulge[..., None] * o3  # convex toward the arch
    i, j = np.meshgrid(np.arange(n_a - 1), np.arange(n_b - 1), indexing="ij")
    v00 = (i * n_b + j).ravel()
    faces = np.concatenate([np.stack([v00, v00 + n_b, v00 + n_b + 1], 1), np.stack([v00, v00 + n_b + 1, v00 + 1], 1)])
    note = f"loose {side} fragment of ~{2 * half_w:.0f}x{2 * half_h:.0f} mm captured ~{gap:.1f} mm off the gingiva"
    return Mesh(pts.reshape(-1, 3), faces.astype(np.int64)), note
