"""`features.fpfh` for the flat batch path, without its (B, P, k, 33) temporary.

FPFH weights each point's own histogram (SPFH) with those of its k neighbours. `features.fpfh`
gathers the neighbours' histograms into a (B, P, k, 33) tensor and sums it over k: at batch 128
of ~1,000-sample coarse clouds that is 0.55 GB of float32, written, read and freed twice per
cloud set (glibc maps such blocks and unmaps them on free: ~0.1 s of host time per free, beside
the page faults inside the ops; bench/RESULTS.md, issue 16). Here the weighted sum is one
`embedding_bag` over the flattened (B x P, 33) histograms: the same sum, done row by row with no
temporary, in one torch call on CPU and CUDA alike.

Same descriptors up to float32 rounding of that sum (its terms are added in another order:
differences of a few ulp, tests/test_batch_flat.py). Time O(B x P x k x 33) plus the neighbour
search; memory O(B x P x k) (the pair features) and O(B x P x 33), not O(B x P x k x 33).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from occlutrace_compute.registration import features
from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.features import BINS


def fpfh(clouds: Clouds, radius: float, k: int = 32, backend: str = "auto") -> torch.Tensor:
    """(B,P,33) float32 descriptors of `features.fpfh`; rows of points with fewer than 3
    neighbours within `radius` are zero."""
    pts, nrm, lengths = clouds.points.float(), clouds.normals.float(), clouds.lengths
    b, p, _ = pts.shape
    k = int(min(k + 1, int(lengths.min())))
    d2, idx = features._neighbours(pts, lengths, k, backend)
    idx = idx[..., 1:].clamp_min(0)  # drop self
    d2 = d2[..., 1:]
    nb = (d2 < radius * radius) & (d2 > 0) & clouds.mask[..., None]
    bi = torch.arange(b, device=pts.device)[:, None, None]
    theta, alpha, phi = features._pair_features(pts[:, :, None], nrm[:, :, None], pts[bi, idx], nrm[bi, idx])
    hist = torch.zeros(b, p, 3 * BINS, dtype=pts.dtype, device=pts.device)
    w = nb.to(pts.dtype)
    for j, (x, lo, hi) in enumerate(((theta, -math.pi, math.pi), (alpha, -1.0, 1.0), (phi, -1.0, 1.0))):
        hist.scatter_add_(2, features._bins(x, lo, hi) + j * BINS, w)
    count = nb.sum(-1, keepdim=True).clamp_min(1).to(pts.dtype)
    spfh = hist / count
    inv = w / d2.clamp_min(1e-12).sqrt()
    # sum over the neighbours of inv x their SPFH rows, as weighted bags of rows of the whole batch
    rows = (idx + bi * p).view(b * p, -1)
    weighted = F.embedding_bag(rows, spfh.view(b * p, 3 * BINS), per_sample_weights=inv.view(b * p, -1), mode="sum")
    agg = weighted.view(b, p, 3 * BINS) / inv.sum(-1, keepdim=True).clamp_min(1e-12)
    f = (spfh + agg).view(b, p, 3, BINS)
    f = f / f.sum(-1, keepdim=True).clamp_min(1e-12)
    enough = (nb.sum(-1) >= 3)[..., None]
    return f.view(b, p, 3 * BINS) * enough
