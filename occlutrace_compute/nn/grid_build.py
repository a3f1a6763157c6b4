"""Uniform-grid (spatial hash) index of a ragged batch of reference clouds, built with torch ops.

Runs on whatever device the points are on (the GPU for the CUDA backend, the CPU for the kernel's
CPU build in tests and benchmarks), so both search the very same structure. Layout and the
search itself: see kernels/grid_knn.cu.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Grid cells per reference point. Dental scans are surfaces, so most cells of the bounding box stay
# empty and the occupied ones hold several points; bench/bench_knn.py --sweep-cells tunes this.
DEFAULT_CELLS_PER_POINT = 0.5
MAX_CELLS_PER_DIM = 1024  # bounds memory for needle-like clouds
MAX_TOTAL_CELLS = 2**31 - 2  # cell_start is int32 in the kernel
SKIP_CAP = 64  # empty shells recorded per cell at most (uint8; beyond it the search probes cells)
SKIP_MAX_PADDED_CELLS = 1 << 27  # the distance transform pads all items to one box; skip it beyond
KERNEL_DTYPES = (torch.float32, torch.float64)
_EPS = {torch.float32: float(np.finfo(np.float32).eps), torch.float64: float(np.finfo(np.float64).eps)}


@dataclass(frozen=True)
class GridIndex:
    item_f: torch.Tensor  # (B, 6) point dtype: origin x, y, z, cell size h, 1/h, rounding margin (cells)
    item_i: torch.Tensor  # (B, 4) int64: nx, ny, nz, index of the item's first cell
    sorted_ref: torch.Tensor  # (N, 3) real reference points of all items, sorted by global cell id
    sorted_idx: torch.Tensor  # (N,) int32: each sorted point's row in its own batch item
    cell_start: torch.Tensor  # (C + 1,) int32: first position of each cell in the sorted arrays
    cell_skip: torch.Tensor  # (C,) uint8: shells around each cell known to be empty


def grid_shape(lo: np.ndarray, hi: np.ndarray, n_points: int, cells_per_point: float) -> tuple[float, np.ndarray]:
    """Cell size and (nx, ny, nz) for one cloud with bounding box [lo, hi]: about
    `cells_per_point * n_points` cells. Axes thinner than a cell get one layer, so a planar or
    linear cloud spreads its cells over the axes it really spans."""
    extent = hi - lo
    e_max = float(extent.max()) if n_points else 0.0
    if n_points == 0 or not e_max > 0.0:
        return 1.0, np.ones(3, dtype=np.int64)
    target = max(1.0, cells_per_point * n_points)
    active = extent > 0.0
    for _ in range(3):  # drop axes thinner than the cell size, then re-solve for the rest
        h = float(np.prod(extent[active]) / target) ** (1.0 / int(active.sum()))
        thin = active & (extent < h)
        if not thin.any() or thin.sum() == active.sum():
            break
        active &= ~thin
    h = max(h, e_max / MAX_CELLS_PER_DIM)
    dims = np.clip(np.ceil(extent / h), 1, MAX_CELLS_PER_DIM).astype(np.int64)
    return h, dims


def build_grid(
    ref: torch.Tensor, ref_lengths: torch.Tensor, cells_per_point: float = DEFAULT_CELLS_PER_POINT
) -> GridIndex:
    """Counting-sort the real rows of `ref` (B, R, 3) by grid cell, one grid per batch item."""
    if ref.dtype not in KERNEL_DTYPES:
        raise ValueError(f"grid knn supports float32/float64 points, got {ref.dtype}")
    if not cells_per_point > 0:
        raise ValueError(f"cells_per_point must be positive, got {cells_per_point}")
    b, r, _ = ref.shape
    dev, dt = ref.device, ref.dtype
    ref = ref.contiguous()
    valid = torch.arange(r, device=dev)[None, :] < ref_lengths[:, None]  # (B, R)
    if r:
        lo = torch.where(valid[..., None], ref, torch.inf).amin(dim=1)
        hi = torch.where(valid[..., None], ref, -torch.inf).amax(dim=1)
    else:
        lo = hi = torch.zeros((b, 3), dtype=dt, device=dev)
    box = torch.cat([lo, hi], dim=1).double().cpu().numpy()  # the build's only device sync
    counts = ref_lengths.cpu().numpy().astype(np.int64)

    item_f = np.zeros((b, 6), dtype=np.float64)
    item_i = np.zeros((b, 4), dtype=np.int64)
    offset = 0
    for i in range(b):
        n = int(counts[i])
        lo_i, hi_i = (box[i, :3], box[i, 3:]) if n else (np.zeros(3), np.zeros(3))
        if not (np.isfinite(lo_i).all() and np.isfinite(hi_i).all()):
            raise ValueError(f"reference points of batch item {i} are not all finite")
        h, dims = grid_shape(lo_i, hi_i, n, cells_per_point)
        max_abs = float(np.abs(np.concatenate([lo_i, hi_i])).max())
        margin = 4.0 * _EPS[dt] * (max_abs / h + float(dims.max()) + 1.0)
        item_f[i] = [*lo_i, h, 1.0 / h, margin]
        item_i[i] = [*dims, offset]
        offset += int(np.prod(dims))
        if offset > MAX_TOTAL_CELLS:
            raise ValueError(f"grid knn: {offset} cells exceed the kernel's int32 cell index; lower cells_per_point")
    total_cells = offset

    item_f_t = torch.from_numpy(item_f).to(device=dev, dtype=dt)
    item_i_t = torch.from_numpy(item_i).to(device=dev)
    cell = torch.where(valid, _cell_ids(ref, item_f_t, item_i_t), total_cells).reshape(-1)  # padding last
    n_real = int(counts.sum())
    order = torch.argsort(cell, stable=True)[:n_real]
    cell_start = torch.zeros(total_cells + 1, dtype=torch.int32, device=dev)
    cell_start[1:] = torch.cumsum(torch.bincount(cell[order], minlength=total_cells), dim=0)
    return GridIndex(
        item_f=item_f_t.contiguous(),
        item_i=item_i_t.contiguous(),
        sorted_ref=ref.reshape(-1, 3)[order].contiguous(),
        sorted_idx=(order % max(r, 1)).to(torch.int32),
        cell_start=cell_start,
        cell_skip=empty_shells(cell_start[1:] > cell_start[:-1], item_i),
    )


def _cell_ids(points: torch.Tensor, item_f: torch.Tensor, item_i: torch.Tensor) -> torch.Tensor:
    """(B, N) global cell id of each point, clamped into its item's grid; same arithmetic as the
    kernel's query cell: (x - origin) * (1/h) in the points' dtype."""
    u = (points - item_f[:, None, :3]) * item_f[:, None, 4:5]
    cell3 = torch.minimum(u.clamp(0.0, 2.0**30).to(torch.int64), item_i[:, None, :3] - 1)
    nx, ny = item_i[:, None, 0], item_i[:, None, 1]
    return item_i[:, None, 3] + (cell3[..., 2] * ny + cell3[..., 1]) * nx + cell3[..., 0]


def query_order(query: torch.Tensor, query_lengths: torch.Tensor, grid: GridIndex) -> torch.Tensor:
    """(B * P,) int64 query numbers sorted by the grid cell they fall in (padding last), so that
    neighbouring GPU threads search neighbouring cells."""
    p = query.shape[1]
    real = torch.arange(p, device=query.device)[None, :] < query_lengths[:, None]
    cell = _cell_ids(query, grid.item_f, grid.item_i)
    cell = torch.where(real, cell, torch.iinfo(torch.int64).max).reshape(-1)
    return torch.argsort(cell, stable=True)


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """One step of Chebyshev (3x3x3) dilation of a (B, Z, Y, X) bool mask, done per axis."""
    for dim in (1, 2, 3):
        n = mask.shape[dim]
        if n > 1:
            out = mask.clone()
            out.narrow(dim, 1, n - 1).logical_or_(mask.narrow(dim, 0, n - 1))
            out.narrow(dim, 0, n - 1).logical_or_(mask.narrow(dim, 1, n - 1))
            mask = out
    return mask


def empty_shells(occupied: torch.Tensor, item_i: np.ndarray) -> torch.Tensor:
    """Per cell, min(SKIP_CAP, Chebyshev distance in cells to the nearest occupied cell of its item):
    the shells a search starting there may skip. A lower bound is all the kernel needs, so capping
    (or returning zeros when the padded box would be too large) never changes results."""
    dev, total = occupied.device, occupied.shape[0]
    dims = item_i[:, :3]
    zyx = [int(dims[:, a].max()) for a in (2, 1, 0)] if len(dims) else [1, 1, 1]
    if len(dims) * zyx[0] * zyx[1] * zyx[2] > SKIP_MAX_PADDED_CELLS:
        return torch.zeros(total, dtype=torch.uint8, device=dev)
    # Each global cell's place in a (B, Z, Y, X) box holding every item's grid.
    offsets = torch.from_numpy(np.ascontiguousarray(item_i[:, 3])).to(dev)
    nx_ny = torch.from_numpy(np.ascontiguousarray(dims)).to(dev)
    cell = torch.arange(total, device=dev)
    item = torch.searchsorted(offsets, cell, right=True) - 1
    local = cell - offsets[item]
    nx, ny = nx_ny[item, 0], nx_ny[item, 1]
    x, y, z = local % nx, (local // nx) % ny, local // (nx * ny)
    flat = ((item * zyx[0] + z) * zyx[1] + y) * zyx[2] + x

    reached = torch.zeros(len(dims) * zyx[0] * zyx[1] * zyx[2], dtype=torch.bool, device=dev)
    reached[flat] = occupied
    reached = reached.view(len(dims), *zyx)
    dist = torch.where(reached, 0, SKIP_CAP).to(torch.uint8)
    for s in range(1, min(SKIP_CAP, max(zyx))):
        reached = _dilate(reached)
        dist = torch.where(reached, torch.clamp(dist, max=s), dist)
        if s % 4 == 0 and bool(reached.all()):
            break
    return dist.reshape(-1)[flat].contiguous()


@dataclass(frozen=True)
class KernelCall:
    """Arguments of grid_knn.cu's kernels in signature order, and the outputs they fill."""

    args: tuple  # torch tensors, np.int64 / np.int32 scalars
    dists2: torch.Tensor
    idx: torch.Tensor


