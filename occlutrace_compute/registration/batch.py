"""Ragged point clouds packed into padded tensors (PyTorch3D convention: values + lengths)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Clouds:
    """B clouds padded to the longest: points/normals (B, P, 3), lengths (B,)."""

    points: torch.Tensor
    normals: torch.Tensor
    lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, P) True on real rows."""
        p = self.points.shape[1]
        return torch.arange(p, device=self.points.device)[None, :] < self.lengths[:, None]

    def index(self, items: torch.Tensor) -> Clouds:
        return Clouds(self.points[items], self.normals[items], self.lengths[items])


def pack(clouds: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device) -> Clouds:
    """Pad a list of (points, normals) arrays into one float64 batch on `device`."""
    b = len(clouds)
    p = max(c[0].shape[0] for c in clouds)
    pts = np.zeros((b, p, 3))
    nrm = np.zeros((b, p, 3))
    lengths = np.zeros(b, dtype=np.int64)
    for i, (x, n) in enumerate(clouds):
        pts[i, : len(x)] = x
        nrm[i, : len(x)] = n
        lengths[i] = len(x)
    return Clouds(
        torch.from_numpy(pts).to(device),
        torch.from_numpy(nrm).to(device),
        torch.from_numpy(lengths).to(device),
    )
