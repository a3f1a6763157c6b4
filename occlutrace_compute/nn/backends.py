"""Registry of knn backends. Each takes (query, ref, query_lengths, ref_lengths, k)."""

from __future__ import annotations

from typing import Callable

import torch

from occlutrace_compute.nn import kdtree, torch_brute

Backend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], object]

_BACKENDS: dict[str, Backend] = {
    "kdtree": kdtree.knn,
    "torch": torch_brute.knn,
}


def get(name: str) -> Backend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown knn backend {name!r}; known: {sorted(_BACKENDS)}") from None


def available(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["torch"]
    return ["kdtree", "torch"]
