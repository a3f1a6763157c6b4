"""The flat batch path (registration.batched): same choices as the per-pair code, op and
transfer counts that do not grow with the batch, same answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.spatial.transform import Rotation

from occlutrace_compute.meshes import load_mesh
from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.registration import RegistrationOptions, batched, hypotheses as hyp, selection
from occlutrace_compute.registration.batched import ransac, select
from occlutrace_compute.registration.batched.counting import Counts, OpCounter
from occlutrace_compute.registration.batched.engine import around, to_slots
from occlutrace_compute.registration.geometry import rotation_angle_deg


def _poses(rng: np.random.Generator, n: int, families: int) -> np.ndarray:
    """n poses drawn around `families` base poses: many pairs of them are `same_pose`, many not,
    and some sit right at the 2 deg / 1 mm limits."""
    base = [np.eye(4) for _ in range(families)]
    for T in base:
        T[:3, :3] = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
        T[:3, 3] = rng.normal(0, 3, 3)
    out = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        T = base[rng.integers(families)]
        step = np.eye(4)
        step[:3, :3] = Rotation.from_rotvec(rng.normal(0, np.radians(1.5), 3)).as_matrix()
        step[:3, 3] = rng.normal(0, 0.6, 3)
        out[i] = step @ T
    return out


def _case(seed: int, n_pairs: int, max_items: int, tie_scores: bool):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_items + 1, n_pairs)
    pair_of = np.repeat(np.arange(n_pairs), counts)
    rng.shuffle(pair_of)  # items of a pair need not be adjacent
    poses = _poses(rng, len(pair_of), int(rng.integers(1, 4)))
    scores = rng.integers(0, 4, len(pair_of)) / 4.0 if tie_scores else rng.random(len(pair_of))
    centres = rng.normal(0, 10, (n_pairs, 3))
    return torch.from_numpy(pair_of), torch.from_numpy(poses), torch.from_numpy(scores), centres


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_pairs=st.integers(1, 6),
    max_items=st.integers(1, 12),
    keep=st.integers(1, 5),
    ties=st.booleans(),
)
def test_top_distinct_and_top_per_pair_match_per_pair_selection(seed, n_pairs, max_items, keep, ties):
    pair_of, poses, scores, centres = _case(seed, n_pairs, max_items, ties)
    want = selection.top_distinct(pair_of, poses, scores, keep, centres)
    got = select.top_distinct(pair_of, poses, scores, keep, torch.from_numpy(centres))
    assert got.tolist() == want.tolist()
    assert (
        select.top_per_pair(pair_of, scores, keep, n_pairs).tolist()
        == selection.top_per_pair(pair_of, scores, keep).tolist()
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_pairs=st.integers(1, 6),
    max_items=st.integers(1, 8),
    ties=st.booleans(),
    margin=st.sampled_from([0.15, 1.0]),
)
def test_finalists_and_duels_match_per_pair_selection(seed, n_pairs, max_items, ties, margin):
    pair_of, poses, scores, centres = _case(seed, n_pairs, max_items, ties)
    ranked = selection.top_distinct(pair_of, poses, scores, 4, centres)
    items, ratio, angle = selection.pick_finalists(pair_of, ranked, poses, scores, n_pairs, margin)
    got_items, got_ratio, got_angle = select.pick_finalists(pair_of, ranked, poses, scores, n_pairs, margin)
    assert got_items.tolist() == items.tolist()
    np.testing.assert_array_equal(got_ratio.numpy(), ratio)
    np.testing.assert_allclose(got_angle.numpy(), angle, atol=1e-9)
    # the fine level: the chosen items again, rescored (ties included)
    fine_pairs, fine_poses = pair_of[items], poses[items]
    rng = np.random.default_rng(seed + 1)
    fine_scores = torch.from_numpy(rng.integers(0, 3, len(items)) / 3.0 if ties else rng.random(len(items)))
    r0, a0 = ratio.copy(), angle.copy()
    chosen, r1, a1 = selection.fine_duels(fine_pairs, fine_poses, fine_scores, r0, a0, centres)
    assert r1 is r0 and a1 is a0  # updated in place, handed back as Choices.fine_duels does
    got_chosen, got_r, got_a = select.fine_duels(
        fine_pairs, fine_poses, fine_scores, torch.from_numpy(ratio), torch.from_numpy(angle), torch.from_numpy(centres)
    )
    assert got_chosen.tolist() == chosen.tolist()
    np.testing.assert_array_equal(got_r.numpy(), r0)
    np.testing.assert_allclose(got_a.numpy(), a0, atol=1e-9)


def test_same_pose_and_angle_match_the_numpy_ones():
    rng = np.random.default_rng(3)
    a = _poses(rng, 300, 3)
    steps = np.tile(np.eye(4), (300, 1, 1))
    steps[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, np.radians(0.9), (300, 3))).as_matrix()
    steps[:, :3, 3] = rng.normal(0, 0.4, (300, 3))
    b = steps @ a  # about the limits: both answers, some right at 2 deg / 1 mm
    c = rng.normal(0, 2, (300, 3))
    want = [hyp.same_pose(x, y, z) for x, y, z in zip(a, b, c)]
    assert 20 < sum(want) < 280  # both answers well represented
    got = select.same_pose(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c))
    assert got.tolist() == want
    np.testing.assert_allclose(
        select.rotation_angle_deg(torch.from_numpy(a), torch.from_numpy(b)).numpy(),
        [rotation_angle_deg(x, y) for x, y in zip(a, b)],
        atol=1e-6,
    )


def test_draw_is_uniform_over_allowed_rows_and_the_same_alone_or_in_a_batch():
    rng = np.random.default_rng(0)
    use = torch.from_numpy(rng.random((5, 200)) < np.array([0.0, 0.02, 0.3, 0.9, 1.0])[:, None])
    use[1, 7] = True  # at least one row for pair 1; pair 0 has none
    rows = ransac.draw(use, 60_000, seed=4)
    assert (rows[0] == 0).all()
    for p in range(1, 5):
        allowed = use[p].nonzero()[:, 0]
        assert torch.isin(rows[p], allowed).all()
        freq = torch.bincount(rows[p], minlength=200)[allowed].double()
        expected = 60_000 / len(allowed)
        assert ((freq - expected).abs() < 6 * expected**0.5 + 1).all()  # 6 sigma of a binomial count
        assert torch.equal(ransac.draw(use[p : p + 1], 60_000, seed=4)[0], rows[p])


def test_weighted_kabsch_is_kabsch_on_the_weighted_rows():
    rng = np.random.default_rng(1)
    src = torch.from_numpy(rng.normal(0, 10, (4, 50, 3)))
    T = torch.from_numpy(np.stack([_poses(rng, 1, 1)[0] for _ in range(4)]))
    dst = src @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3] + torch.from_numpy(rng.normal(0, 0.05, (4, 50, 3)))
    w = torch.from_numpy(rng.random((4, 50)) < 0.5)
    got = ransac.weighted_kabsch(src, dst, w.double())
    for i in range(4):
        want = hyp.kabsch(src[i, w[i]], dst[i, w[i]])
        torch.testing.assert_close(got[i], want, atol=1e-10, rtol=0)


def test_around_is_hypotheses_around_for_every_pose():
    rng = np.random.default_rng(2)
    T, c = _poses(rng, 3, 3), rng.normal(0, 30, (3, 3))
    got = around(torch.from_numpy(T), torch.from_numpy(c), 16, 2.5, 0.7, seed=5)
    for k in range(3):
        np.testing.assert_allclose(got[k].numpy(), hyp.around(T[k], c[k], 16, 2.5, 0.7, seed=5), atol=1e-12)


def test_to_slots_lays_grouped_items_out_in_order():
    pair_of = torch.tensor([2, 0, 0, 1, 2, 2, 0])
    items = torch.tensor([1, 6, 3, 0, 5])  # grouped by pair: 0, 0, 1, 2, 2
    slot, real = to_slots(pair_of, items, 4, 3)
    assert slot[real].tolist() == items.tolist()
    assert real.sum(1).tolist() == [2, 1, 2, 0]
    assert slot[0, :2].tolist() == [1, 6]


def test_axis_hypotheses_match_the_numpy_ones_up_to_eigenvector_sign():
    from occlutrace_compute.registration.batch import pack
    from occlutrace_compute.registration.batched import axes

    rng = np.random.default_rng(6)
    clouds = []
    for n in (60, 200, 140):  # ragged: padding must not count
        p = rng.normal(0, 1, (n, 3)) * [20.0, 8.0, 3.0]
        nrm = rng.normal(0, 1, (n, 3)) + [0, 0, 2.5 if n != 140 else 0.0]  # the last: normals cancel out
        clouds.append((p, nrm / np.linalg.norm(nrm, axis=1, keepdims=True)))
    mov, fix = pack(clouds, torch.device("cpu")), pack(clouds[::-1], torch.device("cpu"))
    got = axes.axis_hypotheses(mov, fix, 12, 5)
    for i in range(3):
        fx = clouds[::-1][i]
        anchors = hyp.anchor_centroids(fx[0], clouds[i][0].shape[0], 5)
        want = hyp.axis_hypotheses(*clouds[i], *fx, 12, anchors)
        assert got[i].shape == want.shape
        # every numpy pose is one of ours (a sign flip of an eigenvector reorders the set)
        d = np.abs(got[i].numpy()[None] - want[:, None]).reshape(len(want), len(want), -1).max(-1)
        assert d.min(1).max() < 1e-9


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_pairs=st.integers(1, 7),
    max_rows=st.integers(1, 300),
    changed=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    same_link=st.booleans(),
)
def test_batched_changed_regions_are_the_per_pair_ones(seed, n_pairs, max_rows, changed, same_link):
    """One kd-tree for the batch gives each pair exactly its own regions: sizes, order, areas,
    centroids and deviations, with links that differ per pair (the shorter ones filtered from the
    longest one's query), clusters that would touch across pairs, ragged pairs, empty pairs and
    pairs left out."""
    from occlutrace_compute.registration.batched.regions import changed_regions_batch
    from occlutrace_compute.registration.regions import changed_regions

    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_rows + 1, n_pairs)
    width = max(1, int(lengths.max()))
    # blobs on a coarse grid (many samples right about a link apart), every pair in the same box
    pts = rng.integers(0, 12, (n_pairs, width, 3)) * 0.5 + rng.normal(0, 0.05, (n_pairs, width, 3))
    real = np.arange(width)[None] < lengths[:, None]
    mask = real & (rng.random((n_pairs, width)) < changed)
    wanted = rng.random(n_pairs) < 0.8
    dev = rng.normal(0, 0.3, (n_pairs, width))
    link = np.full(n_pairs, 0.6) if same_link else rng.uniform(0.3, 1.2, n_pairs)
    area = rng.uniform(0.05, 0.5, n_pairs)
    got = changed_regions_batch(pts, mask & wanted[:, None], dev, link, area, 0.4)
    for k in range(n_pairs):
        n = lengths[k]
        want = changed_regions(pts[k, :n], mask[k, :n], dev[k, :n], link[k], area[k], 0.4) if wanted[k] else []
        assert got[k] == want


SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# Small clouds (about a thousand samples per scan) and fewer guesses keep 128 pairs to seconds;
# the counts are about the structure, not the accuracy.
TINY = RegistrationOptions().updated(
    fine_points=800,
    fixed_points=1200,
    ransac_trials=1000,
    pca_angles=4,
    anchors=4,
    fpfh_hypotheses=4,
    axis_hypotheses=4,
    keep_after_prune=4,
    starts=4,
    rounds=2,
)


@pytest.fixture(scope="module")
def sample_pairs() -> list[tuple[Mesh, Mesh]]:
    return [
        (load_mesh(SAMPLES / c / f"fixed.{ext}").mesh, load_mesh(SAMPLES / c / f"moving.{ext}").mesh)
        for c, ext in (("case-0001-pair", "ply"), ("case-0002-changed", "stl"))
    ]


def _counted(pairs, opt) -> tuple[list, Counts]:
    with OpCounter() as oc:
        results = batched.register_batch(pairs, opt, device="cpu")
    return results, oc.counts


@pytest.mark.slow
def test_flat_path_ops_and_transfers_do_not_grow_with_the_batch(sample_pairs):
    """Issue 16's CPU proxy: torch calls and device->host transfers of one call within 10 % at
    batch 8 and 128 (the per-pair engine: 4.5x the ops and 8x the transfers, bench/RESULTS.md)."""
    small, c8 = _counted((sample_pairs * 4)[:8], TINY)
    large, c128 = _counted((sample_pairs * 64)[:128], TINY)
    assert abs(c128.ops / c8.ops - 1) <= 0.10, (c8.ops, c128.ops)
    assert abs(c128.transfers / c8.transfers - 1) <= 0.10, (c8.transfers, c128.transfers)
    for i in (0, 1):  # a pair's answer does not depend on the batch around it
        np.testing.assert_allclose(large[126 + i].matrix, small[i].matrix, atol=1e-9)


def test_flat_path_gives_the_per_pair_engine_answers(sample_pairs):
    """Same matrices within 0.1 um on every moving sample, same verdicts, on a clean and a changed
    pair; one pair with landmarks only (no global search), one forced through the local search."""
    from occlutrace_compute.registration import register_batch

    moving = sample_pairs[0][1]
    idx = np.random.default_rng(0).choice(moving.n_vertices, 6, replace=False)
    truth = np.asarray(json.loads((SAMPLES / "case-0001-pair" / "truth.json").read_text())["T_fixed_moving"])
    lm = (moving.vertices[idx], moving.vertices[idx] @ truth[:3, :3].T + truth[:3, 3])
    cases = [
        (TINY, sample_pairs, None),
        (TINY.updated(fpfh_hypotheses=0, axis_hypotheses=0), sample_pairs[:1], [lm]),
        (TINY.updated(min_confidence=1.01), sample_pairs[1:], None),
    ]
    for opt, pairs, landmarks in cases:
        want = register_batch(pairs, opt, device="cpu", landmarks=landmarks)
        got = batched.register_batch(pairs, opt, device="cpu", landmarks=landmarks)
        for (_, mov), w, g in zip(pairs, want, got):
            v = mov.vertices
            moved_w, moved_g = v @ w.matrix[:3, :3].T + w.matrix[:3, 3], v @ g.matrix[:3, :3].T + g.matrix[:3, 3]
            assert np.abs(moved_w - moved_g).max() < 1e-4  # mm
            # (not `hypotheses`: other RANSAC draws propose another number of distinct poses)
            assert (g.doubtful, g.iterations, g.converged) == (w.doubtful, w.iterations, w.converged)
            assert abs(g.fitness - w.fitness) < 1e-6 and abs(g.confidence - w.confidence) < 1e-6
            assert np.array_equal(g.outlier_mask, w.outlier_mask)
            assert [r.n_points for r in g.changed_regions] == [r.n_points for r in w.changed_regions]


def test_flat_path_rejects_what_the_engine_rejects(sample_pairs):
    fixed, moving = sample_pairs[0]
    with pytest.raises(ValueError, match="no starting pose"):
        batched.register_batch([(fixed, moving)], TINY.updated(fpfh_hypotheses=0, axis_hypotheses=0), device="cpu")
    with pytest.raises(ValueError, match="landmark sets"):
        batched.register_batch([(fixed, moving)], TINY, device="cpu", landmarks=[None, None])
    assert batched.register_batch([], TINY) == []


@pytest.mark.gpu
def test_flat_path_on_cuda_matches_cpu_and_stays_flat(sample_pairs):
    """Not run in this session (no GPU): the flat path on CUDA answers like the CPU engine (float32
    searches: within 5 um) and its counts stay flat there too."""
    from occlutrace_compute.registration import register_batch

    want = register_batch(sample_pairs, TINY, device="cpu")
    with OpCounter() as small:
        got = batched.register_batch(sample_pairs * 4, TINY, device="cuda")
    for (_, mov), w, g in zip(sample_pairs, want, got):
        v = mov.vertices
        assert np.abs(v @ (w.matrix[:3, :3] - g.matrix[:3, :3]).T + (w.matrix[:3, 3] - g.matrix[:3, 3])).max() < 5e-3
    with OpCounter() as large:
        batched.register_batch(sample_pairs * 64, TINY, device="cuda")
    assert abs(large.counts.ops / small.counts.ops - 1) <= 0.10
    assert abs(large.counts.transfers / small.counts.transfers - 1) <= 0.10


class _Largest(torch.overrides.TorchFunctionMode):
    """The most elements of any tensor a torch call returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.numel = max(self.numel, out.numel())
        return out


def test_batched_fpfh_is_fpfh_without_the_per_neighbour_histograms(sample_pairs):
    """The flat path's FPFH gives `features.fpfh`'s descriptors (up to float32 rounding of the
    neighbour sum) and never holds the (B, P, k, 33) gathered histograms that cost the old code
    0.5 GB and ~0.1 s of host time per free at batch 128: its largest tensor is the (B, P, k, 3)
    neighbour coordinates (issue 16)."""
    from occlutrace_compute.registration import features
    from occlutrace_compute.registration.batch import pack
    from occlutrace_compute.registration.batched.fpfh import fpfh
    from occlutrace_compute.registration.prepare import prepare_all

    prepared = prepare_all(sample_pairs, TINY)
    clouds = pack([p.moving.coarse for p in prepared] + [p.fixed.coarse for p in prepared], torch.device("cpu"))
    radius = TINY.hypotheses.fpfh_radius_factor * TINY.sampling.coarse_voxel
    want = features.fpfh(clouds, radius, backend="kdtree")
    with _Largest() as largest:
        got = fpfh(clouds, radius, backend="kdtree")
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert ((got > 0) == (want > 0)).all()  # the same empty bins and empty rows
    b, p = clouds.points.shape[:2]
    assert largest.numel <= b * p * 32 * 3, (largest.numel, b * p * 32 * 33)


def test_flat_path_runs_no_garbage_collection_pass(sample_pairs):
    """A batch makes tens of thousands of objects and no reference cycles: the collector's passes
    (a full one walks every object of the process, ~0.1 s) stay out of the call, and the collector
    is back on afterwards."""
    import gc

    passes = []

    def seen(phase, info):
        if phase == "start":
            passes.append(info["generation"])

    gc.collect()
    gc.callbacks.append(seen)
    try:
        batched.register_batch(sample_pairs * 2, TINY, device="cpu")
    finally:
        gc.callbacks.remove(seen)
    assert passes == []
    assert gc.isenabled()
