"""knn API and backends against a float64 brute-force reference."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from occlutrace_compute.nn import KnnResult, available_backends, backends, knn, torch_brute
from occlutrace_compute.nn.reference import knn_problems, stress_cases

CASES = stress_cases(seed=1, min_ref=16)
CPU_BACKENDS = available_backends("cpu")


def test_cpu_backends_in_preference_order():
    assert CPU_BACKENDS[:2] == ["kdtree", "torch"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("k", [1, 4, 16])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_backend_matches_brute_force(backend, k, case):
    res = knn(case.query, case.ref, case.query_lengths, case.ref_lengths, k=k, backend=backend)
    assert isinstance(res, KnnResult)
    assert res.dists2.dtype == case.query.dtype and res.idx.dtype == torch.int64
    assert knn_problems(res, case.query, case.ref, case.query_lengths, case.ref_lengths, k) == []


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_float64_and_default_lengths(backend):
    g = torch.Generator().manual_seed(3)
    q, r = (
        torch.randn(2, 90, 3, generator=g, dtype=torch.float64),
        torch.randn(2, 70, 3, generator=g, dtype=torch.float64),
    )
    res = knn(q, r, k=3, backend=backend)
    assert res.dists2.dtype == torch.float64
    full_q, full_r = torch.tensor([90, 90]), torch.tensor([70, 70])
    assert knn_problems(res, q, r, full_q, full_r, 3, rtol=1e-12) == []


@pytest.mark.parametrize("chunk", [1, 97, 5000])
def test_torch_backend_chunking_does_not_change_results(chunk):
    case = next(c for c in CASES if c.name == "ragged")
    args = (case.query, case.ref, case.query_lengths, case.ref_lengths, 5)
    whole = torch_brute.knn(*args)
    chunked = torch_brute.knn(*args, chunk_elements=chunk)
    assert torch.equal(whole.dists2, chunked.dists2)
    assert knn_problems(chunked, *args) == []


def test_backends_agree_bit_for_bit_on_distances():
    """kdtree recomputes distances with the same formula as the brute force: equal floats."""
    case = next(c for c in CASES if c.name == "clustered")
    args = (case.query, case.ref, case.query_lengths, case.ref_lengths)
    a, b = knn(*args, k=4, backend="kdtree"), knn(*args, k=4, backend="torch")
    assert torch.equal(a.dists2, b.dists2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_batches(backend):
    assert knn(torch.rand(2, 0, 3), torch.rand(2, 0, 3), k=2, backend=backend).idx.shape == (2, 0, 2)
    assert knn(torch.rand(0, 5, 3), torch.rand(0, 5, 3), k=1, backend=backend).dists2.shape == (0, 5, 1)


def test_padded_query_rows_get_minus_one_and_inf():
    q, r = torch.rand(2, 10, 3), torch.rand(2, 8, 3)
    q[0, 4:] = float("nan")  # padding may hold anything
    res = knn(q, r, torch.tensor([4, 0]), torch.tensor([8, 1]), k=1)
    assert (res.idx[0, 4:] == -1).all() and torch.isinf(res.dists2[0, 4:]).all()
    assert (res.idx[1] == -1).all() and torch.isinf(res.dists2[1]).all()
    assert (res.idx[0, :4] >= 0).all()


@pytest.mark.parametrize(
    ("query", "ref", "kwargs", "message"),
    [
        (torch.rand(2, 5, 2), torch.rand(2, 5, 2), {}, r"\(B,P,3\)"),
        (torch.rand(5, 3), torch.rand(5, 3), {}, r"\(B,P,3\)"),
        (torch.rand(2, 5, 3), torch.rand(3, 5, 3), {}, r"\(B,P,3\)"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3).double(), {}, "one dtype"),
        (torch.ones(1, 5, 3, dtype=torch.int64), torch.ones(1, 5, 3, dtype=torch.int64), {}, "floating point"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3), {"k": 0}, "k >= 1"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3), {"k": 6}, "at least 6 reference points"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3), {"query_lengths": torch.tensor([6])}, r"\[0, 5\]"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3), {"ref_lengths": torch.tensor([-1])}, r"\[0, 5\]"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3), {"ref_lengths": torch.tensor([2, 3])}, r"shape \(1,\)"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3), {"ref_lengths": torch.tensor([2.0])}, "integer tensor"),
        (torch.full((1, 5, 3), float("nan")), torch.rand(1, 5, 3), {}, "query contains NaN"),
        (torch.rand(1, 5, 3), torch.full((1, 5, 3), float("inf")), {}, "ref contains NaN or infinite"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3), {"backend": "faiss"}, "unknown knn backend 'faiss'"),
        (torch.rand(1, 5, 3), torch.rand(1, 5, 3), {"backend": "cuda"}, "'cuda'"),
    ],
)
def test_bad_input_raises_a_clear_error(query, ref, kwargs, message):
    with pytest.raises(ValueError, match=message):
        knn(query, ref, **kwargs)


def test_gpu_preference_order(monkeypatch):
    """cuda > pytorch3d > torch on a GPU; cuda is skipped for k beyond its kernels' limit (64)."""
    monkeypatch.setattr(backends.cuda_grid, "is_installed", lambda: True)
    monkeypatch.setattr(backends.pytorch3d_backend, "is_installed", lambda: True)
    gpu = torch.device("cuda")
    assert backends.available(gpu) == ["cuda", "pytorch3d", "torch"]
    assert backends.select(gpu, 8) == "cuda"
    assert backends.select(gpu, 64) == "cuda"
    assert backends.select(gpu, 65) == "pytorch3d"
    monkeypatch.setattr(backends.pytorch3d_backend, "is_installed", lambda: False)
    assert backends.available(gpu) == ["cuda", "torch"]


def test_package_imports_without_cupy_or_pytorch3d():
    code = (
        "import sys; sys.modules['cupy'] = None; sys.modules['pytorch3d'] = None\n"
        "import torch; from occlutrace_compute.nn import available_backends, knn\n"
        "print(available_backends('cuda'), available_backends('cpu'))\n"
        "print(knn(torch.rand(1, 4, 3), torch.rand(1, 4, 3)).idx.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.splitlines() == ["['torch'] ['kdtree', 'torch']", "torch.Size([1, 4, 1])"]


def test_checker_catches_wrong_neighbours():
    """The reference checker itself must fail on a wrong index, a wrong distance and bad padding."""
    case = next(c for c in CASES if c.name == "random")
    args = (case.query, case.ref, case.query_lengths, case.ref_lengths, 2)
    good = knn(*args[:4], k=2, backend="torch")
    wrong_idx = good.idx.clone()
    wrong_idx[0, 0, 0] = good.idx[0, 0, 1] + 1 if good.idx[0, 0, 1] + 1 < 250 else 0
    assert knn_problems(KnnResult(good.dists2, wrong_idx), *args)
    wrong_d2 = good.dists2.clone()
    wrong_d2[0, 5] *= 1.01
    assert knn_problems(KnnResult(wrong_d2, good.idx), *args)
    bad_pad = good.idx.clone()
    bad_pad[1, -1, 0] = 0
    assert knn_problems(KnnResult(good.dists2, bad_pad), *args)


def test_thread_pools_honour_the_process_thread_budget(monkeypatch) -> None:
    """A Ray task with num_cpus=1 gets OMP_NUM_THREADS=1: our thread pools must not take every core."""
    import os

    from occlutrace_compute.nn.threads import thread_budget

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert thread_budget() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "garbage")
    assert thread_budget() == (os.cpu_count() or 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_budget() == (os.cpu_count() or 1)
