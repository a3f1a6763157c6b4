"""Deviation sheets: patient sides named correctly in every view, beyond-the-scale vs no overlap,
the triangle rasteriser on uneven meshes (one huge face, slivers), the PNG's legend and size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image
from scipy.spatial.transform import Rotation

from occlutrace_compute.analysis import deviation
from occlutrace_compute.analysis.colormap import BEYOND_BELOW, GREY, deviation_ramp
from occlutrace_compute.analysis.frame import arch_frame
from occlutrace_compute.analysis.preview import View, arch_views, rasterize, write_arch_sheet
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth.arch import make_arch


@pytest.fixture(scope="module")
def upper():
    return make_arch("upper", 3, 0.6)  # canonical frame: x = patient right, y = anterior, z = superior


def _warm_cold_columns(image: np.ndarray) -> tuple[float, float]:
    px = image.reshape(-1, 3).astype(int)
    cols = np.tile(np.arange(image.shape[1]), image.shape[0])
    warm = (px[:, 0] > 150) & (px[:, 2] < 90)
    cold = (px[:, 2] > 120) & (px[:, 0] < 90)
    assert warm.sum() > 200 and cold.sum() > 200
    return cols[warm].mean(), cols[cold].mean()


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000))
def test_patient_sides_are_named_right_in_any_scanner_frame(upper, seed):
    """Warm on the patient's right, cold on the left: every view puts them where its labels say,
    whatever rotation the scan arrives in."""
    R = Rotation.random(random_state=seed).as_matrix()
    mesh = Mesh(upper.mesh.vertices @ R.T, upper.mesh.faces)
    x = upper.mesh.vertices[:, 0]
    values = np.where(x > 4, 0.18, np.where(x < -4, -0.18, 0.0))
    ramp = deviation_ramp(0.2, 0.05)
    frame = arch_frame(mesh)
    views = arch_views(frame, R @ np.array([0.0, 0.0, 1.0]))
    occ, front, right_buccal, left_buccal = views
    for view in (occ, front):
        image, _ = rasterize(mesh.vertices, mesh.faces, values, view, ramp, 400, 300)
        warm_col, cold_col = _warm_cold_columns(image)
        assert (warm_col > cold_col) == (view.right_label == "patient right"), view.name
    image, _ = rasterize(mesh.vertices, mesh.faces, values, right_buccal, ramp, 300, 200)
    px = image.reshape(-1, 3).astype(int)
    assert ((px[:, 0] > 150) & (px[:, 2] < 90)).sum() > 5 * ((px[:, 2] > 120) & (px[:, 0] < 90)).sum()
    image, _ = rasterize(mesh.vertices, mesh.faces, values, left_buccal, ramp, 300, 200)
    px = image.reshape(-1, 3).astype(int)
    assert ((px[:, 2] > 120) & (px[:, 0] < 90)).sum() > 5 * ((px[:, 0] > 150) & (px[:, 2] < 90)).sum()


def _grid(n: int, half: float, z: np.ndarray | float = 0.0) -> Mesh:
    t = np.linspace(-half, half, n)
    xx, yy = np.meshgrid(t, t)
    zz = (
        np.broadcast_to(np.asarray(z, dtype=np.float64), xx.shape)
        if np.ndim(z) == 0
        else np.asarray(z).reshape(xx.shape)
    )
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return Mesh(np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1), faces)


def test_a_deep_preparation_is_beyond_the_scale_not_missing(tmp_path):
    """1.5 mm below the reference, beyond the 1 mm overlap cutoff: kept as a value (PLY quality),
    violet on the map, out of the statistics; a part off the reference's edge stays grey."""
    n = 61
    reference = _grid(n, 10.0)
    xx, yy = np.meshgrid(np.linspace(-10, 10, n), np.linspace(-10, 10, n))
    z = np.where(np.hypot(xx - 3, yy) < 2.5, -1.5, 0.02)
    aligned = _grid(n, 10.0, z)
    aligned = Mesh(aligned.vertices + np.array([4.0, 0.0, 0.0]), aligned.faces)  # 4 mm off the edge: no overlap
    rep = deviation(aligned, reference, band_mm=0.1)
    prep = np.hypot(xx.ravel() + 4 - 3 - 4, yy.ravel()) < 2.0
    assert np.isnan(rep.distance[prep]).all()  # not in the statistics
    np.testing.assert_allclose(rep.shown[prep], -1.5, atol=1e-6)
    off_edge = aligned.vertices[:, 0] > 10.5
    assert off_edge.any() and np.isnan(rep.shown[off_edge]).all()
    colors = rep.colored.vertex_colors[:, :3]
    assert (colors[prep] == np.round(np.array(BEYOND_BELOW) * 255)).all()
    assert (colors[off_edge] == np.round(np.array(GREY) * 255)).all()
    assert 0 < rep.to_dict()["beyond_max_distance_share"] < 0.2


