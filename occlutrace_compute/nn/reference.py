"""Float64 numpy brute force and a result checker: the yardstick for tests and benchmarks.

A result is accepted when its distances match the k smallest exact distances and its indices
really have those distances. That allows any order among equal distances (ties), which backends
are free to break differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_ROWS = 1024  # query rows per step: bounds the (rows, R) float64 distance blocks


def exact_knn(query: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """(P, k) smallest squared distances in float64 from each query row to `ref` (R, 3)."""
    q, r = query.astype(np.float64), ref.astype(np.float64)
    out = np.empty((len(q), k), dtype=np.float64)
    for s in range(0, len(q), _ROWS):
        qs = q[s : s + _ROWS]
        d2 = (qs[:, None, 0] - r[None, :, 0]) ** 2
        d2 += (qs[:, None, 1] - r[None, :, 1]) ** 2
        d2 += (qs[:, None, 2] - r[None, :, 2]) ** 2
        out[s : s + _ROWS] = np.sort(np.partition(d2, k - 1, axis=1)[:, :k], axis=1)
    return out


def knn_problems(
    result, query: torch.Tensor, ref: torch.Tensor, query_lengths, ref_lengths, k: int, rtol: float = 1e-5
) -> list[str]:
    """Everything wrong with `result` (a KnnResult) for these inputs; empty when it is correct."""
    d2 = result.dists2.detach().double().cpu().numpy()
    idx = result.idx.detach().cpu().numpy()
    q_np, r_np = query.detach().double().cpu().numpy(), ref.detach().double().cpu().numpy()
    b, p = q_np.shape[:2]
    if d2.shape != (b, p, k) or idx.shape != (b, p, k):
        return [f"result shapes {d2.shape}, {idx.shape} != {(b, p, k)}"]
    problems = []
    for i, (nq, nr) in enumerate(zip(np.asarray(query_lengths).tolist(), np.asarray(ref_lengths).tolist())):
        if not (np.isinf(d2[i, nq:]).all() and (idx[i, nq:] == -1).all()):
            problems.append(f"item {i}: padded query rows are not inf / -1")
        if nq == 0:
            continue
        di, ii = d2[i, :nq], idx[i, :nq]
        if ii.min() < 0 or ii.max() >= nr:
            problems.append(f"item {i}: indices outside [0, {nr})")
            continue
        if (np.diff(np.sort(ii, axis=1), axis=1) == 0).any():
            problems.append(f"item {i}: a neighbour appears twice in one row")
        if (np.diff(di, axis=1) < 0).any():
            problems.append(f"item {i}: distances not sorted ascending")
        scale = max(float(np.abs(r_np[i, :nr]).max()), float(np.abs(q_np[i, :nq]).max()), 1e-30) ** 2
        recomputed = ((r_np[i][ii] - q_np[i, :nq, None, :]) ** 2).sum(axis=2)
        bad = np.abs(recomputed - di) > rtol * recomputed + 1e-12 * scale
        if bad.any():
            problems.append(f"item {i}: {int(bad.sum())} distances do not belong to their indices")
        expected = exact_knn(q_np[i, :nq], r_np[i, :nr], k)
        bad = np.abs(expected - di) > rtol * expected + 1e-12 * scale
        if bad.any():
            r_, c_ = np.argwhere(bad)[0]
            problems.append(
                f"item {i}: {int(bad.sum())} distances differ from brute force, e.g. row {r_} rank {c_}: "
                f"{di[r_, c_]} vs {expected[r_, c_]}"
            )
    return problems


@dataclass(frozen=True)
class KnnCase:
    name: str
    query: torch.Tensor  # (B, P, 3)
    ref: torch.Tensor  # (B, R, 3)
    query_lengths: torch.Tensor  # (B,) int64
    ref_lengths: torch.Tensor  # (B,) int64


def _padded(clouds: list[np.ndarray], dtype: torch.dtype, pad: float) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(c) for c in clouds)
    out = np.full((len(clouds), n, 3), pad, dtype=np.float64)
    for i, c in enumerate(clouds):
        out[i, : len(c)] = c
    return torch.from_numpy(out).to(dtype), torch.tensor([len(c) for c in clouds], dtype=torch.int64)


def stress_cases(seed: int = 0, min_ref: int = 32, dtype: torch.dtype = torch.float32) -> list[KnnCase]:
    """Small batches that break naive searches: ragged items (one without queries), clusters far
    tighter than the bounding box, exact duplicates (ties), a planar cloud, queries far outside the
    cloud, coordinates far from the origin, identical points, and a cloud of exactly `min_ref`
    points. Every item with queries has at least `min_ref` reference points; padding holds
    garbage (large values) that no backend may read."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-50, 50, (5, 3))

    def u(n: int, s: float = 10.0) -> np.ndarray:
        return rng.uniform(-s, s, (n, 3))

    def blobs(n: int) -> np.ndarray:
        return centers[rng.integers(0, 5, n)] + rng.normal(0, 1e-3, (n, 3))

    dup_base = u(40)
    raw = {
        "random": ([u(300), u(120), u(250)], [u(250), u(300), u(64)]),
        "ragged": ([u(200), u(17), np.zeros((0, 3)), u(150)], [u(180), u(min_ref), u(2), u(90)]),
        "clustered": ([blobs(300), u(50, 60)], [blobs(400), blobs(200)]),
        "duplicates": (
            [np.vstack([dup_base, u(60)]), dup_base[:10]],
            [np.tile(dup_base, (4, 1)), np.tile(dup_base, (2, 1))],
        ),
        "planar": ([u(200) * [1, 1, 0]], [u(300) * [1, 1, 0]]),
        "far_queries": ([u(100) + [1000.0, -500.0, 20.0], u(50, 1e4)], [u(200), u(150)]),
        "offset": ([u(200, 0.5) + 900.0], [u(300, 0.5) + 900.0]),
        "identical": ([u(20)], [np.tile(u(1), (max(min_ref, 40), 1))]),
        "tiny": ([u(1), u(3)], [u(min_ref), u(min_ref)]),
    }
    cases = []
    for name, (queries, refs) in raw.items():
        q, ql = _padded(queries, dtype, pad=1e6)
        r, rl = _padded(refs, dtype, pad=-1e6)
        cases.append(KnnCase(name, q, r, ql, rl))
    return cases
