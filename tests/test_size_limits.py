"""A file over a byte limit is refused with a specific error: which file, its size, by how much it
is over, the limit and the setting that holds it; a file exactly at the limit is accepted. Through
the loader (a mesh, its MTL, its texture image; from a folder and from bytes) and through the
controller's upload (real HTTP on 127.0.0.1: 413, the file named in `source`)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import trimesh
from test_service_support import LiveServer, mesh_bytes, write_tokens

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, load_mesh
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig

sys.path.insert(0, str(Path(__file__).parent))
from texture_case import image_bytes, mtl_bytes, obj_bytes

IMAGE = "skin.png"


def _case(largest: str) -> dict[str, bytes]:
    """scan.obj + scan.mtl + skin.png, with `largest` (one of the three names) padded or drawn so
    that it is the biggest file by far: a limit just under its size refuses only it."""
    s = trimesh.creation.icosphere(subdivisions=1, radius=12.0)
    mesh = Mesh(s.vertices.astype(np.float64), s.faces.astype(np.int64))
    files = {
        "scan.obj": obj_bytes(mesh, "scan.mtl", payload="case"),
        "scan.mtl": mtl_bytes(IMAGE, payload="case"),
        IMAGE: image_bytes("png", payload="case", size=(128, 128) if largest == IMAGE else (16, 16)),
    }
    if largest != IMAGE:  # comments: the parsers skip them
        files[largest] += b"# padding\n" * 8000
    assert max(files, key=lambda name: len(files[name])) == largest
    return files


def _load(files: dict[str, bytes], limit: int, via: str, folder: Path):
    limits = Limits(max_bytes=limit)
    if via == "bytes":
        return load_mesh(data=files["scan.obj"], name="scan.obj", companions=files, limits=limits)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return load_mesh(folder / "scan.obj", limits)


@pytest.mark.parametrize("via", ["bytes", "folder"])
@pytest.mark.parametrize("largest", ["scan.obj", "scan.mtl", IMAGE])
def test_a_file_one_byte_over_the_limit_is_named_with_its_size_and_the_limit(tmp_path, largest, via):
    files = _case(largest)
    n = len(files[largest])
    loaded = _load(files, n, via, tmp_path)  # exactly at the limit: accepted
    assert loaded.mesh.texture is not None and not [w for w in loaded.warnings if "dropped" in w]
    with pytest.raises(InputRejected) as info:
        _load(files, n - 1, via, tmp_path)
    error = info.value
    # a texture handed over as bytes is refused by the re-encoder, which calls it a texture
    what = "texture" if largest == IMAGE and via == "bytes" else "file"
    assert error.problem == f"{what} too large: {n} bytes, 1 over the limit of {n - 1} bytes (Limits.max_bytes)"
    assert Path(error.source).name == largest, error.source  # a folder's file by its path


def test_a_sparse_file_far_over_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.stl"
    with open(path, "wb") as f:
        f.truncate(2 * 10**9)  # reading it would take seconds and 2 GB
    with pytest.raises(InputRejected) as info:
        load_mesh(path, Limits(max_bytes=10**6))
    assert info.value.source == str(path)
    assert info.value.problem == (
        "file too large: 2000000000 bytes, 1999000000 over the limit of 1000000 bytes (Limits.max_bytes)"
    )


def test_an_upload_one_byte_over_the_servers_limit_answers_413_naming_file_size_and_setting(tmp_path):
    data = mesh_bytes(0)
    tokens = write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(
        store=f"file://{tmp_path / 'store'}", tokens_file=str(tokens), staging_sweep_s=0, max_upload_bytes=len(data)
    )
    live = LiveServer(lambda: create_app(config)).start()
    try:
        with httpx.Client(
            base_url=live.url, headers={"Authorization": "Bearer tok-alpha-0123456789"}, timeout=30
        ) as http:
            r = http.post("/v1/cases/case-1/files", files={"file": ("exact.stl", data)})
            assert r.status_code == 201 and r.json()["bytes"] == len(data), r.text
            r = http.post("/v1/cases/case-1/files", files={"file": ("over.stl", data + b"\0")})
    finally:
        live.stop()
    assert r.status_code == 413, r.text
    body = r.json()
    problem = (
        f"file too large: {len(data) + 1} bytes, 1 over the limit of {len(data)} bytes "
        "(max_upload_bytes, env OCCLUTRACE_MAX_UPLOAD_BYTES)"
    )
    # the same code as the size middleware's 413 (a body over the limit): one code for one cause
    assert (body["error"], body["source"], body["problem"]) == ("too_large", "over.stl", problem)
    assert body["detail"] == f"over.stl: {problem}"