def test_rasterizer_one_huge_face_and_slivers_fill_the_view():
    """Two faces covering the whole view, plus 20k slivers and sub-pixel faces on top: the view is
    filled (no holes), nearer surfaces win, memory stays bounded by chunking."""
    big = np.array([[-50, -50, 0], [50, -50, 0], [50, 50, 0], [-50, 50, 0]], dtype=np.float64)
    rng = np.random.default_rng(1)
    base = rng.uniform(-40, 30, (20000, 3)) * np.array([1, 1, 0]) + np.array([0, 0, 1.0])
    sliver = np.concatenate([base, base + [10.0, 0.001, 0], base + [0.01, 1.0, 0]])  # long thin triangles, 10 x 1 mm
    verts = np.concatenate([big, sliver])
    k = np.arange(20000) + 4
    faces = np.concatenate([[[0, 1, 2], [0, 2, 3]], np.stack([k, k + 20000, k + 40000], 1)])
    values = np.zeros(len(verts))
    values[4:] = 0.15  # slivers are warm, the big plane is green
    view = View("top", np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0]))
    image, _ = rasterize(verts, faces, values, view, deviation_ramp(0.2, 0.1), 320, 240, margin_px=0)
    assert (image[:, 42:278].reshape(-1, 3) != 255).any(axis=1).all()  # the 100 mm square: 240 px, no hole
    px = image.reshape(-1, 3).astype(int)
    assert ((px[:, 0] > 200) & (px[:, 1] < 150) & (px[:, 2] < 60)).sum() > 1000  # slivers on top, drawn


def test_sheet_has_legend_views_and_histogram(upper, tmp_path):
    mesh = upper.mesh
    values = np.where(mesh.vertices[:, 0] > 10, np.nan, 0.3 * np.sin(mesh.vertices[:, 1] / 4))
    from occlutrace_compute.analysis.stats import histogram

    ramp = deviation_ramp(0.2, 0.1)
    out = write_arch_sheet(
        tmp_path / "s.png",
        mesh,
        values,
        arch_frame(mesh),
        np.array([0, 0, 1.0]),
        ramp,
        "title",
        "subtitle",
        "upper arch",
        histogram(values, 0.2).to_dict(),
        0.1,
        0.05,
    )
    with Image.open(out) as im:
        assert im.size == (1400, 960)
        px = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for colour in (BEYOND_BELOW, GREY):
        assert (np.abs(px.astype(int) - np.round(np.array(colour) * 255)).max(axis=1) <= 2).sum() > 100


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 70),
    st.integers(1, 90),
    st.integers(1, 4),
    st.booleans(),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["default", "zlib"]),
)
def test_png_bands_decode_to_the_same_pixels(h, w, bands, threaded, seed, deflater):
    """Our PNG (rows in raw-deflate bands, joined into one zlib stream) reads back pixel for
    pixel in Pillow and in the PDF page's reader, for any size and band count, deflated by
    zlib-ng (where installed) or by the standard library's zlib (its fallback)."""
    import io
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    from occlutrace_compute.analysis import preview
    from occlutrace_compute.analysis.pdfpage import png_rows
    from occlutrace_compute.analysis.preview import png_bytes

    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgb[: h // 2] = 255  # flat rows beside noisy ones
    saved = preview.DEFLATE, preview.DEFLATE_LEVEL
    try:
        if deflater == "zlib":
            preview.DEFLATE, preview.DEFLATE_LEVEL = zlib, 1
        with ThreadPoolExecutor(1) as pool:
            data = png_bytes(rgb, pool if threaded else None, bands)
    finally:
        preview.DEFLATE, preview.DEFLATE_LEVEL = saved
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)
    rows = png_rows(data)
    assert (rows.width, rows.height) == (w, h)


