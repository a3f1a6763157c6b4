"""Occlusal contacts between two arches already in the occlusion frame (bite jobs).

Each arch's vertices get their exact signed distance to the OTHER arch's surface (negative =
inside it, i.e. penetration). Contacts are connected regions (over mesh edges) with distance below
the threshold, penetrations those below 0; areas are clipped exactly at the level (see regions.py).

Location rule (per arch, from its own principal axes, see frame.py): superior is the direction
from the lower arch to the upper; patient's right = anterior x superior; a region is "right" when
its centroid lies on the right of the arch's midline (the centre of its extent across the arch),
and "anterior" when it lies in the front 30 % of the arch's depth (incisors and canines end there
on typical arches), otherwise "posterior".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occlutrace_compute.analysis.colormap import ColorRamp, contact_ramp
from occlutrace_compute.analysis.distance import SurfaceIndex, faces_near, one_openmp_thread
from occlutrace_compute.analysis.distance_device import JOB_DEVICES, DistanceIndex, resolve_backend, surface_index
from occlutrace_compute.analysis.frame import ArchFrame, arch_frame
from occlutrace_compute.analysis.preview import Panel, write_preview
from occlutrace_compute.analysis.regions import Regions, regions_below
from occlutrace_compute.errors import InputRejected
from occlutrace_compute.meshes.export import export_mesh
from occlutrace_compute.meshes.model import Mesh

LOCATION_RULE = (
    "per arch principal axes: right = anterior x superior (superior: lower->upper); side by the "
    "region centroid vs the arch midline; anterior = front 30 % of the arch depth"
)
SIDES = ("left", "right")
ANTERIOR_SHARE = 0.3


@dataclass(frozen=True)
class Region:
    """One connected contact or penetration region on one arch."""

    arch: str
    area_mm2: float
    min_distance_mm: float
    n_vertices: int
    side: str
    segment: str
    centroid: tuple[float, float, float]

    @property
    def depth_mm(self) -> float:
        """Penetration depth (0 when the region does not penetrate)."""
        return max(0.0, -self.min_distance_mm)

    def to_dict(self) -> dict:
        return {
            "area_mm2": self.area_mm2,
            "min_distance_mm": self.min_distance_mm,
            "depth_mm": self.depth_mm,
            "n_vertices": self.n_vertices,
            "side": self.side,
            "segment": self.segment,
            "centroid": list(self.centroid),
        }


@dataclass(frozen=True)
class ArchContacts:
    """Distances from one arch to the other, its contact and penetration regions."""

    name: str
    distance: np.ndarray  # (N,) mm, NaN beyond the cutoff
    contacts: list[Region]
    penetrations: list[Region]
    frame: ArchFrame
    superior: np.ndarray  # (3,) unit
    colored: Mesh

    def totals(self) -> dict:
        """Per side: contact area, penetration area, deepest penetration, region counts."""
        out = {}
        for side in SIDES:
            con = [r for r in self.contacts if r.side == side]
            pen = [r for r in self.penetrations if r.side == side]
            out[side] = {
                "contact_area_mm2": float(sum(r.area_mm2 for r in con)),
                "n_contacts": len(con),
                "penetration_area_mm2": float(sum(r.area_mm2 for r in pen)),
                "max_penetration_mm": float(max((r.depth_mm for r in pen), default=0.0)),
                "n_penetrations": len(pen),
            }
        return out

    def to_dict(self) -> dict:
        finite = self.distance[np.isfinite(self.distance)]
        return {
            "min_distance_mm": float(finite.min()) if len(finite) else None,
            "totals": self.totals(),
            "contacts": [r.to_dict() for r in self.contacts],
            "penetrations": [r.to_dict() for r in self.penetrations],
        }


@dataclass(frozen=True)
class ContactReport:
    upper: ArchContacts
    lower: ArchContacts
    threshold_mm: float
    cutoff_mm: float
    ramp: ColorRamp

    def summary(self) -> dict:
        """Contact and penetration areas per side (mean of the two arches' measurements of the
        same contact) and the deepest penetration seen from either arch."""
        tu, tl = self.upper.totals(), self.lower.totals()
        return {
            side: {
                "contact_area_mm2": 0.5 * (tu[side]["contact_area_mm2"] + tl[side]["contact_area_mm2"]),
                "penetration_area_mm2": 0.5 * (tu[side]["penetration_area_mm2"] + tl[side]["penetration_area_mm2"]),
                "max_penetration_mm": max(tu[side]["max_penetration_mm"], tl[side]["max_penetration_mm"]),
            }
            for side in SIDES
        }

    @property
    def max_penetration_mm(self) -> float:
        s = self.summary()
        return max(s[side]["max_penetration_mm"] for side in SIDES)

    def to_dict(self) -> dict:
        """The `contacts` block of result.json."""
        return {
            "threshold_mm": self.threshold_mm,
            "cutoff_mm": self.cutoff_mm,
            "sign": "negative: inside the opposing arch (penetration)",
            "location_rule": LOCATION_RULE,
            "per_side": self.summary(),
            "max_penetration_mm": self.max_penetration_mm,
            "upper": self.upper.to_dict(),
            "lower": self.lower.to_dict(),
        }

    def write_plys(self, upper_path: str | Path, lower_path: str | Path) -> tuple[Path, Path]:
        """Both arches coloured by distance to the other (red in, green contact, blue open, grey far)."""
        return export_mesh(self.upper.colored, upper_path, "ply"), export_mesh(self.lower.colored, lower_path, "ply")

    def write_preview(self, path: str | Path) -> Path:
        """PNG with both occlusal views side by side and the colour bar."""
        s = self.summary()
        title = (
            f"contacts < {self.threshold_mm:g} mm   left {s['left']['contact_area_mm2']:.1f} mm\u00b2   "
            f"right {s['right']['contact_area_mm2']:.1f} mm\u00b2   max penetration {self.max_penetration_mm:.3f} mm"
        )
        panels = [_panel(self.upper, "upper arch (from below)"), _panel(self.lower, "lower arch (from above)")]
        return write_preview(path, panels, self.ramp, title, size_px=(1000, 520))


def _panel(arch: ArchContacts, title: str) -> Panel:
    # Screen right is the frame's x; name the patient's side it shows.
    right_is_patient_right = float(np.dot(arch.frame.x, np.cross(arch.frame.anterior, arch.superior))) > 0
    right, left = ("patient right", "patient left") if right_is_patient_right else ("patient left", "patient right")
    return Panel(arch.colored, arch.distance, arch.frame, title, right_label=right, left_label=left)


def _regions(name: str, regions: Regions, frame: ArchFrame, superior: np.ndarray) -> list[Region]:
    right_dir = np.cross(frame.anterior, superior)
    local = frame.local(regions.centroid)
    across = regions.centroid - frame.origin
    front_edge = 0.5 * frame.extent[1]
    out = []
    for i in range(regions.count):
        out.append(
            Region(
                arch=name,
                area_mm2=float(regions.area_mm2[i]),
                min_distance_mm=float(regions.min_value[i]),
                n_vertices=int(regions.n_vertices[i]),
                side="right" if float(np.dot(across[i], right_dir)) > 0 else "left",
                segment="anterior" if local[i, 1] >= front_edge - ANTERIOR_SHARE * frame.extent[1] else "posterior",
                centroid=(float(regions.centroid[i, 0]), float(regions.centroid[i, 1]), float(regions.centroid[i, 2])),
            )
        )
    return sorted(out, key=lambda r: r.min_distance_mm)


def _arch(
    name: str,
    mesh: Mesh,
    distance: np.ndarray,
    superior_hint: np.ndarray,
    threshold: float,
    cutoff: float,
    ramp: ColorRamp,
) -> ArchContacts:
    frame = arch_frame(mesh)
    superior = frame.occlusal if float(np.dot(frame.occlusal, superior_hint)) >= 0 else -frame.occlusal
    contact_regions = regions_below(mesh, distance, threshold, fill_value=cutoff)
    penetration_regions = regions_below(mesh, distance, 0.0, fill_value=cutoff)
    return ArchContacts(
        name=name,
        distance=distance,
        contacts=_regions(name, contact_regions, frame, superior),
        penetrations=_regions(name, penetration_regions, frame, superior),
        frame=frame,
        superior=superior,
        colored=Mesh(mesh.vertices, mesh.faces, ramp.rgba8(distance)),
    )


def _measure(
    name: str,
    mesh: Mesh,
    other_name: str,
    other: Mesh,
    up: np.ndarray,
    threshold: float,
    cutoff: float,
    ramp: ColorRamp,
    device: str,
) -> ArchContacts:
    """One arch's side of contacts(): distances to the other arch, regions, colours. Runs on one
    thread with OpenMP on one thread too (the two arches run side by side on the two cores)."""
    with one_openmp_thread():
        distance = _other_index(other_name, other, mesh.vertices, cutoff, device).query(mesh.vertices, cutoff).distance
        return _arch(name, mesh, distance, up, threshold, cutoff, ramp)


def _other_index(other_name: str, other: Mesh, points: np.ndarray, cutoff: float, device: str) -> DistanceIndex:
    """The other arch's index for these points' query at the cutoff. On the CPU (numpy) it is
    built over the other arch's faces near these points only (distance.faces_near: the same
    answers for them at this cutoff; a sixth of an arch in occlusion, so the selection and the
    build cost ~0.07 s CPU where the whole arch's build cost ~0.13 s at 250k faces); on a device
    the whole arch's (surface_index)."""
    if device in JOB_DEVICES and resolve_backend(JOB_DEVICES[device]) == "numpy":
        return SurfaceIndex(other, name=other_name, faces=faces_near(other, points, cutoff))
    return surface_index(other, name=other_name, device=device)


