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


def knn(
    query: torch.Tensor,
    ref: torch.Tensor,
    query_lengths: torch.Tensor | None = None,
    ref_lengths: torch.Tensor | None = None,
    k: int = 1,
    backend: str = "auto",
) -> KnnResult:
    """k nearest neighbours of every query point among its own batch item's ref points."""
    from occlutrace_compute.nn import backends

    if query.dim() != 3 or ref.dim() != 3 or query.shape[0] != ref.shape[0]:
        raise ValueError(f"knn expects (B,P,3) and (B,R,3) tensors, got {tuple(query.shape)} and {tuple(ref.shape)}")
    b = query.shape[0]
    dev = query.device
    if query_lengths is None:
        query_lengths = torch.full((b,), query.shape[1], dtype=torch.int64, device=dev)
    if ref_lengths is None:
        ref_lengths = torch.full((b,), ref.shape[1], dtype=torch.int64, device=dev)
    if int(ref_lengths.min()) < k:
        raise ValueError(f"knn with k={k} needs at least {k} reference points in every batch item")
    name = backends.available(dev)[0] if backend == "auto" else backend
    return backends.get(name)(query, ref, query_lengths.to(dev), ref_lengths.to(dev), k)
