"""A Medit-style textured OBJ case for the tests: OBJ + MTL + JPEG/PNG with identifiers planted
in every free place of the MTL and the image (EXIF, XMP, ICC, comments, text chunks)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from occlutrace_compute.meshes.model import Mesh

NAME = "Maria Gonzalez 1980-03-14"
PLANTED = (b"Maria Gonzalez", b"1980-03-14", b"Gonzalez", b"DOB19800314", b"PatientID-4711")


def corner_uvs(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) vt values and (M, 3) 0-based vt index per face corner: per-vertex UVs from x/y,
    plus a seam (every 5th face uses a shifted copy) so some vertices have two UVs."""
    v = mesh.vertices
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    base = np.round((v[:, :2] - lo) / (hi - lo), 6)
    vt = np.concatenate([base, np.round(base * 0.5 + 0.25, 6)])
    corner = mesh.faces.copy()
    seam = np.arange(len(corner)) % 5 == 0
    corner[seam] += len(v)
    return vt, corner


def image_bytes(fmt: str, payload: str = NAME, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(7)
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x013B] = payload  # Artist
    exif[0x010E] = f"PatientID-4711 DOB19800314 {payload}"  # ImageDescription
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>{payload}</dc:creator></x:xmpmeta>'.encode()
    icc = b"\x00\x00\x01\x00ICC " + f"PatientID-4711 {payload}".encode() + b"\x00" * 64
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, "JPEG", exif=exif.tobytes(), comment=f"DOB19800314 {payload}", icc_profile=icc, xmp=xmp)
    else:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Comment", f"DOB19800314 {payload}")
        info.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=False)
        im.save(buf, "PNG", exif=exif.tobytes(), pnginfo=info, icc_profile=icc)
    return buf.getvalue()


def mtl_bytes(image: str, payload: str = NAME) -> bytes:
    return (
        f"# exported for {payload}\nnewmtl {payload.replace(' ', '_')}\nKa 1 1 1\nKd 1 1 1\n"
        f"map_Kd -s 1 1 1 {image}\nillum 2 # PatientID-4711\n"
    ).encode()


def obj_bytes(mesh: Mesh, mtl: str, payload: str = NAME) -> bytes:
    vt, corner = corner_uvs(mesh)
    rows = [f"# Medit export {payload}", f"mtllib {mtl}", f"o {payload.replace(' ', '_')}"]
    rows += [f"v {x!r} {y!r} {z!r}" for x, y, z in mesh.vertices.tolist()]
    rows += [f"vt {u!r} {w!r}" for u, w in vt.tolist()]
    rows += ["usemtl DOB19800314"]
    rows += [
        f"f {a}/{p} {b}/{q} {c}/{r}" for (a, b, c), (p, q, r) in zip((mesh.faces + 1).tolist(), (corner + 1).tolist())
    ]
    return ("\n".join(rows) + "\n").encode()


def write_case(folder: Path, mesh: Mesh, stem: str, fmt: str = "jpeg") -> Path:
    """stem.obj + <PatientID>.mtl + a texture named after the patient, as scanners do."""
    folder.mkdir(parents=True, exist_ok=True)
    image = f"PatientID-4711_texture.{'jpg' if fmt == 'jpeg' else 'png'}"
    (folder / image).write_bytes(image_bytes(fmt))
    (folder / f"{stem}.mtl").write_bytes(mtl_bytes(image))
    path = folder / f"{stem}.obj"
    path.write_bytes(obj_bytes(mesh, f"{stem}.mtl"))
    return path
