"""Where the CUDA sources of kernels/ live, so the GPU backend and the CPU test build read one file."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

ENV_VAR = "OCCLUTRACE_KERNELS_DIR"
_DIST = "occlutrace-compute"
_DATA_DIR = "share/occlutrace/kernels"


def kernels_dir() -> Path:
    """`$OCCLUTRACE_KERNELS_DIR`; else the repository's kernels/ next to the package (a source
    checkout or editable install); else where the installed wheel put them (its data scheme's
    share/occlutrace/kernels: the venv, ~/.local for --user, /usr/local for a system Python)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2] / "kernels"
    return checkout if checkout.is_dir() else (_installed() or checkout)


def _installed() -> Path | None:
    try:
        files = importlib.metadata.files(_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.parent.as_posix().endswith(_DATA_DIR):
            return Path(f.locate()).resolve().parent
    return None


def kernel_path(name: str) -> Path:
    path = kernels_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {path} not found; set {ENV_VAR} to the folder holding {name}")
    return path
