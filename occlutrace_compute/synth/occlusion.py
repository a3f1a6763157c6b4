"""Fitting the lower arch into occlusion with the upper, and the ground-truth contacts.

Fit: the lower's own anatomy is placed under the upper (buccal cusps under the upper central
fossae, see `arch_models`); each lower tooth is then lifted so that its highest points would
reach `pen` mm into the upper (posterior teeth: 0.06-0.18 mm, canines about touching, incisors
0.05-0.25 mm short), and the surface is clamped to stay `clearance` (10-30 um of penetration)
below the upper crown tops along vertical lines. Cusps that reach the upper thus end in small
facets parallel to the opposing fossa slope: the contacts, at known places, with no deep
interpenetration anywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth.arch import SEG_NECK_B, SEG_NECK_L, ArchModel, columns, opposing_levels, profiles
from occlutrace_compute.synth.teeth import KIND


def fit_lower(upper: ArchModel, lower: ArchModel, rng: np.random.Generator) -> ArchModel:
    """The lower model with per-tooth lifts and clearances that put it into occlusion."""
    lo, hi = lower.s_range
    s = np.arange(lo + 0.1, hi, 0.2)
    col = columns(lower, s)
    prof = profiles(lower, col)  # lower.opposing is None: unclamped, lift 0
    probe = dataclasses.replace(lower, opposing=upper)
    rows, cols_, z_self, z_opp, ok = opposing_levels(probe, col, prof.u, prof.w)
    crown = (prof.seg[cols_] >= SEG_NECK_L) & (prof.seg[cols_] <= SEG_NECK_B) & ok
    crown &= lower.layout.fdi[col.slot[rows]] > 0
    k = len(lower.layout.center)
    min_gap = np.full(k, np.inf)
    np.minimum.at(min_gap, col.slot[rows[crown]], (z_opp - z_self)[crown])

    pen = np.zeros(k)
    for i, fdi in enumerate(lower.layout.fdi):
        kind = KIND[fdi % 10 - 1] if fdi else "tail"
        pen[i] = {
            "molar": rng.uniform(0.06, 0.18),
            "premolar": rng.uniform(0.06, 0.18),
            "canine": rng.uniform(-0.05, 0.08),
            "incisor": rng.uniform(-0.25, -0.05),
        }.get(kind, 0.0)
    lift = np.where(np.isfinite(min_gap), min_gap + pen, np.nan)
    known = np.flatnonzero(np.isfinite(lift))
    lift = np.interp(np.arange(k), known, lift[known])  # tails follow their neighbour
    clearance = -rng.uniform(0.01, 0.03, k)
    return dataclasses.replace(lower, lift=lift, clearance=clearance, opposing=upper)


@dataclass
class ContactRegion:
    side: str  # "left" | "right" (patient's)
    tooth: int  # FDI of the lower tooth carrying it
    centroid: list[float]  # occlusion (upper) frame, mm
    area_mm2: float
    min_distance_mm: float  # negative = penetration depth


@dataclass
class ContactTruth:
    """Occlusal contacts of the noise-free arches in occlusion.

    Method: for every lower vertex near the upper (KD-tree prefilter: a vertex of the upper
    within threshold + 1.5 edge lengths), the
    exact point-to-triangle distance to the upper surface (`closest_on_surface`),
    signed negative when the point lies behind the upper's outward face normal (penetration).
    A contact vertex has signed distance < threshold; areas sum the vertex areas (a third of
    each incident triangle) of contact vertices on the LOWER surface; a region is a connected
    set of contact vertices; its side is the patient's side of its centroid (canonical x > 0:
    right). Computed in the canonical frame; `make_bite_case` moves the region centroids into
    the upper file's frame (the occlusion frame).
    upper_area_mm2 repeats the area measured on the upper surface against the lower.
    """

    threshold_mm: float
    area_mm2: dict[str, float]
    count: dict[str, int]
    max_penetration_mm: float
    upper_area_mm2: dict[str, float]
    regions: list[ContactRegion] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def closest_on_surface(surface: Mesh, points: np.ndarray, k: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact point-to-triangle distances (trimesh.triangles.closest_point) to each point's k
    triangles with the nearest centroids; the smallest is the distance to the surface whenever
    the closest triangle is among them, which holds for points within about a triangle's size
    of a regularly triangulated surface (the only ones whose distance we use).
    Returns (distance, closest point, triangle index)."""
    tri = surface.vertices[surface.faces]
    k = min(k, len(tri))
    _, cand = cKDTree(tri.mean(axis=1)).query(points, k=k)
    cand = cand.reshape(len(points), k)
    q = trimesh.triangles.closest_point(tri[cand.ravel()], np.repeat(points, k, axis=0)).reshape(len(points), k, 3)
    d = np.linalg.norm(q - points[:, None, :], axis=2)
    best = d.argmin(axis=1)
    rows = np.arange(len(points))
    return d[rows, best], q[rows, best], cand[rows, best]


