"""`occlutrace inspect` and `occlutrace sanitize` on real files, in-process and as the console script."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from occlutrace_compute import __version__
from occlutrace_compute.cli import main
from occlutrace_compute.meshes import Mesh, load_mesh, mesh_to_bytes

SECRET = "comment Patient: John Smith 1972-03-04"


@pytest.fixture
def files(tmp_path):
    s = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    colors = np.full((len(s.vertices), 4), 200, dtype=np.uint8)
    ply = mesh_to_bytes(Mesh(s.vertices, s.faces.astype(np.int64), colors), "ply")
    out = {
        "clean": tmp_path / "case01_upper.stl",
        "tagged": tmp_path / "case02_lower.ply",
        "named": tmp_path / "Smith_John_upper.ply",
        "truncated": tmp_path / "case03.ply",
        "wrong": tmp_path / "case04.obj",
    }
    out["clean"].write_bytes(mesh_to_bytes(Mesh(s.vertices, s.faces.astype(np.int64)), "stl"))
    out["tagged"].write_bytes(ply.replace(b"1.0\n", f"1.0\n{SECRET}\n".encode(), 1))
    out["named"].write_bytes(ply)
    out["truncated"].write_bytes(ply[: len(ply) // 2])
    out["wrong"].write_bytes(ply)
    return out


def test_inspect_reports_format_counts_metadata_and_flags(files, capsys):
    assert main(["inspect", str(files["clean"]), str(files["tagged"])]) == 0
    out = capsys.readouterr().out
    assert f"{files['clean']}: STL (binary)" in out and f"{files['tagged']}: PLY (binary)" in out
    assert out.count("vertices: 162  faces: 320") == 2
    assert "size (40.000, 40.000, 40.000)" in out and "watertight: yes" in out
    assert "colours: yes" in out and "colours: no" in out
    assert "ply.comment: Patient: John Smith 1972-03-04" in out
    assert "[name]" in out and "[date]" in out and "1972-03-04' looks like a date" in out


def test_inspect_json_and_exit_code_for_rejected_files(files, capsys):
    paths = [str(files[k]) for k in ("clean", "tagged", "named", "truncated", "wrong")]
    assert main(["inspect", "--json", *paths, str(files["clean"].parent / "missing.stl")]) == 1
    captured = capsys.readouterr()
    reports = {r["file"]: r for r in json.loads(captured.out)}
    tagged = reports[str(files["tagged"])]
    assert tagged["format"] == "ply" and tagged["has_colors"] is True and "rejected" not in tagged
    assert tagged["metadata"] == [{"field": "ply.comment", "value": "Patient: John Smith 1972-03-04"}]
    assert {f["kind"] for f in tagged["privacy"]} == {"name", "date"}
    assert "rejected" not in reports[str(files["clean"])] and reports[str(files["clean"])]["privacy"] == []
    named = reports[str(files["named"])]
    assert named["privacy"][0]["field"] == "filename" and "Smith_John" in named["rejected"]
    assert "truncated" in reports[str(files["truncated"])]["rejected"]
    assert "wrong format for the suffix: content is binary PLY" in reports[str(files["wrong"])]["rejected"]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    assert f"error: {files['truncated']}: truncated" in captured.err


def test_allow_pattern_exempts_the_lab_scheme(files, capsys):
    assert main(["inspect", "--json", "--allow", "Smith_John", str(files["named"])]) == 0
    assert json.loads(capsys.readouterr().out)[0]["privacy"] == []


def test_sanitize_command(files, tmp_path, capsys):
    dst = tmp_path / "clean.ply"
    assert main(["sanitize", str(files["tagged"]), "-o", str(dst)]) == 0
    assert "dropped 1 metadata fields" in capsys.readouterr().out
    assert b"Smith" not in dst.read_bytes()
    a, b = load_mesh(files["tagged"]), load_mesh(dst)
    assert np.array_equal(a.mesh.vertices, b.mesh.vertices)
    assert np.array_equal(a.mesh.vertex_colors, b.mesh.vertex_colors)
    assert main(["sanitize", str(files["truncated"]), "-o", str(tmp_path / "t.ply")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {files['truncated']}: truncated")
    assert not (tmp_path / "t.ply").exists()
    assert main(["sanitize", str(files["tagged"]), "-o", str(tmp_path / "x.txt")]) == 1
    # another suffix asks for another format: same triangles, no colours in STL
    assert main(["sanitize", str(files["tagged"]), "-o", str(tmp_path / "x.stl"), "--encoding", "ascii"]) == 0
    c = load_mesh(tmp_path / "x.stl")
    assert (c.format, c.encoding, c.metadata) == ("stl", "ascii", [])
    assert np.array_equal(c.mesh.vertices[c.mesh.faces], a.mesh.vertices[a.mesh.faces])


def test_console_script_errors_are_one_line_and_version(files):
    run = [sys.executable, "-m", "occlutrace_compute.cli"]
    proc = subprocess.run([*run, "inspect", str(files["truncated"])], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {files['truncated']}: truncated")
    proc = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"occlutrace {__version__}"
