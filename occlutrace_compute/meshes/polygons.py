"""Bounded, vectorised fan triangulation of polygon lists (every format's faces go through here).

A polygon list is a flat array of corner indices and the corner count of each polygon. The
triangle count it implies, sum(corners - 2), and the largest polygon are checked against the
limits BEFORE any triangle array exists, so a file cannot make us allocate more than the limits
allow, whatever it declares.

Worst case: time O(corners + triangles) in numpy, no Python loop over polygons or corners;
memory: the output (T, 3) int64 triangles plus three temporaries of T int64 each (~2x the output).
"""

from __future__ import annotations

import numpy as np

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.limits import Limits


def check_polygons(sizes: np.ndarray, name: str, limits: Limits, fmt: str) -> int:
    """The number of triangles `sizes` (corners per polygon, >= 3) implies; InputRejected when a
    polygon has more corners than limits.max_polygon_corners or the total exceeds max_faces."""
    if len(sizes) == 0:
        return 0
    big = int(np.argmax(sizes))
    if int(sizes[big]) > limits.max_polygon_corners:
        raise InputRejected(
            name,
            f"{fmt} polygon {big + 1} has {int(sizes[big])} corners, more than the limit of "
            f"{limits.max_polygon_corners} corners per polygon",
        )
    n_tri = int(sizes.sum(dtype=np.int64)) - 2 * len(sizes)
    if n_tri > limits.max_faces:
        raise InputRejected(
            name, f"too many faces: the {len(sizes)} polygons make {n_tri} triangles > limit {limits.max_faces}"
        )
    return n_tri


def fan_triangulate(flat: np.ndarray, sizes: np.ndarray, name: str, limits: Limits, fmt: str) -> np.ndarray:
    """(T, 3) int64 triangles (i0, ij, ij+1) of every polygon; flat holds the polygons' corners
    one after another (len(flat) == sizes.sum()), sizes are all >= 3."""
    n_tri = check_polygons(sizes, name, limits, fmt)
    if n_tri == 0:
        return np.empty((0, 3), np.int64)
    sizes = sizes.astype(np.int64, copy=False)
    if sizes.min() == sizes.max():  # one polygon size (the usual file): a reshape, no gathers
        idx = np.asarray(flat, dtype=np.int64).reshape(len(sizes), -1)
        k = idx.shape[1]
        out = np.empty((len(sizes), k - 2, 3), np.int64)
        out[:, :, 0] = idx[:, :1]
        out[:, :, 1] = idx[:, 1:-1]
        out[:, :, 2] = idx[:, 2:]
        return out.reshape(-1, 3)
    starts = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    per = sizes - 2
    # position of each triangle's second corner in flat: start of its polygon + j, j = 1..k-2
    second = np.ones(n_tri, np.int64)
    tri_starts = np.cumsum(per[:-1])
    second[tri_starts] = starts[1:] - starts[:-1] - per[:-1] + 1  # jump to the next polygon
    second[0] = starts[0] + 1
    np.cumsum(second, out=second)
    out = np.empty((n_tri, 3), np.int64)
    out[:, 0] = np.repeat(np.asarray(flat[starts], dtype=np.int64), per)
    out[:, 1] = flat[second]
    out[:, 2] = flat[second + 1]
    return out
