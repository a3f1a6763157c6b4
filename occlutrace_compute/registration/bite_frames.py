"""Samples and anatomical frames of the arches and the buccal bite scans, and the starting poses
they imply for placing a bite on an arch.

Why a dedicated start: a bite overlaps only ~10-15 % of an arch and only ~half of the bite lies on
either arch, so generic global searches rarely find it. Anatomy narrows the search: a bite shows
the cheek side of the teeth, so its mean surface normal points buccally and must meet an arch's
buccal surface (normals horizontal, pointing away from the arch's centre); its long in-plane axis
runs along the arch, roughly perpendicular to the arch's occlusal direction. What stays unknown is
where along the arch (the anchors), the long axis's sign, and a few degrees of tilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.registration import geometry
from occlutrace_compute.registration.levels import Cloud, Samples
from occlutrace_compute.registration.sampling import sample_surface_area, voxel_downsample


def sample_levels(mesh: Mesh, n_fine: int, mid_voxel: float, coarse_voxel: float, seed: int, source: str) -> Samples:
    p, n, area = sample_surface_area(mesh, n_fine, seed=seed, source=source)
    return Samples(
        Cloud(p, n), Cloud(*voxel_downsample(p, n, mid_voxel)), Cloud(*voxel_downsample(p, n, coarse_voxel)), area
    )


def without(samples: Samples, points: np.ndarray, radius: float) -> Samples:
    """The samples farther than `radius` from every one of `points` (same frame): a bite with
    one arch's band removed, leaving the band of the other arch."""
    tree = cKDTree(points)

    def keep(cloud: Cloud) -> Cloud:
        d, _ = tree.query(cloud.points, k=1, distance_upper_bound=radius)
        far = ~np.isfinite(d)
        return Cloud(cloud.points[far], cloud.normals[far])

    fine = keep(samples.fine)
    return Samples(
        fine,
        keep(samples.mid),
        keep(samples.coarse),
        samples.area_mm2 * len(fine.points) / max(len(samples.fine.points), 1),
    )


def occlusal_direction(cloud: Cloud, min_mean_normal: float = 0.05) -> np.ndarray:
    """Unit vector from an arch towards its antagonist (`geometry.occlusal_direction` on the
    arch's fine, area-weighted samples; the thinnest axis when their mean normal is shorter than
    `min_mean_normal`)."""
    points, normals = cloud
    return geometry.occlusal_direction(points, normals, min_mean_normal)


@dataclass
class Anchors:
    """Places on an arch's buccal surface where a bite's centre may sit, with the horizontal
    outward normal there (the direction the bite's mean normal must take)."""

    points: np.ndarray  # (k,3)
    outward: np.ndarray  # (k,3) unit, perpendicular to `up`
    up: np.ndarray  # (3,) the arch's occlusal direction


def buccal_anchors(
    arch: Samples, spacing_mm: float, smooth_points: int = 60, min_horizontal: float = 0.6, min_outward: float = 0.2
) -> Anchors:
    """Cells of `spacing_mm` on the arch whose smoothed normal is mostly horizontal and points
    away from the arch's centre (cheek side: molars and premolars face outwards, the palate and
    the lingual surfaces inwards). Normals are averaged over the `smooth_points` nearest coarse
    samples (a few mm): a bite's mean normal follows the whole buccal wall, not a cusp's slope."""
    up = occlusal_direction(arch.fine)
    pts, _ = voxel_downsample(*arch.fine, spacing_mm)
    coarse_pts, coarse_nrm = arch.coarse
    _, nb = cKDTree(coarse_pts).query(pts, k=min(smooth_points, coarse_pts.shape[0]))
    nrm = coarse_nrm[nb.reshape(len(pts), -1)].mean(1)
    centre = arch.fine.points.mean(0)
    flat = np.eye(3) - np.outer(up, up)
    n_h = nrm @ flat
    length = np.linalg.norm(n_h, axis=1)
    total = np.linalg.norm(nrm, axis=1).clip(1e-9)
    radial = (pts - centre) @ flat
    radial /= np.linalg.norm(radial, axis=1, keepdims=True).clip(1e-9)
    unit = n_h / length.clip(1e-9)[:, None]
    keep = (length > min_horizontal * total) & (np.einsum("ij,ij->i", unit, radial) > min_outward)
    return Anchors(pts[keep], unit[keep], up)


@dataclass
class BiteFrame:
    """A bite's mean buccal normal, long in-plane axis and keypoints on its surface."""

    normal: np.ndarray  # (3,)
    long_axis: np.ndarray  # (3,) unit, perpendicular to normal
    keypoints: np.ndarray  # (k,3) surface points across the bite's height


def bite_frame(bite: Cloud, offsets_mm: tuple[float, ...]) -> BiteFrame:
    """Keypoints: the surface points nearest the lines along the mean normal through the
    centroid shifted by each offset across the bite's height. Each band's middle must lie on its
    own arch, so offsets of about half a band's height (crown + a few mm of gingiva) give one
    keypoint per band that sits ON the arch it belongs to (the centroid floats lingually of a
    curved strip and sits between the bands)."""
    pts, nrm = bite
    normal = nrm.mean(0)
    normal /= max(float(np.linalg.norm(normal)), 1e-12)
    rel = pts - pts.mean(0)
    flat = np.eye(3) - np.outer(normal, normal)
    axis = np.linalg.eigh(flat @ (rel.T @ rel) @ flat)[1][:, 2]
    axis -= normal * (axis @ normal)
    axis /= np.linalg.norm(axis)
    across = np.cross(normal, axis)
    keys = []
    for off in offsets_mm:
        d = rel - off * across
        d -= np.outer(d @ normal, normal)
        keys.append(pts[int(np.argmin(np.einsum("ij,ij->i", d, d)))])
    return BiteFrame(normal, axis, np.stack(keys))


def anchor_poses(frame: BiteFrame, anchors: Anchors, tilts_deg: tuple[float, ...]) -> np.ndarray:
    """(anchors x 2 x tilts x keypoints, 4, 4) bite -> arch poses: the bite's normal onto each
    anchor's outward normal, its long axis along the arch (both signs, tilted by each angle about
    the normal), each keypoint onto the anchor."""
    b_y = np.cross(frame.normal, frame.long_axis)
    B = np.stack([frame.long_axis, b_y, frame.normal], axis=1)  # bite basis (columns)
    m = anchors.outward
    v = anchors.up[None] - m * (m @ anchors.up)[:, None]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    A = np.stack([np.cross(v, m), v, m], axis=2)  # (k,3,3) arch bases: along arch, occlusal, outward
    angles = np.radians([t + flip for flip in (0.0, 180.0) for t in tilts_deg])
    c, s = np.cos(angles), np.sin(angles)
    Rz = np.zeros((len(angles), 3, 3))
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1.0
    R = np.einsum("kij,ajl,ml->kaim", A, Rz, B)  # (k, angles, 3, 3) = A Rz B^T
    t = anchors.points[:, None, None, :] - np.einsum("kaij,pj->kapi", R, frame.keypoints)
    T = np.zeros(R.shape[:2] + (len(frame.keypoints), 4, 4))
    T[..., :3, :3] = R[:, :, None]
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T.reshape(-1, 4, 4)
