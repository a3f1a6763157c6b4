"""CPU backend: scipy's cKDTree on all cores. Best for large single pairs on CPU."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree


def knn(query: torch.Tensor, ref: torch.Tensor, query_lengths: torch.Tensor, ref_lengths: torch.Tensor, k: int):
    from occlutrace_compute.nn.api import KnnResult

    b, p, _ = query.shape
    d2 = np.full((b, p, k), np.inf, dtype=np.float64)
    idx = np.full((b, p, k), -1, dtype=np.int64)
    q_np = query.detach().cpu().numpy()
    r_np = ref.detach().cpu().numpy()
    for i in range(b):
        nq, nr = int(query_lengths[i]), int(ref_lengths[i])
        dist, ii = cKDTree(r_np[i, :nr]).query(q_np[i, :nq], k=k, workers=-1)
        d2[i, :nq] = (dist**2).reshape(nq, k)
        idx[i, :nq] = ii.reshape(nq, k)
    return KnnResult(torch.from_numpy(d2).to(query.dtype).to(query.device), torch.from_numpy(idx).to(query.device))
