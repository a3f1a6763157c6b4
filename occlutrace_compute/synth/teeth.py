"""Tooth catalogue and the per-seed layout of teeth along an arch.

Each arch is a row of "slots" along the arch curve: a gum-only tail at each distal end, then the
14 teeth (FDI 17..11, 21..27 upper; 47..41, 31..37 lower; right side first). A slot has a centre
value of every cross-section parameter and each boundary between slots has a contact value; a
column's parameters blend from the centre value to the nearer contact value (see `arch.py`), so
the surface is continuous across contacts and the crowns narrow and dip into embrasures there.

Occlusal features (cusps, fossae, pits, grooves) are anisotropic Gaussians on the crown top in
tooth coordinates: m = mesiodistal position as a fraction of the half width (-1 mesial, +1
distal), u = buccolingual position as a fraction of the crown's half width (+ buccal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per position 1..7 (central incisor .. second molar): mesiodistal width, buccolingual half
# width, crown height from the height of contour to the top, superellipse exponent of the
# cross-section (< 2 = wedge-shaped incisor edge, 4 = boxy molar), plan-view roundness exponent, and the
# crown-top level (mm, tooth-up frame: + toward the opposing arch; cusps add to it).
UPPER_WIDTH = np.array([8.6, 6.6, 7.6, 7.0, 6.6, 10.2, 9.2])
LOWER_WIDTH = np.array([5.2, 5.7, 6.6, 6.9, 7.0, 10.8, 10.0])
UPPER_HALF_BL = np.array([3.4, 3.0, 4.0, 4.6, 4.5, 5.6, 5.4])
LOWER_HALF_BL = np.array([2.9, 3.0, 3.6, 3.8, 4.0, 5.2, 5.0])
CROWN_HEIGHT = np.array([8.5, 7.5, 8.5, 6.5, 6.0, 5.3, 5.0])
EXPONENT = np.array([1.7, 1.7, 2.0, 3.2, 3.2, 4.0, 4.0])
PLAN_ROUNDNESS = np.array([5.0, 4.5, 3.5, 4.0, 4.0, 5.0, 5.0])
TOP_LEVEL = np.array([0.8, 0.5, 0.2, -0.8, -0.8, -0.9, -0.9])
KIND = ("incisor", "incisor", "canine", "premolar", "premolar", "molar", "molar")

# Feature rows: (m, u, amplitude mm, sigma along arch mm, sigma across mm).
_UPPER_MOLAR = [
    (-0.45, 0.55, 1.00, 1.6, 1.5),
    (0.45, 0.55, 0.85, 1.5, 1.4),  # mesio/disto-buccal cusps
    (-0.30, -0.50, 1.15, 1.9, 1.7),
    (0.55, -0.55, 0.70, 1.4, 1.3),  # mesio/disto-palatal cusps
    (0.05, -0.05, 0.30, 0.8, 2.2),  # oblique ridge
    (-0.05, 0.10, -0.55, 1.2, 1.0),
    (-0.65, 0.05, -0.35, 0.7, 0.7),
    (0.70, -0.05, -0.35, 0.7, 0.7),  # fossae
    (0.0, 0.05, -0.25, 3.5, 0.30),
    (0.0, 0.60, -0.30, 0.35, 1.6),  # central and buccal grooves
]
_LOWER_MOLAR = [
    (-0.55, 0.55, 0.90, 1.5, 1.4),
    (0.0, 0.60, 0.85, 1.5, 1.4),
    (0.62, 0.50, 0.60, 1.2, 1.2),  # buccal
    (-0.40, -0.55, 1.05, 1.7, 1.5),
    (0.40, -0.55, 0.95, 1.6, 1.5),  # lingual cusps
    (0.0, 0.0, -0.55, 1.3, 1.0),
    (-0.70, 0.0, -0.35, 0.7, 0.7),
    (0.72, 0.0, -0.35, 0.7, 0.7),  # fossae
    (0.0, 0.0, -0.25, 3.8, 0.30),
    (-0.28, 0.60, -0.25, 0.35, 1.5),
    (0.32, 0.60, -0.25, 0.35, 1.5),
    (0.0, -0.60, -0.25, 0.35, 1.5),  # grooves
]
_PREMOLAR = [
    (0.0, 0.50, 1.10, 1.5, 1.5),
    (0.0, -0.50, 0.80, 1.4, 1.4),  # buccal and lingual cusps
    (0.0, 0.0, -0.35, 2.5, 0.40),
    (-0.55, 0.0, -0.30, 0.6, 0.6),
    (0.55, 0.0, -0.30, 0.6, 0.6),
]
_CANINE = [(0.0, 0.10, 1.20, 1.6, 2.0), (0.0, -0.45, 0.30, 0.8, 1.5)]  # cusp tip, lingual ridge
_INCISOR = [
    (0.0, -0.45, -0.55, 1.8, 1.0),  # lingual fossa (shovel)
    (-0.55, -0.35, 0.20, 0.5, 1.2),
    (0.55, -0.35, 0.20, 0.5, 1.2),  # marginal ridges
    (-0.5, 0.0, 0.10, 0.6, 0.5),
    (0.0, 0.0, 0.12, 0.6, 0.5),
    (0.5, 0.0, 0.10, 0.6, 0.5),  # mamelons
]
N_FEATURES = 12


def _features(jaw: str, pos: int) -> list[tuple[float, float, float, float, float]]:
    kind = KIND[pos - 1]
    if kind == "molar":
        return _UPPER_MOLAR if jaw == "upper" else _LOWER_MOLAR
    if kind == "premolar":
        rows = list(_PREMOLAR)
        if jaw == "lower" and pos == 4:  # lower first premolar: small lingual cusp
            rows[1] = (0.0, -0.45, 0.35, 1.2, 1.2)
        return rows
    return _CANINE if kind == "canine" else _INCISOR


@dataclass
class Layout:
    """Slots along the arch (index k; tails are slots 0 and K-1) and their parameters.

    boundary[k], boundary[k+1] enclose slot k. For a tooth, centre = the middle; for a tail,
    centre = its outer end, so only half of the blend is used there.
    """

    boundary: np.ndarray  # (K+1,) arc length
    center: np.ndarray  # (K,)
    half: np.ndarray  # (K,)
    fdi: np.ndarray  # (K,) int, 0 for tails
    mesial_sign: np.ndarray  # (K,) +1 where mesial is +s, -1 where mesial is -s
    # centre values (K,) and contact values (K+1,) of the blended cross-section parameters
    c_b: np.ndarray
    e_b: np.ndarray
    c_top: np.ndarray
    e_top: np.ndarray
    c_margin: np.ndarray
    e_margin: np.ndarray
    c_contour: np.ndarray
    e_contour: np.ndarray
    c_p: np.ndarray
    e_p: np.ndarray
    roundness: np.ndarray  # (K,)
    features: np.ndarray  # (K, N_FEATURES, 5), amplitude 0 for padding
    topo_scale: np.ndarray  # (K,)
    shift: np.ndarray  # (K,) buccolingual offset of each tooth from the ideal arch (mm)
    torque: np.ndarray  # (K,) buccolingual inclination: du/dw (lower arch only, see arch.py)

    def copy(self) -> Layout:
        return Layout(**{k: np.array(v, copy=True) for k, v in self.__dict__.items()})


TAIL_MM = 3.0


def tooth_rows(jaw: str, rng: np.random.Generator) -> Layout:
    """Random but anatomical tooth sizes, levels and feature jitter for one arch."""
    width = (UPPER_WIDTH if jaw == "upper" else LOWER_WIDTH) * rng.uniform(0.94, 1.06, 7)
    half_bl = (UPPER_HALF_BL if jaw == "upper" else LOWER_HALF_BL) * rng.uniform(0.95, 1.05, 7)
    height = CROWN_HEIGHT + rng.uniform(-0.4, 0.4, 7)
    top = TOP_LEVEL + rng.uniform(-0.12, 0.12, 7)
    quadrant_right, quadrant_left = (1, 2) if jaw == "upper" else (4, 3)

    # right side distal -> mesial, then left side mesial -> distal
    order = [(quadrant_right, p) for p in range(7, 0, -1)] + [(quadrant_left, p) for p in range(1, 8)]
    k_teeth = len(order)
    widths = np.array([width[p - 1] for _, p in order])
    start = -widths[:7].sum()
    boundary_teeth = start + np.concatenate([[0.0], np.cumsum(widths)])
    boundary = np.concatenate([[boundary_teeth[0] - TAIL_MM], boundary_teeth, [boundary_teeth[-1] + TAIL_MM]])
    k = k_teeth + 2
    center = np.empty(k)
    half = np.empty(k)
    center[1:-1] = 0.5 * (boundary[1:-2] + boundary[2:-1])
    half[1:-1] = 0.5 * widths
    center[0], center[-1] = boundary[0], boundary[-1]
    half[0] = half[-1] = TAIL_MM
    fdi = np.zeros(k, dtype=np.int64)
    fdi[1:-1] = [10 * q + p for q, p in order]
    mesial_sign = np.where(center < 0, 1.0, -1.0)

    pos = np.array([0] + [p for _, p in order] + [0])
    tooth = pos > 0
    idx = np.clip(pos - 1, 0, 6)
    jitter = rng.uniform(0.97, 1.03, k)
    c_b = np.where(tooth, half_bl[idx] * jitter, 0.8)
    c_top = np.where(tooth, top[idx] + rng.uniform(-0.1, 0.1, k), 0.0)
    c_contour = c_top - np.where(tooth, height[idx], 0.0)
    c_margin = c_contour - np.where(tooth, rng.uniform(0.8, 1.3, k), 0.0)
    c_p = np.where(tooth, EXPONENT[idx], 2.0)
    roundness = np.where(tooth, PLAN_ROUNDNESS[idx], 2.0)

    # contacts between neighbours: narrow, lower than both marginal ridges, papilla below
    e_b = np.empty(k + 1)
    e_top = np.empty(k + 1)
    e_p = np.empty(k + 1)
    for i in range(1, k):
        a, b = i - 1, i
        e_b[i] = 0.38 * min(c_b[a] if tooth[a] else c_b[b], c_b[b] if tooth[b] else c_b[a])
        pa, pb = (c_p[a] if tooth[a] else c_p[b]), (c_p[b] if tooth[b] else c_p[a])
        e_p[i] = 0.5 * (pa + pb)
        ta, tb = (c_top[a] if tooth[a] else c_top[b]), (c_top[b] if tooth[b] else c_top[a])
        anterior = min(pos[a] or 9, pos[b] or 9) <= 3
        e_top[i] = min(ta, tb) - (1.7 if anterior else 1.1) - rng.uniform(0.0, 0.3)
    e_b[0], e_b[-1], e_top[0], e_top[-1], e_p[0], e_p[-1] = e_b[1], e_b[-2], e_top[1], e_top[-2], 2.0, 2.0
    e_margin = e_top - rng.uniform(2.3, 2.9, k + 1)  # papilla tip under each contact
    e_contour = e_margin + 0.4
    # tails: a low gum ridge continuing the distal papilla
    for t, e in ((0, 1), (k - 1, k - 1)):
        c_top[t] = e_margin[e] + 0.5
        c_contour[t] = e_margin[e] + 0.1
        c_margin[t] = e_margin[e] - 0.1

    features = np.zeros((k, N_FEATURES, 5))
    features[:, :, 3:] = 1.0  # padding rows: amplitude 0, unit sigmas
    for i in range(1, k - 1):
        rows = np.array(_features(jaw, int(pos[i])), dtype=np.float64)
        rows[:, 0] += rng.normal(0.0, 0.04, len(rows))
        rows[:, 1] += rng.normal(0.0, 0.03, len(rows))
        rows[:, 2] *= rng.uniform(0.8, 1.2, len(rows))
        features[i, : len(rows)] = rows
    return Layout(
        boundary=boundary,
        center=center,
        half=half,
        fdi=fdi,
        mesial_sign=mesial_sign,
        c_b=c_b,
        e_b=e_b,
        c_top=c_top,
        e_top=e_top,
        c_margin=c_margin,
        e_margin=e_margin,
        c_contour=c_contour,
        e_contour=e_contour,
        c_p=c_p,
        e_p=e_p,
        roundness=roundness,
        features=features,
        topo_scale=np.where(tooth, 1.0, 0.0),
        shift=np.where(tooth, np.clip(rng.normal(0.0, 0.2, k), -0.4, 0.4), 0.0),
        torque=_torque(jaw, pos, rng),
    )


def _torque(jaw: str, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crown inclination of the lower teeth (du/dw, + = crown tip buccal): proclined incisors,
    lingually inclined molars. The upper keeps upright crowns: its crown tops must stay height
    fields over the occlusal plane, which the lower's occlusion fit relies on."""
    if jaw == "upper":
        return np.zeros(len(pos))
    lo = np.array([0.0, 0.10, 0.10, 0.0, -0.08, -0.10, -0.16, -0.18])
    hi = np.array([0.0, 0.22, 0.22, 0.10, 0.02, -0.02, -0.08, -0.10])
    return rng.uniform(lo[pos], hi[pos])
