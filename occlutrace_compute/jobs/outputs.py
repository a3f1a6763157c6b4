"""Writing a job's output files into a folder, result.json last and atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

RESULT_NAME = "result.json"


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_case_outputs(folder: Path, files: dict[str, bytes]) -> None:
    """Every file, then result.json: its presence means the whole case is on disk."""
    for name, data in files.items():
        if name != RESULT_NAME:
            atomic_write(folder / name, data)
    if RESULT_NAME in files:
        atomic_write(folder / RESULT_NAME, files[RESULT_NAME])
