"""Fast Point Feature Histograms (Rusu 2009) over a padded batch, in torch.

33-bin rotation-invariant descriptors of local shape on the coarse voxel clouds; matching them
between scans proposes poses from any starting rotation and partial overlap. Written in torch
(not a per-pair library call) so that a GPU computes all pairs of a batch at once.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pykdtree.kdtree import KDTree

from occlutrace_compute.nn import knn
from occlutrace_compute.registration.batch import Clouds

BINS = 11


def _dot(a: tuple, b: tuple) -> torch.Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross3(a: tuple, b: tuple) -> tuple:
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


def _pair_features(p1, n1, p2, n2):
    """PCL's computePairFeatures: (theta, alpha, phi) for point pairs, broadcast over leading dims
    of (..., 3) vectors (see `_pair_features_xyz`)."""
    shape = torch.broadcast_shapes(p1.shape, n1.shape, p2.shape, n2.shape)
    return _pair_features_xyz(*(t.expand(shape).movedim(-1, 0).contiguous().unbind(0) for t in (p1, n1, p2, n2)))


def _pair_features_xyz(p1: tuple, n1: tuple, p2: tuple, n2: tuple):
    """`_pair_features` on (x, y, z) component tensors, all of one shape and contiguous:
    reductions over a length-3 last axis cost torch more than the arithmetic itself, and
    elementwise ops (torch.where above all) over broadcast or stride-3 views ~2-3x more."""
    d = tuple(b - a for a, b in zip(p1, p2))
    dist = torch.sqrt(_dot(d, d)).clamp_min(1e-12)
    a1 = _dot(n1, d) / dist
    a2 = _dot(n2, d) / dist
    swap = a1.abs() < a2.abs()  # PCL: acos|a1| > acos|a2|; the source is the more orthogonal end
    u = tuple(torch.where(swap, y, x) for x, y in zip(n1, n2))
    other = tuple(torch.where(swap, x, y) for x, y in zip(n1, n2))
    d = tuple(torch.where(swap, -c, c) for c in d)
    phi = torch.where(swap, -a2, a1)
    v = _cross3(d, u)
    vn = torch.sqrt(_dot(v, v)).clamp_min(1e-12)
    v = tuple(c / vn for c in v)
    w = _cross3(u, v)
    alpha = _dot(v, other)
    theta = torch.atan2(_dot(w, other), _dot(u, other))
    return theta, alpha, phi


def _bins(x, lo, hi):
    return ((x - lo) / (hi - lo) * BINS).floor().clamp(0, BINS - 1).long()


def fpfh(clouds: Clouds, radius: float, k: int = 32, backend: str = "auto") -> torch.Tensor:
    """(B,P,33) float32 descriptors; rows of points with fewer than 3 neighbours within `radius`
    are zero. Single precision: histograms of angles need no more, and it halves the traffic.
    Time O(B P k) after one k-nearest query per point; memory O(B P k) (the (6,B,P,k) pair
    components are the largest tensors: no (B,P,k,33) histogram gather)."""
    pts, nrm, lengths = clouds.points.float(), clouds.normals.float(), clouds.lengths
    b, p, _ = pts.shape
    k = int(min(k + 1, int(lengths.min())))
    d2, idx = _neighbours(pts, lengths, k, backend)
    idx = idx[..., 1:].clamp_min(0)  # drop self
    d2 = d2[..., 1:]
    nb = (d2 < radius * radius) & (d2 > 0) & clouds.mask[..., None]
    bi = torch.arange(b, device=pts.device)[:, None, None]
    # Component-major (6, B*P) rows: each point and its neighbours gathered as contiguous (B,P,k)
    # components in one index_select (what _pair_features_xyz runs fastest on).
    rows6 = torch.cat([pts, nrm], -1).view(b * p, 6).T.contiguous()
    kk = idx.shape[-1]
    own = rows6.view(6, b, p, 1).expand(6, b, p, kk).contiguous()
    near = rows6.index_select(1, (idx + bi * p).reshape(-1)).view(6, b, p, kk)
    theta, alpha, phi = _pair_features_xyz(own[:3].unbind(0), own[3:].unbind(0), near[:3].unbind(0), near[3:].unbind(0))
    hist = torch.zeros(b, p, 3 * BINS, dtype=pts.dtype, device=pts.device)
    w = nb.to(pts.dtype)
    for j, (x, lo, hi) in enumerate(((theta, -math.pi, math.pi), (alpha, -1.0, 1.0), (phi, -1.0, 1.0))):
        hist.scatter_add_(2, _bins(x, lo, hi) + j * BINS, w)
    count = nb.sum(-1, keepdim=True).clamp_min(1).to(pts.dtype)
    spfh = hist / count
    inv = w / d2.clamp_min(1e-12).sqrt()
    # Sum over the neighbours of inv x their SPFH rows, as weighted bags of rows of the whole
    # batch: no (B,P,k,33) gather of histograms (10x faster on a CPU; as batched/fpfh.py does).
    rows = (idx + bi * p).view(b * p, -1)  # (B*P, k): the neighbour rows of the whole batch
    weighted = F.embedding_bag(rows, spfh.view(b * p, 3 * BINS), per_sample_weights=inv.view(b * p, -1), mode="sum")
    agg = weighted.view(b, p, 3 * BINS) / inv.sum(-1, keepdim=True).clamp_min(1e-12)
    f = spfh + agg
    f = f.view(b, p, 3, BINS)
    f = f / f.sum(-1, keepdim=True).clamp_min(1e-12)
    enough = (nb.sum(-1) >= 3)[..., None]
    return f.view(b, p, 3 * BINS) * enough


def _neighbours(pts: torch.Tensor, lengths: torch.Tensor, k: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,P,k) squared distances and indices of each point's k nearest in its own cloud (itself
    first; padded rows inf / 0). On CPU straight from the kd-tree: its own float32 ranking is all
    a histogram needs, and the nn backend's exact re-ranking would cost as much again."""
    if pts.device.type != "cpu" or backend not in ("auto", "kdtree"):
        res = knn(pts, pts, lengths, lengths, k=k, backend=backend)
        return res.dists2, res.idx
    b, p, _ = pts.shape
    d2 = torch.full((b, p, k), float("inf"), dtype=pts.dtype)
    idx = torch.zeros((b, p, k), dtype=torch.int64)
    arr = pts.numpy()
    for i, n in enumerate(lengths.tolist()):
        cloud = np.ascontiguousarray(arr[i, :n])
        dist2, near = KDTree(cloud).query(cloud, k=k, sqr_dists=True)
        d2[i, :n] = torch.from_numpy(dist2.reshape(n, k))
        idx[i, :n] = torch.from_numpy(near.reshape(n, k).astype(np.int64))
    return d2, idx


