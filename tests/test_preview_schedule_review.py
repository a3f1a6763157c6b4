"""Review of the preview split (raster_geometry / paint, the predrawn large view) and the pair
job's schedule: hostile views and meshes for the rasteriser, a stale large view, the job's error
paths (no hang, no thread left behind), the PNG without zlib-ng."""

from __future__ import annotations

import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from occlutrace_compute.analysis.frame import arch_frame
from occlutrace_compute.analysis.preview import View, raster_geometry
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh
from tests.test_analysis_preview import _uneven, _view

TOP = View("top", np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0]))


def _same(a, b) -> bool:
    return (
        (a.height, a.width, a.scale) == (b.height, b.width, b.scale)
        and all(np.array_equal(x, y) for x, y in zip((a.pixels, a.b0, a.b1, a.shade), (b.pixels, b.b0, b.b1, b.shade)))
        and all(np.array_equal(x, y) for x, y in zip(a.corners, b.corners))
    )


# --- the rasteriser on hostile views and meshes -------------------------------------------------


@pytest.mark.parametrize("n_faces", [1, 3, 9, 10, 40])
def test_a_mesh_seen_from_behind_everywhere_is_drawn_whatever_its_face_count(n_faces):
    """Every face turned away from the viewer (an inside-out export): drawn from both sides like
    its flipped copy, also below 10 faces (the 10 % rule rounded down to 0 culled them all)."""
    rng = np.random.default_rng(n_faces)
    verts = np.concatenate([rng.uniform(-10, 10, (3 * n_faces, 2)), rng.uniform(-1, 1, (3 * n_faces, 1))], axis=1)
    faces = np.arange(3 * n_faces).reshape(-1, 3)
    e1, e2 = verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]]
    up = np.cross(e1, e2)[:, 2] > 0
    faces[up] = faces[up][:, ::-1]  # every normal points away from the viewer
    back = raster_geometry(verts, faces, TOP, 120, 100)
    front = raster_geometry(verts, faces[:, ::-1], TOP, 120, 100)
    assert len(front.pixels) > 50
    assert np.array_equal(back.pixels, front.pixels)


@pytest.mark.parametrize("size", [(1, 1), (2, 9), (15, 15), (100, 100), (40, 300)])
def test_a_view_narrower_than_its_margins_is_not_mirrored(size):
    """margin_px 60 on a 100 px view (or the default 8 on a 1-15 px one) left a negative span:
    a negative scale drew the mesh mirrored. The scale stays positive and a face right of the
    centre is drawn right of the image's middle."""
    width, height = size
    verts = np.array([[-10.0, -10, 0], [2, -10, 0], [10, -10, 0], [10, 10, 0]])  # the first: unreferenced
    faces = np.array([[1, 2, 3]])
    for margin, extent in ((60, None), (8, None), (60, 25.0)):
        r = raster_geometry(verts, faces, TOP, width, height, margin_px=margin, extent=extent)
        assert r.scale > 0
        cols = r.pixels % width
        assert (cols + 0.5 >= width / 2).all()
    r = raster_geometry(verts, faces, TOP, 100, 100, margin_px=60)
    assert len(r.pixels) > 100


def test_a_mesh_without_vertices_gives_an_empty_raster():
    from occlutrace_compute.analysis.colormap import deviation_ramp
    from occlutrace_compute.analysis.preview import rasterize

    empty = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    r = raster_geometry(*empty, TOP, 30, 20)
    assert len(r.pixels) == 0 and (r.height, r.width) == (20, 30) and r.scale > 0
    image, _ = rasterize(*empty, np.zeros(0), TOP, deviation_ramp(0.2), 30, 20)
    assert image.shape == (20, 30, 3) and (image == 255).all()


def test_one_face_larger_than_chunk_is_drawn_in_pieces(monkeypatch):
    """One face covering a view of more pixels than CHUNK: its candidates come CHUNK at a time
    too (they came all at once: the whole view's candidates, ~120 bytes each), the same Raster."""
    from occlutrace_compute.analysis import preview

    verts = np.array([[-1e3, -1e3, 0.0], [1e3, -1e3, 0.5], [0, 1e3, -0.5], [-3, -2, 1], [4, 1, 1], [0, 5, 1.1]])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    whole = raster_geometry(verts, faces, TOP, 700, 500, extent=12.0)
    monkeypatch.setattr(preview, "CHUNK", 20_000)
    tracemalloc.start()
    try:
        pieces = raster_geometry(verts, faces, TOP, 700, 500, extent=12.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _same(whole, pieces)
    assert len(whole.pixels) == 700 * 500
    # the buffers, four (H * W,) arrays (11.2 MB), and the Raster (19.6 MB) are the view's own:
    # ~34 MB at the peak; the whole face's 350k candidates at once added ~20-25 MB (53-58 MB)
    assert peak < 44e6, peak / 1e6


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3000), st.integers(20, 300), st.integers(20, 200), st.booleans())
def test_any_chunk_size_draws_the_same_raster(seed, chunk, width, height, two):
    """Chunks and faces cut into row pieces at any CHUNK (down to one candidate): the Raster of
    the default CHUNK, bit for bit, on the uneven mesh with exact ties, with one or two threads."""
    from concurrent.futures import ThreadPoolExecutor

    from occlutrace_compute.analysis import preview

    verts, faces, _ = _uneven(seed)
    view = _view(np.random.default_rng(seed).uniform([-1, -1, 0.05], [1, 1, 1]))
    whole = raster_geometry(verts, faces, view, width, height)
    saved = preview.CHUNK
    try:
        preview.CHUNK = chunk
        with ThreadPoolExecutor(1) as pool:
            pieces = raster_geometry(verts, faces, view, width, height, pool=pool if two else None)
    finally:
        preview.CHUNK = saved
    assert _same(whole, pieces)