def test_sheet_views_are_the_rasteriser_s_pictures(upper, tmp_path):
    """The sheet (views drawn on two threads) holds exactly the rasteriser's images of the large
    and the small views where it places them."""
    from occlutrace_compute.analysis.preview import cluster, face_normals

    mesh = upper.mesh
    values = 0.25 * np.sin(mesh.vertices[:, 0] / 5)
    values[mesh.vertices[:, 1] > 15] = np.nan
    ramp, frame = deviation_ramp(0.2, 0.1), arch_frame(mesh)
    superior = np.array([0, 0, 1.0])
    out = write_arch_sheet(tmp_path / "s.png", mesh, values, frame, superior, ramp, "t", "s", "upper arch")
    with Image.open(out) as im:
        sheet = np.asarray(im.convert("RGB"))
    views = arch_views(frame, superior)
    W, H = 1400, 960
    side_w = W - 430
    occ_w, occ_h = side_w - 16, int(H * 0.60)
    small_w, small_h = (side_w - 16 - 2 * 8) // 3, H - 70 - occ_h - 24
    big, _ = rasterize(mesh.vertices, mesh.faces, values, views[0], ramp, occ_w, occ_h)
    inner = (slice(64 + 50, 64 + occ_h - 50), slice(16 + 120, 16 + occ_w - 120))  # clear of labels, scale bar
    assert np.array_equal(sheet[inner], big[50:-50, 120:-120])
    cols = (mesh.vertices[:, 0], mesh.vertices[:, 1], mesh.vertices[:, 2])
    span = max(float(np.ptp(cols[0] * v.right[0] + cols[1] * v.right[1] + cols[2] * v.right[2])) for v in views[1:])
    # the small views: the mesh merged to 1.5 px cells, drawn at one scale
    sv, sf, svals = cluster(mesh.vertices, mesh.faces, values, 1.5 * span / (min(small_w, small_h) - 16))
    normals = face_normals(sv, sf)
    smalls = [
        rasterize(sv, sf, svals, view, ramp, small_w, small_h, extent=span, normals=normals)[0] for view in views[1:]
    ]
    for i, img in enumerate(smalls):
        x, y = 16 + i * (small_w + 8), 64 + occ_h + 12
        assert np.array_equal(sheet[y + 30 : y + small_h - 22, x + 2 : x + small_w - 2], img[30:-22, 2:-2])
    colours = {tuple(c) for c in big.reshape(-1, 3)[::7]}
    assert len(colours) > 50  # shaded, several colour classes


def _cluster_reference(vertices, faces, values, cell_mm):
    """cluster() as first written: np.unique over (N, 3) row keys, faces by row masks."""
    v = np.asarray(vertices, dtype=np.float64)
    key = np.floor((v - v.min(axis=0)) / cell_mm).astype(np.int64)
    span = key.max(axis=0) + 1
    flat = (key[:, 0] * span[1] + key[:, 1]) * span[2] + key[:, 2]
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    m = len(counts)
    out_v = np.stack([np.bincount(inverse, weights=v[:, j], minlength=m) for j in range(3)], axis=1) / counts[:, None]
    out_vals = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64), minlength=m) / counts
    f = inverse[np.asarray(faces, dtype=np.int64)]
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return out_v, f[ok], out_vals


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3000), st.floats(0.01, 50.0), st.integers(0, 2**32 - 1), st.booleans())
def test_cluster_on_columns_is_the_row_version(n, cell, seed, clumped):
    """The column version (one stable argsort instead of np.unique) gives the same vertices, in
    the same order, the same faces and values, NaNs included, on scattered and clumped points."""
    from occlutrace_compute.analysis.preview import cluster

    rng = np.random.default_rng(seed)
    v = rng.normal(0, 20, (n, 3)) * [1, 1, 0.2]
    if clumped:  # many vertices per cell, cells far apart, a huge outlier
        v = np.round(v / 7) * 7 + rng.normal(0, 1e-3, v.shape)
        v[0] = [1e4, -1e4, 3e3]
    f = rng.integers(0, n, (2 * n, 3))
    vals = rng.normal(0, 0.2, n)
    vals[rng.random(n) < 0.05] = np.nan
    for got, want in zip(cluster(v, f, vals, cell), _cluster_reference(v, f, vals, cell)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want, equal_nan=True)


