"""deviation(): statistics against known offsets, overlap rule, coloured PLY, PNG, JSON."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import trimesh
from PIL import Image
from test_analysis_surfaces import bumpy, height_field, offset_bumpy

from occlutrace_compute.analysis.colormap import BEYOND_ABOVE, BEYOND_BELOW, GREY
from occlutrace_compute.analysis.deviation import deviation
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh


@pytest.fixture(scope="module")
def reference() -> Mesh:
    return height_field(bumpy, 6.0, 121)  # 0.1 mm spacing


def test_constant_offset_gives_offset_statistics_and_excludes_non_overlap(reference):
    # The aligned scan reaches 3 mm beyond the reference's edge at x = 6: that part must not count.
    aligned = offset_bumpy(-3.0, 9.0, 5.0, 61, 0.03)
    rep = deviation(aligned, reference, tolerance_mm=0.05)
    x = aligned.vertices[:, 0]
    assert not rep.overlap[x > 6.1].any()
    assert rep.overlap[(x < 5.5) & (np.abs(aligned.vertices[:, 1]) < 4.9)].all()
    assert 0.7 < rep.overlap_share < 0.8
    s = rep.stats
    for value in (s.mean_mm, s.median_mm, s.rms_mm, s.p5_mm, s.p95_mm, s.max_abs_mm):
        assert abs(value - 0.03) < 5e-4
    assert s.within_tolerance_share == 1.0 and s.count == int(rep.overlap.sum())


def test_random_offsets_statistics_match_the_ground_truth(reference):
    rng = np.random.default_rng(11)
    n = 51
    truth = rng.uniform(-0.1, 0.1, n * n)
    aligned = offset_bumpy(-5.0, 5.0, 5.0, n, truth)
    rep = deviation(aligned, reference, tolerance_mm=0.05)
    t = truth[rep.overlap]
    assert rep.overlap.mean() > 0.95
    np.testing.assert_allclose(rep.distance[rep.overlap], t, atol=5e-4)
    s = rep.stats
    assert abs(s.rms_mm - np.sqrt(np.mean(t**2))) < 5e-4
    assert abs(s.mean_mm - t.mean()) < 5e-4
    assert abs(s.p5_mm - np.percentile(t, 5)) < 5e-4 and abs(s.p95_mm - np.percentile(t, 95)) < 5e-4
    assert abs(s.within_tolerance_share - np.mean(np.abs(t) <= 0.05)) < 0.01
    h = rep.histogram
    assert sum(h.counts) + h.below + h.above == s.count
    assert len(h.edges_mm) == len(h.counts) + 1 and h.edges_mm[0] == -0.2 and h.edges_mm[-1] == 0.2
    # Offsets span +/-0.1 mm: nothing falls outside the +/-0.2 mm histogram.
    assert h.below == 0 and h.above == 0


def test_outputs_ply_png_and_json(reference, tmp_path):
    aligned = offset_bumpy(-3.0, 9.0, 5.0, 41, np.linspace(-0.3, 0.3, 41 * 41))
    rep = deviation(aligned, reference)
    ply = rep.write_ply(tmp_path / "deviation.ply")
    back = trimesh.load(ply, process=False)
    assert len(back.vertices) == aligned.n_vertices and len(back.faces) == aligned.n_faces
    colors = np.asarray(back.visual.vertex_colors)
    np.testing.assert_array_equal(colors, rep.colored.vertex_colors)
    grey = np.round(np.array(GREY) * 255).astype(np.uint8)
    assert (colors[~rep.overlap, :3] == grey).all()
    assert not (colors[rep.overlap, :3] == grey).all(axis=1).any()
    # Beyond the colour scale: the beyond colours (violet below, magenta above), neither grey nor
    # the scale's end colours.
    d = rep.distance
    lo, hi = np.nanargmin(d), np.nanargmax(d)
    assert d[lo] < -0.2 and d[hi] > 0.2
    np.testing.assert_array_equal(colors[lo, :3], np.round(np.array(BEYOND_BELOW) * 255))
    np.testing.assert_array_equal(colors[hi, :3], np.round(np.array(BEYOND_ABOVE) * 255))
    # The signed values ride along as the PLY's per-vertex `quality` (float), NaN outside overlap.
    quality = np.asarray(back.metadata["_ply_raw"]["vertex"]["data"]["quality"], dtype=np.float64)
    np.testing.assert_allclose(quality, rep.distance.astype(np.float32), equal_nan=True)

    png = rep.write_preview(tmp_path / "deviation.png")
    with Image.open(png) as im:
        assert im.size == (1400, 960)
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    # The map's colours are in the picture (shaded): some clearly red and clearly blue pixels.
    assert ((pixels[:, 0] > 150) & (pixels[:, 2] < 80)).sum() > 500
    assert ((pixels[:, 2] > 100) & (pixels[:, 0] < 60)).sum() > 500

    block = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert block["count"] == rep.stats.count and block["tolerance_mm"] == 0.05
    assert block["color_scale_mm"] == [-0.2, 0.2] and "histogram" in block


def test_no_overlap_is_reported_not_raised(reference, tmp_path):
    far = offset_bumpy(-3.0, 3.0, 3.0, 11, 5.0)
    rep = deviation(far, reference)
    assert rep.stats.count == 0 and rep.stats.rms_mm is None and rep.overlap_share == 0.0
    json.dumps(rep.to_dict(), allow_nan=False)
    assert rep.write_preview(tmp_path / "none.png").stat().st_size > 0


def test_empty_aligned_mesh_is_rejected(reference):
    with pytest.raises(InputRejected, match="aligned: has no vertices"):
        deviation(Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), reference)


def test_synthetic_rescan_with_clinical_changes():
    synth = pytest.importorskip("occlutrace_compute.synth")
    case = synth.make_pair_case(2, "changed", spacing_mm=0.3)  # prepared + moved teeth, fragment
    aligned = case.moving.transformed(case.T_fixed_moving)  # the true alignment
    rep = deviation(aligned, case.fixed, tolerance_mm=0.05)
    unchanged, overlap = case.moving_unchanged, rep.overlap
    d = np.abs(rep.distance)
    assert rep.overlap_share > 0.9
    # Unchanged surface: scan noise (15 um per scan) and sampling only.
    assert np.mean(d[overlap & unchanged] <= 0.05) > 0.9
    # Changed surface stands out clearly.
    assert np.nanmean(d[overlap & ~unchanged]) > 5 * np.nanmean(d[overlap & unchanged])
    assert rep.stats.within_tolerance_share < np.mean(d[overlap & unchanged] <= 0.05)


def test_a_prebuilt_reference_index_gives_the_same_map_and_must_match_the_reference():
    # A job builds the reference's index beside the registration and hands it to deviation().
    from occlutrace_compute.analysis.distance import SurfaceIndex
    from occlutrace_compute.synth import make_arch

    reference = make_arch("upper", 5, 0.6).mesh
    aligned = make_arch("upper", 5, 0.6 * 1.07).mesh
    own = deviation(aligned, reference)
    given = deviation(aligned, reference, reference_index=SurfaceIndex(reference))
    np.testing.assert_array_equal(given.distance, own.distance)
    with pytest.raises(ValueError, match="another mesh"):
        deviation(aligned, reference, reference_index=SurfaceIndex(aligned))


def test_the_two_thread_query_gives_exactly_the_one_thread_answer(reference):
    """deviation() splits a large query over two threads: each point's answer (distance, closest
    point, face, boundary flag; NaN beyond the cutoff) is the single query's, bit for bit."""
    from occlutrace_compute.analysis.deviation import SPLIT_MIN_POINTS, _query_halves
    from occlutrace_compute.analysis.distance import SurfaceIndex

    rng = np.random.default_rng(12)
    n = SPLIT_MIN_POINTS + 5_001
    near = reference.vertices[rng.integers(0, reference.n_vertices, n)]
    points = near + rng.uniform(-0.05, 0.05, (n, 3)) + np.array([0.0, 0.0, 1.0]) * rng.uniform(-0.8, 0.8, (n, 1))
    points[:50, :2] += 7.0  # off the reference's edge: no surface within the cutoff
    index = SurfaceIndex(reference)
    with ThreadPoolExecutor(max_workers=2) as pool:
        one, two = index.query(points, max_distance=0.5), _query_halves(index, points, 0.5, pool)
    for a, b in (
        (one.distance, two.distance),
        (one.closest, two.closest),
        (one.face, two.face),
        (one.on_boundary, two.on_boundary),
    ):
        np.testing.assert_array_equal(a, b)
    assert np.isnan(one.distance).any() and np.isfinite(one.distance).any()


