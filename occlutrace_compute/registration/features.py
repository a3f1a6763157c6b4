"""Fast Point Feature Histograms (Rusu 2009) over a padded batch, in torch.

33-bin rotation-invariant descriptors of local shape on the coarse voxel clouds; matching them
between scans proposes poses from any starting rotation and partial overlap. Written in torch
(not a per-pair library call) so that a GPU computes all pairs of a batch at once.
"""

from __future__ import annotations

import math

import torch

from occlutrace_compute.nn import knn
from occlutrace_compute.registration.batch import Clouds

BINS = 11


def _pair_features(p1, n1, p2, n2):
    """PCL's computePairFeatures: (theta, alpha, phi) for point pairs, broadcast over leading dims."""
    d = p2 - p1
    dist = d.norm(dim=-1).clamp_min(1e-12)
    a1 = (n1 * d).sum(-1) / dist
    a2 = (n2 * d).sum(-1) / dist
    swap = torch.acos(a1.abs().clamp(max=1)) > torch.acos(a2.abs().clamp(max=1))
    u = torch.where(swap[..., None], n2, n1)
    other = torch.where(swap[..., None], n1, n2)
    d = torch.where(swap[..., None], -d, d)
    phi = torch.where(swap, -a2, a1)
    v = torch.cross(d, u, dim=-1)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w = torch.cross(u, v, dim=-1)
    alpha = (v * other).sum(-1)
    theta = torch.atan2((w * other).sum(-1), (u * other).sum(-1))
    return theta, alpha, phi


def _bins(x, lo, hi):
    return ((x - lo) / (hi - lo) * BINS).floor().clamp(0, BINS - 1).long()


def fpfh(clouds: Clouds, radius: float, k: int = 32, backend: str = "auto") -> torch.Tensor:
    """(B,P,33) descriptors; rows of points with fewer than 3 neighbours within `radius` are zero."""
    pts, nrm, lengths = clouds.points, clouds.normals, clouds.lengths
    b, p, _ = pts.shape
    k = int(min(k + 1, int(lengths.min())))
    res = knn(pts, pts, lengths, lengths, k=k, backend=backend)
    idx = res.idx[..., 1:].clamp_min(0)  # drop self
    d2 = res.dists2[..., 1:]
    nb = (d2 < radius * radius) & (d2 > 0) & clouds.mask[..., None]
    bi = torch.arange(b, device=pts.device)[:, None, None]
    q, qn = pts[bi, idx], nrm[bi, idx]
    theta, alpha, phi = _pair_features(pts[:, :, None], nrm[:, :, None], q, qn)
    hist = torch.zeros(b, p, 3 * BINS, dtype=pts.dtype, device=pts.device)
    w = nb.to(pts.dtype)
    for j, (x, lo, hi) in enumerate(((theta, -math.pi, math.pi), (alpha, -1.0, 1.0), (phi, -1.0, 1.0))):
        hist.scatter_add_(2, _bins(x, lo, hi) + j * BINS, w)
    count = nb.sum(-1, keepdim=True).clamp_min(1).to(pts.dtype)
    spfh = hist / count
    inv = w / d2.clamp_min(1e-12).sqrt()
    agg = (spfh[bi, idx] * inv[..., None]).sum(2) / inv.sum(-1, keepdim=True).clamp_min(1e-12)
    f = spfh + agg
    f = f.view(b, p, 3, BINS)
    f = f / f.sum(-1, keepdim=True).clamp_min(1e-12)
    enough = (nb.sum(-1) >= 3)[..., None]
    return f.view(b, p, 3 * BINS) * enough


def mutual_nearest(feat_a: torch.Tensor, feat_b: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest descriptor in b of every row of a (B,P) and in a of every row of b (B,R), from one
    brute-force distance matrix (any device): a thousand-odd 33-D descriptors make a tree pointless."""
    d = torch.cdist(feat_a.float(), feat_b.float())
    d.masked_fill_(~mask_b[:, None, :], float("inf"))
    fwd = d.argmin(2)
    d.masked_fill_(~mask_a[:, :, None], float("inf"))
    return fwd, d.argmin(1)
