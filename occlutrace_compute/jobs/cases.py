"""Finding cases in a folder tree, as `occlutrace batch` and `occlutrace submit` see them.

A case is a folder holding `fixed.*` + `moving.*` (pair) or `upper.*` + `lower.*` + `bite*.*`
(bite; at most two bites). Its label is the folder's path relative to the batch root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from occlutrace_compute.errors import InputRejected

MESH_SUFFIXES = (".stl", ".ply", ".obj")


@dataclass(frozen=True)
class CaseFiles:
    """One case on disk: role -> file (roles as in jobs.models: fixed/moving or upper/lower/bite1/bite2)."""

    label: str
    folder: Path
    kind: str  # "pair" | "bite"
    files: dict[str, Path]


def _mesh_files(folder: Path) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in MESH_SUFFIXES:
            by_stem.setdefault(p.stem.lower(), []).append(p)
    return by_stem


def case_from_folder(folder: Path, label: str) -> CaseFiles | None:
    """The case in `folder`, None if it holds no case files; InputRejected if it is ambiguous."""
    stems = _mesh_files(folder)
    for stem, paths in stems.items():
        if len(paths) > 1:
            raise InputRejected(label, f"several files for '{stem}': {', '.join(p.name for p in paths)}")
    one = {stem: paths[0] for stem, paths in stems.items()}
    bites = sorted(s for s in one if s.startswith("bite"))
    if "fixed" in one or "moving" in one:
        missing = [r for r in ("fixed", "moving") if r not in one]
        if missing:
            raise InputRejected(label, f"pair case without {' and '.join(missing)}.* file")
        return CaseFiles(label, folder, "pair", {"fixed": one["fixed"], "moving": one["moving"]})
    if "upper" in one or "lower" in one or bites:
        missing = [r for r in ("upper", "lower") if r not in one] + ([] if bites else ["bite"])
        if missing:
            raise InputRejected(label, f"bite case without {' and '.join(missing)}.* file")
        if len(bites) > 2:
            raise InputRejected(label, f"at most two bite scans per case, found {len(bites)}")
        files = {"upper": one["upper"], "lower": one["lower"]}
        files.update({f"bite{i + 1}": one[s] for i, s in enumerate(bites)})
        return CaseFiles(label, folder, "bite", files)
    return None


@dataclass(frozen=True)
class BadCase:
    """A folder that looked like a case but cannot run: reported, never stops the batch."""

    label: str
    reason: str


def discover_cases(root: Path) -> tuple[list[CaseFiles], list[BadCase]]:
    """Every case folder under `root` (recursively; a case folder's subfolders are not searched)."""
    root = Path(root)
    if not root.is_dir():
        raise InputRejected(str(root), "not a folder")
    cases: list[CaseFiles] = []
    bad: list[BadCase] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        label = folder.relative_to(root).as_posix() if folder != root else folder.name
        try:
            case = case_from_folder(folder, label)
        except InputRejected as e:
            bad.append(BadCase(label, e.problem))
            continue
        if case is not None:
            cases.append(case)
            continue
        stack.extend(sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True))
    return sorted(cases, key=lambda c: c.label), bad