def test_the_frame_s_cross_products_serve_only_its_own_arrays(upper, monkeypatch):
    """The sheet shades with the normals arch_frame computed for the very same arrays (bit for
    bit face_normals), never with another mesh's, even one with equal coordinates."""
    from dataclasses import replace

    from occlutrace_compute.analysis.preview import face_normals, frame_normals
    from occlutrace_compute.analysis.report import viewer_payload

    mesh = upper.mesh
    frame = arch_frame(mesh)
    got = frame_normals(frame, mesh)
    assert got is not None
    for a, b in zip(got, face_normals(mesh.vertices, mesh.faces)):
        assert np.array_equal(a, b)
    assert frame_normals(frame, Mesh(mesh.vertices.copy(), mesh.faces)) is None
    assert frame_normals(replace(frame, cross=None), mesh) is None
    # the 3D view's sizing from the frame's areas: the same payload as from its own
    from occlutrace_compute.analysis import report

    monkeypatch.setattr(report, "VIEWER_MAX_VERTICES", mesh.n_vertices // 3)  # so the mesh is merged
    values = 0.2 * np.sin(mesh.vertices[:, 0])
    ramp = deviation_ramp(0.2, 0.1)
    bare = replace(frame, cross=None)
    merged = viewer_payload(mesh.vertices, mesh.faces, values, ramp, frame, "upper")
    assert merged == viewer_payload(mesh.vertices, mesh.faces, values, ramp, bare, "upper")
    assert merged["n_vertices"] <= mesh.n_vertices // 3


# --- the picture before colour, drawn in two halves (raster_geometry, sheet_geometry) -----------


def _uneven(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine 'teeth' (a wavy 0.3 mm grid), coarse 'gingiva' (a tilted 4 mm grid crossing it), one
    huge face through both, slivers and sub-pixel faces, then a copy of the first third of the
    faces on duplicated vertices carrying other values, appended last: exact depth ties between
    the first half of the faces and the second. Vertices (N, 3), faces (F, 3), values (N,)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(-6, 6, 41)
    fine = _grid(41, 6.0, 0.4 * np.sin(np.add.outer(t, t)).ravel())
    coarse = _grid(7, 12.0)
    coarse_v = coarse.vertices.copy()
    coarse_v[:, 2] = 0.08 * coarse_v[:, 0] - 0.1
    huge = np.array([[-200.0, -150, -3], [220, -40, 2], [-30, 210, 1]])
    base = rng.uniform(-10, 10, (300, 3)) * [1, 1, 0.05]
    slivers = np.concatenate([base, base + [8.0, 1e-3, 0.01], base + [1e-3, 1e-4, 0.02]])
    parts = [fine.vertices, coarse_v, huge, slivers]
    starts = np.cumsum([0] + [len(p) for p in parts])
    k = np.arange(300) + starts[3]
    faces = np.concatenate(
        [
            fine.faces,
            coarse.faces + starts[1],
            [[starts[2], starts[2] + 1, starts[2] + 2]],
            np.stack([k, k + 300, k + 600], 1),
        ]
    )
    verts = np.concatenate(parts)
    values = rng.uniform(-0.3, 0.3, len(verts))
    values[rng.random(len(verts)) < 0.05] = np.nan
    tie = faces[: len(faces) // 3]
    faces = np.concatenate([faces, tie + len(verts)])
    return np.concatenate([verts, verts]), faces, np.concatenate([values, -values])


def _view(direction: np.ndarray) -> View:
    toward = direction / np.linalg.norm(direction)
    right = np.cross([0.3, 1.0, 0.1], toward)
    right /= np.linalg.norm(right)
    return View("v", right, np.cross(toward, right), toward)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(0.05, 1)),
    st.integers(3, 400),
    st.integers(3, 300),
    st.booleans(),
)
def test_two_halves_draw_the_one_thread_picture(seed, direction, width, height, fixed_extent):
    """Half the faces drawn on a pool thread and merged by depth: the same Raster and image, pixel
    for pixel, as one thread, on an uneven mesh (a huge face, slivers, fine over coarse) with
    exact depth ties across the halves, seen from random directions at random sizes."""
    from concurrent.futures import ThreadPoolExecutor

    from occlutrace_compute.analysis.preview import raster_geometry

    verts, faces, values = _uneven(seed)
    view = _view(np.array(direction))
    extent = 30.0 if fixed_extent else None
    ramp = deviation_ramp(0.2, 0.05)
    one = raster_geometry(verts, faces, view, width, height, extent=extent)
    with ThreadPoolExecutor(1) as pool:
        two = raster_geometry(verts, faces, view, width, height, extent=extent, pool=pool)
        image, scale = rasterize(verts, faces, values, view, ramp, width, height, extent=extent, pool=pool)
    assert one.scale == two.scale == scale
    for a, b in [(one.pixels, two.pixels), (one.b0, two.b0), (one.b1, two.b1), (one.shade, two.shade)]:
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert all(np.array_equal(a, b) for a, b in zip(one.corners, two.corners))
    assert np.array_equal(image, rasterize(verts, faces, values, view, ramp, width, height, extent=extent)[0])


def test_of_faces_at_the_same_depth_the_last_is_drawn_also_across_halves():
    """Exact ties (the same triangles again, on copies of their vertices with the opposite
    values, listed last): every pixel shows the copy, with one thread and with two."""
    from concurrent.futures import ThreadPoolExecutor

    from occlutrace_compute.analysis.preview import raster_geometry

    grid = _grid(30, 10.0)
    n = grid.n_vertices
    verts = np.concatenate([grid.vertices, grid.vertices])
    faces = np.concatenate([grid.faces, grid.faces + n])  # the copies form the second half
    view = View("top", np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0]))
    with ThreadPoolExecutor(1) as pool:
        for p in (None, pool):
            r = raster_geometry(verts, faces, view, 200, 150, pool=p)
            assert len(r.pixels) > 10_000 and all((c >= n).all() for c in r.corners)


