"""Write a Mesh as STL, OBJ or PLY; exports carry no metadata (no comments, neutral headers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from occlutrace_compute.meshes import obj, ply, stl
from occlutrace_compute.meshes.detect import FORMATS, suffix_of
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.texture import companion_files

_WRITERS: dict[str, Callable[[Mesh, str], bytes]] = {"stl": stl.write, "obj": obj.write, "ply": ply.write}


def mesh_to_bytes(mesh: Mesh, fmt: str, encoding: str = "binary", *, quality: np.ndarray | None = None) -> bytes:
    """The file content; `encoding` is "binary" or "ascii" (OBJ is always text).

    Colours are written to PLY (uchar RGBA) and OBJ (RGB floats 0..1); STL cannot hold them.
    `quality` (N,) per-vertex scalars (e.g. signed deviation in mm, NaN where unmeasured) go into
    a PLY as the float vertex property `quality` that MeshLab, CloudCompare and GOM read as a
    scalar field to re-band; only PLY holds it.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"unknown mesh format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if encoding not in ("binary", "ascii"):
        raise ValueError(f"unknown encoding {encoding!r}: expected 'binary' or 'ascii'")
    if quality is not None:
        if fmt != "ply":
            raise ValueError(f"per-vertex quality is written to PLY only, not {fmt}")
        return _ply_with_quality(mesh, encoding, np.asarray(quality, dtype=np.float64))
    return _WRITERS[fmt](mesh, encoding)


def _ply_with_quality(mesh: Mesh, encoding: str, quality: np.ndarray) -> bytes:
    """PLY with x, y, z (double), [red, green, blue, alpha (uchar)], quality (float) per vertex."""
    v, f, c = mesh.vertices, mesh.faces, mesh.vertex_colors
    if quality.shape != (len(v),):
        raise ValueError(f"quality needs one value per vertex ({len(v)}), got shape {quality.shape}")
    lines = [
        "ply",
        f"format {'ascii' if encoding == 'ascii' else 'binary_little_endian'} 1.0",
        f"element vertex {len(v)}",
        "property double x",
        "property double y",
        "property double z",
    ]
    if c is not None:
        lines += [f"property uchar {a}" for a in ("red", "green", "blue", "alpha")]
    lines += [
        "property float quality",
        f"element face {len(f)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    head = ("\n".join(lines) + "\n").encode("ascii")
    q32 = quality.astype(np.float32)
    if encoding == "ascii":
        cols = [v[:, 0], v[:, 1], v[:, 2]] + ([c[:, k] for k in range(4)] if c is not None else []) + [q32]
        rows = [
            " ".join(repr(x) if isinstance(x, float) else str(x) for x in row)
            for row in zip(*(col.tolist() for col in cols))
        ]
        rows += [f"3 {a} {b} {g}" for a, b, g in f.tolist()]
        return head + ("\n".join(rows) + "\n").encode("ascii")
    fields = (
        [("x", "<f8"), ("y", "<f8"), ("z", "<f8")] + ([("rgba", "u1", (4,))] if c is not None else []) + [("q", "<f4")]
    )
    rec = np.empty(len(v), np.dtype(fields))
    rec["x"], rec["y"], rec["z"] = v[:, 0], v[:, 1], v[:, 2]
    if c is not None:
        rec["rgba"] = c
    rec["q"] = q32
    frec = np.empty(len(f), np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    frec["n"] = 3
    frec["i"] = f
    return head + rec.tobytes() + frec.tobytes()


def mesh_files(mesh: Mesh, stem: str, fmt: str, encoding: str = "binary") -> dict[str, bytes]:
    """`{<stem>.<fmt>: mesh}` plus, for a textured OBJ or PLY, its texture files (OBJ: `<stem>.mtl`
    and `<stem>.png|jpg`; PLY: the image), all named by us (meshes/texture.py)."""
    fmt = fmt.lower().lstrip(".")
    ref, extra = companion_files(fmt, mesh.texture if mesh.uv is not None else None, stem)
    if fmt == "obj":
        main = obj.write(mesh, encoding, ref=ref)
    elif fmt == "ply":
        main = ply.write(mesh, encoding, ref=ref)
    else:
        main = mesh_to_bytes(mesh, fmt, encoding)
    return {f"{stem}.{fmt}": main, **extra}


def export_mesh(
    mesh: Mesh, path: str | Path, fmt: str | None = None, encoding: str = "binary", *, quality: np.ndarray | None = None
) -> Path:
    """Write `mesh` to `path` (format from the suffix unless `fmt` is given); returns the path."""
    path = Path(path)
    path.write_bytes(mesh_to_bytes(mesh, fmt or suffix_of(path.name), encoding, quality=quality))
    return path
