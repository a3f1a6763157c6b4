"""Arch sectors and patient sides against generated arches' own FDI tooth labels (which this code
never sees), in random scanner poses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from occlutrace_compute.analysis.frame import arch_frame
from occlutrace_compute.analysis.sectors import ArchLocator, locate_regions
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth.arch import make_arch


def _fdi_sector(tooth: int) -> str:
    pos = tooth % 10
    return "anterior" if pos <= 3 else "premolar" if pos <= 5 else "molar"


def _fdi_side(tooth: int) -> str:
    return "right" if tooth // 10 in (1, 4) else "left"


@pytest.mark.parametrize("jaw, seed", [("upper", 11), ("lower", 12), ("upper", 23), ("lower", 24)])
def test_sectors_and_sides_agree_with_fdi_labels(jaw, seed):
    arch = make_arch(jaw, seed, 0.6)
    R = Rotation.random(random_state=seed).as_matrix()
    mesh = Mesh(arch.mesh.vertices @ R.T + np.array([30.0, -12.0, 7.0]), arch.mesh.faces)
    on_tooth = arch.tooth > 0
    pts, teeth = mesh.vertices[on_tooth], arch.tooth[on_tooth]
    loc = ArchLocator(arch_frame(mesh), jaw)
    sectors, sides = loc.sectors(pts), loc.sides(pts)
    sector_ok = np.mean([s == _fdi_sector(t) for s, t in zip(sectors, teeth)])
    side_ok = np.mean([s == _fdi_side(t) for s, t in zip(sides, teeth) if t % 10 > 1])  # centrals straddle the midline
    assert sector_ok >= 0.90, sector_ok
    assert side_ok >= 0.99, side_ok


def test_unknown_arch_names_no_side_and_regions_get_a_location():
    arch = make_arch("upper", 5, 0.8)
    frame = arch_frame(arch.mesh)
    molar = arch.mesh.vertices[arch.tooth == 16].mean(axis=0)
    out = locate_regions([{"centroid_mm": molar.tolist(), "area_mm2": 3.0}], frame, "upper")
    assert out[0]["location"]["text"] == "upper right molar" and out[0]["area_mm2"] == 3.0
    unknown = ArchLocator(frame, None).describe(molar)
    assert unknown["side"] is None and "side unknown" in unknown["text"]
