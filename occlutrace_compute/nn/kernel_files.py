"""Where the CUDA sources of kernels/ live, so the GPU backend and the CPU test build read one file."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "OCCLUTRACE_KERNELS_DIR"


def kernels_dir() -> Path:
    """`$OCCLUTRACE_KERNELS_DIR`, else the repository's kernels/ folder next to the package."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else Path(__file__).resolve().parents[2] / "kernels"


def kernel_path(name: str) -> Path:
    path = kernels_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {path} not found; set {ENV_VAR} to the folder holding {name}")
    return path
