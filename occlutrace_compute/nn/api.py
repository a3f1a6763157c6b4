"""Backend selection for `knn` (see package docstring for the tensor convention)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class KnnResult(NamedTuple):
    dists2: torch.Tensor  # (B, P, k) squared distances, +inf for padded query rows
    idx: torch.Tensor  # (B, P, k) int64 indices into ref, -1 for padded query rows


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends usable for tensors on `device`, best first."""
    from occlutrace_compute.nn import backends

    return backends.available(torch.device(device))


def _lengths(lengths: torch.Tensor | None, b: int, n: int, device: torch.device, what: str) -> torch.Tensor:
    if lengths is None:
        return torch.full((b,), n, dtype=torch.int64, device=device)
    if lengths.shape != (b,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"knn {what} must be an integer tensor of shape ({b},), got {lengths.dtype} {tuple(lengths.shape)}"
        )
    lengths = lengths.to(device=device, dtype=torch.int64)
    if b and (int(lengths.min()) < 0 or int(lengths.max()) > n):
        raise ValueError(f"knn {what} must lie in [0, {n}], got {lengths.tolist()}")
    return lengths


def _check_finite(points: torch.Tensor, lengths: torch.Tensor, what: str) -> None:
    real = torch.arange(points.shape[1], device=points.device)[None, :] < lengths[:, None]
    if bool((~torch.isfinite(points).all(dim=2) & real).any()):
        raise ValueError(f"knn {what} contains NaN or infinite coordinates")


def knn(
    query: torch.Tensor,
    ref: torch.Tensor,
    query_lengths: torch.Tensor | None = None,
    ref_lengths: torch.Tensor | None = None,
    k: int = 1,
    backend: str = "auto",
) -> KnnResult:
    """k nearest neighbours of every query point among its own batch item's ref points.

    Every batch item that has query points needs at least k reference points. `backend` is "auto"
    (the best of `available_backends(query.device)` that supports k) or a backend name.
    """
    from occlutrace_compute.nn import backends

    if query.dim() != 3 or ref.dim() != 3 or query.shape[2] != 3 or ref.shape[2] != 3 or query.shape[0] != ref.shape[0]:
        raise ValueError(f"knn expects (B,P,3) and (B,R,3) tensors, got {tuple(query.shape)} and {tuple(ref.shape)}")
    if not (query.dtype.is_floating_point and ref.dtype == query.dtype):
        raise ValueError(f"knn expects floating point query and ref of one dtype, got {query.dtype} and {ref.dtype}")
    if query.device != ref.device:
        raise ValueError(f"knn expects query and ref on one device, got {query.device} and {ref.device}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"knn needs an integer k >= 1, got {k!r}")
    b, dev = query.shape[0], query.device
    query_lengths = _lengths(query_lengths, b, query.shape[1], dev, "query_lengths")
    ref_lengths = _lengths(ref_lengths, b, ref.shape[1], dev, "ref_lengths")
    short = (query_lengths > 0) & (ref_lengths < k)
    if bool(short.any()):
        raise ValueError(f"knn with k={k} needs at least {k} reference points in every batch item with queries")
    _check_finite(query, query_lengths, "query")
    _check_finite(ref, ref_lengths, "ref")

    name = backends.select(dev, k) if backend == "auto" else backend
    problem = backends.usable_problem(name, dev, k)
    if problem is not None:
        raise ValueError(f"{problem}; available here: {backends.available(dev)}")
    return backends.get(name)(query, ref, query_lengths, ref_lengths, k)