# --- the large view made beforehand -------------------------------------------------------------


def test_a_large_view_of_another_size_is_not_used():
    """sheet_geometry takes a large view made beforehand only when it has the size its sheet
    lays out (a 1400x960 sheet's view handed to a 1000x700 sheet was pasted over its neighbours)."""
    from occlutrace_compute.analysis.preview import _layout, occlusal_raster, sheet_geometry
    from occlutrace_compute.synth.arch import make_arch

    mesh = make_arch("upper", 1, 0.9).mesh
    frame = arch_frame(mesh)
    big = occlusal_raster(mesh, frame)
    got = sheet_geometry(mesh, frame, None, (1000, 700), large=big).large
    _, occ_w, occ_h, _, _ = _layout((1000, 700))
    assert (got.width, got.height) == (occ_w, occ_h)
    assert _same(got, occlusal_raster(mesh, frame, (1000, 700)))
    assert sheet_geometry(mesh, frame, None, large=big).large is big


# --- the pair job's schedule: error paths end with the error, never hang --------------------------


@pytest.fixture(scope="module")
def pair_inputs():
    from occlutrace_compute.jobs.pipeline import InputFile
    from occlutrace_compute.meshes import mesh_to_bytes
    from occlutrace_compute.synth import make_pair_case

    case = make_pair_case(3, "clean", overlap=(0.9, 1.0), spacing_mm=0.45)
    return {r: InputFile(f"{r}.ply", mesh_to_bytes(getattr(case, r), "ply", "binary")) for r in ("fixed", "moving")}


def _job_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("occlutrace-job", "occlutrace-dev"))]


