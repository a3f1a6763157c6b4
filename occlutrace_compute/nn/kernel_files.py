"""Where the CUDA sources of kernels/ live, so the GPU backend and the CPU test build read one file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "OCCLUTRACE_KERNELS_DIR"


def kernels_dir() -> Path:
    """`$OCCLUTRACE_KERNELS_DIR`; else the repository's kernels/ next to the package (a source
    checkout or editable install); else <prefix>/share/occlutrace/kernels, where a wheel puts them."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2] / "kernels"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "occlutrace" / "kernels"


def kernel_path(name: str) -> Path:
    path = kernels_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {path} not found; set {ENV_VAR} to the folder holding {name}")
    return path
