"""A job's process settings (issue 12, fifth session): numpy's BLAS on one thread while jobs run
(reference-counted across overlapping jobs), glibc's heap kept between arrays and handed back
once the process is idle (sixth session)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from occlutrace_compute.jobs import pipeline
from occlutrace_compute.jobs.models import JobOptions
from occlutrace_compute.jobs.pipeline import InputFile, one_blas_thread, run_case


def _blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


@pytest.fixture(scope="module")
def pair_inputs() -> dict[str, InputFile]:
    from occlutrace_compute.meshes import mesh_to_bytes
    from occlutrace_compute.synth import make_pair_case

    case = make_pair_case(4, "clean", overlap=(0.9, 1.0), spacing_mm=0.8)
    return {role: InputFile(f"{role}.ply", mesh_to_bytes(getattr(case, role), "ply")) for role in ("fixed", "moving")}


def test_a_pair_job_runs_numpy_s_blas_on_one_thread_and_restores_it(pair_inputs, monkeypatch):
    """The job's own threads keep both cores busy: OpenBLAS's second thread (the frames' and
    transforms' products) only spun. Fails on the pipeline before the fifth session (2 threads)."""
    seen: dict[str, set[int]] = {}
    real = pipeline.deviation_of

    def spy(*args, **kwargs):
        seen["deviation"] = _blas_threads()
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "deviation_of", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        out = run_case("pair", pair_inputs, JobOptions(device="cpu"), "case-0001")
        assert _blas_threads() == before == {2}
    assert seen["deviation"] == {1}
    assert "deviation.png" in out.files


def test_overlapping_jobs_share_one_cap_and_the_last_restores_it():
    """Jobs on a worker's threads overlap in any order: the first out must not lift the cap under
    the second, and the last out restores the process setting (not the cap it saw on entry)."""
    with threadpool_limits(limits=2, user_api="blas"):
        entered, release_first = threading.Event(), threading.Event()
        inside: list[set[int]] = []

        def first() -> None:
            with one_blas_thread():
                entered.set()
                release_first.wait(30)

        t = threading.Thread(target=first)
        t.start()
        assert entered.wait(30)
        with one_blas_thread():
            inside.append(_blas_threads())
            release_first.set()
            t.join(30)
            inside.append(_blas_threads())  # the first job has left: still capped
        assert inside == [{1}, {1}]
        assert _blas_threads() == {2}


_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from occlutrace_compute.jobs.heap import keep_heap
    assert keep_heap(), "nothing set"
def work():
    for _ in range(20):  # a job's pattern: a few MB-sized temporaries made and dropped together
        a = np.ones(1_000_000); b = a * 2.0; c = b + a; d = np.sqrt(c); del a, b, c, d
work()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
work()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_heap_stops_refaulting_the_same_arrays():
    """Without it glibc trims the heap's top after each set of temporaries and the next set's
    pages fault in again (~2k faults a round here); with it the second pass faults ~none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def faults(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        return int(run.stdout.strip())

    kept, default = faults("keep"), faults("default")
    assert default > 5_000, default  # the pattern does refault on glibc's defaults
    assert kept < default / 10, (kept, default)


def test_keep_heap_is_skipped_when_disabled_or_set_by_the_operator():
    code = "from occlutrace_compute.jobs.heap import keep_heap; print(sorted(keep_heap()))"
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    off = subprocess.run(
        [sys.executable, "-c", code], env=base | {"OCCLUTRACE_KEEP_HEAP": "0"}, capture_output=True, text=True
    )
    assert off.stdout.strip() == "[]"
    own = subprocess.run(
        [sys.executable, "-c", code], env=base | {"MALLOC_TOP_PAD_": "0"}, capture_output=True, text=True
    )
    assert "MALLOC_TOP_PAD_" not in own.stdout and "MALLOC_MMAP_THRESHOLD_" in own.stdout


def test_the_pair_job_keeps_the_heap(pair_inputs, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "keep_heap", lambda: calls.append(1) or {})
    run_case("pair", pair_inputs, JobOptions(device="cpu"), "case-0001")
    assert calls == [1]


def test_a_bite_job_holds_the_cap_and_an_error_lifts_it(pair_inputs, monkeypatch):
    """run_bite runs under the same cap; a job that fails part-way restores the process setting."""
    from occlutrace_compute.registration import bite

    seen: list[set[int]] = []

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        seen.append(_blas_threads())
        raise Stop

    monkeypatch.setattr(bite, "register_bite", spy)
    inputs = {
        "upper": InputFile("upper.ply", pair_inputs["fixed"].data),
        "lower": InputFile("lower.ply", pair_inputs["moving"].data),
        "bite1": InputFile("bite1.ply", pair_inputs["moving"].data),
    }
    with threadpool_limits(limits=2, user_api="blas"):
        with pytest.raises(Stop):
            run_case("bite", inputs, JobOptions(device="cpu"), "case-0002")
        assert _blas_threads() == {2}
    assert seen == [{1}]


_TRIMMABLE = """
import ctypes, gc, os
from occlutrace_compute.jobs.models import JobOptions
from occlutrace_compute.jobs.pipeline import InputFile, run_case
from occlutrace_compute.meshes import mesh_to_bytes
from occlutrace_compute.synth import make_pair_case
case = make_pair_case(4, "clean", overlap=(0.9, 1.0), spacing_mm=0.8)
inputs = {r: InputFile(f"{r}.ply", mesh_to_bytes(getattr(case, r), "ply")) for r in ("fixed", "moving")}
del case
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
for idle in ("1e9", "0"):  # no trim within the test (the control); the trim as the job ends
    os.environ["OCCLUTRACE_HEAP_IDLE_S"] = idle
    out = run_case("pair", inputs, JobOptions(device="cpu"), "case-0001")
    del out
    gc.collect()
    before = resident()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print((before - resident()) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_process_hands_a_finished_job_s_heap_back():
    """keep_heap's bound: after a job the heap glibc could hand back (what an explicit
    malloc_trim releases) is small; unbounded (the code before: 35-90 MiB here) it stays
    resident for the process's life. OCCLUTRACE_HEAP_IDLE_S=0: the trim as the job ends, not
    after an idle second, so that the test needs no wait (what remains: the job's outputs)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OCCLUTRACE_"))}
    run = subprocess.run(
        [sys.executable, "-c", _TRIMMABLE], env=base, capture_output=True, text=True, timeout=300, check=True
    )
    unbounded, bounded = (float(line) for line in run.stdout.split())
    # The job leaves a heap to hand back (~35-90 MiB here, less as the job makes fewer
    # temporaries); with the trim only what the job's outputs held, freed after it, is left
    # (~13 MiB). On the code before, both runs leave the same: the ratio fails there.
    assert unbounded > 16, (unbounded, bounded)
    assert 0 <= bounded < 0.6 * unbounded, (unbounded, bounded)


def test_the_heap_goes_back_once_no_job_ran_for_the_idle_time(monkeypatch):
    """The default: the trim waits for IDLE_S without a job (a batch's next job, starting at once,
    reuses the heap); a job that starts meanwhile cancels it. Waits on the trim's event."""
    from occlutrace_compute.jobs import heap

    if not heap.keep_heap():
        pytest.skip("keep_heap set nothing here (not glibc, or disabled)")
    held = heap.held_heap
    monkeypatch.setenv(heap.IDLE_ENV, "3600")
    trims = held.trims
    with held():
        pass
    with held():  # the next job within the idle time: the pending trim is called off
        assert held._due is None
    assert held.trims == trims
    monkeypatch.setenv(heap.IDLE_ENV, "0.05")
    with held():
        junk = [bytearray(4 << 20) for _ in range(8)]  # some heap to hand back
        del junk
    assert held.trimmed.wait(60)
    assert held.trims == trims + 1


def test_no_trim_where_keep_heap_set_nothing():
    code = (
        "from occlutrace_compute.jobs.heap import held_heap\n"
        "with held_heap():\n    pass\n"
        "with held_heap():\n    pass\n"
        "print(held_heap.trims)"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OCCLUTRACE_"))}
    base["OCCLUTRACE_HEAP_IDLE_S"] = "0"
    trims = {
        name: subprocess.run(
            [sys.executable, "-c", code], env=base | extra, capture_output=True, text=True, check=True
        ).stdout.strip()
        for name, extra in (("kept", {}), ("disabled", {"OCCLUTRACE_KEEP_HEAP": "0"}))
    }
    expected = "2" if sys.platform.startswith("linux") else "0"
    assert trims == {"kept": expected, "disabled": "0"}


def test_the_cap_moves_while_other_threads_are_inside_blas():
    """The cap is process-wide: jobs take and lift it while other threads (another job, a thread
    outside any job) are inside OpenBLAS. Its pthreads build (numpy's wheel) reads the count once
    per call, so each product runs on 1 or 2 threads, never on a pool that changes under it: the
    results stay right and nothing crashes, with jobs entering and leaving the cap and a raw
    setter (as threadpoolctl calls it) toggling it meanwhile. Bounded: fixed trip counts (the
    togglers stop when the products are done, after 100k rounds at most), ~1-3 s on 2 cores."""
    import numpy as np

    rng = np.random.default_rng(12)
    # 60k x 3 x 3 is past OpenBLAS's threading threshold (2 x 262,144 multiply-adds): 2 threads
    points, rotation = rng.standard_normal((60_000, 3)), rng.standard_normal((3, 3))
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    with threadpool_limits(limits=2, user_api="blas"):
        want_small, want_large = points @ rotation, a @ b
        wrong: list[str] = []
        done = threading.Event()

        def small() -> None:
            for _ in range(60):
                if not np.array_equal(points @ rotation, want_small):
                    wrong.append("(N, 3) @ (3, 3)")

        def large() -> None:
            for _ in range(60):
                if not np.allclose(a @ b, want_large, rtol=1e-13, atol=1e-12):
                    wrong.append("(256, 256) @ (256, 256)")

        def jobs() -> int:
            for n in range(100_000):
                if done.is_set():
                    return n
                with one_blas_thread():
                    pass
            return n

        def raw() -> None:
            for _ in range(100_000):
                if done.is_set():
                    return
                for _get, put in pipeline._blas_thread_counts():
                    put(1)
                    put(2)

        togglers = [threading.Thread(target=f) for f in (jobs, jobs, raw)]
        products = [threading.Thread(target=f) for f in (small, small, large, large)]
        for t in togglers + products:
            t.start()
        for t in products:
            t.join(120)
        done.set()
        for t in togglers:
            t.join(120)
        assert not any(t.is_alive() for t in togglers + products)
        assert wrong == []
        # A valid count; not always 2: the raw setter is uncoordinated with the cap's lock, and a
        # transient 1 of its may be what the first job in saved (a lost update, see
        # _OneBlasThread); threadpool_limits' exit restores the test process's own setting.
        assert _blas_threads() <= {1, 2}