ANALYSIS_ALONE = """
import json, sys
import numpy as np
from occlutrace_compute.analysis import contacts, deviation
from occlutrace_compute.analysis.distance_device import surface_index
from occlutrace_compute.meshes.model import Mesh

n = 40
x, y = np.meshgrid(np.linspace(-3, 3, n), np.linspace(-3, 3, n))
v = np.stack([x.ravel(), y.ravel(), 0.2 * np.sin(x.ravel())], axis=1)
i = np.arange(n * n).reshape(n, n)
a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int64)
ref, moved = Mesh(v, f), Mesh(v + [0, 0, 0.05], f)
dev = deviation(moved, ref, reference_index=surface_index(ref, name="reference", device="cpu"))
rep = contacts(Mesh(v + [0, 0, 0.1], f[:, ::-1]), ref, threshold_mm=0.2, device="cpu")
print(json.dumps({"rms": dev.stats.rms_mm, "frame": dev.frame.extent.tolist(),
                  "contact": rep.to_dict()["per_side"]["left"]["contact_area_mm2"]
                  + rep.to_dict()["per_side"]["right"]["contact_area_mm2"],
                  "heavy": sorted(m for m in ("torch", "cupy", "matplotlib", "ray") if m in sys.modules)}))
"""


def test_analysis_alone_on_the_cpu_imports_no_torch():
    # The deviation of an already-aligned pair and the contacts of placed arches on device "cpu"
    # (a fresh interpreter): distance_device and contacts import torch (the nn package, CuPy)
    # only to build a kernel, never for distance.py's index.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ANALYSIS_ALONE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    assert got["rms"] == pytest.approx(0.05, abs=2e-3) and got["contact"] > 0
