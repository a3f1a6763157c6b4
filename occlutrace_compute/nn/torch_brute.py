"""Brute-force backend in torch, any device; memory bounded by a chunk size.

Distances use the direct difference formula dx*dx + dy*dy + dz*dz (not torch.cdist's matrix-product
form, which loses precision in float32), so ties and near-ties come out exactly as in the grid kernel.
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 24  # batch items x query rows x ref rows per step (two temporaries of this size)


def knn(
    query: torch.Tensor,
    ref: torch.Tensor,
    query_lengths: torch.Tensor,
    ref_lengths: torch.Tensor,
    k: int,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
):
    from occlutrace_compute.nn.api import KnnResult

    b, p, _ = query.shape
    d2_out = torch.full((b, p, k), torch.inf, dtype=query.dtype, device=query.device)
    idx_out = torch.full((b, p, k), -1, dtype=torch.int64, device=query.device)
    q_len, r_len = query_lengths.tolist(), ref_lengths.tolist()
    ref_valid = torch.arange(ref.shape[1], device=ref.device)[None, :] < ref_lengths[:, None]  # (B, R)

    # Whole batch items per step while they fit, else query-row chunks of one item.
    r_max = max(max(r_len, default=1), 1)
    rows = max(1, min(max(max(q_len, default=1), 1), chunk_elements // r_max))
    items = max(1, chunk_elements // (rows * r_max))
    for b0 in range(0, b, items):
        b1 = min(b, b0 + items)
        p_g, r_g = max(q_len[b0:b1]), max(r_len[b0:b1])
        if p_g == 0 or r_g == 0:
            continue
        rr = ref[b0:b1, :r_g]
        invalid = ~ref_valid[b0:b1, None, :r_g]
        for s in range(0, p_g, rows):
            q = query[b0:b1, s : min(p_g, s + rows)]
            d2 = (q[:, :, None, 0] - rr[:, None, :, 0]).square_()
            d2 += (q[:, :, None, 1] - rr[:, None, :, 1]).square_()
            d2 += (q[:, :, None, 2] - rr[:, None, :, 2]).square_()
            d2.masked_fill_(invalid, torch.inf)
            if k == 1:
                vals, ii = d2.min(dim=2, keepdim=True)
            else:
                vals, ii = torch.topk(d2, min(k, r_g), dim=2, largest=False, sorted=True)
            d2_out[b0:b1, s : s + q.shape[1], : vals.shape[2]] = vals
            idx_out[b0:b1, s : s + q.shape[1], : ii.shape[2]] = ii
    # Padded query rows, and neighbours that were only padding (an item with fewer than k refs).
    q_valid = torch.arange(p, device=query.device)[None, :] < query_lengths[:, None]
    missing = ~q_valid[..., None] | torch.isinf(d2_out)
    d2_out.masked_fill_(missing, torch.inf)
    idx_out.masked_fill_(missing, -1)
    return KnnResult(d2_out, idx_out)
