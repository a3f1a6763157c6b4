"""A synthetic dental arch as a continuous surface, and its sampling into an open triangle mesh.

Construction: the surface is swept along the arch curve. At arc length s the cross-section (in
the plane spanned by the buccal normal u and the occlusal direction w) is a U-shaped profile:
lingual gingiva from the open lower border up to the gingival margin, the crown's cervical neck,
the crown top (a superellipse with per-tooth occlusal topography: cusps, fossae, pits, grooves),
the buccal neck and the buccal gingiva down to the border. Every parameter is a continuous
function of s (`columns`), so any sampling (spacing, phase) of the same model lies on the same
surface: that is what makes the rescans of a pair case independent samplings of one geometry.

Frame of every arch (canonical = the occlusion frame): x = patient's right, y = anterior,
z = superior, mm. The upper arch hangs above z ~ 0 with crowns pointing down; the lower arch sits
below in occlusion with it (`occlusion.py` fits it), so `make_arch("upper", s)` and
`make_arch("lower", s)` are already in occlusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter1d

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.synth.curve import ArchCurve, upper_curve
from occlutrace_compute.synth.teeth import Layout, tooth_rows

Jaw = Literal["upper", "lower"]

# fine samples per profile segment: lingual gum, lingual neck, crown top (side, middle, side), ...
_N_GUM, _N_NECK, _N_SIDE, _N_MID = 70, 10, 36, 240
_FINE_STEP_MM = 0.04  # uniform resampling step before rounding the profile's creases
_ROUND_MM = 0.2  # Gaussian rounding of those creases
SEG_GUM_L, SEG_NECK_L, SEG_TOP, SEG_NECK_B, SEG_GUM_B = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Spee:
    """The curve of Spee: the occlusal plane sags by up to depth_mm around the premolars
    (y = y_low) and rises toward the incisors and the molars. Both arches of a seed share it as
    the same vertical offset at each (x, y), so it leaves every vertical gap between them, and
    so the occlusion, unchanged."""

    depth_mm: float
    y_low: float
    length: float

    def at(self, xy: np.ndarray) -> np.ndarray:
        return self.depth_mm * ((xy[..., 1] - self.y_low) / self.length) ** 2


@dataclass
class ArchModel:
    """Everything that defines one arch's surface; `sample` turns it into a mesh."""

    jaw: Jaw
    curve: ArchCurve
    layout: Layout
    gum_buccal: float  # outward extent of the buccal gingiva below the margin (mm)
    gum_lingual: float
    bottom_buccal: float  # level w of the open lower border (tooth-up frame)
    bottom_lingual: float
    lift: np.ndarray  # (K,) per-slot shift along w fitted for occlusion (zeros for the upper)
    clearance: np.ndarray  # (K,) occlusal clearance kept to the opposing arch (negative: contact)
    spee: Spee
    opposing: ArchModel | None = None  # the upper, for a lower arch

    @property
    def z_sign(self) -> float:
        """w (toward the opposing arch) as z: down for the upper, up for the lower."""
        return -1.0 if self.jaw == "upper" else 1.0

    @property
    def s_range(self) -> tuple[float, float]:
        return float(self.layout.boundary[0]), float(self.layout.boundary[-1])

    def with_layout(self, layout: Layout) -> ArchModel:
        return ArchModel(
            self.jaw,
            self.curve,
            layout,
            self.gum_buccal,
            self.gum_lingual,
            self.bottom_buccal,
            self.bottom_lingual,
            self.lift,
            self.clearance,
            self.spee,
            self.opposing,
        )


@dataclass
class Columns:
    """Cross-section parameters at arc lengths s (all arrays of shape s.shape)."""

    s: np.ndarray
    slot: np.ndarray
    a: np.ndarray  # position in the slot: -1 .. +1 from boundary to boundary (0 = centre)
    b: np.ndarray  # crown half width at the height of contour
    top: np.ndarray  # crown top level (before topography)
    contour: np.ndarray  # level of the height of contour (superellipse centre)
    margin: np.ndarray  # gingival margin level
    p: np.ndarray  # superellipse exponent
    lift: np.ndarray
    shift: np.ndarray  # buccolingual offset of the whole cross-section
    torque: np.ndarray  # shear du/dw about the gingival margin
    gum_b: np.ndarray
    gum_l: np.ndarray
    xy: np.ndarray  # (..., 2)
    normal: np.ndarray  # (..., 2)


