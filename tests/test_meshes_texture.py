"""Textured scans (issue 11 item 5): OBJ + MTL + JPEG/PNG and PLY texture coordinates are kept
through sanitize, align, batch and the service's uploads, the texture re-encoded from its pixels
alone and the MTL re-written by us: every planted identifier gone, geometry and UVs unchanged."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes import Limits, find_metadata, load_mesh, sanitize_file
from occlutrace_compute.meshes.model import Mesh

sys.path.insert(0, str(Path(__file__).parent))
from texture_case import PLANTED, corner_uvs, image_bytes, mtl_bytes, obj_bytes, write_case

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pair():
    from occlutrace_compute.synth import make_pair_case

    return make_pair_case(3, "clean", overlap=(0.9, 1.0), spacing_mm=0.8)


def _no_planted(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not [p for p in PLANTED if p in data], f"planted bytes survive in {f}"


def _corners_kept(loaded: Mesh, source: Mesh) -> None:
    """Each triangle corner keeps its position and its (per-corner) UV through the split."""
    vt, corner = corner_uvs(source)
    assert np.array_equal(loaded.vertices[loaded.faces], source.vertices[source.faces])
    assert np.array_equal(loaded.uv[loaded.faces], vt[corner])


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_sanitize_writes_obj_mtl_and_reencoded_texture_geometry_and_uvs_unchanged(tmp_path, pair, fmt):
    src = write_case(tmp_path / "in", pair.moving, "scan", fmt)
    before = load_mesh(src)
    _corners_kept(before.mesh, pair.moving)
    assert before.mesh.n_vertices > pair.moving.n_vertices  # the seam's corners were split
    fields = {f for f, _ in find_metadata(src)}
    assert {
        "obj.comment",
        "obj.object_name",
        "obj.usemtl",
        "mtl.comment",
        "mtl.newmtl",
        "mtl.Ka",
        "mtl.illum",
        "texture.exif",
        "texture.icc_profile",
        "texture.file",
    } <= fields
    assert "texture.comment" in fields or "texture.Comment" in fields
    assert "texture.xmp" in fields or "texture.XML:com.adobe.xmp" in fields
    out = tmp_path / "out"
    out.mkdir()
    sanitize_file(src, out / "clean.obj")
    suffix = "jpg" if fmt == "jpeg" else "png"
    assert sorted(p.name for p in out.iterdir()) == sorted(["clean.obj", "clean.mtl", f"clean.{suffix}"])
    assert (out / "clean.mtl").read_bytes() == f"newmtl texture\nmap_Kd clean.{suffix}\n".encode()
    _no_planted(out)
    after = load_mesh(out / "clean.obj")
    assert np.array_equal(after.mesh.vertices, before.mesh.vertices) and np.array_equal(
        after.mesh.faces, before.mesh.faces
    )
    assert np.array_equal(after.mesh.uv, before.mesh.uv)
    with Image.open(out / f"clean.{suffix}") as im:
        assert im.size == (64, 48) and im.format == fmt.upper()
        assert not {"exif", "icc_profile", "xmp", "comment", "Comment"} & set(im.info)
        assert not [a for a, _ in getattr(im, "applist", []) if a != "APP0"]
    if fmt == "png":  # lossless: the very pixels
        with Image.open(io.BytesIO(image_bytes("png"))) as a, Image.open(out / "clean.png") as b:
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b))


def test_ply_texture_coordinates_and_texture_file_kept(tmp_path, pair):
    m = pair.moving
    uv = np.round(np.random.default_rng(1).random((m.n_vertices, 2)), 6)
    head = [
        "ply",
        "format ascii 1.0",
        "comment TextureFile DOB19800314.png",
        f"comment Patient {PLANTED[0].decode()}",
        f"element vertex {m.n_vertices}",
        "property float x",
        "property float y",
        "property float z",
        "property float s",
        "property float t",
        f"element face {m.n_faces}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    v32 = m.vertices.astype(np.float32)
    rows = [
        f"{x!r} {y!r} {z!r} {u!r} {w!r}"
        for (x, y, z), (u, w) in zip(v32.astype(np.float64).tolist(), uv.astype(np.float32).astype(np.float64).tolist())
    ]
    rows += [f"3 {a} {b} {c}" for a, b, c in m.faces.tolist()]
    (tmp_path / "scan.ply").write_text("\n".join(head + rows) + "\n")
    (tmp_path / "DOB19800314.png").write_bytes(image_bytes("png"))
    before = load_mesh(tmp_path / "scan.ply")
    assert before.mesh.texture is not None and before.mesh.texture.fmt == "png"
    assert np.array_equal(before.mesh.uv, uv.astype(np.float32).astype(np.float64))
    out = tmp_path / "out"
    out.mkdir()
    sanitize_file(tmp_path / "scan.ply", out / "clean.ply", encoding="binary")
    assert sorted(p.name for p in out.iterdir()) == ["clean.ply", "clean.png"]
    _no_planted(out)
    after = load_mesh(out / "clean.ply")
    assert np.array_equal(after.mesh.uv, before.mesh.uv) and np.array_equal(after.mesh.vertices, before.mesh.vertices)
    assert after.mesh.texture is not None


def test_missing_texture_is_dropped_with_a_warning_foreign_or_huge_one_rejected(tmp_path, pair):
    src = write_case(tmp_path, pair.moving, "scan", "jpeg")
    image = next(tmp_path.glob("*.jpg"))
    image.unlink()
    lm = load_mesh(src)
    assert lm.mesh.texture is None and lm.mesh.uv is not None
    assert any("texture dropped" in w and image.name in w for w in lm.warnings)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "GIF")
    image.write_bytes(buf.getvalue())  # a GIF under a .jpg name
    with pytest.raises(InputRejected, match=r"PatientID-4711_texture\.jpg: unsupported or corrupt texture"):
        load_mesh(src)
    image.write_bytes(image_bytes("jpeg", size=(300, 200)))
    with pytest.raises(InputRejected, match=r"PatientID-4711_texture\.jpg: texture too large: 300x200 pixels"):
        load_mesh(src, Limits(max_texture_pixels=50_000))
    (tmp_path / "scan.mtl").write_bytes(b"newmtl a\nmap_Kd face.tif\n")
    with pytest.raises(InputRejected, match="unsupported texture format"):
        load_mesh(src)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    from occlutrace_compute.meshes.texture import reencode

    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG")  # ~50 kB file, 400 M pixels
    with pytest.raises(InputRejected, match=r"bomb\.png: texture too large"):
        reencode(buf.getvalue(), "bomb.png", Limits())


_TEXT = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#\\"), min_size=6, max_size=30
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=_TEXT,
    fmt=st.sampled_from(["jpeg", "png"]),
    where=st.sampled_from(["newmtl", "Ka", "comment", "map_Ks", "tail"]),
)
def test_payloads_in_mtl_fields_and_image_metadata_never_survive(tmp_path_factory, payload, fmt, where):
    payload = "Zq" + payload  # a letter pair no number, keyword or name we write contains
    mesh = _small()
    d = tmp_path_factory.mktemp("p")
    suffix = "jpg" if fmt == "jpeg" else "png"
    (d / f"t.{suffix}").write_bytes(image_bytes(fmt, payload=payload, size=(16, 16)))
    mtl = {
        "newmtl": f"newmtl {payload}\nmap_Kd t.{suffix}\n",
        "Ka": f"newmtl a\nKa {payload}\nmap_Kd t.{suffix}\n",
        "comment": f"# {payload}\nnewmtl a\nmap_Kd t.{suffix}\n",
        "map_Ks": f"newmtl a\nmap_Ks {payload}\nmap_Kd t.{suffix}\n",
        "tail": f"newmtl a\nmap_Kd t.{suffix} # {payload}\n",
    }[where]
    (d / "m.mtl").write_text(mtl)
    (d / "s.obj").write_bytes(obj_bytes(mesh, "m.mtl", payload=payload))
    out = d / "out"
    out.mkdir()
    removed = sanitize_file(d / "s.obj", out / "c.obj")
    assert any(payload in v for _, v in removed)
    assert sorted(p.name for p in out.iterdir()) == sorted(["c.obj", "c.mtl", f"c.{suffix}"])
    for f in out.iterdir():
        assert payload.encode() not in f.read_bytes()
    a, b = load_mesh(d / "s.obj").mesh, load_mesh(out / "c.obj").mesh
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces) and np.array_equal(a.uv, b.uv)


_SMALL: list[Mesh] = []


def _small() -> Mesh:
    if not _SMALL:
        import trimesh

        s = trimesh.creation.icosphere(subdivisions=1, radius=20.0)
        _SMALL.append(Mesh(s.vertices.astype(np.float64), s.faces.astype(np.int64)))
    return _SMALL[0]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-m", "occlutrace_compute.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_medit_textured_obj_aligned_end_to_end_by_the_cli(tmp_path, pair):
    case = tmp_path / "case"
    from occlutrace_compute.meshes import export_mesh

    export_mesh(pair.fixed, case / "fixed.ply" if case.mkdir() is None else None)
    moving = write_case(case, pair.moving, "moving", "jpeg")
    out = tmp_path / "out"
    r = _run_cli("align", str(case / "fixed.ply"), str(moving), "-o", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    names = {p.name for p in out.iterdir()}
    assert {"aligned.obj", "aligned.mtl", "aligned.jpg"} <= names
    assert (out / "aligned.mtl").read_bytes() == b"newmtl texture\nmap_Kd aligned.jpg\n"
    _no_planted(out)
    aligned = load_mesh(out / "aligned.obj")
    assert aligned.mesh.texture is not None and aligned.mesh.texture.width == 64
    source = load_mesh(moving).mesh
    assert np.array_equal(aligned.mesh.uv, source.uv) and np.array_equal(aligned.mesh.faces, source.faces)
    matrix = np.asarray(json.loads((out / "result.json").read_text())["matrix"])
    assert np.abs(aligned.mesh.vertices - source.transformed(matrix).vertices).max() < 1e-9


def test_service_uploads_re_make_mtl_and_texture_and_the_job_finds_them(tmp_path, pair):
    from occlutrace_compute.jobs.models import JobSpec
    from occlutrace_compute.jobs.runner import run_job
    from occlutrace_compute.meshes import mesh_to_bytes
    from occlutrace_compute.service.intake import clean_mesh
    from occlutrace_compute.storage.keys import input_key
    from occlutrace_compute.storage.local import LocalStore

    store = LocalStore(tmp_path / "store")
    uploads = {
        "fixed.ply": mesh_to_bytes(pair.fixed, "ply"),
        "moving.obj": obj_bytes(pair.moving, "moving.mtl"),
        "moving.mtl": mtl_bytes("texture.jpg"),
        "texture.jpg": image_bytes("jpeg"),
    }
    with pytest.raises(InputRejected, match="PatientID-4711"):  # an identifying texture name is refused
        clean_mesh(mtl_bytes("PatientID-4711_texture.jpg"), "moving.mtl", 10**8)
    for name, data in uploads.items():
        clean = clean_mesh(data, name, 10**8)
        assert not [p for p in PLANTED if p in clean]
        store.put(input_key("lab1", "case-7", name), clean)
    assert store.get(input_key("lab1", "case-7", "moving.mtl")) == b"newmtl texture\nmap_Kd texture.jpg\n"
    spec = JobSpec(
        job_id="job-1",
        tenant="lab1",
        case="case-7",
        kind="pair",
        inputs={"fixed": input_key("lab1", "case-7", "fixed.ply"), "moving": input_key("lab1", "case-7", "moving.obj")},
        options={"device": "cpu"},
    )
    result = run_job(spec, store)
    assert {"aligned.obj", "aligned.mtl", "aligned.jpg"} <= set(result["outputs"])
    for key in store.iter_keys("tenants/"):
        assert not [p for p in PLANTED if p in store.get(key)], key
    aligned = load_mesh(
        data=store.get(result["outputs"]["aligned.obj"]),
        name="aligned.obj",
        companions={n: store.get(k) for n, k in result["outputs"].items()},
    )
    assert aligned.mesh.texture is not None and aligned.mesh.uv is not None


def test_http_uploads_of_mtl_and_texture_are_re_made_or_refused_naming_the_file(tmp_path):
    from fastapi.testclient import TestClient
    from test_service_support import JOB_FN, write_tokens

    from occlutrace_compute.service.app import create_app
    from occlutrace_compute.service.config import ServiceConfig
    from occlutrace_compute.storage import LocalStore

    tokens = write_tokens(tmp_path / "tokens", {"tok-alpha-0123456789": "alpha"})
    config = ServiceConfig.from_env(
        store=f"file://{tmp_path / 'store'}", tokens_file=str(tokens), job_fn=JOB_FN, max_upload_bytes=200_000
    )
    store = LocalStore(tmp_path / "store")
    c = TestClient(create_app(config, store=store), headers={"Authorization": "Bearer tok-alpha-0123456789"})
    for name, data in (("scan.mtl", mtl_bytes("texture.jpg")), ("texture.jpg", image_bytes("jpeg"))):
        r = c.post("/v1/cases/case-001/files", files={"file": (name, data)})
        assert r.status_code == 201, r.text
        assert not [p for p in PLANTED if p in store.get(r.json()["key"])]
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "GIF")
    r = c.post("/v1/cases/case-001/files", files={"file": ("skin.png", buf.getvalue())})
    assert r.status_code == 422 and r.json()["source"] == "skin.png" and "texture" in r.json()["problem"], r.text
    r = c.post("/v1/cases/case-001/files", files={"file": ("scan2.mtl", mtl_bytes("Smith_John_1972-03-04.jpg"))})
    assert r.status_code == 422 and "Smith_John" in r.json()["problem"], r.text