def _run_bounded(fn, limit_s: float = 120.0):
    """fn() on a thread: its result or exception, failing the test (not hanging it) past limit_s."""
    got: dict = {}

    def body():
        try:
            got["value"] = fn()
        except BaseException as e:
            got["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"the job still runs after {limit_s} s"
    return got


@pytest.mark.parametrize("error", [InputRejected("moving mesh", "too few points"), RuntimeError("engine broke")])
def test_a_failed_registration_ends_the_job_with_its_error_and_no_thread(pair_inputs, error):
    """The large view is queued behind the reference index during the registration; a
    registration that fails ends the job with its own error (the moving file named), and the
    pool's threads (the view waiting on the index) are gone when run_pair returns."""
    from occlutrace_compute.jobs.models import JobOptions
    from occlutrace_compute.jobs.pipeline import run_pair

    def registrar(fixed, moving, **kw):
        raise error

    before = _job_threads()
    got = _run_bounded(
        lambda: run_pair(pair_inputs["fixed"], pair_inputs["moving"], JobOptions(device="cpu"), registrar=registrar)
    )
    e = got.get("error")
    assert type(e) is type(error)
    if isinstance(error, InputRejected):
        assert e.source == "moving.ply" and e.problem == "too few points"
    assert _job_threads() == before


def test_a_frame_that_cannot_be_made_ends_the_job_with_its_error(pair_inputs, monkeypatch):
    """arch_frame failing (the predrawn view's of MOVING, swallowed there, and the aligned
    scan's, waited for by the deviation stage and by the views' task): the job raises it."""
    from occlutrace_compute.analysis import frame as frame_module
    from occlutrace_compute.jobs.models import JobOptions
    from occlutrace_compute.jobs.pipeline import run_pair
    from occlutrace_compute.registration import register

    def broken(mesh):
        raise np.linalg.LinAlgError("eigh did not converge")

    monkeypatch.setattr(frame_module, "arch_frame", broken)
    before = _job_threads()
    got = _run_bounded(
        lambda: run_pair(pair_inputs["fixed"], pair_inputs["moving"], JobOptions(device="cpu"), registrar=register)
    )
    assert isinstance(got.get("error"), np.linalg.LinAlgError)
    assert _job_threads() == before


def test_the_predrawn_view_is_none_when_its_inputs_fail():
    """_moving_occlusal is an optimisation: a failed reference index (the future it waits for)
    or a mesh whose frame cannot be made gives None (the aligned scan's view is drawn instead)."""
    from concurrent.futures import Future

    from occlutrace_compute.jobs.pipeline import _moving_occlusal

    failed: Future = Future()
    failed.set_exception(InputRejected("fixed.ply", "empty mesh"))
    mesh = Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))
    assert _moving_occlusal(mesh, failed) is None
    ok: Future = Future()
    ok.set_result(None)
    nan_mesh = Mesh(np.array([[0.0, 0, 0], [np.nan, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))
    assert _moving_occlusal(nan_mesh, ok) is None


def test_without_zlib_ng_the_png_is_the_standard_zlib_s_and_decodes_alike():
    """zlib-ng missing at import (blocked in a fresh interpreter): the module falls back to the
    standard library's zlib, and the same pixels come back from a sheet-sized PNG, banded on a
    pool, in Pillow."""
    code = """
import io, sys, zlib
sys.modules["zlib_ng"] = None  # import zlib_ng raises ImportError
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from PIL import Image
from occlutrace_compute.analysis import preview
assert preview.DEFLATE is zlib and preview.DEFLATE_LEVEL == 1
rgb = np.random.default_rng(1).integers(0, 256, (961, 1401, 3), dtype=np.uint8)
rgb[:400] = 255
with ThreadPoolExecutor(1) as pool:
    data = preview.png_bytes(rgb, pool, 3)
with Image.open(io.BytesIO(data)) as im:
    assert np.array_equal(np.asarray(im.convert("RGB")), rgb)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_moved_view_differs_only_where_a_pixel_centre_lies_on_a_shared_edge():
    """The large view drawn from MOVING serves the aligned scan "up to rounding": on a hostile
    mesh, a relief grid whose vertices land on whole pixels, every cell diagonal runs through
    pixel centres, which both of its faces hold, and rounding picks either face's shade (~3 % of
    the pixels differ by up to ~22 levels after a rigid motion). No other pixel differs: the
    picture is the aligned scan's, ties on edges apart."""
    from dataclasses import replace

    from scipy.spatial.transform import Rotation

    from occlutrace_compute.analysis.colormap import deviation_ramp
    from occlutrace_compute.analysis.frame import ArchFrame
    from occlutrace_compute.analysis.preview import occlusal_raster, paint

    n, m = 67, 30  # 67 cells across the 938 px the large view spans: 14 px a cell
    xx, yy = np.meshgrid(np.arange(n + 1.0), np.arange(m + 1.0))
    rng = np.random.default_rng(0)
    verts = np.stack([xx.ravel(), yy.ravel(), rng.uniform(-0.3, 0.3, xx.size)], 1)
    i = np.arange(xx.size).reshape(m + 1, n + 1)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    values = 0.3 * np.sin(verts[:, 0] / 3)
    eye = np.eye(3)
    frame = ArchFrame(np.zeros(3), eye[0], eye[1], eye[2], np.ones(3))
    ramp = deviation_ramp(0.2, 0.05)
    raster = occlusal_raster(Mesh(verts, faces), frame)
    assert raster.scale == 14.0
    here = paint(raster, values, ramp)
    R = Rotation.random(random_state=1).as_matrix()
    moved_frame = replace(frame, x=R[:, 0], anterior=R[:, 1], occlusal=R[:, 2])
    there = paint(occlusal_raster(Mesh(verts @ R.T + [40.0, -25, 12], faces), moved_frame), values, ramp)
    differ = (here != there).any(axis=2).ravel()
    rows, cols = np.divmod(np.arange(here.shape[0] * here.shape[1]), here.shape[1])
    gx, gy = (cols + 0.5 - 8) / 14, (498 - rows - 0.5) / 14  # grid units: vertex (0, 0) at pixel (8, 498)
    on_diagonal = np.abs((gx - np.floor(gx)) - (gy - np.floor(gy))) < 1e-9
    assert differ.sum() > 1000  # the hostile case is hostile
    assert not (differ & ~on_diagonal).any()


# --- the heap bound across a fork ---------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_a_child_forked_inside_a_job_still_trims_after_its_own_jobs():
    """A process forked while a job's span is open starts with no job (the fork handler's reset);
    the parent's span ending in the child must not count one job less there (the count went to
    -1 and the child never trimmed again); the parent's count is its own."""
    code = """
import os, sys
os.environ["OCCLUTRACE_HEAP_IDLE_S"] = "0"
from occlutrace_compute.jobs.heap import held_heap, keep_heap
if not keep_heap():
    print("skip"); sys.exit(0)
with held_heap():
    pid = os.fork()
    if pid == 0:
        pass  # the child leaves the parent's span below
if pid == 0:
    with held_heap():
        pass
    os.write(1, f"child {held_heap._jobs} {held_heap.trims}\\n".encode())
    os._exit(0)
os.waitpid(pid, 0)
print(f"parent {held_heap._jobs} {held_heap.trims}")
"""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    if out.stdout.strip() == "skip":
        pytest.skip("keep_heap set nothing here")
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["child"] == "0 1", out.stdout  # its own job ended: counted, trimmed once
    assert lines["parent"] == "0 1", out.stdout
