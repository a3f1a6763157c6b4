"""Case data the benchmarks share: synthetic case folders made once and reused, a case folder's
role files, and generated cases cached as pickles. The scripts import it as `_data` (run as
`python bench/<script>.py`, bench/ is first on sys.path).

Each helper reads or writes one case: time and memory are those of the synth generator or of
reading the folder's listing, nothing per call beyond that.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")


def role_files(folder: Path, roles: tuple[str, ...] = ("fixed", "moving")) -> dict[str, Path]:
    """The file of each role found in a case folder (`<role>.<ext>`, any mesh extension), in
    `roles` order; a role without a file is left out (a bite case's optional bite2)."""
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.stem in roles and path.suffix.lower() in (".ply", ".stl", ".obj"):
            by_stem.setdefault(path.stem, path)
    return {role: by_stem[role] for role in roles if role in by_stem}


def pair_case_dir(
    folder: Path, seed: int, scenario: Literal["clean", "changed"], spacing_mm: float, fmt: str
) -> tuple[Path, bool]:
    """`synth.make_pair_case(seed, scenario, spacing_mm=...)` written to `folder` as `fmt`
    (write_pair_case: fixed, moving, truth.json, the unchanged masks), unless a complete case
    is already there: truth.json is written last, so its presence marks one. Returns the folder
    and whether it was generated now."""
    if (folder / "truth.json").exists():
        return folder, False
    from occlutrace_compute.synth import make_pair_case, write_pair_case

    write_pair_case(make_pair_case(seed, scenario, spacing_mm=spacing_mm), folder, fmt)
    return folder, True


def pickled(path: Path | None, make: Callable[[], T]) -> T:
    """`make()`, cached in the pickle `path` (None: no cache). For generated cases that take
    seconds each; the pickle is written to a temporary name and renamed, so a run stopped
    mid-write leaves no truncated cache entry."""
    if path is not None and path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    value = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(value, f)
        tmp.replace(path)
    return value
