"""contacts(): closed-form contact areas and depths (sphere on a plane), an independent trimesh
reference, the left/right/anterior/posterior rule on a U-shaped arch, and the outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from PIL import Image
from test_analysis_surfaces import arch_ribbon, bowl, height_field

from occlutrace_compute.analysis.contacts import contacts
from occlutrace_compute.analysis.regions import below_fraction, regions_below
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.model import Mesh

R = 5.0


def _plane(n: int = 81, half: float = 2.5) -> Mesh:
    return height_field(lambda x, y: 0 * x, half, n)  # lower: z = 0, normals up (occlusal)


@pytest.mark.parametrize("gap", [0.04, -0.05])
def test_sphere_on_plane_matches_closed_form(gap):
    upper = bowl(R, gap, 2.0, 81)  # sphere's bottom at z = gap
    lower = _plane()
    t = 0.1
    rep = contacts(upper, lower, threshold_mm=t)
    # Lower (plane) vertices: distance to the sphere is |p - c| - R, a disc below the threshold.
    disc = np.pi * ((R + t) ** 2 - (R + gap) ** 2)
    # Upper (sphere) vertices: distance to the plane is z, a cap of height t - gap.
    cap = 2 * np.pi * R * (t - gap)
    assert len(rep.lower.contacts) == 1 and len(rep.upper.contacts) == 1
    assert rep.lower.contacts[0].area_mm2 == pytest.approx(disc, rel=0.01)
    assert rep.upper.contacts[0].area_mm2 == pytest.approx(cap, rel=0.01)
    assert rep.lower.contacts[0].min_distance_mm == pytest.approx(gap, abs=2e-4)
    assert rep.upper.contacts[0].min_distance_mm == pytest.approx(gap, abs=1e-9)
    if gap < 0:
        pen_disc = np.pi * (R**2 - (R + gap) ** 2)
        pen_cap = 2 * np.pi * R * (-gap)
        assert len(rep.lower.penetrations) == 1 and len(rep.upper.penetrations) == 1
        assert rep.lower.penetrations[0].area_mm2 == pytest.approx(pen_disc, rel=0.02)
        assert rep.upper.penetrations[0].area_mm2 == pytest.approx(pen_cap, rel=0.02)
        assert rep.max_penetration_mm == pytest.approx(-gap, abs=2e-4)
    else:
        assert rep.lower.penetrations == [] and rep.upper.penetrations == [] and rep.max_penetration_mm == 0.0


def test_distances_and_area_agree_with_an_independent_trimesh_reference():
    # Small, coarse, wavy case: trimesh's closest points give the distances; a dense Monte-Carlo
    # sample of the lower surface gives the contact area.
    lower = height_field(lambda x, y: 0.2 * np.sin(1.3 * x) * np.cos(0.9 * y), 3.0, 31)
    upper = height_field(
        lambda x, y: 0.25 + 0.2 * np.cos(1.1 * x + 0.4) * np.sin(0.8 * y + 0.3), 3.0, 29, normals_up=False
    )
    rep = contacts(upper, lower, threshold_mm=0.1, cutoff_mm=1.0)
    tm_upper = trimesh.Trimesh(upper.vertices, upper.faces, process=False)
    closest, dist, tri = trimesh.proximity.closest_point(tm_upper, lower.vertices)
    sign = np.sign(np.einsum("ij,ij->i", lower.vertices - closest, tm_upper.face_normals[tri]))
    measured = np.isfinite(rep.lower.distance)
    assert measured.mean() > 0.9 and (dist[~measured] > 1.0).all()
    clear = np.abs(np.einsum("ij,ij->i", lower.vertices - closest, tm_upper.face_normals[tri])) > 1e-6
    np.testing.assert_allclose(np.abs(rep.lower.distance[measured]), dist[measured], atol=1e-6)
    assert (np.sign(rep.lower.distance[measured & clear]) == sign[measured & clear]).all()

    tm_lower = trimesh.Trimesh(lower.vertices, lower.faces, process=False)
    samples, _ = trimesh.sample.sample_surface(tm_lower, 15000, seed=3)
    s_closest, s_dist, s_tri = trimesh.proximity.closest_point(tm_upper, samples)
    s_signed = s_dist * np.sign(np.einsum("ij,ij->i", samples - s_closest, tm_upper.face_normals[s_tri]))
    mc_area = tm_lower.area * np.mean(s_signed < 0.1)
    ours = sum(r.area_mm2 for r in rep.lower.contacts)
    assert mc_area > 1.0
    # Linear interpolation between 0.2 mm vertices vs. the exact field, and Monte-Carlo noise
    # (about 1.5 % here): a few percent.
    assert ours == pytest.approx(mc_area, rel=0.04)


def test_location_rule_on_a_u_shaped_arch():
    # Lower arch flat at z = 0; the upper 1 mm above with two downward cusps: one touching on the
    # patient's right molars (gap 0.05), one penetrating at the left canine (0.08 deep).
    right_molar, left_canine = np.array([22.0, -8.0]), np.array([-15.5, 15.5])

    def upper_z(x, y):
        z = 1.0 - 0.95 * np.exp(-((x - right_molar[0]) ** 2 + (y - right_molar[1]) ** 2) / 8.0)
        return z - 1.08 * np.exp(-((x - left_canine[0]) ** 2 + (y - left_canine[1]) ** 2) / 8.0)

    lower = arch_ribbon(lambda x, y: 0 * x, normals_up=True)
    upper = arch_ribbon(upper_z, normals_up=False)
    rep = contacts(upper, lower, threshold_mm=0.1)
    for arch in (rep.upper, rep.lower):
        assert len(arch.contacts) == 2
        by_side = {r.side: r for r in arch.contacts}
        assert set(by_side) == {"left", "right"}
        assert by_side["right"].segment == "posterior" and by_side["left"].segment == "anterior"
        assert by_side["right"].min_distance_mm == pytest.approx(0.05, abs=0.01)
        assert by_side["left"].min_distance_mm == pytest.approx(-0.08, abs=0.01)
        assert [(p.side, p.segment) for p in arch.penetrations] == [("left", "anterior")]
        assert np.dot(arch.superior, [0, 0, 1]) > 0.99
    summary = rep.summary()
    assert summary["right"]["max_penetration_mm"] == 0.0
    assert summary["left"]["max_penetration_mm"] == pytest.approx(0.08, abs=0.01)
    assert summary["left"]["contact_area_mm2"] > summary["right"]["contact_area_mm2"] > 0


def test_outputs_ply_png_and_json(tmp_path):
    upper, lower = bowl(R, -0.05, 2.0, 61), _plane(61)
    rep = contacts(upper, lower)
    up_ply, low_ply = rep.write_plys(tmp_path / "upper_contacts.ply", tmp_path / "lower_contacts.ply")
    for path, arch in ((up_ply, rep.upper), (low_ply, rep.lower)):
        back = trimesh.load(path, process=False)
        colors = np.asarray(back.visual.vertex_colors)
        np.testing.assert_array_equal(colors, arch.colored.vertex_colors)
        deepest = int(np.nanargmin(arch.distance))
        assert colors[deepest, 0] > 150 and colors[deepest, 1] < 60  # red: penetration
    with Image.open(rep.write_preview(tmp_path / "contacts.png")) as im:
        assert im.size == (1000, 520)
    block = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert block["threshold_mm"] == 0.1 and block["max_penetration_mm"] == pytest.approx(0.05, abs=2e-4)
    assert block["lower"]["penetrations"][0]["depth_mm"] == pytest.approx(0.05, abs=2e-4)


def test_clipped_area_fraction_is_exact_for_linear_fields():
    # Values on corners (0, 0), (1, 0), (0, 1) of f = x + y - 0.5: f < 0 on a triangle of area
    # 0.125, i.e. a quarter of the unit right triangle.
    assert below_fraction(np.array([[-0.5, 0.5, 0.5]]), 0.0)[0] == pytest.approx(0.25)
    assert below_fraction(np.array([[0.5, -0.5, -0.5]]), 0.0)[0] == pytest.approx(0.75)
    assert below_fraction(np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]]), 0.0).tolist() == [0.0, 1.0]


def test_regions_are_connected_components():
    mesh = height_field(lambda x, y: 0 * x, 2.0, 21)
    x = mesh.vertices[:, 0]
    values = np.where(np.abs(x) > 1.5, -1.0, 1.0)  # two strips at both ends
    regions = regions_below(mesh, values, 0.0, fill_value=1.0)
    assert regions.count == 2
    assert set(np.unique(regions.vertex_label[np.abs(x) > 1.5])) == {0, 1}


def test_bad_arguments():
    with pytest.raises(ValueError, match="threshold"):
        contacts(_plane(5), _plane(5), threshold_mm=0.6, cutoff_mm=0.5)
    with pytest.raises(InputRejected, match="upper: has no triangles"):
        contacts(Mesh(np.zeros((3, 3)), np.zeros((0, 3), np.int64)), _plane(5))


def test_synthetic_arches_match_the_generators_ground_truth():
    synth = pytest.importorskip("occlutrace_compute.synth")
    from occlutrace_compute.synth.occlusion import contact_truth, vertex_areas

    upper, lower = synth.make_arch("upper", 3, 0.3), synth.make_arch("lower", 3, 0.3)
    truth = contact_truth(upper.mesh, lower.mesh, lower.tooth)  # trimesh distances, vertex areas
    rep = contacts(upper.mesh, lower.mesh, threshold_mm=truth.threshold_mm)
    ours = rep.lower.contacts
    assert len(ours) == len(truth.regions) > 4
    assert rep.max_penetration_mm == pytest.approx(truth.max_penetration_mm, abs=1e-6)
    # Same distance field: our distances summed with the generator's vertex-area rule give its areas.
    vertex_area = vertex_areas(lower.mesh)
    x = lower.mesh.vertices[:, 0]
    in_contact = rep.lower.distance < truth.threshold_mm
    for side, on_side in (("left", x <= 0), ("right", x > 0)):
        assert sum(r.side == side for r in ours) == truth.count[side]
        assert vertex_area[in_contact & on_side].sum() == pytest.approx(truth.area_mm2[side], rel=1e-3)
        # Our clipped areas differ from vertex areas by part of a one-triangle rim (0.3 mm here).
        area = rep.lower.totals()[side]["contact_area_mm2"]
        assert area == pytest.approx(truth.area_mm2[side], rel=0.15)
    for t in truth.regions:
        match = min(ours, key=lambda r: np.linalg.norm(np.subtract(r.centroid, t.centroid)))
        assert match.side == t.side
        assert match.min_distance_mm == pytest.approx(t.min_distance_mm, abs=1e-6)
        if t.tooth % 10 <= 3:
            assert match.segment == "anterior"
        elif t.tooth % 10 >= 5:
            assert match.segment == "posterior"
