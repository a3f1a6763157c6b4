"""Brute-force backend in torch, any device; memory bounded by a query chunk size."""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 24  # query rows x ref rows per chunk, per batch item


def knn(query: torch.Tensor, ref: torch.Tensor, query_lengths: torch.Tensor, ref_lengths: torch.Tensor, k: int):
    from occlutrace_compute.nn.api import KnnResult

    b, p, _ = query.shape
    r = ref.shape[1]
    d2_out = torch.full((b, p, k), float("inf"), dtype=query.dtype, device=query.device)
    idx_out = torch.full((b, p, k), -1, dtype=torch.int64, device=query.device)
    ref_valid = torch.arange(r, device=ref.device)[None, :] < ref_lengths[:, None]  # (B, R)
    chunk = max(1, CHUNK_ELEMENTS // max(r, 1))
    for s in range(0, p, chunk):
        q = query[:, s : s + chunk]
        d2 = torch.cdist(q, ref).pow_(2)
        d2.masked_fill_(~ref_valid[:, None, :], float("inf"))
        vals, ii = torch.topk(d2, k, dim=2, largest=False)
        d2_out[:, s : s + chunk] = vals
        idx_out[:, s : s + chunk] = ii
    q_valid = torch.arange(p, device=query.device)[None, :] < query_lengths[:, None]
    d2_out.masked_fill_(~q_valid[..., None], float("inf"))
    idx_out.masked_fill_(~q_valid[..., None], -1)
    return KnnResult(d2_out, idx_out)