def mutual_nearest(
    feat_a: torch.Tensor, feat_b: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest descriptor in b of every row of a (B,P), and in a of every row of b that is some
    real row's nearest (B,R; the only rows a mutual test `back[fwd] == row` reads; on CPU the
    other rows of b get 0 without a search), by brute force: a thousand-odd 33-D descriptors
    make a tree pointless."""
    if feat_a.device.type != "cpu":
        d = torch.cdist(feat_a.float(), feat_b.float())
        d.masked_fill_(~mask_b[:, None, :], float("inf"))
        fwd = d.argmin(2)
        d.masked_fill_(~mask_a[:, :, None], float("inf"))
        return fwd, d.argmin(1)
    # On CPU numpy's BLAS and row-wise argmin beat torch's single-thread cdist (bench/RESULTS.md).
    fa, fb = feat_a.float().numpy(), feat_b.float().numpy()
    fwd_np = np.zeros(mask_a.shape, dtype=np.int64)
    back_np = np.zeros(mask_b.shape, dtype=np.int64)
    for i, (na, nb) in enumerate(zip(mask_a.sum(1).tolist(), mask_b.sum(1).tolist())):
        if na and nb:
            fwd_np[i, :na] = _nearest_rows(fa[i, :na], fb[i, :nb])
            # Backwards only from the rows some row of a chose (about half of b on dental
            # scans): the other half of the second product was never read.
            targets = np.unique(fwd_np[i, :na])
            back_np[i, targets] = _nearest_rows(np.ascontiguousarray(fb[i, targets]), fa[i, :na])
    return torch.from_numpy(fwd_np), torch.from_numpy(back_np)


def _nearest_rows(a: np.ndarray, b: np.ndarray, rows: int = 64) -> np.ndarray:
    """Index of the nearest row of b for every row of a (|b|^2 - 2 a.b; |a|^2 is common).

    `rows` rows of a at a time: each block's (rows, |b|) scores stay in the core's cache while
    they are offset and reduced (the whole (|a|, |b|) matrix, ~19 MB for 2k x 2.4k, went through
    memory three times; 25-30 % faster alone, more beside a memory-bound thread). The factor -2
    goes into b once: scaling by a power of two is exact. Time O(|a| |b| d), memory O(rows |b|)."""
    b_scaled = np.ascontiguousarray((-2 * b).T)
    b_norms = np.einsum("ij,ij->i", b, b)[None, :]
    out = np.empty(a.shape[0], dtype=np.int64)
    for start in range(0, a.shape[0], rows):
        d = a[start : start + rows] @ b_scaled
        d += b_norms
        out[start : start + rows] = d.argmin(1)
    return out
