"""Work the registration engines must not repeat (issue 12 item 2): every cloud is indexed once
per call, and the faster forms of the hot spots answer exactly what the plain forms answer."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from pykdtree.kdtree import KDTree
from registration_cases import FAST, pair_case  # clean_case: a fixture (conftest.py)

from occlutrace_compute.meshes.model import Mesh
from occlutrace_compute.registration import features, matcher, register, sampling
from occlutrace_compute.registration.batch import Clouds
from occlutrace_compute.registration.bite_frames import bite_frame, buccal_anchors, sample_levels
from occlutrace_compute.registration.bite_search import SearchOptions, Workers, search
from occlutrace_compute.registration.features import mutual_nearest
from occlutrace_compute.registration.matcher import Matcher
from occlutrace_compute.synth import make_bite_case

CPU = torch.device("cpu")


class _Builds:
    """Records every kd-tree the registration modules build: (dtype, shape, content digest)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: Counter = Counter()
        seen = self.seen

        class Recording(KDTree):
            def __init__(self, data, *args, **kwargs) -> None:
                seen[(str(data.dtype), data.shape, hashlib.sha1(np.ascontiguousarray(data).tobytes()).hexdigest())] += 1
                super().__init__(data, *args, **kwargs)

        for module in (matcher, features):
            monkeypatch.setattr(module, "KDTree", Recording)

    def repeated(self) -> dict:
        return {k[:2]: n for k, n in self.seen.items() if n > 1}


def test_register_indexes_every_cloud_once(monkeypatch, clean_case) -> None:
    """The pre-screen and the coarse level search the same fixed coarse cloud: one tree for
    both (it was built twice). Each level's cloud and each FPFH cloud: one build each."""
    builds = _Builds(monkeypatch)
    register(clean_case.fixed, clean_case.moving, FAST, device="cpu")
    assert builds.repeated() == {}
    # FPFH (moving, fixed coarse, float32), fixed coarse, mid and fine clouds (float64)
    assert sum(builds.seen.values()) == 5


def test_bite_search_indexes_the_arch_once(monkeypatch) -> None:
    """A bite search scores hundreds of starts in jobs, chunks and rounds on one arch cloud:
    all of them share its one tree (it was built for every job and chunk)."""
    case = make_bite_case(5, n_bites=1, spacing_mm=0.5)
    opt = SearchOptions(keep_prescreen=60, keep_round1=6)
    arch = sample_levels(case.upper, 20000, 0.4, opt.coarse_voxel, 0, "upper")
    bite = sample_levels(case.bites[0], 8000, 0.4, opt.coarse_voxel, 1, "bite")
    frame = bite_frame(bite.fine, opt.keypoint_offsets_mm)
    anchors = buccal_anchors(arch, opt.anchor_spacing)
    builds = _Builds(monkeypatch)
    with Workers(3, CPU) as workers:
        found = search(bite, frame, arch, anchors, bite.coarse, CPU, opt, 3, workers)
    assert len(found.T_arch_bite) > 0
    assert sum(builds.seen.values()) == 1  # (tests/test_bite_search.py: threads give one batch's answer)