def _superellipse(x: np.ndarray, m: np.ndarray | float) -> np.ndarray:
    """(1 - x^m)^(1/m) on [0, 1]: the crown's cross-section; m large = boxy."""
    x = np.clip(x, 0.0, 1.0)
    return np.clip(1.0 - x**m, 0.0, 1.0) ** (1.0 / m)


def _bump(x: np.ndarray, m: np.ndarray | float) -> np.ndarray:
    """1 at x = 0 falling to 0 at x = 1 with zero slope at both ends: (1 - x^m)^2; m large =
    flat top, steep flanks. The zero end slope makes every blended parameter C1 across the
    contacts, so grids of different phase sample the same surface closely."""
    x = np.clip(x, 0.0, 1.0)
    return (1.0 - x**m) ** 2


def _smin(a: np.ndarray, b: np.ndarray, k: float = 0.1) -> np.ndarray:
    """Smooth minimum (log-sum-exp, k mm wide), so clamped parameters stay smooth."""
    return -k * np.logaddexp(-a / k, -b / k)


def _blend(c: np.ndarray, e: np.ndarray, slot: np.ndarray, a: np.ndarray, m: np.ndarray | float) -> np.ndarray:
    edge = np.where(a < 0, e[slot], e[slot + 1])
    return edge + (c[slot] - edge) * _bump(np.abs(a), m)


def _mid(c: np.ndarray) -> np.ndarray:
    """Contact values halfway between neighbouring slot values."""
    return np.concatenate([[c[0]], 0.5 * (c[1:] + c[:-1]), [c[-1]]])


def columns(model: ArchModel, s: np.ndarray) -> Columns:
    lay = model.layout
    s = np.asarray(s, dtype=np.float64)
    slot = np.clip(np.searchsorted(lay.boundary, s, side="right") - 1, 0, len(lay.center) - 1)
    a = np.clip((s - lay.center[slot]) / lay.half[slot], -1.0, 1.0)
    b = _blend(lay.c_b, lay.e_b, slot, a, lay.roundness[slot])
    top = _blend(lay.c_top, lay.e_top, slot, a, 8.0)
    contour = _smin(_blend(lay.c_contour, lay.e_contour, slot, a, 2.0), top - 0.4)
    margin = _smin(_blend(lay.c_margin, lay.e_margin, slot, a, 2.0), contour - 0.3)
    p = _blend(lay.c_p, lay.e_p, slot, a, 2.0)
    lift = _blend(model.lift, _mid(model.lift), slot, a, 8.0)
    shift = _blend(lay.shift, _mid(lay.shift), slot, a, 8.0)
    torque = _blend(lay.torque, _mid(lay.torque), slot, a, 2.0)
    root = 0.75 + 0.25 * _bump(np.abs(a), 2.0)  # gum bulges over each root
    xy, _, normal = model.curve.at(s)
    return Columns(
        s,
        slot,
        a,
        b,
        top,
        contour,
        margin,
        p,
        lift,
        shift,
        torque,
        model.gum_buccal * root,
        model.gum_lingual * root,
        xy,
        normal,
    )


