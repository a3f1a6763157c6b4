"""Surface samples with normals: the only view of a mesh the registration engine uses.

Area-weighted sampling gives every square millimetre the same say in the fit whatever the
scanner's tessellation; face normals (not vertex normals) keep sharp cusps and margins crisp.
Voxel averaging builds the coarse pyramid levels with one point per occupied cell.
"""

from __future__ import annotations

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh


def check_mesh(mesh: Mesh, source: str, min_faces: int = 1) -> None:
    """Reject meshes the engine can never align, with a message naming the input."""
    v = np.asarray(mesh.vertices)
    f = np.asarray(mesh.faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise InputRejected(source, f"expected (N,3) vertices and (M,3) faces, got {v.shape} and {f.shape}")
    if not np.isfinite(v).all():
        raise InputRejected(source, "vertices contain NaN or infinite coordinates")
    if f.shape[0] < min_faces:
        raise InputRejected(source, f"only {f.shape[0]} faces; at least {min_faces} are needed")
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise InputRejected(source, "faces index vertices that do not exist")


def _cross(tri_a: np.ndarray, tri_b: np.ndarray, tri_c: np.ndarray) -> np.ndarray:
    u, w = tri_b - tri_a, tri_c - tri_a
    return np.stack(
        [
            u[:, 1] * w[:, 2] - u[:, 2] * w[:, 1],
            u[:, 2] * w[:, 0] - u[:, 0] * w[:, 2],
            u[:, 0] * w[:, 1] - u[:, 1] * w[:, 0],
        ],
        axis=1,
    )


def _double_areas32(v: np.ndarray, f: np.ndarray, block: int = 16384) -> np.ndarray:
    """Twice each face's area, in single precision (it only weights the draw) and computed on
    coordinate-major (3, F) arrays: contiguous rows make this faster than (F, 3) rows
    (bench/RESULTS.md, "Measurements behind choices in the code"). `block` faces at a time, so
    the dozen temporaries stay in the core's cache (the same arithmetic per face, bit for bit;
    ~20 % faster on 300k faces). Time O(F), memory O(V + F)."""
    vt = np.ascontiguousarray(v.T, dtype=np.float32)
    out = np.empty(f.shape[0], dtype=np.float32)
    for start in range(0, f.shape[0], block):
        fb = f[start : start + block]
        p0, p1, p2 = (np.take(vt, np.ascontiguousarray(fb[:, k]), axis=1) for k in range(3))
        u, w = p1 - p0, p2 - p0
        cx, cy, cz = u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]
        np.sqrt(cx * cx + cy * cy + cz * cz, out=out[start : start + block])
    return out


def sample_surface(mesh: Mesh, n: int, seed: int = 0, source: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """`n` points drawn uniformly by area, with their faces' unit normals, reproducible by seed."""
    points, normals, _ = sample_surface_area(mesh, n, seed, source)
    return points, normals


def sample_surface_area(
    mesh: Mesh, n: int, seed: int = 0, source: str = "mesh", min_faces: int = 1
) -> tuple[np.ndarray, np.ndarray, float]:
    """`sample_surface` plus the total surface area (mm^2), which costs nothing extra here.
    Checks the mesh first (`check_mesh`, at least `min_faces` faces)."""
    check_mesh(mesh, source, min_faces)
    if n < 1:
        raise ValueError(f"sample count must be positive, got {n}")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    cdf = np.cumsum(_double_areas32(v, f), dtype=np.float64)
    total = float(cdf[-1]) / 2
    if not total > 0:
        raise InputRejected(source, "surface has zero area (all faces degenerate)")
    rng = np.random.default_rng(seed)
    # Sorted draws: the binary searches and the gathers below then walk memory in order.
    face = np.minimum(np.searchsorted(cdf, np.sort(rng.random(n)) * cdf[-1], side="right"), len(cdf) - 1)
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    a, b, c = np.take(v, np.take(f, face, axis=0), axis=0).transpose(1, 0, 2)
    points = (1.0 - r1)[:, None] * a + (r1 * (1.0 - r2))[:, None] * b + (r1 * r2)[:, None] * c
    normals = _cross(a, b, c)  # in double precision, from the drawn faces only
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)  # drawn faces have positive area
    return points, normals, total


def voxel_downsample(points: np.ndarray, normals: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied voxel: the mean position and the renormalised mean normal."""
    if voxel <= 0:
        raise ValueError(f"voxel size must be positive, got {voxel}")
    keys = np.floor((points - points.min(axis=0)) / voxel).astype(np.int64)
    dims = keys.max(axis=0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    m = counts.shape[0]
    p = np.zeros((m, 3))
    nrm = np.zeros((m, 3))
    for d in range(3):
        p[:, d] = np.bincount(inverse, weights=points[:, d], minlength=m)
        nrm[:, d] = np.bincount(inverse, weights=normals[:, d], minlength=m)
    p /= counts[:, None]
    length = np.linalg.norm(nrm, axis=1, keepdims=True)
    keep = length[:, 0] > 1e-9
    return p[keep], nrm[keep] / length[keep]