def _brute_nearest(q: np.ndarray, ref: np.ndarray, k: int, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((q[:, None, :] - ref[None]) ** 2).sum(-1)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    near = np.take_along_axis(d2, order, 1)
    far = ~(near <= max_dist * max_dist)
    return np.where(far, np.inf, near), np.where(far, 0, order)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=3),
    rows=st.integers(0, 60),
    k=st.integers(1, 4),
    max_dist=st.sampled_from([0.3, 1.5, float("inf")]),
)
def test_search_rows_of_one_pair_equal_the_general_path_and_brute_force(seed, sizes, rows, k, max_dist) -> None:
    """The one-pair fast path (no unique/gather/scatter) against the per-pair loop and brute force,
    on ragged padded batches, empty queries and bounds that leave rows without a neighbour."""
    rng = np.random.default_rng(seed)
    p = max(sizes)
    pts = np.zeros((len(sizes), p, 3))
    for i, n in enumerate(sizes):
        pts[i, :n] = rng.uniform(0, 5, (n, 3))
    m = Matcher(Clouds(torch.from_numpy(pts), torch.zeros(len(sizes), p, 3, dtype=torch.float64), torch.tensor(sizes)))
    pair = int(rng.integers(len(sizes)))
    q = rng.uniform(-1, 6, (rows, 3))
    kk = min(k, sizes[pair])
    fast = m._search_rows(q, np.full(rows, pair), kk, max_dist)
    one = m._search_rows(q, np.array([pair]), kk, max_dist)
    answers = [fast, one]
    other = (pair + 1) % len(sizes)
    if other != pair and sizes[other] >= kk:  # one more row in another pair: the per-pair loop
        general = m._search_rows(np.r_[q, q[:1]], np.r_[np.full(rows, pair), [other]], kk, max_dist)
        answers.append((general[0][:rows], general[1][:rows]))
    brute = _brute_nearest(q, pts[pair, : sizes[pair]], kk, max_dist)
    for got in answers:
        assert got[0].dtype == np.float64 and got[1].dtype == np.int64
        np.testing.assert_array_equal(np.isinf(got[0]), np.isinf(brute[0]))
        np.testing.assert_allclose(got[0], brute[0], rtol=1e-12, atol=1e-12)
        found = np.isfinite(brute[0])
        np.testing.assert_array_equal(got[1][found], brute[1][found])
        np.testing.assert_array_equal(got[1][~found], 0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 4), p=st.integers(1, 50), max_dist=st.sampled_from([0.5, 9.0]))
def test_untracked_nearest_of_a_full_one_pair_batch_equals_brute_force(seed, b, p, max_dist) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 5, (1, 80, 3))
    m = Matcher(Clouds(torch.from_numpy(ref), torch.zeros(1, 80, 3, dtype=torch.float64), torch.tensor([80])))
    q = torch.from_numpy(rng.uniform(-1, 6, (b, 3, p))).transpose(1, 2)  # strided, as ICP asks
    d2, idx = m.nearest(q, torch.full((b,), p), torch.zeros(b, dtype=torch.int64), max_dist)
    bd2, bidx = _brute_nearest(q.reshape(-1, 3).numpy(), ref[0], 1, max_dist)
    np.testing.assert_allclose(d2.numpy().ravel(), bd2[:, 0], rtol=1e-12)
    np.testing.assert_array_equal(idx.numpy().ravel(), bidx[:, 0])