def topography(model: ArchModel, col: Columns, u: np.ndarray) -> np.ndarray:
    """Occlusal relief (mm along w) at cross-section offsets u, shape (N, P) for N columns."""
    lay = model.layout
    feats = lay.features[col.slot]  # (N, F, 5)
    m = (-col.a * lay.mesial_sign[col.slot])[:, None]  # -1 mesial .. +1 distal
    dx = (m - feats[:, :, 0]) * lay.half[col.slot][:, None] / feats[:, :, 3]
    along = feats[:, :, 2] * np.exp(-0.5 * dx * dx)  # separable Gaussians: (N, F)
    du = u[:, :, None] - (feats[:, :, 1] * col.b[:, None])[:, None, :]
    du /= feats[:, None, :, 4]
    du *= du
    du *= -0.5
    np.exp(du, out=du)
    g = np.matmul(du, along[:, :, None])[:, :, 0]
    taper = lay.topo_scale[col.slot] * _bump(np.abs(col.a), 8.0)
    return g * taper[:, None]


def crown_top(model: ArchModel, col: Columns, u: np.ndarray) -> np.ndarray:
    """Crown top level w at offsets u (|u| <= b): superellipse plus topography."""
    r = np.clip(np.abs(u) / col.b[..., None], 0.0, 1.0)
    shape = _superellipse(r, col.p[..., None])
    return col.contour[..., None] + (col.top - col.contour)[..., None] * shape + topography(model, col, u) * shape


@dataclass
class Profiles:
    """Fine polyline of each column's cross-section (u, w) and its segment ids."""

    u: np.ndarray  # (N, F)
    w: np.ndarray  # (N, F)
    seg: np.ndarray  # (F,)
    margin_idx: tuple[int, int]  # fine indices of the lingual and buccal margin points


def profiles(model: ArchModel, col: Columns) -> Profiles:
    n = col.s.shape[0]
    tau = np.linspace(0.0, 1.0, _N_GUM)[None, :]
    bneck = (0.86 * col.b)[:, None]
    margin = col.margin[:, None]
    gum_u_l = -(bneck + col.gum_l[:, None] * (1.0 - (1.0 - tau) ** 2))
    gum_w_l = margin - (margin - model.bottom_lingual) * tau
    gum_u_b = bneck + col.gum_b[:, None] * (1.0 - (1.0 - tau) ** 2)
    gum_w_b = margin - (margin - model.bottom_buccal) * tau
    lam = np.linspace(0.0, 1.0, _N_NECK + 2)[1:-1][None, :]
    neck_u = bneck + (col.b[:, None] - bneck) * lam
    neck_w = margin + (col.contour[:, None] - margin) * lam
    # crown top: uniform in u in the middle, uniform in height near the steep sides
    r_mid = np.broadcast_to(np.linspace(-0.97, 0.97, _N_MID), (n, _N_MID))
    v_max = _superellipse(np.full(n, 0.97), col.p)[:, None]
    v = np.linspace(0.0, 1.0, _N_SIDE, endpoint=False)[None, :] * v_max
    r_side = _superellipse(v, col.p[:, None])
    r = np.concatenate([-r_side, r_mid, r_side[:, ::-1]], axis=1)
    top_u = r * col.b[:, None]
    top_w = crown_top(model, col, top_u)
    u = np.concatenate([gum_u_l[:, ::-1], -neck_u, top_u, neck_u[:, ::-1], gum_u_b], axis=1)
    w = np.concatenate([gum_w_l[:, ::-1], neck_w, top_w, neck_w[:, ::-1], gum_w_b], axis=1)
    seg = np.concatenate(
        [
            np.full(_N_GUM, SEG_GUM_L),
            np.full(_N_NECK, SEG_NECK_L),
            np.full(top_u.shape[1], SEG_TOP),
            np.full(_N_NECK, SEG_NECK_B),
            np.full(_N_GUM, SEG_GUM_B),
        ]
    )
    m_l = _N_GUM - 1
    m_b = u.shape[1] - _N_GUM
    u = u + col.shift[:, None] + col.torque[:, None] * (w - margin)
    w = w + col.lift[:, None]
    if model.opposing is not None:
        w = _clamp_to_opposing(model, col, u, w)
    return Profiles(u, w, seg, (m_l, m_b))