def prepare_call(
    query: torch.Tensor,
    ref: torch.Tensor,
    query_lengths: torch.Tensor,
    ref_lengths: torch.Tensor,
    k: int,
    cells_per_point: float = DEFAULT_CELLS_PER_POINT,
    sort_queries: bool = True,
) -> KernelCall:
    """Build the grid and the output tensors (padding pre-filled with inf / -1) for one launch.
    `sort_queries` hands queries to threads in cell order (else in input order)."""
    if query.dtype != ref.dtype or query.dtype not in KERNEL_DTYPES:
        raise ValueError(
            f"grid knn needs query and ref both float32 or both float64, got {query.dtype} and {ref.dtype}"
        )
    b, p, _ = query.shape
    grid = build_grid(ref, ref_lengths, cells_per_point)
    dists2 = torch.full((b, p, k), torch.inf, dtype=query.dtype, device=query.device)
    idx = torch.full((b, p, k), -1, dtype=torch.int64, device=query.device)
    query_lengths = query_lengths.to(torch.int64).contiguous()
    if sort_queries:
        order = query_order(query, query_lengths, grid)
    else:
        order = torch.arange(b * p, dtype=torch.int64, device=query.device)
    args = (
        query.contiguous(),
        query_lengths,
        order,
        grid.item_f,
        grid.item_i,
        grid.sorted_ref,
        grid.sorted_idx,
        grid.cell_start,
        grid.cell_skip,
        np.int64(b),
        np.int64(p),
        np.int32(k),
        dists2,
        idx,
    )
    return KernelCall(args=args, dists2=dists2, idx=idx)
