"""Registry of knn backends. Each takes (query, ref, query_lengths, ref_lengths, k).

Optional backends (cuda: CuPy; pytorch3d) are imported only when used, so importing the package
never needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from occlutrace_compute.nn import cuda_grid, kdtree, pytorch3d_backend, torch_brute

if TYPE_CHECKING:  # (api imports this module)
    from occlutrace_compute.nn.api import KnnResult

Backend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], "KnnResult"]


@dataclass(frozen=True)
class BackendSpec:
    run: Backend
    installed: Callable[[], bool]
    cuda_only: bool = False
    max_k: int | None = None


def _always() -> bool:
    return True


_BACKENDS: dict[str, BackendSpec] = {
    # Availability is looked up at call time (a lambda), so it always reflects the module's answer.
    "cuda": BackendSpec(cuda_grid.knn, lambda: cuda_grid.is_installed(), cuda_only=True, max_k=cuda_grid.MAX_K),
    "pytorch3d": BackendSpec(pytorch3d_backend.knn, lambda: pytorch3d_backend.is_installed()),
    "kdtree": BackendSpec(kdtree.knn, _always),
    "torch": BackendSpec(torch_brute.knn, _always),
}
_ORDER = {"cuda": ("cuda", "pytorch3d", "torch"), "cpu": ("kdtree", "torch")}


def get(name: str) -> Backend:
    try:
        return _BACKENDS[name].run
    except KeyError:
        raise ValueError(f"unknown knn backend {name!r}; known: {sorted(_BACKENDS)}") from None


def available(device: torch.device) -> list[str]:
    """Installed backends suited to tensors on `device`, best first (others still run by name)."""
    return [n for n in _ORDER.get(device.type, ("torch",)) if _BACKENDS[n].installed()]


def usable_problem(name: str, device: torch.device, k: int) -> str | None:
    """Why backend `name` cannot run this call, or None when it can."""
    get(name)
    spec = _BACKENDS[name]
    if not spec.installed():
        return f"knn backend {name!r} is not installed or finds no GPU"
    if spec.cuda_only and device.type != "cuda":
        return f"knn backend {name!r} needs CUDA tensors, got {device}"
    if spec.max_k is not None and k > spec.max_k:
        return f"knn backend {name!r} supports k <= {spec.max_k}, got k={k}"
    return None


def select(device: torch.device, k: int) -> str:
    """The best available backend that can take this k."""
    for name in available(device):
        if usable_problem(name, device, k) is None:
            return name
    return "torch"
