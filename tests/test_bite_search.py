"""The bite search shared out over threads (issue 12 item 3): the same candidates as one batch,
round 1 without the candidate cache gives the same poses, and the chunks cover every start once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from occlutrace_compute.registration.batch import pack
from occlutrace_compute.registration.bite_frames import (
    bite_frame,
    buccal_anchors,
    sample_levels,
)
from occlutrace_compute.registration.bite_search import (
    SERIAL,
    SearchOptions,
    Workers,
    _levels,
    _round,
    anchor_poses,
    search,
)
from occlutrace_compute.registration.levels import subset
from occlutrace_compute.synth import make_bite_case

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def scans():
    case = make_bite_case(5, n_bites=1, spacing_mm=0.5)
    opt = SearchOptions(keep_prescreen=60, keep_round1=6)  # smaller than the defaults: a quick test
    arch = sample_levels(case.upper, 20000, 0.4, opt.coarse_voxel, 0, "upper")
    bite = sample_levels(case.bites[0], 8000, 0.4, opt.coarse_voxel, 1, "bite")
    return arch, bite, opt


def test_search_shared_out_over_threads_equals_one_batch(scans) -> None:
    arch, bite, opt = scans
    frame = bite_frame(bite.fine, opt.keypoint_offsets_mm)
    anchors = buccal_anchors(arch, opt.anchor_spacing)
    one = search(bite, frame, arch, anchors, bite.coarse, CPU, opt, 3, SERIAL)
    with Workers(3, CPU) as workers:  # 3 uneven chunks on any number of cores
        assert len(workers.chunks(60, 150 * 10)) == 3
        many = search(bite, frame, arch, anchors, bite.coarse, CPU, opt, 3, workers)
    assert len(one.T_arch_bite) > 0
    np.testing.assert_allclose(many.T_arch_bite, one.T_arch_bite, atol=1e-9)
    np.testing.assert_allclose(many.score, one.score, atol=1e-12)
    np.testing.assert_allclose(many.weights, one.weights, atol=1e-12)


def test_untracked_round_gives_the_tracked_answer(scans) -> None:
    """Round 1 searches the tree afresh every iteration (cheaper when starts move far): exact,
    so the same poses and scores as with the candidate cache."""
    arch, bite, opt = scans
    frame = bite_frame(bite.fine, opt.keypoint_offsets_mm)
    T = anchor_poses(frame, buccal_anchors(arch, opt.anchor_spacing), opt.tilts_deg)[::150]
    round1 = _levels(opt)[1]
    moving = subset(bite.coarse, opt.round1_points, 1)
    fixed = pack([arch.coarse], CPU)
    T_a, s_a = _round(moving, fixed, T, round1, SERIAL, tracked=True)
    T_b, s_b = _round(moving, fixed, T, round1, SERIAL, tracked=False)
    np.testing.assert_allclose(T_b, T_a, atol=1e-9)
    np.testing.assert_allclose(s_b, s_a, atol=1e-12)
    assert not np.allclose(T_a, T)  # the starts did move


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 5000), cost=st.integers(1, 20000), threads=st.integers(1, 64))
def test_chunks_cover_every_start_once(n: int, cost: int, threads: int) -> None:
    w = Workers(threads, torch.device("meta"))  # no pool: chunking only
    w.threads = threads
    parts = w.chunks(n, cost)
    assert 1 <= len(parts) <= threads
    covered = np.concatenate([np.arange(n)[p] for p in parts])
    assert np.array_equal(covered, np.arange(n))
    if len(parts) > 1:
        assert all(p.stop - p.start >= 1 for p in parts)
        assert min((p.stop - p.start) * cost for p in parts) >= 20000 // 2  # no chunk too small to pay for a thread
