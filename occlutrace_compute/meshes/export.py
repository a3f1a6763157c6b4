"""Write a Mesh as STL, OBJ or PLY; exports carry no metadata (no comments, neutral headers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from occlutrace_compute.meshes import numtext, ply, stl
from occlutrace_compute.meshes.detect import FORMATS, suffix_of
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.meshes.texture import companion_files


def obj_text(mesh: Mesh, ref: str | None = None) -> bytes:
    """The OBJ of an export, laid out as meshes/obj.write lays it out ('v x y z [r g b]' with
    colours as floats 0..1, 'vt u v', 'f a b c' or 'f a/a b/b c/c'; with UVs and `ref`,
    'mtllib <ref>' and 'usemtl texture'; nothing else), its numbers written by meshes/numtext:
    ~0.25 s CPU instead of ~0.9 s for a 157k-vertex scan, every float read back bit-identical."""
    v, f = mesh.vertices, np.asarray(mesh.faces, dtype=np.int64) + 1
    n = len(v)
    sp = numtext.literal(n, " ")
    cols = [numtext.literal(n, "v "), numtext.floats(v[:, 0]), sp, numtext.floats(v[:, 1]), sp]
    cols.append(numtext.floats(v[:, 2]))
    if mesh.vertex_colors is not None:
        rgb = mesh.vertex_colors[:, :3].astype(np.float64) / 255.0
        for k in range(3):
            cols += [sp, numtext.floats(rgb[:, k])]
    parts = [numtext.lines(cols)]
    if ref is not None and mesh.uv is not None:
        parts.insert(0, f"mtllib {ref}\nusemtl texture\n".encode("ascii"))
    if mesh.uv is not None:
        m = len(mesh.uv)
        uv = np.asarray(mesh.uv, dtype=np.float64)
        parts.append(
            numtext.lines(
                [numtext.literal(m, "vt "), numtext.floats(uv[:, 0]), numtext.literal(m, " "), numtext.floats(uv[:, 1])]
            )
        )
    k = len(f)
    fsp = numtext.literal(k, " ")
    corners = [numtext.integers(f[:, j]) for j in range(3)]
    if mesh.uv is not None:  # 'a/a': the UV of a corner has its vertex's index
        slash = numtext.literal(k, "/")
        corners = [numtext.Column(*_joined(c, slash, c)) for c in corners]
    parts.append(numtext.lines([numtext.literal(k, "f "), corners[0], fsp, corners[1], fsp, corners[2]]))
    return b"".join(parts)


def _joined(*cols: numtext.Column) -> tuple[np.ndarray, np.ndarray]:
    chars = np.concatenate([np.broadcast_to(c.chars, c.keep.shape) for c in cols], axis=1)
    return chars, np.concatenate([c.keep for c in cols], axis=1)


def _obj(mesh: Mesh, encoding: str) -> bytes:
    return obj_text(mesh)  # OBJ is text whatever the encoding asked


_WRITERS: dict[str, Callable[[Mesh, str], bytes]] = {"stl": stl.write, "obj": _obj, "ply": ply.write}


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
        main = obj_text(mesh, ref=ref)
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