def signed_distance_to(surface: Mesh, points: np.ndarray, reach_mm: float) -> np.ndarray:
    """Signed distance from points to surface (negative behind its face normals); +inf for
    points with no surface vertex within reach_mm."""
    out = np.full(len(points), np.inf)
    near_d, _ = cKDTree(surface.vertices).query(points, k=1, distance_upper_bound=reach_mm)
    cand = np.flatnonzero(np.isfinite(near_d))
    if cand.size == 0:
        return out
    dist, closest, tri = closest_on_surface(surface, points[cand])
    tv = surface.vertices[surface.faces[tri]]
    normal = np.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0])
    sign = np.sign(np.einsum("ij,ij->i", points[cand] - closest, normal))
    out[cand] = np.where(sign < 0, -dist, dist)
    return out


def _edge_length(mesh: Mesh) -> float:
    e = mesh.vertices[mesh.faces[:, 1]] - mesh.vertices[mesh.faces[:, 0]]
    return float(np.median(np.linalg.norm(e, axis=1)))


def vertex_areas(mesh: Mesh) -> np.ndarray:
    tri = mesh.vertices[mesh.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return np.bincount(mesh.faces.ravel(), weights=np.repeat(area / 3.0, 3), minlength=mesh.n_vertices)


def _regions(mesh: Mesh, mask: np.ndarray) -> np.ndarray:
    e = mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    e = e[mask[e[:, 0]] & mask[e[:, 1]]]
    n = mesh.n_vertices
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def contact_truth(upper: Mesh, lower: Mesh, lower_tooth: np.ndarray, threshold_mm: float = 0.1) -> ContactTruth:
    """Contacts between an upper and a lower arch given in the same (occlusion) frame."""
    reach = threshold_mm + 1.5 * max(_edge_length(upper), _edge_length(lower))
    d_low = signed_distance_to(upper, lower.vertices, reach)
    d_up = signed_distance_to(lower, upper.vertices, reach)
    a_low, a_up = vertex_areas(lower), vertex_areas(upper)
    c_low, c_up = d_low < threshold_mm, d_up < threshold_mm

    def by_side(mask: np.ndarray, areas: np.ndarray, x: np.ndarray) -> dict[str, float]:
        right = float(areas[mask & (x > 0)].sum())
        left = float(areas[mask & (x <= 0)].sum())
        return {"left": left, "right": right, "total": left + right}

    labels = _regions(lower, c_low)
    regions: list[ContactRegion] = []
    for lab in np.unique(labels[c_low]):
        idx = np.flatnonzero(c_low & (labels == lab))
        w = a_low[idx]
        centroid = (lower.vertices[idx] * w[:, None]).sum(0) / max(w.sum(), 1e-12)
        teeth = lower_tooth[idx]
        regions.append(
            ContactRegion(
                side="right" if centroid[0] > 0 else "left",
                tooth=int(np.bincount(teeth).argmax()) if teeth.size else 0,
                centroid=[float(c) for c in centroid],
                area_mm2=float(w.sum()),
                min_distance_mm=float(d_low[idx].min()),
            )
        )
    regions.sort(key=lambda r: (r.side, r.tooth, r.centroid[1]))
    finite = np.concatenate([d_low[np.isfinite(d_low)], d_up[np.isfinite(d_up)], [0.0]])
    return ContactTruth(
        threshold_mm=threshold_mm,
        area_mm2=by_side(c_low, a_low, lower.vertices[:, 0]),
        count={side: sum(r.side == side for r in regions) for side in ("left", "right")},
        max_penetration_mm=float(max(0.0, -finite.min())),
        upper_area_mm2=by_side(c_up, a_up, upper.vertices[:, 0]),
        regions=regions,
    )
