"""Finding cases in a folder tree, as `occlutrace batch` and `occlutrace submit` see them.

A case is one folder. Its meshes (.stl/.ply/.obj, any case) are given roles by their names, as
labs name them (case-insensitive; separators, camelCase and a prefix such as `case7_` are fine):

| role | names recognised (examples) |
|---|---|
| pair: reference | `fixed`, `reference`/`ref`, `baseline`, `initial`, `first`, `before` |
| pair: rescan | `moving`, `rescan`, `followup`/`follow-up`, `second`, `after` |
| bite: upper arch | `upper`, `UpperJaw`, `maxilla`/`maxillary` |
| bite: lower arch | `lower`, `LowerJaw`, `mandible`/`mandibular` |
| bite: bite scan (1 or 2) | `bite*`, `BuccalBite*`, `occlusion*` |

Pair words win over arch words (`upper_reference` + `upper_rescan` is a pair of upper scans, and
its maps name the patient's sides as for an upper arch: option `arch`);
bite words win over arch words (`BuccalBite_upper` is a bite). An optional `case.json`
(`CaseManifest`) names the roles and per-case options explicitly and overrides the names.
A folder that holds meshes but forms no case is reported (`BadCase`: the reason and the
names expected), never dropped; its subfolders are still searched. The label of a case is the
folder's path relative to the batch root.

Worst case: one directory listing per folder and one pass over its names (O(files)); the
walk is an explicit stack over the real folder tree (symlinked folders are not followed, so a
link loop cannot make it endless).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from occlutrace_compute.errors import InputRejected

MESH_SUFFIXES = (".stl", ".ply", ".obj")
MANIFEST_NAME = "case.json"

# Long keywords match anywhere in the name's letters-and-digits (`UpperJaw` -> `upperjaw`);
# short ones only as a whole word, so `ref` does not match `prefix`.
_LONG: dict[str, tuple[str, ...]] = {
    "fixed": ("fixed", "reference", "baseline", "initial"),
    "moving": ("moving", "rescan", "followup", "second"),
    "upper": ("upper", "maxilla", "maxillary"),
    "lower": ("lower", "mandib"),
    "bite": ("bite", "occlusion"),
}
_SHORT: dict[str, tuple[str, ...]] = {
    "fixed": ("ref", "first", "before"),
    "moving": ("after",),
    "upper": (),
    "lower": (),
    "bite": (),
}
EXPECTED_NAMES = (
    "a pair case needs a reference scan (fixed, reference, baseline, first, ...) and a rescan "
    "(moving, rescan, followup, second, ...); a bite case needs upper (upper, UpperJaw, maxilla, ...), "
    "lower (lower, LowerJaw, mandible, ...) and one or two bite scans (bite*, BuccalBite*, occlusion*); "
    f"or a {MANIFEST_NAME} naming the files"
)


class CaseManifest(BaseModel):
    """`case.json` in a case folder: roles and options named explicitly.

    `files` maps a role (fixed/moving or upper/lower/bite1/bite2) to a file name in the folder;
    `options` overrides the batch's analysis options for this case (any `JobOptions` field:
    tolerance_mm, contact_threshold_mm, settle, color_scale_mm, max_distance_mm, band_mm,
    landmarks).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pair", "bite"] | None = None
    files: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class CaseFiles:
    """One case on disk: role -> file (roles as in jobs.models: fixed/moving or upper/lower/bite1/bite2)."""

    label: str
    folder: Path
    kind: str  # "pair" | "bite"
    files: dict[str, Path]
    options: dict[str, Any] = field(default_factory=dict)  # per-case overrides from case.json


@dataclass(frozen=True)
class BadCase:
    """A folder that looked like a case but cannot run: reported, never stops the batch."""

    label: str
    reason: str


def _words(stem: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", stem)]


def name_roles(stem: str) -> set[str]:
    """The roles a file stem names: a subset of fixed, moving, upper, lower, bite."""
    flat = re.sub(r"[^a-z0-9]", "", stem.lower())
    words = set(_words(stem))
    return {role for role in _LONG if any(k in flat for k in _LONG[role]) or words & set(_SHORT[role])}


def _mesh_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)


def _one_each(label: str, by_role: dict[str, list[Path]], roles: tuple[str, ...], kind: str) -> dict[str, Path]:
    for role in roles:
        paths = by_role.get(role, [])
        if len(paths) > 1:
            raise InputRejected(label, f"several files for '{role}': {', '.join(p.name for p in paths)}")
    missing = [r for r in roles if not by_role.get(r)]
    if missing:
        found = ", ".join(f"{p.name} ({r})" for r, ps in sorted(by_role.items()) for p in ps)
        raise InputRejected(
            label, f"{kind} case without {' and '.join(missing)} file (found {found}); {EXPECTED_NAMES}"
        )
    return {r: by_role[r][0] for r in roles}


