"""`occlutrace batch` on a real local Ray: outputs, summaries, bad cases, resumability."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray

from occlutrace_compute.jobs.batch import STAMP_NAME, case_stamp, run_batch, stamp_bytes
from occlutrace_compute.jobs.cases import discover_cases
from occlutrace_compute.jobs.models import JobOptions
from occlutrace_compute.meshes import load_mesh
from occlutrace_compute.synth.score import pointwise_rms_um

sys.path.insert(0, str(Path(__file__).parent))  # texture_case
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def cases(tmp_path: Path) -> Path:
    root = tmp_path / "cases"
    shutil.copytree(SAMPLES / "case-0001-pair", root / "case-0001-pair")
    bad = root / "case-0004-corrupt"
    bad.mkdir()
    shutil.copy(SAMPLES / "case-0001-pair" / "fixed.ply", bad / "fixed.ply")
    data = (SAMPLES / "case-0001-pair" / "moving.ply").read_bytes()
    (bad / "moving.ply").write_bytes(data[: len(data) // 3])  # truncated upload
    phi = root / "Smith_John_1972-03-04"
    phi.mkdir()
    for name in ("fixed.ply", "moving.ply"):
        shutil.copy(SAMPLES / "case-0001-pair" / name, phi / name)
    (root / "case-0005-incomplete").mkdir()
    shutil.copy(SAMPLES / "case-0001-pair" / "fixed.ply", root / "case-0005-incomplete" / "fixed.ply")
    return root


def test_batch_runs_cases_reports_bad_ones_and_resumes(local_ray, cases: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_batch(cases, out, progress=False)
    by_case = {r.case: r for r in summary.rows}
    assert by_case["case-0001-pair"].status == "succeeded"
    assert by_case["case-0004-corrupt"].status == "rejected"
    assert "moving.ply" in by_case["case-0004-corrupt"].reason
    assert by_case["Smith_John_1972-03-04"].status == "rejected"
    assert "case label" in by_case["Smith_John_1972-03-04"].reason
    assert by_case["case-0005-incomplete"].status == "rejected"
    assert not summary.ok

    result = json.loads((out / "case-0001-pair" / "result.json").read_text())
    truth = json.loads((SAMPLES / "case-0001-pair" / "truth.json").read_text())
    moving = load_mesh(SAMPLES / "case-0001-pair" / "moving.ply").mesh
    unchanged = np.load(SAMPLES / "case-0001-pair" / "moving_unchanged.npy")
    err = pointwise_rms_um(np.array(result["matrix"]), np.array(truth["T_fixed_moving"]), moving.vertices[unchanged])
    assert err < 50.0
    for name in ("aligned.ply", "deviation.ply", "deviation.png"):
        assert (out / "case-0001-pair" / name).stat().st_size > 0
    assert (out / "case-0004-corrupt" / "error.json").exists()

    rows = json.loads((out / "summary.json").read_text())
    assert {r["case"]: r["status"] for r in rows} == {c: r.status for c, r in by_case.items()}
    assert (out / "summary.csv").read_text().count("\n") == len(rows) + 1
    html = (out / "report.html").read_text()
    assert "case-0001-pair" in html and "data:image/png;base64," in html

    before = (out / "case-0001-pair" / "result.json").stat().st_mtime_ns
    again = run_batch(cases, out, progress=False)
    assert {r.case: r.status for r in again.rows}["case-0001-pair"] == "skipped"
    assert (out / "case-0001-pair" / "result.json").stat().st_mtime_ns == before


def test_cli_exit_code_reflects_failures(tmp_path: Path) -> None:
    """A finished case is skipped without starting Ray; an incomplete case makes the exit code 1."""
    root = tmp_path / "cases"
    out = tmp_path / "out"
    (out / "case-0001").mkdir(parents=True)
    (out / "case-0001" / "result.json").write_text(json.dumps({"status": "succeeded", "kind": "other"}))
    (root / "case-0001").mkdir(parents=True)
    for name in ("fixed.ply", "moving.ply"):
        shutil.copy(SAMPLES / "case-0001-pair" / name, root / "case-0001" / name)
    case = discover_cases(root)[0][0]
    (out / "case-0001" / STAMP_NAME).write_bytes(stamp_bytes(case_stamp(case, JobOptions())))
    ok = subprocess.run(
        [sys.executable, "-m", "occlutrace_compute.cli", "batch", str(root), "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "skipped=1" in ok.stdout
    (root / "case-0002").mkdir()
    shutil.copy(SAMPLES / "case-0001-pair" / "fixed.ply", root / "case-0002" / "fixed.ply")
    bad = subprocess.run(
        [sys.executable, "-m", "occlutrace_compute.cli", "batch", str(root), "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert "case-0002: rejected: pair case without moving" in bad.stderr


def test_vendor_names_options_resume_on_change_force_and_interruption(local_ray, tmp_path: Path) -> None:
    """Vendor-named folders and an unrecognisable one all appear; per-case options are used; an
    interrupted batch writes its summary; a changed input or option re-runs only that case."""
    from occlutrace_compute.meshes import export_mesh

    root, out = tmp_path / "cases", tmp_path / "out"
    a, b, odd = root / "lab" / "a", root / "lab" / "b", root / "odd"
    for folder in (a, b, odd):
        folder.mkdir(parents=True)
    shutil.copy(SAMPLES / "case-0001-pair" / "fixed.ply", a / "Reference.ply")
    shutil.copy(SAMPLES / "case-0001-pair" / "moving.ply", a / "FollowUp.ply")
    shutil.copy(SAMPLES / "case-0001-pair" / "fixed.ply", b / "scan_1.ply")
    shutil.copy(SAMPLES / "case-0001-pair" / "moving.ply", b / "scan_2.ply")
    (b / "case.json").write_text(
        json.dumps({"files": {"fixed": "scan_1.ply", "moving": "scan_2.ply"}, "options": {"tolerance_mm": 0.2}})
    )
    shutil.copy(SAMPLES / "case-0001-pair" / "fixed.ply", odd / "UnknownScan.ply")

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(root, out, progress=False, on_row=stop, num_cpus=1)
    rows = {r["case"]: r for r in json.loads((out / "summary.json").read_text())}
    assert rows["odd"]["status"] == "rejected" and "UpperJaw" in rows["odd"]["reason"]
    assert sorted(r["status"] for c, r in rows.items() if c != "odd") == ["interrupted", "succeeded"]
    assert "odd" in (out / "report.html").read_text() and "odd,unknown,rejected" in (out / "summary.csv").read_text()

    first = run_batch(root, out, progress=False)
    st = {r.case: r.status for r in first.rows}
    assert sorted([st["lab/a"], st["lab/b"]]) == ["skipped", "succeeded"] and st["odd"] == "rejected"
    tol_b = json.loads((out / "lab/b/result.json").read_text())["deviation"]["tolerance_mm"]
    assert tol_b == 0.2
    assert json.loads((out / "lab/a/result.json").read_text())["deviation"]["tolerance_mm"] == 0.05

    # Same geometry, other bytes (ASCII PLY): the input hash changed, so case a runs again.
    export_mesh(load_mesh(a / "FollowUp.ply").mesh, a / "FollowUp.ply", "ply", encoding="ascii")
    (b / "case.json").write_text(json.dumps({"files": {"fixed": "scan_1.ply", "moving": "scan_2.ply"}}))
    again = run_batch(root, out, progress=False)
    assert {r.case: r.status for r in again.rows if r.case != "odd"} == {"lab/a": "succeeded", "lab/b": "succeeded"}
    assert json.loads((out / "lab/b/result.json").read_text())["deviation"]["tolerance_mm"] == 0.05
    assert {r.case: r.status for r in run_batch(root, out, progress=False).rows if r.case != "odd"} == {
        "lab/a": "skipped",
        "lab/b": "skipped",
    }
    forced = run_batch(root, out, progress=False, force=True)
    assert {r.case: r.status for r in forced.rows if r.case != "odd"} == {"lab/a": "succeeded", "lab/b": "succeeded"}
    mode = (out / "lab/a/result.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask(), oct(mode)


def _umask() -> int:
    import os

    m = os.umask(0o022)
    os.umask(m)
    return m


def test_textured_case_folder_through_batch(local_ray, tmp_path: Path) -> None:
    """Issue 11 item 5: a case folder of fixed.ply + moving.obj/.mtl/.png (identifiers planted in
    the MTL and the PNG's EXIF/XMP/text/ICC) aligns; the outputs carry the re-made texture only."""
    from texture_case import PLANTED, write_case

    from occlutrace_compute.meshes import export_mesh
    from occlutrace_compute.synth import make_pair_case

    pair = make_pair_case(3, "clean", overlap=(0.9, 1.0), spacing_mm=0.8)

    case = tmp_path / "cases" / "case-0101"
    case.mkdir(parents=True)
    export_mesh(pair.fixed, case / "fixed.ply")
    write_case(case, pair.moving, "moving", "png")
    summary = run_batch(tmp_path / "cases", tmp_path / "out", progress=False)
    assert summary.ok, [r.reason for r in summary.rows]
    done = tmp_path / "out" / "case-0101"
    assert {"aligned.obj", "aligned.mtl", "aligned.png"} <= {p.name for p in done.iterdir()}
    for f in (tmp_path / "out").rglob("*"):
        assert not f.is_file() or not [p for p in PLANTED if p in f.read_bytes()], f
    assert load_mesh(done / "aligned.obj").mesh.texture is not None


def test_plan_judges_cases_largest_first_and_only_when_their_turn_comes(tmp_path: Path) -> None:
    """Issue 12 item 3: the first case starts after ONE case is hashed (the rest are hashed while
    it computes), and the largest case goes first (a long case last would idle the other cores)."""
    from occlutrace_compute.jobs.batch import _Plan
    from occlutrace_compute.meshes import export_mesh

    root = tmp_path / "cases"
    for name in ("case-a", "case-b", "case-c"):
        shutil.copytree(SAMPLES / "case-0001-pair", root / name)
    big = root / "case-b" / "moving.ply"
    export_mesh(load_mesh(big).mesh, big, "ply", encoding="ascii")  # same scan, more bytes
    (root / "case-c" / "fixed.ply").write_bytes(b"")  # judged (hashed) fine; rejected by the job later
    cases, bad = discover_cases(root)
    assert not bad and len(cases) == 3

    plan = _Plan(cases, JobOptions(), tmp_path / "out", force=False)
    first = plan.next()
    assert first is not None and first[0].label == "case-b"
    assert len(plan.queue) == 2 and not plan.rows  # nobody else hashed yet
    assert first[2] == json.loads(stamp_bytes(case_stamp(first[0], first[1])))
    labels = [first[0].label]
    while (nxt := plan.next()) is not None:
        labels.append(nxt[0].label)
    assert labels == ["case-b", "case-a", "case-c"]  # then by size (c is smallest), ties by label
