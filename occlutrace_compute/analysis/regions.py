"""Connected surface regions where a per-vertex value lies below a level, with exact areas.

Area: the distance field is taken as linear over each triangle (interpolated from its vertices),
and each triangle contributes exactly the part of its area where that field is below the level.
Counting whole faces would drop a one-triangle rim around every region (or add one, with vertex
areas); the clipped area converges to the true contact area as the mesh is refined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occlutrace_compute.meshes.model import Mesh


def face_areas(mesh: Mesh) -> np.ndarray:
    v, f = mesh.vertices, mesh.faces
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)


def below_fraction(corner_values: np.ndarray, level: float) -> np.ndarray:
    """(M,) share of each triangle where the linear interpolation of its 3 values is < level."""
    s = np.sort(np.asarray(corner_values, dtype=np.float64) - level, axis=1)
    a, b, c = s[:, 0], s[:, 1], s[:, 2]
    frac = np.zeros(len(s))
    frac[c <= 0] = 1.0
    one = (a < 0) & (b >= 0)
    frac[one] = a[one] ** 2 / ((b[one] - a[one]) * (c[one] - a[one]))
    two = (b < 0) & (c > 0)
    frac[two] = 1.0 - c[two] ** 2 / ((c[two] - a[two]) * (c[two] - b[two]))
    return frac


@dataclass(frozen=True)
class Regions:
    """Vertex labels (-1 outside) and per-region clipped area, vertex count and minimum value."""

    vertex_label: np.ndarray  # (N,) int64
    area_mm2: np.ndarray  # (R,)
    n_vertices: np.ndarray  # (R,)
    min_value: np.ndarray  # (R,)
    min_vertex: np.ndarray  # (R,) vertex id of the minimum
    centroid: np.ndarray  # (R, 3) area-weighted centre of the region's clipped faces

    @property
    def count(self) -> int:
        return int(len(self.area_mm2))


def regions_below(mesh: Mesh, values: np.ndarray, level: float, fill_value: float) -> Regions:
    """Connected components (over mesh edges) of vertices with value < level.

    fill_value replaces NaN (unmeasured, i.e. beyond the measuring cutoff) in the area
    interpolation; pass the cutoff so those vertices count as far.
    """
    vals = np.where(np.isfinite(values), values, fill_value)
    inside = vals < level
    n = mesh.n_vertices
    label = np.full(n, -1, dtype=np.int64)
    ids = np.flatnonzero(inside)
    if len(ids) == 0:
        empty = np.zeros(0)
        return Regions(label, empty, np.zeros(0, dtype=np.int64), empty, np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    f = mesh.faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = e[inside[e[:, 0]] & inside[e[:, 1]]]
    local = np.full(n, -1, dtype=np.int64)
    local[ids] = np.arange(len(ids))
    # scipy here, not at the module's top: a pair job's process (`occlutrace align` registers in
    # another, jobs/registrar.py) imports the analysis package without paying ~0.3 s CPU for scipy
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(e)), (local[e[:, 0]], local[e[:, 1]])), shape=(len(ids), len(ids)))
    n_regions, comp = connected_components(graph, directed=False)
    label[ids] = comp

    # A face touching the set belongs to the region of its inside vertices (they share edges).
    face_label = label[f].max(axis=1)
    touched = face_label >= 0
    clipped = face_areas(mesh)[touched] * below_fraction(vals[f[touched]], level)
    fl = face_label[touched]
    area = np.bincount(fl, weights=clipped, minlength=n_regions)
    centers = mesh.vertices[f[touched]].mean(axis=1)
    weight = np.where(area[fl] > 0, clipped, 1.0)
    wsum = np.bincount(fl, weights=weight, minlength=n_regions)
    centroid: np.ndarray = np.stack(
        [np.bincount(fl, weights=weight * centers[:, k], minlength=n_regions) for k in range(3)], axis=1
    )
    centroid /= wsum[:, None]

    order = np.lexsort((vals[ids], comp))  # by region, then value: first of each region is its min
    first = np.r_[True, comp[order][1:] != comp[order][:-1]]
    min_vertex = ids[order[first]]
    return Regions(
        vertex_label=label,
        area_mm2=area,
        n_vertices=np.bincount(comp, minlength=n_regions),
        min_value=vals[min_vertex],
        min_vertex=min_vertex,
        centroid=centroid,
    )