def _from_names(folder: Path, label: str, meshes: list[Path]) -> CaseFiles | None:
    roles = {p: name_roles(p.stem) for p in meshes}
    pair = {p: r & {"fixed", "moving"} for p, r in roles.items() if r & {"fixed", "moving"}}
    if pair:
        by_role: dict[str, list[Path]] = {}
        for p, r in pair.items():
            if len(r) > 1:
                raise InputRejected(
                    label, f"{p.name} names both the reference and the rescan; rename it or add {MANIFEST_NAME}"
                )
            by_role.setdefault(r.pop(), []).append(p)
        files = _one_each(label, by_role, ("fixed", "moving"), "pair")
        arches = [roles[p] & {"upper", "lower"} for p in files.values()]
        arch = arches[0] if arches[0] == arches[1] and len(arches[0]) == 1 else set()
        return CaseFiles(label, folder, "pair", files, {"arch": arch.pop()} if arch else {})
    by_role = {}
    for p, r in roles.items():
        if "bite" in r:
            by_role.setdefault("bite", []).append(p)
        elif {"upper", "lower"} <= r:
            raise InputRejected(
                label, f"{p.name} names both the upper and the lower arch; rename it or add {MANIFEST_NAME}"
            )
        elif r:
            by_role.setdefault(r.pop(), []).append(p)
    if not by_role:
        return None
    bites = by_role.pop("bite", [])
    if len(bites) > 2:
        raise InputRejected(
            label, f"at most two bite scans per case, found {len(bites)}: {', '.join(p.name for p in bites)}"
        )
    if not bites:
        by_role["bite"] = []
    files = _one_each(label, {**by_role, **({"bite": bites[:1]} if bites else {})}, ("upper", "lower", "bite"), "bite")
    files.pop("bite")
    files.update({f"bite{i + 1}": p for i, p in enumerate(bites)})
    return CaseFiles(label, folder, "bite", files)


def _from_manifest(folder: Path, label: str, path: Path) -> CaseFiles:
    from occlutrace_compute.jobs.models import BITE_ROLES, PAIR_ROLES, JobOptions

    where = f"{label}/{MANIFEST_NAME}" if label else MANIFEST_NAME
    try:
        manifest = CaseManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
        JobOptions.model_validate(manifest.options)  # refused here, per case, not in the worker
    except (OSError, ValueError, ValidationError) as e:
        raise InputRejected(where, f"invalid: {_errors(e) if isinstance(e, ValidationError) else e}") from None
    if manifest.files:
        roles = set(manifest.files)
        kind = manifest.kind or ("pair" if roles & set(PAIR_ROLES) else "bite")
        if kind == "pair" and roles != set(PAIR_ROLES):
            raise InputRejected(where, f"a pair case names files for fixed and moving, got {sorted(roles)}")
        if kind == "bite" and not ({"upper", "lower", "bite1"} <= roles <= set(BITE_ROLES)):
            raise InputRejected(
                where, f"a bite case names files for upper, lower, bite1 [, bite2], got {sorted(roles)}"
            )
        files: dict[str, Path] = {}
        for role, name in manifest.files.items():
            p = folder / name
            if Path(name).name != name or not p.is_file():
                raise InputRejected(where, f"{role}: no file '{name}' in the case folder")
            if p.suffix.lower() not in MESH_SUFFIXES:
                raise InputRejected(where, f"{role}: '{name}' is not a mesh ({', '.join(MESH_SUFFIXES)})")
            files[role] = p
        return CaseFiles(label, folder, kind, files, dict(manifest.options))
    case = _from_names(folder, label, _mesh_files(folder))
    if case is None:
        raise InputRejected(where, f"names no files and none of the meshes is recognised; {EXPECTED_NAMES}")
    if manifest.kind and manifest.kind != case.kind:
        raise InputRejected(where, f"says kind '{manifest.kind}' but the file names make a {case.kind} case")
    return CaseFiles(label, folder, case.kind, case.files, {**case.options, **manifest.options})


def _errors(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())


def case_from_folder(folder: Path, label: str) -> CaseFiles | None:
    """The case in `folder`; None if it holds no mesh and no case.json; InputRejected if it holds
    meshes that form no case (the reason names what was expected)."""
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        return _from_manifest(folder, label, manifest)
    meshes = _mesh_files(folder)
    if not meshes:
        return None
    case = _from_names(folder, label, meshes)
    if case is None:
        raise InputRejected(
            label, f"no mesh name is recognised ({', '.join(p.name for p in meshes)}); {EXPECTED_NAMES}"
        )
    return case


def discover_cases(root: Path) -> tuple[list[CaseFiles], list[BadCase]]:
    """Every case folder under `root` (recursively; a case folder's subfolders are not searched;
    a folder whose meshes form no case is reported and its subfolders are still searched)."""
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
            bad.append(BadCase(label, e.problem if e.source == label else str(e)))
            case = None
        if case is not None:
            cases.append(case)
            continue
        stack.extend(
            sorted(
                (p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")),
                reverse=True,
            )
        )
    return sorted(cases, key=lambda c: c.label), sorted(bad, key=lambda b: b.label)
