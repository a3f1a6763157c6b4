"""Optional backend: `pytorch3d.ops.knn_points` (a tuned brute-force CUDA kernel) when installed."""

from __future__ import annotations

import functools

import torch


@functools.cache
def is_installed() -> bool:
    try:
        import pytorch3d.ops  # noqa: F401
    except Exception:
        return False
    return True


def knn(query: torch.Tensor, ref: torch.Tensor, query_lengths: torch.Tensor, ref_lengths: torch.Tensor, k: int):
    from pytorch3d.ops import knn_points

    from occlutrace_compute.nn.api import KnnResult

    out = knn_points(query, ref, lengths1=query_lengths, lengths2=ref_lengths, K=k, return_nn=False, return_sorted=True)
    p = query.shape[1]
    padded = (torch.arange(p, device=query.device)[None, :] >= query_lengths[:, None])[..., None]
    return KnnResult(out.dists.masked_fill(padded, torch.inf), out.idx.to(torch.int64).masked_fill(padded, -1))
