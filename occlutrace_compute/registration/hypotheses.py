"""Starting poses for the global search: surface axes x rotations, FPFH + RANSAC, landmarks.

No single source is reliable at any rotation and 35-100 % overlap: axes fail when partial
overlap shifts the centroid and principal directions, features fail on smooth or repetitive
patches. So every source contributes a few poses and the batched ICP + scoring decides.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.features import mutual_nearest
from occlutrace_compute.registration.geometry import occlusal_direction, rotation_angle_deg


def kabsch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares rigid transforms T_dst_src (...,4,4) taking src (...,N,3) onto dst (...,N,3)."""
    cs, cd = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)
    return rigid_from_covariance((src - cs).transpose(-1, -2) @ (dst - cd), cs, cd)


def rigid_from_covariance(H: torch.Tensor, cs: torch.Tensor, cd: torch.Tensor) -> torch.Tensor:
    """T_dst_src (...,4,4) from the cross-covariance H (...,3,3) of centred src and dst rows and
    their centroids cs, cd (...,1,3): the Kabsch rotation (no reflection) and the shift that
    takes cs onto cd (`kabsch`, `batched.ransac.weighted_kabsch`)."""
    U, _, Vt = torch.linalg.svd(H)
    d = torch.sign(torch.linalg.det(Vt.transpose(-1, -2) @ U.transpose(-1, -2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = Vt.transpose(-1, -2) @ D @ U.transpose(-1, -2)
    T = torch.zeros(*H.shape[:-2], 4, 4, dtype=H.dtype, device=H.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = cd[..., 0, :] - (R @ cs[..., 0, :, None])[..., 0]
    T[..., 3, 3] = 1
    return T


def _frame(points: np.ndarray, normals: np.ndarray, min_mean_normal: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and a right-handed frame whose z is the scan's occlusal direction (its mean
    surface normal; the thinnest principal axis when that is shorter than `min_mean_normal`, on
    these coarse voxel normals). x is the major in-plane principal direction.
    """
    c = points.mean(0)
    cov = np.cov((points - c).T)
    z = occlusal_direction(points, normals, min_mean_normal, scatter=cov)
    P = np.eye(3) - np.outer(z, z)
    x = np.linalg.eigh(P @ cov @ P)[1][:, 2]
    x = x - z * (x @ z)
    x /= np.linalg.norm(x)
    return c, np.stack([x, np.cross(z, x), z], axis=1)


def anchor_centroids(fix_pts: np.ndarray, n_moving: int, n_anchors: int) -> np.ndarray:
    """Where the moving scan's centroid may sit on the fixed one under partial overlap.

    Around each of `n_anchors` spread-out fixed points, the centroid of the fixed patch holding
    as many coarse samples as the moving scan (same voxel size, so about the same area); plus
    the whole fixed centroid (full overlap)."""
    k = int(min(max(n_moving, 1), fix_pts.shape[0]))
    chosen = [0]
    d = np.linalg.norm(fix_pts - fix_pts[0], axis=1)
    for _ in range(n_anchors - 1):  # farthest point sampling
        chosen.append(int(np.argmax(d)))
        d = np.minimum(d, np.linalg.norm(fix_pts - fix_pts[chosen[-1]], axis=1))
    # k nearest of each anchor by partial sort of one small distance matrix (a tree query for
    # thousands of neighbours of a dozen points costs 20x more)
    d2 = ((fix_pts[chosen][:, None, :] - fix_pts[None]) ** 2).sum(-1)
    nb = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < fix_pts.shape[0] else np.broadcast_to(np.arange(k), d2.shape)
    return np.concatenate([fix_pts.mean(0, keepdims=True), fix_pts[nb].mean(1)])


def axis_hypotheses(
    mov_pts: np.ndarray,
    mov_nrm: np.ndarray,
    fix_pts: np.ndarray,
    fix_nrm: np.ndarray,
    n_angles: int,
    anchors: np.ndarray,
) -> np.ndarray:
    """(2 x n_angles x len(anchors), 4, 4) poses T_fixed_moving: surface frames matched, turned
    about the occlusal axis (both signs of it), the moving centroid put on each anchor (anchors
    in the fixed frame). Time and memory O(n_angles x len(anchors)) after the two frames."""
    centre_moving, R_moving_surface = _frame(mov_pts, mov_nrm)
    _, R_fixed_surface = _frame(fix_pts, fix_nrm)
    # All (flip, angle) rotations at once, then every anchor: O(n_angles x anchors) poses, built
    # as arrays (3,120 np.eye calls and item writes cost ~3 ms a pair), same order as nested loops.
    a = 2 * np.pi * np.arange(n_angles) / n_angles
    Rz = np.zeros((n_angles, 3, 3))
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a), 1.0
    flips = np.stack([R_moving_surface @ np.diag([1.0, f, f]) for f in (1.0, -1.0)])  # flip z (and y: right-handed)
    R_fixed_moving = (R_fixed_surface @ Rz[None] @ flips.transpose(0, 2, 1)[:, None]).reshape(-1, 3, 3)
    out = np.zeros((R_fixed_moving.shape[0], len(anchors), 4, 4))
    out[..., :3, :3] = R_fixed_moving[:, None]
    out[..., :3, 3] = anchors[None] - (R_fixed_moving @ centre_moving)[:, None]
    out[..., 3, 3] = 1.0
    return out.reshape(-1, 4, 4)


def _draw(allowed: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` indices drawn uniformly, with replacement, among the True rows of `allowed` (P,)."""
    rows = allowed.nonzero()[:, 0]
    if rows.numel() == 0:
        rows = torch.zeros(1, dtype=torch.int64, device=allowed.device)
    return rows[torch.randint(rows.numel(), (n,), generator=generator, device=allowed.device)]


def _consistent(
    s: torch.Tensor, d: torch.Tensor, ns: torch.Tensor, nd: torch.Tensor, min_edge_mm: float, normal_tol: float
) -> torch.Tensor:
    """(B,M) whether each triplet of correspondences (B,M,3,3) can be one rigid motion: its edge
    lengths agree within 10 % and so do the point-pair invariants of its normals (cosines between
    the two normals and of each with the edge). Under heavy change only ~1 in 1000 random triplets
    is all correct; these cheap tests discard most wrong ones before any pose is scored."""
    edges = ((0, 1), (1, 2), (0, 2))
    ok = torch.ones(s.shape[:2], dtype=torch.bool, device=s.device)
    for i, j in edges:
        ls, ld = (s[:, :, j] - s[:, :, i]).norm(dim=-1), (d[:, :, j] - d[:, :, i]).norm(dim=-1)
        ok &= (ls > min_edge_mm) & (ld > 0.9 * ls) & (ld < ls / 0.9)
    keep = ok.nonzero(as_tuple=True)  # few survive the lengths: test the normals on those only
    s, d, ns, nd = s[keep], d[keep], ns[keep], nd[keep]
    agree = torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
    for i, j in edges:
        es, ed = s[:, j] - s[:, i], d[:, j] - d[:, i]
        es, ed = es / es.norm(dim=-1, keepdim=True), ed / ed.norm(dim=-1, keepdim=True)
        for u_s, v_s, u_d, v_d in (
            (ns[:, i], ns[:, j], nd[:, i], nd[:, j]),
            (ns[:, i], es, nd[:, i], ed),
            (ns[:, j], es, nd[:, j], ed),
        ):
            agree &= ((u_s * v_s).sum(-1) - (u_d * v_d).sum(-1)).abs() < normal_tol
    ok[keep] = agree
    return ok


def ransac_hypotheses(
    moving: Clouds,
    fixed: Clouds,
    feat_m: torch.Tensor,
    feat_f: torch.Tensor,
    trials: int,
    keep: int,
    inlier_mm: float,
    min_edge_mm: float,
    seed: int,
    max_eval: int = 500,
    normal_tol: float = 0.35,
) -> list[np.ndarray]:
    """Per pair, up to `keep` distinct poses T_fixed_moving (k,4,4) from random triplets of
    feature correspondences.

    Drawing a triplet costs next to nothing, scoring its pose a pass over the cloud: so many
    triplets are drawn and only the (at most `max_eval`) consistent ones are scored."""
    b = moving.points.shape[0]
    dev = moving.points.device
    fwd, back = mutual_nearest(feat_m, feat_f, moving.mask, fixed.mask)
    use, src_all, dst_all = feature_matches(moving, fixed, feat_m, fwd, back)
    # One generator per pair, so a pair draws the same triplets alone or inside any batch.
    pick = torch.stack([_draw(use[i], 3 * trials, torch.Generator(device=dev).manual_seed(seed)) for i in range(b)])
    triplets = triplet_poses(
        moving, fixed, fwd, dst_all, use, pick.view(b, trials, 3), inlier_mm, min_edge_mm, normal_tol, max_eval
    )
    if triplets is None:
        return [np.zeros((0, 4, 4)) for _ in range(b)]
    T_fixed_moving, counts = triplets
    out = []
    for p in range(b):
        c = counts[p].cpu().numpy()
        poses = T_fixed_moving[p].cpu().numpy()
        src, dst = src_all[p, use[p]].cpu().numpy(), dst_all[p, use[p]].cpu().numpy()
        centre = src_all[p, moving.mask[p]].mean(0).cpu().numpy()
        proposed: list[np.ndarray] = []
        chosen: list[np.ndarray] = []
        for i in np.argsort(-c, kind="stable"):
            if c[i] < 3 or len(proposed) >= keep:
                break
            if all(not same_pose(poses[i], q, centre) for q in proposed):
                proposed.append(poses[i])
                refitted = _refit(poses[i], src, dst, inlier_mm)
                if all(not same_pose(refitted, q, centre) for q in chosen):  # refits of near poses often coincide
                    chosen.append(refitted)
        out.append(np.stack(chosen) if chosen else np.zeros((0, 4, 4)))
    return out


def feature_matches(
    moving: Clouds, fixed: Clouds, feat_m: torch.Tensor, fwd: torch.Tensor, back: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The correspondences triplets are drawn from: which moving samples to use (B,P) (the
    mutual nearest descriptor matches where a pair has at least 30, else every sample with a
    descriptor), the moving samples (B,P,3) and their matches on the fixed cloud (B,P,3), from
    `fwd` (B,P) / `back` (B,R), the nearest descriptor indices each way."""
    dev = moving.points.device
    bi = torch.arange(moving.points.shape[0], device=dev)[:, None]
    has_feat = (feat_m.abs().sum(-1) > 0) & moving.mask
    mutual = has_feat & (back[bi, fwd] == torch.arange(fwd.shape[1], device=dev)[None])
    use = torch.where((mutual.sum(1, keepdim=True) >= 30), mutual, has_feat)
    return use, moving.points, fixed.points[bi, fwd]


def triplet_poses(
    moving: Clouds,
    fixed: Clouds,
    fwd: torch.Tensor,
    dst_all: torch.Tensor,
    use: torch.Tensor,
    pick: torch.Tensor,
    inlier_mm: float,
    min_edge_mm: float,
    normal_tol: float,
    max_eval: int,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The poses of drawn triplets (`pick` (B,M,3) moving rows, matched by `fwd` to `dst_all`
    (B,P,3), `feature_matches`') and their
    inlier counts among the `use` rows: the (at most `max_eval`) consistent triplets first, as
    T_fixed_moving (B,E,4,4) and counts (B,E) (0 for an inconsistent one); None when no pair has
    a consistent triplet."""
    bi = torch.arange(moving.points.shape[0], device=moving.points.device)[:, None]
    src_all = moving.points
    s = src_all[bi[..., None], pick]  # (B,M,3,3)
    d = dst_all[bi[..., None], pick]
    ok = _consistent(
        s, d, moving.normals[bi[..., None], pick], fixed.normals[bi, fwd][bi[..., None], pick], min_edge_mm, normal_tol
    )
    n_eval = min(max_eval, int(ok.sum(1).max()))
    if n_eval == 0:
        return None
    order = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)[:, :n_eval]  # consistent triplets first
    T_fixed_moving = kabsch(s[bi, order], d[bi, order])  # (B,E,4,4): moving samples onto their fixed matches
    counts = _inlier_counts(T_fixed_moving, src_all, dst_all, use, inlier_mm)
    return T_fixed_moving, torch.where(ok[bi, order], counts, torch.zeros_like(counts))


def _inlier_counts(
    T: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, use: torch.Tensor, inlier_mm: float
) -> torch.Tensor:
    """(B,E) correspondences each pose T_dst_src (B,E,4,4) brings within `inlier_mm`, over the `use` rows.

    The used rows are packed first (often a third of all), and all poses' rotations are applied
    as one matrix product (B, E*3, 3) @ (B, 3, U) instead of E small batched ones."""
    b, e = T.shape[:2]
    counts = torch.zeros(b, e, dtype=torch.int64, device=T.device)
    u = int(use.sum(1).max())
    if u == 0:
        return counts
    rows = torch.argsort((~use).to(torch.int8), dim=1, stable=True)[:, :u]
    bi = torch.arange(b, device=T.device)[:, None]
    real = use[bi, rows]  # (B,U)
    s, d = src[bi, rows].float(), dst[bi, rows].float()
    Tf = T.float()
    step = max(1, 2_000_000 // (3 * u))
    for a in range(0, e, step):
        Tc = Tf[:, a : a + step]
        moved = (Tc[..., :3, :3].reshape(b, -1, 3) @ s.transpose(1, 2)).view(b, Tc.shape[1], 3, u)
        diff = moved + Tc[..., :3, 3, None] - d.transpose(1, 2)[:, None]
        close = (diff * diff).sum(2) < inlier_mm * inlier_mm
        counts[:, a : a + step] = (close & real[:, None]).sum(-1)
    return counts


def _refit(T: np.ndarray, src: np.ndarray, dst: np.ndarray, inlier_mm: float, rounds: int = 2) -> np.ndarray:
    """The pose T_dst_src fitted to all its inlier correspondences src -> dst (n,3), not just the triplet that proposed it:
    a triplet's pose can be degrees off, and under heavy change the true pose's ICP basin is
    narrow, so a start that close to the truth decides whether the search finds it at all."""
    for _ in range(rounds):
        close = np.linalg.norm(src @ T[:3, :3].T + T[:3, 3] - dst, axis=1) < inlier_mm
        if close.sum() < 3:
            break
        T = _kabsch_np(src[close], dst[close])
    return T


def _kabsch_np(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """`kabsch` of one set of pairs src -> dst (n,3) in numpy: the torch call's per-op overhead
    was most of a refit's time (8 refits a pair). Time O(n), memory O(n)."""
    cs, cd = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (dst - cd))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = cd - R @ cs
    return T


def same_pose(
    T1_fixed_moving: np.ndarray,
    T2_fixed_moving: np.ndarray,
    centre_moving: np.ndarray,
    rot_deg: float = 2.0,
    trans_mm: float = 1.0,
) -> bool:
    """Whether two poses of one moving scan are the same solution (distinctness test for hypotheses).

    Translation is compared where both poses put `centre_moving` (the moving scan's centroid), not as
    raw translation vectors, which depend on where the scan lies in its file's frame (90 mm off
    its origin, 0.6 deg moved them 1 mm). Under heavy change the true pose and the rival the
    changed anatomy pulls towards lie ~1 mm and 3-4 deg apart: a wider angle merged them, and
    the pruning kept the better-scoring rival only."""
    a, b = T1_fixed_moving, T2_fixed_moving
    angle = rotation_angle_deg(a, b)
    shift = (a[:3, :3] - b[:3, :3]) @ centre_moving + a[:3, 3] - b[:3, 3]
    return angle < rot_deg and float(np.linalg.norm(shift)) < trans_mm


def around(
    T_fixed_moving: np.ndarray, centre_moving: np.ndarray, n: int, rot_deg: float, trans_mm: float, seed: int
) -> np.ndarray:
    """(n+1, 4, 4) poses T_fixed_moving: the given one and n random rigid steps from it, each
    taken in the MOVING frame (applied on the right: T_fixed_moving @ step_in_moving) as a
    rotation about `centre_moving` (the moving scan's centroid, so rotating does not also swing
    the scan away) with normal angles of sigma `rot_deg` and a shift of sigma `trans_mm` per axis."""
    R, shift = random_steps(n, rot_deg, trans_mm, seed)
    steps_in_moving = np.tile(np.eye(4), (n + 1, 1, 1))
    steps_in_moving[1:, :3, :3] = R
    steps_in_moving[1:, :3, 3] = centre_moving - R @ centre_moving + shift
    return T_fixed_moving @ steps_in_moving


def random_steps(n: int, rot_deg: float, trans_mm: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`around`'s draws: rotations (n,3,3) of normal rotation vectors (sigma `rot_deg`) and shifts
    (n,3) (sigma `trans_mm` per axis), from `seed` (`batched.engine.around` takes the same)."""
    # imported here: scipy.spatial costs ~0.37 s of imports, on the critical path of `align`'s
    # registration process (jobs/registrar.py), and only this local search needs it
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    R = Rotation.from_rotvec(rng.normal(0.0, math.radians(rot_deg), (n, 3))).as_matrix()
    return R, rng.normal(0.0, trans_mm, (n, 3))


def landmark_pose(landmarks) -> np.ndarray:
    """Pose T_fixed_moving (4,4) from caller landmarks: (moving_points (k,3), fixed_points (k,3)),
    k >= 3, not collinear."""
    try:
        mov, fix = (np.asarray(x, dtype=np.float64) for x in landmarks)
    except (TypeError, ValueError) as exc:
        raise InputRejected("landmarks", f"expected (moving_points, fixed_points): {exc}") from None
    if mov.ndim != 2 or mov.shape[1] != 3 or mov.shape != fix.shape:
        raise InputRejected("landmarks", f"expected two (k,3) arrays of equal shape, got {mov.shape} and {fix.shape}")
    if mov.shape[0] < 3:
        raise InputRejected("landmarks", f"need at least 3 point pairs, got {mov.shape[0]}")
    if not (np.isfinite(mov).all() and np.isfinite(fix).all()):
        raise InputRejected("landmarks", "coordinates contain NaN or infinite values")
    sv = np.linalg.svd(mov - mov.mean(0), compute_uv=False)
    if sv[1] < 1e-3 * max(sv[0], 1e-12) or sv[0] < 1e-6:
        raise InputRejected("landmarks", "moving landmarks are collinear or coincident; the pose is undefined")
    return kabsch(torch.from_numpy(mov), torch.from_numpy(fix)).numpy()
