"""The device worker (issue 16, item 3): CPU workers prepare and finish pair jobs, one device actor
registers and measures batches of pairs across jobs, sized by points. Real Ray, a real local
store, real meshes; the device is the CPU stand-in (device "cpu", num_gpus=0)."""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass

import numpy as np
import pytest
import ray
from hypothesis import given, settings, strategies as st
from test_service_support import ray_session, wait_for

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import TERMINAL_STATES, JobRecord, JobSpec
from occlutrace_compute.jobs.pipeline import InputFile, run_case
from occlutrace_compute.jobs.stages import AnsweredIndex, DeviceAnswer, PairError, prepare_pair
from occlutrace_compute.meshes import mesh_to_bytes
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.device_worker import DEVICE_ACTOR_NAME, DeviceActor, enabled, take
from occlutrace_compute.service.dispatcher import get_dispatcher
from occlutrace_compute.service.records import JobRepo, new_id, ref_of
from occlutrace_compute.storage.config import open_store
from occlutrace_compute.storage.keys import input_key

TENANT = "lab1"
BAD_STL = b"solid x\nfacet normal 0 0 1\n"  # an ASCII STL cut off inside its first facet


@given(st.lists(st.integers(1, 10**7), max_size=40), st.integers(1, 10**7))
@settings(max_examples=200, deadline=None)
def test_take_cuts_the_queue_in_order_within_the_budget(points: list[int], budget: int) -> None:
    rest, batches = list(points), []
    for _ in range(len(points)):  # each take removes at least one pair
        if not rest:
            break
        n = take(rest, budget)
        assert n >= 1
        assert sum(rest[:n]) <= budget or n == 1  # over the budget only as a pair alone
        if n < len(rest):
            assert sum(rest[: n + 1]) > budget  # as many as fit
        batches.append(rest[:n])
        rest = rest[n:]
    assert rest == [] and [p for b in batches for p in b] == points
    assert take([], budget) == 0


@dataclass
class _Sized:
    """What the device actor's batching reads of a payload: its key, points and solo flag."""

    key: str
    points: int
    solo: bool


@given(st.lists(st.tuples(st.integers(1, 10**6), st.booleans()), min_size=1, max_size=30), st.integers(1, 3 * 10**6))
@settings(max_examples=100, deadline=None)
def test_device_batches_keep_arrival_order_fit_the_budget_and_run_solo_pairs_alone(
    sizes: list[tuple[int, bool]], budget: int
) -> None:
    config = ServiceConfig(store="file:///nonexistent", device_points_budget=budget, device_max_wait_s=0.0)
    actor = DeviceActor(config, "cpu", serve=False)
    pairs = [_Sized(f"k{i}", pts, solo) for i, (pts, solo) in enumerate(sizes)]
    for pair in pairs:
        actor.submit(pair)
    batches = []
    for _ in pairs:  # each batch takes at least one pair
        if not actor.pending():
            break
        batches.append([p.payload for p in actor._next_batch()])
    assert actor.pending() == 0 and [p for b in batches for p in b] == pairs
    for b in batches:
        assert len(b) == 1 or (sum(p.points for p in b) <= budget and not any(p.solo for p in b))


@given(st.integers(1, 3000), st.data())
@settings(max_examples=100, deadline=None)
def test_answered_index_answers_only_the_rows_it_was_asked_for(n: int, data) -> None:
    rng = np.random.default_rng(n)
    points = rng.normal(size=(n, 3))
    answer = DeviceAnswer(None, rng.normal(size=n), rng.random(n) < 0.5, 0.0)
    index = AnsweredIndex(None, points, answer, 3.0)  # type: ignore[arg-type]
    cut = data.draw(st.integers(0, n))
    for rows, start in ((points, 0), (points[:cut], 0), (points[cut:], cut)):
        got = index.query(rows, max_distance=3.0)
        np.testing.assert_array_equal(got.distance, answer.distance[start : start + len(rows)])
        np.testing.assert_array_equal(got.on_boundary, answer.on_boundary[start : start + len(rows)])
    with pytest.raises(ValueError, match="other points"):
        index.query(points.copy(), max_distance=3.0)  # equal values, not the answered rows
    with pytest.raises(ValueError, match="other points"):
        index.query(points[::2], max_distance=3.0)  # not a run of rows
    with pytest.raises(ValueError, match="within"):
        index.query(points, max_distance=1.0)