def test_a_sheet_from_geometry_made_beforehand_is_the_same_png(upper, tmp_path):
    """write_arch_sheet with sheet_geometry made earlier (a job: beside the deviation query)
    gives the very PNG it makes alone; geometry made for other arrays, another frame, patient
    up or size is not used (the sheet is still its own mesh's)."""
    from dataclasses import replace

    from occlutrace_compute.analysis.preview import sheet_geometry

    mesh = upper.mesh
    values = 0.25 * np.sin(mesh.vertices[:, 0] / 5)
    values[mesh.vertices[:, 1] > 15] = np.nan
    ramp, frame, up = deviation_ramp(0.2, 0.1), arch_frame(mesh), np.array([0, 0, 1.0])

    def sheet(name, m=mesh, geometry=None, superior=up, size=(1400, 960)):
        args = (m, values, frame, superior, ramp, "t", "s", "upper arch")
        return write_arch_sheet(tmp_path / name, *args, size_px=size, geometry=geometry).read_bytes()

    alone = sheet("alone.png")
    assert sheet("made.png", geometry=sheet_geometry(mesh, frame, up)) == alone
    moved = Mesh(mesh.vertices * [1.0, 1.3, 1.0], mesh.faces)  # another shape, the same faces array
    assert sheet("stale.png", geometry=sheet_geometry(moved, frame, up)) == alone
    other_up = sheet_geometry(mesh, frame, -up)
    assert sheet("up.png", geometry=other_up) == alone
    assert sheet("down.png", geometry=other_up, superior=-up) == sheet("down_alone.png", superior=-up)
    assert sheet("size.png", geometry=sheet_geometry(mesh, frame, up, (1000, 700))) == alone
    assert sheet("frame.png", geometry=sheet_geometry(mesh, replace(frame, x=-frame.x), up)) == alone
    assert sheet("none_up.png", geometry=sheet_geometry(mesh, frame, None)) == alone