def contacts(
    upper: Mesh, lower: Mesh, threshold_mm: float = 0.1, cutoff_mm: float = 0.5, device: str = "cpu"
) -> ContactReport:
    """Contacts and penetrations between upper and lower arch (both in the occlusion frame).

    device: a job's "cpu" / "auto" / "cuda" (analysis/distance_device.py: "auto" measures with
    the CUDA kernel when a GPU is usable, else exactly as "cpu").
    cutoff_mm: distances beyond it are not measured (NaN, grey in the colour map).
    Both arches are measured at once on two threads. Time: two SurfaceIndex builds (O(M log M),
    on the CPU over the other arch's faces near this one: _other_index) and two bounded queries (see distance.py: each point's work is bounded by the proxies within
    cutoff + rho of it), then O(N + M) for regions and colours; about 0.5 s of CPU per arch of
    120k vertices.
    """
    if not (0 < threshold_mm < cutoff_mm):
        raise ValueError(f"need 0 < threshold_mm < cutoff_mm, got {threshold_mm}, {cutoff_mm}")
    for name, mesh in (("upper", upper), ("lower", lower)):
        if mesh.n_vertices == 0 or mesh.n_faces == 0:
            raise InputRejected(name, "has no triangles")
    up = upper.vertices.mean(axis=0) - lower.vertices.mean(axis=0)
    ramp = contact_ramp(threshold_mm, cutoff_mm)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="occlutrace-contacts") as pool:
        lower_side = pool.submit(_measure, "lower", lower, "upper", upper, up, threshold_mm, cutoff_mm, ramp, device)
        # An error in the upper side is raised first (leaving the block waits for the worker).
        upper_side = _measure("upper", upper, "lower", lower, up, threshold_mm, cutoff_mm, ramp, device)
        lower_contacts = lower_side.result()
    return ContactReport(
        upper=upper_side,
        lower=lower_contacts,
        threshold_mm=float(threshold_mm),
        cutoff_mm=float(cutoff_mm),
        ramp=ramp,
    )