def _clamp_to_opposing(model: ArchModel, col: Columns, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Keep the clearance to the opposing arch's crown tops along z (lower arch only).

    Both crown tops are height fields over the occlusal plane (the upper's seen from below),
    so clamping along vertical lines rules out interpenetration; where the fitted lift pushed a
    cusp into the opposing fossa the clamp leaves a contact facet parallel to it.
    """
    rows, cols_, z_self, z_opp, ok = opposing_levels(model, col, u, w)
    limit = z_opp - model.clearance[col.slot[rows]]
    clamped = np.where(ok, np.minimum(z_self, limit), z_self)
    out = w.copy()
    out[rows, cols_] = model.z_sign * clamped
    return out


def opposing_levels(
    model: ArchModel, col: Columns, u: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the occlusal-third profile points of a lower arch: their z and the z of the opposing
    crown top on the same vertical line (ok = that line meets the opposing crown top)."""
    opp = model.opposing
    assert opp is not None
    lowest = opp.z_sign * float(np.max(opp.layout.c_top + opp.lift) + 2.0)  # deepest opposing cusp
    rows, cols_ = np.nonzero(model.z_sign * w > lowest - 0.5)  # only what reaches that level
    xy = col.xy[rows] + u[rows, cols_][:, None] * col.normal[rows]
    s_o, u_o = opp.curve.project(xy)
    lo, hi = opp.s_range
    oc = columns(opp, s_o)
    u_o = u_o - oc.shift  # the opposing (upper) arch has no torque: shift is all to undo
    ok = (s_o > lo) & (s_o < hi) & (np.abs(u_o) < oc.b)
    w_o = crown_top(opp, oc, u_o[:, None])[:, 0] + oc.lift
    return rows, cols_, model.z_sign * w[rows, cols_], opp.z_sign * w_o, ok


@dataclass
class ArchSample:
    """One sampling of an arch model as a grid mesh, with per-vertex bookkeeping."""

    vertices: np.ndarray  # (N, 3) canonical frame
    faces: np.ndarray
    tooth: np.ndarray  # FDI number, 0 for gingiva
    s: np.ndarray  # column arc length
    depth: np.ndarray  # signed arc distance from the gingival margin along the profile (+ crown)
    segment: np.ndarray
    u: np.ndarray  # cross-section offset from the crown centre line (+ buccal)
    grid_shape: tuple[int, int]

    @property
    def mesh(self) -> Mesh:
        return Mesh(self.vertices, self.faces)


def sample(
    model: ArchModel,
    spacing_mm: float,
    phase_s: float = 0.5,
    phase_t: float = 0.5,
    s_limits: tuple[float, float] | None = None,
    n_rows: int | None = None,
    s_columns: np.ndarray | None = None,
) -> ArchSample:
    """Sample the surface on a (s, t) grid: columns about every spacing on the surface along
    the arch (or at s_columns), rows at equal arc length along each cross-section (n_rows of
    them, by default as many as the spacing gives); the phases shift the grid (0..1)."""
    if s_columns is None:
        lo, hi = s_limits if s_limits is not None else model.s_range
        s_columns = column_positions(model, lo, hi, spacing_mm, phase_s)
    s = np.asarray(s_columns, dtype=np.float64)
    n_cols = len(s)
    col = columns(model, s)
    prof = profiles(model, col)
    # round the creases of the profile (gingival margin, facet borders) over ~0.1 mm, so that
    # grids of any phase sample one smooth surface: resample uniformly, then Gaussian-filter
    cum = _arc_length(prof.u, prof.w)
    margins = cum[:, list(prof.margin_idx)]
    n_fine = int(np.ceil(cum[:, -1].max() / _FINE_STEP_MM)) + 1
    fine_t = cum[:, -1:] * np.linspace(0.0, 1.0, n_fine)[None, :]
    (u_f, w_f), idx_f, frac_f = _resample(cum, fine_t, prof.u, prof.w)
    seg_f = np.where(frac_f < 0.5, prof.seg[idx_f], prof.seg[np.minimum(idx_f + 1, len(prof.seg) - 1)])
    sigma = _ROUND_MM / float(np.median(cum[:, -1] / (n_fine - 1)))
    u_f = gaussian_filter1d(u_f, sigma, axis=1, mode="nearest")
    w_f = gaussian_filter1d(w_f, sigma, axis=1, mode="nearest")
    cum_f = _arc_length(u_f, w_f)
    length = cum_f[:, -1]
    n_t = n_rows or max(8, int(round(float(np.median(length)) / spacing_mm)))
    t = length[:, None] * (np.arange(n_t)[None, :] + phase_t) / n_t
    (uu, ww), idx, frac = _resample(cum_f, t, u_f, w_f)
    row = np.repeat(np.arange(n_cols), n_t)
    uu, ww = uu.ravel(), ww.ravel()
    idx, frac = idx.ravel(), frac.ravel()
    seg = np.where(frac < 0.5, seg_f[row, idx], seg_f[row, np.minimum(idx + 1, n_fine - 1)])
    # margins at the same share of the (slightly shortened) smoothed profile
    scale = (length / cum[:, -1])[:, None]
    t_l, t_b = (margins[:, 0:1] * scale)[row, 0], (margins[:, 1:2] * scale)[row, 0]
    t_flat = t.ravel()
    depth = np.where(
        t_flat < t_l, t_flat - t_l, np.where(t_flat > t_b, t_b - t_flat, np.minimum(t_flat - t_l, t_b - t_flat))
    )
    xy = col.xy[row] + uu[:, None] * col.normal[row]
    verts = np.column_stack([xy, model.z_sign * ww + model.spee.at(xy)])
    fdi = model.layout.fdi[col.slot[row]]
    tooth = np.where((seg >= SEG_NECK_L) & (seg <= SEG_NECK_B), fdi, 0)
    faces = grid_faces(n_cols, n_t)
    faces = orient_faces(verts, faces, segment=seg, z_out=model.z_sign)
    return ArchSample(verts, faces, tooth.astype(np.int64), s[row], depth, seg.astype(np.int8), uu, (n_cols, n_t))


def column_positions(model: ArchModel, lo: float, hi: float, spacing_mm: float, phase: float) -> np.ndarray:
    """Column arc lengths spaced evenly on the surface rather than along the arch: where the
    crowns turn into a contact (width, height and margin change fast along s) columns come
    closer, so the embrasures are sampled as finely as the rest."""
    s = np.linspace(lo, hi, max(64, int((hi - lo) / 0.02)))
    col = columns(model, s)
    slope = np.max(np.abs(np.stack([np.gradient(q, s) for q in (col.b, col.top, col.margin)])), axis=0)
    metric = np.sqrt(1.0 + np.minimum(slope, 1.0) ** 2)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (metric[1:] + metric[:-1]) * np.diff(s))])
    n_cols = max(2, int(np.floor(cum[-1] / spacing_mm)))
    return np.interp((np.arange(n_cols) + phase) * cum[-1] / n_cols, cum, s)


