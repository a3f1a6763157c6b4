"""Colour ramps: fixed scales, clipping, grey for unmeasured, hard steps for contacts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from occlutrace_compute.analysis.colormap import BEYOND_ABOVE, BEYOND_BELOW, GREY, contact_ramp, deviation_ramp


def test_deviation_ramp_is_symmetric_with_distinct_beyond_colours_and_grey_for_nan():
    ramp = deviation_ramp(0.2)
    rgb = ramp.rgb(np.array([-0.5, -0.2, 0.0, 0.2, 0.5, np.nan]))
    np.testing.assert_allclose(rgb[0], BEYOND_BELOW)  # beyond the scale: its own colour, not the end's
    np.testing.assert_allclose(rgb[4], BEYOND_ABOVE)
    for a, b in ((rgb[0], rgb[1]), (rgb[4], rgb[3]), (rgb[0], rgb[5]), (rgb[4], rgb[5])):
        assert np.abs(a - b).max() > 0.2  # beyond != end of scale != no overlap
    np.testing.assert_allclose(rgb[5], GREY)
    assert rgb[2][1] > rgb[2][0] and rgb[2][1] > rgb[2][2]  # green at zero
    assert rgb[1][2] > rgb[1][0] and rgb[3][0] > rgb[3][2]  # blue below, red above
    rgba = ramp.rgba8(np.array([0.1, np.nan]))
    assert rgba.dtype == np.uint8 and rgba.shape == (2, 4) and (rgba[:, 3] == 255).all()
    cmap, norm = ramp.matplotlib()
    assert (norm.vmin, norm.vmax) == (-0.2, 0.2)
    np.testing.assert_allclose(cmap(norm(0.2))[:3], rgb[3], atol=1e-2)


def test_contact_ramp_steps_at_zero_and_threshold_and_greys_beyond_cutoff():
    ramp = contact_ramp(threshold_mm=0.1, cutoff_mm=0.5)
    below0, at0, below_t, at_t, far, beyond = ramp.rgb(np.array([-1e-9, 0.0, 0.1 - 1e-9, 0.1, 0.5, 0.6]))
    assert below0[0] > 0.9 and below0[1] < 0.2  # red: penetration
    assert at0[1] > 0.7 and at0[0] < 0.2  # green: contact
    assert below_t[1] > 0.8  # still contact just under the threshold
    assert at_t[2] > 0.9  # blue: open from the threshold on
    assert far[2] > 0.5 and far[0] < 0.1
    np.testing.assert_allclose(beyond, GREY)


@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_invalid_scales_are_refused(bad):
    with pytest.raises(ValueError):
        deviation_ramp(bad)
    with pytest.raises(ValueError):
        contact_ramp(threshold_mm=0.1, cutoff_mm=0.1 + bad - 0.1)


def test_tolerance_band_is_one_flat_colour_with_hard_edges():
    ramp = deviation_ramp(0.3, band_mm=0.1)
    inside = ramp.rgb(np.array([-0.1, -0.05, 0.0, 0.07, 0.1 - 1e-9]))
    assert np.ptp(inside, axis=0).max() == 0  # flat green
    assert inside[0][1] > inside[0][0] and inside[0][1] > inside[0][2]
    outside = ramp.rgb(np.array([-0.1 - 1e-9, 0.1 + 1e-9]))
    assert np.abs(outside - inside[:2]).max() > 0.3  # a hard step at the band's edges
    assert 0.0 in ramp.ticks and 0.1 in ramp.ticks and -0.1 in ramp.ticks
    with pytest.raises(ValueError):
        deviation_ramp(0.1, band_mm=0.1)


def _rgb_reference(ramp, values):
    """ColorRamp.rgb as first written: (N, 3) rows gathered by segment."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    xc = np.clip(np.where(finite, x, ramp.vmin), ramp.vmin, ramp.vmax)
    pos, cols = np.asarray(ramp.positions), np.asarray(ramp.colors)
    seg = np.clip(np.searchsorted(pos, xc, side="right") - 1, 0, len(pos) - 2)
    lo, hi = pos[seg], pos[seg + 1]
    t = np.divide(xc - lo, hi - lo, out=np.zeros_like(xc), where=hi > lo)
    out = cols[seg] + t[:, None] * (cols[seg + 1] - cols[seg])
    out[~finite] = GREY
    if ramp.grey_above:
        out[finite & (x > ramp.vmax)] = GREY
    if ramp.above is not None:
        out[finite & (x > ramp.vmax)] = ramp.above
    if ramp.below is not None:
        out[finite & (x < ramp.vmin)] = ramp.below
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["deviation", "band", "contact"]),
    st.floats(0.01, 5.0),
    st.integers(0, 2000),
    st.integers(0, 2**32 - 1),
)
def test_channel_columns_give_the_row_version_s_colours(kind, scale, n, seed):
    """rgb on per-channel columns and rgba8 written in place: the same numbers, bit for bit, as
    the (N, 3) row version, for values on the anchors, between, beyond both ends, inf and NaN."""
    ramp = {
        "deviation": lambda: deviation_ramp(scale),
        "band": lambda: deviation_ramp(scale, scale / 3),
        "contact": lambda: contact_ramp(scale / 4, scale, scale / 2),
    }[kind]()
    rng = np.random.default_rng(seed)
    values = rng.uniform(-2 * scale, 2 * scale, n)
    if n:
        pick = rng.integers(0, n, min(n, 50))
        values[pick] = rng.choice(np.array([*ramp.positions, np.nan, np.inf, -np.inf]), len(pick))
    want = _rgb_reference(ramp, values)
    got = ramp.rgb(values)
    assert got.shape == (n, 3) and np.array_equal(got, want)
    rgba = ramp.rgba8(values)
    assert rgba.dtype == np.uint8 and rgba.shape == (n, 4)
    assert np.array_equal(rgba[:, :3], np.round(want * 255.0).astype(np.uint8)) and (rgba[:, 3] == 255).all()