def test_panels_drawn_on_two_threads_are_the_rasteriser_s_pictures(upper, tmp_path):
    """write_preview (a bite's contact map) draws its second panel on a helper thread: each panel
    is still exactly rasterize's picture of it, where it is placed."""
    from occlutrace_compute.analysis.preview import Panel, write_preview

    mesh = upper.mesh
    frame = arch_frame(mesh)
    ramp = deviation_ramp(0.2, 0.05)
    values = [0.2 * np.sin(mesh.vertices[:, 0] / 4), -0.3 * np.cos(mesh.vertices[:, 1] / 3)]
    panels = [Panel(mesh, v, frame, f"panel {i}") for i, v in enumerate(values)]
    width, height = 1000, 520
    with Image.open(write_preview(tmp_path / "p.png", panels, ramp, "t", (width, height))) as im:
        sheet = np.asarray(im.convert("RGB"))
    pw, ph = (width - 260 - 12 - 8 - 12) // 2, height - 48
    view = View("occlusal", frame.x, frame.anterior, frame.occlusal)
    for i, v in enumerate(values):
        image, _ = rasterize(mesh.vertices, mesh.faces, v, view, ramp, pw, ph)
        x = 12 + i * (pw + 8)
        assert np.array_equal(sheet[38 + 40 : 38 + ph - 50, x + 2 : x + pw - 2], image[40:-50, 2:-2])  # clear of labels
    assert not np.array_equal(
        sheet[38 + 40 : 38 + ph - 40, 14 : 12 + pw - 2], sheet[38 + 40 : 38 + ph - 40, 12 + pw + 10 : 12 + 2 * pw + 6]
    )


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_the_occlusal_view_does_not_move_with_the_scan(upper, seed, uneven):
    """The large view of a rigidly moved mesh in its moved frame (a pair job draws it from the
    moving scan during the registration): the picture of the mesh in its own frame, but for
    rounding in the last bits (at most a few pixels of 550k), on an arch (whose arch_frame moves
    with it, as the job checks) and on an uneven mesh (a huge face, slivers, exact ties)."""
    from dataclasses import replace

    from occlutrace_compute.analysis.frame import ArchFrame
    from occlutrace_compute.analysis.preview import occlusal_raster, paint
    from occlutrace_compute.jobs.pipeline import MOVED_FRAME_TOL

    rng = np.random.default_rng(seed)
    R = Rotation.random(random_state=seed).as_matrix()
    t = rng.uniform(-60, 60, 3)
    if uneven:
        verts, faces, values = _uneven(seed)
        mesh = Mesh(verts, faces)
        axes = Rotation.from_euler("xyz", rng.uniform(-0.7, 0.7, 3)).as_matrix()  # seen from above, tilted
        frame = ArchFrame(np.zeros(3), axes[:, 0], axes[:, 1], axes[:, 2], np.ones(3))
    else:
        mesh, values = upper.mesh, 0.3 * np.sin(upper.mesh.vertices[:, 0] / 3)
        frame = arch_frame(mesh)
    moved = Mesh(mesh.vertices @ R.T + t, mesh.faces)
    moved_frame = replace(frame, x=R @ frame.x, anterior=R @ frame.anterior, occlusal=R @ frame.occlusal, cross=None)
    if not uneven:  # the job's check: the moved scan's own frame is the moved frame
        own = arch_frame(moved)
        assert all(
            np.abs(getattr(own, a) - getattr(moved_frame, a)).max() <= MOVED_FRAME_TOL
            for a in ("x", "anterior", "occlusal")
        )
    ramp = deviation_ramp(0.2, 0.05)
    here, there = (
        paint(occlusal_raster(mesh, frame), values, ramp),
        paint(occlusal_raster(moved, moved_frame), values, ramp),
    )
    assert (here != 255).any(axis=2).sum() > 2000  # something drawn
    assert (here != there).any(axis=2).sum() <= 5, (here != there).any(axis=2).sum()


def test_a_large_view_drawn_for_another_frame_is_not_used(upper):
    """The job uses MOVING's large view only when the aligned scan's frame is MOVING's frame
    moved by the pose; a frame that is not (here: turned a quarter about the occlusal axis) or a
    failed predrawing gives the view drawn from the aligned scan itself."""
    from concurrent.futures import Future
    from dataclasses import replace

    from occlutrace_compute.analysis.preview import occlusal_raster
    from occlutrace_compute.jobs.pipeline import _preview_geometry

    mesh = upper.mesh
    frame = arch_frame(mesh)
    own = occlusal_raster(mesh, frame)

    def done(value):
        f = Future()
        f.set_result(value)
        return f

    turned = replace(frame, x=frame.anterior, anterior=-frame.x)
    stale = occlusal_raster(mesh, turned)
    for predrawn in (done((turned, stale)), done(None)):
        got = _preview_geometry(mesh, done(frame), "upper", predrawn, np.eye(4)).large
        assert np.array_equal(got.pixels, own.pixels) and np.array_equal(got.b0, own.b0)
    used = _preview_geometry(mesh, done(frame), "upper", done((frame, stale)), np.eye(4)).large
    assert used is stale  # an agreeing frame: the predrawn view is taken as it is
