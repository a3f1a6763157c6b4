"""Writing a job's output files into a folder, result.json last and atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

RESULT_NAME = "result.json"


def process_umask() -> int:
    """The process umask, read without changing it where the OS tells (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Writes through a temp file and a rename; the file gets the mode a plain open() would
    (0666 less the umask), not mkstemp's private 0600, so colleagues can read results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~process_umask())
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
