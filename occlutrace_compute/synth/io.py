"""Writing synthetic cases as case folders (meshes + truth.json), the layout `occlutrace batch`
reads: fixed.* + moving.* for a pair case, upper.* + lower.* + bite*.* for a bite case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from occlutrace_compute.meshes.export import export_mesh
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth.cases import BiteCase, PairCase

Format = Literal["ply", "stl", "obj"]


def write_mesh(mesh: Mesh, path: Path, fmt: Format, encoding: Literal["binary", "ascii"] = "binary") -> None:
    """Through the product's own exporter: the files carry no metadata."""
    export_mesh(mesh, path, fmt, encoding)


def _matrix(t: np.ndarray) -> list[list[float]]:
    return [[float(x) for x in row] for row in np.asarray(t)]


def write_pair_case(
    case: PairCase, folder: str | Path, fmt: Format = "ply", encoding: Literal["binary", "ascii"] = "binary"
) -> Path:
    """fixed.<ext>, moving.<ext>, truth.json (T_fixed_moving etc.), moving_unchanged.npy (per
    vertex, in the order written; PLY/OBJ readers keep it) and moving_unchanged_faces.npy (per
    face: all three vertices unchanged; valid for STL too)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_mesh(case.fixed, out / f"fixed.{fmt}", fmt, encoding)
    write_mesh(case.moving, out / f"moving.{fmt}", fmt, encoding)
    np.save(out / "moving_unchanged.npy", case.moving_unchanged)
    # per face as well: STL keeps no shared vertices, but every format keeps the face order
    np.save(out / "moving_unchanged_faces.npy", np.all(case.moving_unchanged[case.moving.faces], axis=1))
    truth = {
        "kind": "pair",
        "T_fixed_moving": _matrix(case.T_fixed_moving),
        "overlap": case.overlap,
        "changes": case.changes,
        "jaw": case.jaw,
        "moving_unchanged": "moving_unchanged.npy",
        "moving_unchanged_faces": "moving_unchanged_faces.npy",
        "n_vertices": {"fixed": case.fixed.n_vertices, "moving": case.moving.n_vertices},
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return out


def write_bite_case(
    case: BiteCase, folder: str | Path, fmt: Format = "ply", encoding: Literal["binary", "ascii"] = "binary"
) -> Path:
    """upper.<ext>, lower.<ext>, bite1.<ext> [, bite2.<ext>] and truth.json."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_mesh(case.upper, out / f"upper.{fmt}", fmt, encoding)
    write_mesh(case.lower, out / f"lower.{fmt}", fmt, encoding)
    for i, bite in enumerate(case.bites, start=1):
        write_mesh(bite, out / f"bite{i}.{fmt}", fmt, encoding)
    truth = {
        "kind": "bite",
        "T_upper_lower": _matrix(case.T_upper_lower),
        "T_upper_bites": [_matrix(t) for t in case.T_upper_bites],
        "occlusion_frame": "upper",
        "contacts": case.contacts.to_dict(),
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return out