def _old_mutual(fa: np.ndarray, fb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def nearest(a, b):
        d = a @ b.T
        d *= -2
        d += np.einsum("ij,ij->i", b, b)[None, :]
        return d.argmin(1)

    return nearest(fa, fb), nearest(fb, fa)


@pytest.mark.parametrize("seed", range(6))
def test_mutual_nearest_in_blocks_gives_the_full_matrix_answer(seed) -> None:
    """Blocks of rows and the backward search from chosen rows only: the same forward matches
    and the same mutual pairs as the whole matrix both ways (histogram-like 33-D descriptors)."""
    rng = np.random.default_rng(seed)
    na, nb = (int(x) for x in rng.integers(1, 700, 2))
    fa = rng.gamma(0.5, size=(2, na, 33)).astype(np.float32)
    fb = rng.gamma(0.5, size=(2, nb, 33)).astype(np.float32)
    fa /= fa.sum(-1, keepdims=True)
    fb /= fb.sum(-1, keepdims=True)
    lengths_a, lengths_b = [na, max(1, na // 3)], [nb, max(1, nb // 2)]
    mask_a = torch.arange(na)[None] < torch.tensor(lengths_a)[:, None]
    mask_b = torch.arange(nb)[None] < torch.tensor(lengths_b)[:, None]
    fwd, back = mutual_nearest(torch.from_numpy(fa), torch.from_numpy(fb), mask_a, mask_b)
    for i in range(2):
        old_fwd, old_back = _old_mutual(fa[i, : lengths_a[i]], fb[i, : lengths_b[i]])
        got_fwd = fwd[i, : lengths_a[i]].numpy()
        np.testing.assert_array_equal(got_fwd, old_fwd)
        np.testing.assert_array_equal(back[i].numpy()[got_fwd], old_back[old_fwd])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_faces=st.integers(1, 3000), block=st.integers(1, 4000))
def test_face_areas_in_blocks_equal_the_whole_array_bit_for_bit(seed, n_faces, block) -> None:
    """Uneven triangles (slivers, one huge face, repeated corners): blocks change nothing."""
    rng = np.random.default_rng(seed)
    v = rng.normal(0, 10, (max(3, n_faces // 2), 3))
    v[0] *= 1e3  # one far vertex: a huge face wherever it is used
    f = rng.integers(0, len(v), (n_faces, 3))
    f[: n_faces // 5, 2] = f[: n_faces // 5, 1]  # degenerate faces
    whole = sampling._double_areas32(v, f, block=n_faces)
    np.testing.assert_array_equal(sampling._double_areas32(v, f, block=block), whole)
    vt = v.T.astype(np.float32)
    p0, p1, p2 = (vt[:, f[:, k]] for k in range(3))
    u, w = p1 - p0, p2 - p0
    c = np.stack([u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]])
    np.testing.assert_array_equal(whole, np.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]))


def test_sampling_a_mesh_is_unchanged_by_blocks(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    v = rng.uniform(0, 20, (5000, 3))
    mesh = Mesh(v, rng.integers(0, 5000, (40000, 3)).astype(np.int64))
    a = sampling.sample_surface_area(mesh, 3000, seed=4)
    area = sampling._double_areas32
    monkeypatch.setattr(sampling, "_double_areas32", lambda v_, f_: area(v_, f_, block=1 << 30))
    b = sampling.sample_surface_area(mesh, 3000, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_register_batch_on_samples_made_earlier_gives_the_same_matrices() -> None:
    """The device worker samples on its CPU workers and hands `prepared=` to the engine: the same
    samples give the same answer as sampling inside, and samples of another batch size are refused."""
    from occlutrace_compute.registration import register_batch
    from occlutrace_compute.registration.prepare import prepare_all

    case = pair_case(2, "clean", (0.6, 1.0))
    pair = (case.fixed, case.moving)
    opt = FAST
    inside = register_batch([pair], opt, device="cpu")
    given = register_batch([pair], opt, device="cpu", prepared=prepare_all([pair], opt))
    np.testing.assert_array_equal(given[0].matrix, inside[0].matrix)
    with pytest.raises(ValueError, match="1 prepared pairs for 2 pairs"):
        register_batch([pair, pair], opt, device="cpu", prepared=prepare_all([pair], opt))


def _plain_fpfh(clouds: Clouds, radius: float, k: int = 32) -> torch.Tensor:
    """FPFH as first written: interleaved (..., 3) pair features and the (B,P,k,33) gather of
    the neighbours' histograms (the reference the faster form must answer)."""
    import math

    pts, nrm, lengths = clouds.points.float(), clouds.normals.float(), clouds.lengths
    b, p, _ = pts.shape
    k = int(min(k + 1, int(lengths.min())))
    d2, idx = features._neighbours(pts, lengths, k, "kdtree")
    idx, d2 = idx[..., 1:].clamp_min(0), d2[..., 1:]
    nb = (d2 < radius * radius) & (d2 > 0) & clouds.mask[..., None]
    bi = torch.arange(b)[:, None, None]
    p1, n1, p2, n2 = (t.unbind(-1) for t in (pts[:, :, None], nrm[:, :, None], pts[bi, idx], nrm[bi, idx]))
    d = tuple(y - x for x, y in zip(p1, p2))
    dot = features._dot
    dist = torch.sqrt(dot(d, d)).clamp_min(1e-12)
    a1, a2 = dot(n1, d) / dist, dot(n2, d) / dist
    swap = a1.abs() < a2.abs()
    u = tuple(torch.where(swap, y, x) for x, y in zip(n1, n2))
    other = tuple(torch.where(swap, x, y) for x, y in zip(n1, n2))
    d = tuple(torch.where(swap, -c, c) for c in d)
    phi = torch.where(swap, -a2, a1)
    v = features._cross3(d, u)
    vn = torch.sqrt(dot(v, v)).clamp_min(1e-12)
    v = tuple(c / vn for c in v)
    w3 = features._cross3(u, v)
    alpha, theta = dot(v, other), torch.atan2(dot(w3, other), dot(u, other))
    hist = torch.zeros(b, p, 3 * features.BINS)
    w = nb.float()
    for j, (x, lo, hi) in enumerate(((theta, -math.pi, math.pi), (alpha, -1.0, 1.0), (phi, -1.0, 1.0))):
        hist.scatter_add_(2, features._bins(x, lo, hi) + j * features.BINS, w)
    spfh = hist / nb.sum(-1, keepdim=True).clamp_min(1).float()
    inv = w / d2.clamp_min(1e-12).sqrt()
    agg = (spfh[bi, idx] * inv[..., None]).sum(2) / inv.sum(-1, keepdim=True).clamp_min(1e-12)
    f = (spfh + agg).view(b, p, 3, features.BINS)
    f = f / f.sum(-1, keepdim=True).clamp_min(1e-12)
    return f.view(b, p, -1) * (nb.sum(-1) >= 3)[..., None]


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    sizes=st.lists(st.integers(4, 90), min_size=1, max_size=3),
    radius=st.sampled_from([0.4, 1.5, 50.0]),
)
def test_fpfh_by_weighted_bags_of_components_equals_the_gathered_form(seed, sizes, radius) -> None:
    """FPFH's component-major pair features and weighted-bag neighbour sum (register stage,
    fourth session) against the plain gathered form: ragged batches, clouds with rows lacking
    neighbours (small radius) and with every row each other's neighbour (large), uneven spacing."""
    rng = np.random.default_rng(seed)
    p = max(sizes)
    pts = np.zeros((len(sizes), p, 3))
    nrm = np.zeros((len(sizes), p, 3))
    for i, n in enumerate(sizes):
        pts[i, :n] = rng.uniform(0, 3, (n, 3)) * rng.uniform(0.1, 2.0, 3)  # uneven axes
        nv = rng.normal(size=(n, 3))
        nrm[i, :n] = nv / np.linalg.norm(nv, axis=1, keepdims=True)
    clouds = Clouds(torch.from_numpy(pts), torch.from_numpy(nrm), torch.tensor(sizes))
    got, want = features.fpfh(clouds, radius, backend="kdtree"), _plain_fpfh(clouds, radius)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    assert ((got > 0) == (want > 0)).all()  # the same empty bins and rows


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(3, 400), noise=st.sampled_from([0.0, 0.01, 1.0]))
def test_numpy_kabsch_of_a_refit_equals_the_torch_one(seed, n, noise) -> None:
    from occlutrace_compute.registration.hypotheses import _kabsch_np, kabsch

    rng = np.random.default_rng(seed)
    src = rng.normal(size=(n, 3)) * rng.uniform(0.01, 30, 3)
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    dst = src @ R.T + rng.normal(size=3) * 50 + rng.normal(size=(n, 3)) * noise
    want = kabsch(torch.from_numpy(src), torch.from_numpy(dst)).numpy()
    np.testing.assert_allclose(_kabsch_np(src, dst), want, rtol=0, atol=1e-9)


def test_axis_hypotheses_as_arrays_equal_the_nested_loops() -> None:
    """The (flip, angle, anchor) poses built as arrays: the loops' poses, in their order, bit for bit."""
    import math

    from occlutrace_compute.registration import hypotheses as hyp

    rng = np.random.default_rng(3)
    mov, fix = rng.normal(size=(300, 3)) * [20, 9, 3], rng.normal(size=(340, 3)) * [21, 8, 3] + 4
    mn, fn = rng.normal(size=(300, 3)) + [0, 0, 2], rng.normal(size=(340, 3)) + [0, 0, 2]
    mn /= np.linalg.norm(mn, axis=1, keepdims=True)
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    anchors = rng.normal(size=(13, 3)) * 10
    centre, R_moving = hyp._frame(mov, mn)
    _, R_fixed = hyp._frame(fix, fn)
    want = []
    for flip in (1.0, -1.0):
        flipped = R_moving @ np.diag([1.0, flip, flip])
        for k in range(7):
            a = 2 * math.pi * k / 7
            Rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
            R = R_fixed @ Rz @ flipped.T
            for anchor in anchors:
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R, anchor - R @ centre
                want.append(T)
    np.testing.assert_array_equal(hyp.axis_hypotheses(mov, mn, fix, fn, 7, anchors), np.stack(want))