def _arc_length(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    seg = np.hypot(np.diff(u, axis=1), np.diff(w, axis=1))
    return np.concatenate([np.zeros((u.shape[0], 1)), np.cumsum(seg, axis=1)], axis=1)


def _resample(cum: np.ndarray, t: np.ndarray, *values: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Row-wise linear interpolation of polylines (rows of values, arc lengths cum) at t."""
    n, f = cum.shape
    off = (np.arange(n) * (cum[:, -1].max() + 1.0))[:, None]
    idx = np.searchsorted((cum + off).ravel(), (t + off).ravel(), side="right") - 1
    row = np.repeat(np.arange(n), t.shape[1])
    idx = np.clip(idx - row * f, 0, f - 2)
    c0 = cum[row, idx]
    dl = cum[row, idx + 1] - c0
    frac = np.clip(np.where(dl > 0, (t.ravel() - c0) / np.where(dl > 0, dl, 1.0), 0.0), 0.0, 1.0)
    out = [(v[row, idx] * (1 - frac) + v[row, idx + 1] * frac).reshape(t.shape) for v in values]
    return out, idx.reshape(t.shape), frac.reshape(t.shape)


def grid_faces(n_cols: int, n_t: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(n_cols - 1), np.arange(n_t - 1), indexing="ij")
    v00 = (i * n_t + j).ravel()
    v10, v01 = v00 + n_t, v00 + 1
    v11 = v10 + 1
    return np.concatenate([np.stack([v00, v10, v11], 1), np.stack([v00, v11, v01], 1)]).astype(np.int64)


def orient_faces(verts: np.ndarray, faces: np.ndarray, segment: np.ndarray, z_out: float) -> np.ndarray:
    """Flip the winding so crown-top normals point out of the teeth (toward the opposing arch)."""
    top = np.all(segment[faces] == SEG_TOP, axis=1)
    tri = verts[faces[top]]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return faces if float(n[:, 2].sum()) * z_out >= 0 else faces[:, ::-1].copy()


@dataclass
class Arch:
    """A full arch in the canonical (occlusion) frame with per-vertex FDI labels."""

    jaw: Jaw
    mesh: Mesh
    tooth: np.ndarray
    arch_s: np.ndarray = field(repr=False)  # per-vertex arc length along the crown centre line
    depth: np.ndarray = field(repr=False)  # signed distance from the gingival margin (+ on crown)


def _new_model(jaw: Jaw, layout: Layout, curve: ArchCurve, spee: Spee, rng: np.random.Generator) -> ArchModel:
    k = len(layout.center)
    lowest_margin = float(layout.c_margin[1:-1].min())
    return ArchModel(
        jaw=jaw,
        curve=curve,
        layout=layout,
        gum_buccal=rng.uniform(1.6, 2.2),
        gum_lingual=rng.uniform(1.2, 1.8),
        bottom_buccal=lowest_margin - rng.uniform(5.5, 7.0),
        bottom_lingual=lowest_margin - rng.uniform(4.5, 6.0),
        lift=np.zeros(k),
        clearance=np.zeros(k),
        spee=spee,
    )


@lru_cache(maxsize=8)
def arch_models(seed: int) -> tuple[ArchModel, ArchModel]:
    """The upper and lower arch models of a seed, the lower fitted into occlusion (cached:
    callers must not mutate them; changes work on copies)."""
    from occlutrace_compute.synth.occlusion import fit_lower

    rng = np.random.default_rng([int(seed), 20261125])
    up_layout = tooth_rows("upper", rng)
    low_layout = tooth_rows("lower", rng)
    half = max(-up_layout.boundary[0], up_layout.boundary[-1]) + 2.0
    curve_u = upper_curve(rng, half)
    y_low = float(curve_u.at(np.array([25.0]))[0][0, 1])
    spee = Spee(rng.uniform(0.5, 1.2), y_low, 20.0)
    upper = _new_model("upper", up_layout, curve_u, spee, rng)
    # the lower crown line sits lingually: its buccal cusps under the upper central fossae,
    # its (proclined) incisors behind the upper ones
    d = 1.8 + 2.0 * (1.0 - np.clip((np.abs(curve_u.s) - 8.0) / 17.0, 0.0, 1.0))
    lower = _new_model("lower", low_layout, curve_u.offset(d), spee, rng)
    lower = fit_lower(upper, lower, rng)
    return upper, lower


def make_arch(jaw: Jaw, seed: int, spacing_mm: float = 0.15) -> Arch:
    """A full synthetic arch (open surface, canonical occlusion frame, mm)."""
    if jaw not in ("upper", "lower"):
        raise ValueError(f"jaw must be 'upper' or 'lower', got {jaw!r}")
    if not 0.02 <= spacing_mm <= 2.0:
        raise ValueError(f"spacing_mm must lie in [0.02, 2.0], got {spacing_mm}")
    upper, lower = arch_models(seed)
    smp = sample(upper if jaw == "upper" else lower, spacing_mm)
    return Arch(jaw, smp.mesh, smp.tooth, smp.s, smp.depth)