def test_switch_is_off_by_default_and_auto_follows_the_gpu() -> None:
    assert not enabled(ServiceConfig(), gpu_seen=False)  # the default: the ordinary worker
    assert not enabled(ServiceConfig(), gpu_seen=True)  # not yet run on a GPU: opt-in
    assert enabled(ServiceConfig(device_worker="auto"), gpu_seen=True)
    assert not enabled(ServiceConfig(device_worker="auto"), gpu_seen=False)
    assert enabled(ServiceConfig(device_worker="on"), gpu_seen=False)
    assert not enabled(ServiceConfig(device_worker="off"), gpu_seen=True)
    with pytest.raises(ValueError, match="OCCLUTRACE_DEVICE_WORKER"):
        ServiceConfig(device_worker="gpu")  # refused when the service starts, not in the dispatcher's loop


def test_a_changed_pair_through_the_stages_is_located_as_run_case_locates_it(tmp_path) -> None:
    """A rescan with changed regions through prepare -> device -> finish, in process: the changed
    regions come back placed on the arch (sector, side) exactly as `run_case` places them, and
    the matrix and deviation agree (finish once handed the reference mesh where the reference's
    arch-frame future belonged: no test had a changed pair on this path)."""
    import json

    from occlutrace_compute.jobs.stages import device_answers, finish_pair
    from occlutrace_compute.synth import make_pair_case

    store = open_store(f"file://{tmp_path}")
    case = make_pair_case(2, "changed", overlap=(0.8, 1.0), spacing_mm=0.4)
    files = {role: mesh_to_bytes(getattr(case, role), "stl") for role in ("fixed", "moving")}
    keys = {role: input_key(TENANT, "case-changed", f"{role}.stl") for role in files}
    for role, data in files.items():
        store.put(keys[role], data)
    spec = JobSpec(job_id=new_id("j"), tenant=TENANT, case="case-changed", kind="pair", inputs=keys)
    pp = prepare_pair(spec, store, spec.job_id)
    (answer,) = device_answers([pp.payload], "cpu")
    assert isinstance(answer, DeviceAnswer)
    staged = finish_pair(pp, answer, 0.0, store)
    ordinary = json.loads(
        run_case("pair", {r: InputFile(f"{r}.stl", d) for r, d in files.items()}, spec.options, spec.case).files[
            "result.json"
        ]
    )
    assert ordinary["changed_regions"], "the case must have changed regions for this test to mean anything"
    np.testing.assert_allclose(staged["matrix"], ordinary["matrix"], atol=1e-7)
    strip = ("centroid_mm", "area_mm2", "max_mm", "mean_mm")  # floats: compared below with a tolerance
    assert [{k: v for k, v in r.items() if k not in strip} for r in staged["changed_regions"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in ordinary["changed_regions"]
    ]
    assert staged["deviation"].keys() == ordinary["deviation"].keys()


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Two synthetic rescan pairs (~20k vertices a scan) and one with a broken FIXED file, as a
    tenant's committed inputs in a local store; their specs."""
    from occlutrace_compute.synth import make_pair_case

    root = tmp_path_factory.mktemp("devstore")
    store = open_store(f"file://{root}")
    specs, inputs = [], []
    for i, seed in enumerate((3, 4, 5)):
        case = make_pair_case(seed, "clean", overlap=(0.9, 1.0), spacing_mm=0.45)
        files = {role: mesh_to_bytes(getattr(case, role), "stl") for role in ("fixed", "moving")}
        if i == 2:
            files["fixed"] = BAD_STL
        name = f"case-{i:04d}"
        keys = {}
        for role, data in files.items():
            keys[role] = input_key(TENANT, name, f"{role}.stl")
            store.put(keys[role], data)
        specs.append(JobSpec(job_id=new_id("j"), tenant=TENANT, case=name, kind="pair", inputs=keys))
        inputs.append({role: InputFile(f"{role}.stl", data) for role, data in files.items()})
    return root, store, specs, inputs


def test_points_budget_splits_batches_and_an_oversized_pair_runs_alone(cases) -> None:
    root, store, specs, _ = cases
    payloads = [prepare_pair(s, store, s.job_id).payload for s in specs[:2]]
    points = [p.points for p in payloads]
    for budget, batches in ((sum(points), [[0, 1]]), (sum(points) - 1, [[0], [1]])):
        actor = DeviceActor(ServiceConfig(store=f"file://{root}", device_points_budget=budget), "cpu", serve=False)
        for p in payloads:
            actor.submit(p)
        formed = [[p.payload.key for p in actor._next_batch()] for _ in batches]
        assert formed == [[specs[i].job_id for i in b] for b in batches]

    tiny = DeviceActor(ServiceConfig(store=f"file://{root}", device_points_budget=1), "cpu", serve=False)
    first, second = tiny.submit(payloads[0]), tiny.submit(payloads[1])
    assert tiny.serve_one() == [specs[0].job_id]  # bigger than the whole budget: alone, not stuck
    assert isinstance(first.result(timeout=0), DeviceAnswer) and not second.done()
    assert tiny.stats()[-1]["points"] == points[0]


def test_a_pair_that_breaks_its_batch_fails_alone_with_the_ordinary_paths_error(cases) -> None:
    """Collinear landmarks pass the prepare stage's checks and break the registration of the whole
    batch: the batch is run pair by pair, the good pair is answered, the bad one gets run_case's
    error."""
    root, store, specs, inputs = cases
    line = [[[float(i), 0.0, 0.0], [float(i), 1.0, 0.0]] for i in range(3)]  # moving points on a line
    bad_spec = specs[1].model_copy(update={"options": specs[1].options.model_copy(update={"landmarks": line})})
    good, bad = prepare_pair(specs[0], store, "good").payload, prepare_pair(bad_spec, store, "bad").payload
    actor = DeviceActor(ServiceConfig(store=f"file://{root}", device_points_budget=10**9), "cpu", serve=False)
    answers: dict[str, object] = {}
    threads = [threading.Thread(target=lambda p=p: answers.update({p.key: actor.run(p)})) for p in (good, bad)]
    for t in threads:
        t.start()
    wait_for(lambda: actor.pending() == 2, 60, "both pairs queued")
    assert actor.serve_one() == ["good", "bad"]
    for t in threads:
        t.join(60)
    assert isinstance(answers["good"], DeviceAnswer) and isinstance(answers["bad"], PairError)
    crossed = pickle.loads(pickle.dumps(answers["bad"]))  # what Ray carries back to the worker
    with pytest.raises(InputRejected) as want:
        run_case("pair", inputs[1], bad_spec.options, bad_spec.case)
    assert str(crossed.error()) == str(want.value) and "collinear" in str(want.value)
    assert [b["keys"] for b in actor.stats()] == [["good"], ["bad"]]  # run alone after the batch broke


@pytest.fixture(scope="module")
def ordinary(cases):
    """What the ordinary path (run_case, as run_job runs it) answers for each job."""
    _, _, specs, inputs = cases
    out = []
    for spec, files in zip(specs, inputs):
        try:
            out.append(run_case("pair", files, spec.options, spec.case).result)
        except InputRejected as exc:
            out.append(exc)
    return out


@pytest.fixture(scope="module")
def device_service(cases):
    root, store, specs, _ = cases
    budget = sum(prepare_pair(s, store, s.job_id).payload.points for s in specs[:2])
    config = ServiceConfig.from_env(
        store=f"file://{root}",
        ray_namespace="device-worker",
        device_worker="on",
        device_actor_cpus=0,
        device_points_budget=budget,  # the two good pairs close the batch at once
        device_max_wait_s=60.0,  # a safety net only: the budget closes the batch
        cpu_workers=1,
        max_workers=1,
        batch_size=8,
        rescan_s=1.0,
    )
    with ray_session(num_cpus=2):
        repo = JobRepo(store)
        records = [JobRecord(spec=s) for s in specs]
        for record in records:
            assert repo.create(record)
        dispatcher = get_dispatcher(config)
        ray.get(dispatcher.notify_many.remote([ref_of(r).key for r in records]), timeout=60)
        yield config, repo, records
        ray.get(dispatcher.shutdown.remote(), timeout=30)
        ray.kill(dispatcher, no_restart=True)


@pytest.mark.slow  # Ray, real registrations: ~40 s CPU-bound with the fixtures
def test_device_path_answers_as_the_ordinary_path_with_batches_across_jobs(device_service, ordinary) -> None:
    config, repo, records = device_service

    def finals():
        got = [repo.load(ref_of(r)) for r in records]
        return got if all(g is not None and g.state in TERMINAL_STATES for g in got) else None

    done = wait_for(finals, 600, "every job to end")
    for record, want in zip(done, ordinary):
        assert record.attempts == 1
        if isinstance(want, InputRejected):  # the broken file: only its job, with the same reason
            assert record.state == "rejected" and record.reason == str(want)
            assert "fixed.stl" in record.reason
            continue
        assert record.state == "succeeded", record.reason
        got = record.result
        assert np.abs(np.array(got["matrix"]) - np.array(want["matrix"])).max() < 1e-4  # 0.1 um
        for name, value in want["deviation"].items():
            if isinstance(value, float):
                assert got["deviation"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
            else:
                assert got["deviation"][name] == value, name
        assert got["metrics"]["rmse_mm"] == pytest.approx(want["metrics"]["rmse_mm"], rel=1e-9)
        assert len(got["changed_regions"]) == len(want["changed_regions"])
        assert set(got["outputs"]) == {*want["outputs"], "result.json"}  # run_job maps names to keys
    actor = ray.get_actor(DEVICE_ACTOR_NAME, namespace=config.ray_namespace)
    batches = ray.get(actor.stats.remote(), timeout=30)
    good = {r.spec.job_id for r in records[:2]}
    held = [{k.split("/")[-2] for k in b["keys"]} for b in batches]
    assert any(len(h & good) > 1 for h in held), batches  # one device batch held pairs of several jobs
    assert sorted(j for h in held for j in h) == sorted(good)  # each good pair on the device once


@pytest.mark.slow  # Ray, real registrations: ~40 s CPU-bound with the fixtures
def test_device_actor_killed_with_a_pair_aboard_loses_no_job_and_runs_none_twice(
    cases, device_service, ordinary
) -> None:
    """One more job waits at the device for batch-mates (below the budget); the actor is killed:
    the pair is sent again alone to the restarted actor and its job succeeds on its first attempt,
    run on the device once."""
    import os
    import signal

    _, _, specs, _ = cases
    config, repo, _ = device_service
    record = JobRecord(spec=specs[0].model_copy(update={"job_id": new_id("j")}))
    assert repo.create(record)
    actor = ray.get_actor(DEVICE_ACTOR_NAME, namespace=config.ray_namespace)
    pid = ray.get(actor.info.remote(), timeout=30)["pid"]
    ray.get(get_dispatcher(config).notify.remote(ref_of(record).key), timeout=60)
    wait_for(lambda: ray.get(actor.pending.remote(), timeout=30) == 1, 120, "the pair at the device")
    os.kill(pid, signal.SIGKILL)

    def final():
        got = repo.load(ref_of(record))
        return got if got is not None and got.state in TERMINAL_STATES else None

    done = wait_for(final, 600, "the job to end")
    assert done.state == "succeeded" and done.attempts == 1, done.reason
    assert np.abs(np.array(done.result["matrix"]) - np.array(ordinary[0]["matrix"])).max() < 1e-4
    assert ray.get(actor.info.remote(), timeout=60)["pid"] != pid  # restarted
    batches = ray.get(actor.stats.remote(), timeout=30)  # the restarted actor's: this pair alone, once
    assert [(b["keys"], b["solo"]) for b in batches] == [([ref_of(record).key], True)]
