"""Where the CUDA sources of kernels/ live, so the GPU backend and the CPU test build read one file,
and the source text NVRTC compiles (`kernel_source`: the folder's own headers pasted in)."""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

ENV_VAR = "OCCLUTRACE_KERNELS_DIR"
_DIST = "occlutrace-compute"
_DATA_DIR = "share/occlutrace/kernels"
# `#include "name.cuh"` on a line of its own (a // or /* */ comment may follow): a header of
# this folder (a plain name, no path)
_LOCAL_INCLUDE = re.compile(
    r'^[ \t]*#[ \t]*include[ \t]+"([A-Za-z0-9_]+\.cuh)"[ \t]*(?://[^\n]*|/\*[^\n]*?\*/[ \t]*)?$', re.MULTILINE
)


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


def kernel_source(name: str) -> str:
    """The text of kernel `name` with each `#include "x.cuh"` of this folder replaced by that
    header's text (each header once, as its `#pragma once` would; nested includes too).

    NVRTC (CuPy's RawModule) is handed source text, not a file, so it has no folder to find the
    header in; pasting it here also keys CuPy's compile cache, which hashes the text, on the
    header's content. nvcc and g++, given the .cu's path, find the header beside it and get the
    same code. Cost: one read per file, the text's length in memory."""
    seen: set[str] = set()

    def expand(file: str) -> str:
        def paste(match: re.Match[str]) -> str:
            header = match.group(1)
            if header in seen:
                return f"// {header}: already included"
            seen.add(header)
            return f"// ---- {header} ----\n{expand(header)}\n// ---- end of {header} ----"

        return _LOCAL_INCLUDE.sub(paste, kernel_path(file).read_text())

    return expand(name)
