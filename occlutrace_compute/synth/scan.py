"""What an intraoral scanner does to a surface: partial coverage with ragged borders, holes,
noise, and an arbitrary output frame."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from occlutrace_compute.meshes.model import Mesh, vertex_normals
from occlutrace_compute.synth.arch import SEG_GUM_B, SEG_GUM_L, ArchSample


def random_pose(rng: np.random.Generator, reach_mm: float = 60.0) -> np.ndarray:
    """A uniformly random rotation and a translation of up to reach_mm per axis (4x4)."""
    t = np.eye(4)
    t[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    t[:3, 3] = rng.uniform(-reach_mm, reach_mm, 3)
    return t


def smooth_noise(x: np.ndarray, rng: np.random.Generator, amplitude: float, wavelength: float) -> np.ndarray:
    """A band-limited random function of x (sum of 4 sinusoids), |f| <= amplitude."""
    k = 2 * np.pi / (wavelength * rng.uniform(0.6, 1.6, 4))
    ph = rng.uniform(0, 2 * np.pi, 4)
    a = rng.uniform(0.3, 1.0, 4)
    a *= amplitude / a.sum()
    return (a[None, :] * np.sin(np.asarray(x)[:, None] * k[None, :] + ph[None, :])).sum(axis=1)


def scan_extent(
    smp: ArchSample,
    rng: np.random.Generator,
    s_window: tuple[float, float] | None,
    gum_depth_mm: tuple[float, float] = (4.0, 8.0),
    n_holes: tuple[int, int] = (0, 3),
) -> np.ndarray:
    """Per-vertex mask of what a scan captured: an optional arch window with ragged ends, gingiva
    down to a ragged depth below the margin on each side, and a few small holes."""
    n_cols, n_t = smp.grid_shape
    row = np.arange(n_t) / n_t  # vertex i*n_t + j is column i, row j
    s_col = smp.s[::n_t]
    keep = np.ones(len(smp.s), dtype=bool)
    if s_window is not None:
        lo = s_window[0] + np.tile(smooth_noise(row, rng, 1.5, 0.4), n_cols)
        hi = s_window[1] + np.tile(smooth_noise(row, rng, 1.5, 0.4), n_cols)
        keep &= (smp.s >= lo) & (smp.s <= hi)
    for seg in (SEG_GUM_L, SEG_GUM_B):
        limit = rng.uniform(*gum_depth_mm) + np.repeat(smooth_noise(s_col, rng, 1.2, 12.0), n_t)
        keep &= ~((smp.segment == seg) & (smp.depth < -limit))
    n = int(rng.integers(n_holes[0], n_holes[1] + 1))
    cand = np.flatnonzero(keep)
    if n and cand.size:
        centres = smp.vertices[rng.choice(cand, size=n, replace=False)]
        radii = rng.uniform(0.4, 1.2, n)
        tree = cKDTree(smp.vertices)
        for c, r in zip(centres, radii):
            keep[tree.query_ball_point(c, r)] = False
    return keep


def crop(mesh: Mesh, keep: np.ndarray) -> tuple[Mesh, np.ndarray]:
    """Faces whose three vertices are kept, compacted; returns the mesh and the old indices."""
    faces = mesh.faces[np.all(keep[mesh.faces], axis=1)]
    flag = np.zeros(mesh.n_vertices, dtype=bool)
    flag[faces.ravel()] = True
    used = np.flatnonzero(flag)
    remap = np.full(mesh.n_vertices, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    return Mesh(mesh.vertices[used], remap[faces]), used


def add_noise(mesh: Mesh, sigma_mm: float, rng: np.random.Generator) -> Mesh:
    """Gaussian noise, mostly along the surface normal (as a structured-light scanner's depth
    error): sigma along the normal, sigma/3 per tangential axis."""
    n = vertex_normals(mesh)
    iso = rng.normal(0.0, sigma_mm / 3.0, mesh.vertices.shape)
    along = rng.normal(0.0, sigma_mm, (mesh.n_vertices, 1)) * n
    iso -= np.einsum("ij,ij->i", iso, n)[:, None] * n
    return Mesh(mesh.vertices + along + iso, mesh.faces.copy())
