"""Surface-frame starting poses for every pair at once (`hypotheses.axis_hypotheses` and
`hypotheses.anchor_centroids` as tensor ops over padded coarse clouds).

Same poses as the numpy code up to rounding and to the sign LAPACK gives an eigenvector: a flipped
in-plane axis turns every guess by 180 deg about the occlusal axis, which with an even number of
angles lists the same set of rotations in another order. Time O(B x (anchors x R log R)), memory
O(B x anchors x R) for R fixed samples per pair.
"""

from __future__ import annotations

import math

import torch

from occlutrace_compute.registration.batch import Clouds


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask[..., None]).sum(1) / mask.sum(1).clamp_min(1)[:, None].to(x.dtype)


def frames(clouds: Clouds, min_mean_normal: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """`hypotheses._frame` per cloud: centroids (B,3) and frames (B,3,3) whose columns are x (major
    in-plane principal direction), y, z (mean normal, or the thinnest axis when that is short)."""
    mask = clouds.mask
    c = _masked_mean(clouds.points, mask)
    X = (clouds.points - c[:, None]) * mask[..., None]
    cov = X.transpose(1, 2) @ X / (clouds.lengths - 1).clamp_min(1)[:, None, None].to(X.dtype)
    mean_n = _masked_mean(clouds.normals, mask)
    length = mean_n.norm(dim=1, keepdim=True)
    thinnest = torch.linalg.eigh(cov)[1][..., :, 0]
    z = torch.where(length >= min_mean_normal, mean_n / length.clamp_min(1e-300), thinnest)
    P = torch.eye(3, dtype=X.dtype, device=X.device) - z[:, :, None] * z[:, None, :]
    x = torch.linalg.eigh(P @ cov @ P)[1][..., :, 2]
    x = x - z * (x * z).sum(1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True)
    return c, torch.stack([x, torch.linalg.cross(z, x), z], 2)


def anchor_centroids(fixed: Clouds, n_moving: torch.Tensor, n_anchors: int) -> torch.Tensor:
    """(B, n_anchors+1, 3): the fixed centroid, then around each of `n_anchors` farthest-point
    spread fixed samples the centroid of its min(n_moving, R) nearest fixed samples."""
    pts, mask = fixed.points, fixed.mask
    b, r, _ = pts.shape
    rows = torch.arange(b, device=pts.device)
    neg = torch.tensor(-math.inf, dtype=pts.dtype, device=pts.device)
    chosen = [torch.zeros(b, dtype=torch.int64, device=pts.device)]
    d = torch.where(mask, (pts - pts[:, :1]).norm(dim=-1), neg)
    for _ in range(n_anchors - 1):  # farthest point sampling
        chosen.append(d.argmax(1))
        d = torch.minimum(d, torch.where(mask, (pts - pts[rows, chosen[-1]][:, None]).norm(dim=-1), neg))
    centres = pts[rows[:, None], torch.stack(chosen, 1)]  # (B,A,3)
    d2 = ((centres[:, :, None] - pts[:, None]) ** 2).sum(-1).masked_fill(~mask[:, None], math.inf)
    near = d2.argsort(-1)  # (B,A,R)
    k = torch.minimum(n_moving.clamp_min(1), fixed.lengths)
    take = (torch.arange(r, device=pts.device)[None] < k[:, None])[:, None, :, None]
    patch = (pts[rows[:, None, None], near] * take).sum(2) / k[:, None, None].to(pts.dtype)
    return torch.cat([_masked_mean(pts, mask)[:, None], patch], 1)


def axis_hypotheses(moving: Clouds, fixed: Clouds, n_angles: int, n_anchors: int) -> torch.Tensor:
    """(B, 2 x n_angles x (n_anchors+1), 4, 4) poses T_fixed_moving in `hypotheses.axis_hypotheses`'
    order: surface frames matched, turned about the occlusal axis (both signs of it), the moving
    centroid put on each anchor."""
    centre_moving, R_moving_surface = frames(moving)
    _, R_fixed_surface = frames(fixed)
    anchors = anchor_centroids(fixed, moving.lengths, n_anchors)  # (B,N,3)
    dt, dev = anchors.dtype, anchors.device
    a = torch.tensor([2 * math.pi * k / n_angles for k in range(n_angles)], dtype=dt, device=dev)
    Rz = torch.zeros(n_angles, 3, 3, dtype=dt, device=dev)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    Rz[:, 2, 2] = 1.0
    flips = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0]], dtype=dt, device=dev)
    R_moving_flipped = R_moving_surface[:, None] * flips[None, :, None, :]  # (B,2,3,3): columns y, z flipped
    R = R_fixed_surface[:, None, None] @ Rz[None, None] @ R_moving_flipped[:, :, None].transpose(-1, -2)  # (B,2,n,3,3)
    t = anchors[:, None, None, :, :] - (R @ centre_moving[:, None, None, :, None])[..., 0][:, :, :, None, :]
    b, n = anchors.shape[:2]
    T = torch.zeros(b, 2, n_angles, n, 4, 4, dtype=dt, device=dev)
    T[..., :3, :3] = R[:, :, :, None]
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T.reshape(b, 2 * n_angles * n, 4, 4)
