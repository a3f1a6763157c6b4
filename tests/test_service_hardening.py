"""The service's promises under attack (issue 13), against real parts without Ray: the controller
over real HTTP (uvicorn on 127.0.0.1) or in-process ASGI, the real worker class, real folders, and
moto's S3 server. The Ray halves of these checks are in test_service_e2e.py."""

from __future__ import annotations

import hashlib
import json
import random
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from minio import Minio
from minio.versioningconfig import ENABLED, VersioningConfig
from test_service_support import JOB_FN, CallbackSink, LiveServer, mesh_bytes, write_tokens

from occlutrace_compute.meshes import sanitize_bytes
from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.callbacks import callback_url_problem, deliver
from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.records import JobRef
from occlutrace_compute.service.worker import AlignWorker
from occlutrace_compute.storage import LocalStore, S3Store

ROUNDS = 200
ALPHA, BETA = "tok-alpha-0123456789", "tok-beta-01234567890"
TOKENS = {ALPHA: "alpha", BETA: "beta"}
FIXED, MOVING = sanitize_bytes(mesh_bytes(0), "fixed.stl"), sanitize_bytes(mesh_bytes(1), "moving.stl")


def _config(tmp_path: Path, store: str | None = None, **kw) -> ServiceConfig:
    tokens = write_tokens(tmp_path / "tokens", TOKENS)
    kw.setdefault("staging_sweep_s", 0)
    kw.setdefault("max_upload_bytes", 2_000_000)
    return ServiceConfig.from_env(
        store=store or f"file://{tmp_path / 'store'}", tokens_file=str(tokens), job_fn=JOB_FN, rate_burst=100_000, **kw
    )


def _leftovers(store, case: str, job_ids: list[str]) -> list[str]:
    """Every key naming the case or one of its jobs, and every batch record still holding its label
    (the worker's scripted test markers under testctl/ are not the case's)."""
    left = [k for k in store.list("") if not k.startswith("testctl/") and (case in k or any(j in k for j in job_ids))]
    for key in store.list("tenants/alpha/batches/"):
        if case in store.get(key).decode():
            left.append(key)
    for key in store.list("staging/"):
        if case in store.get(key).decode():
            left.append(key)
    return left


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
            ).returncode
            == 0
        )
    except OSError:
        return False


@pytest.fixture
def local(tmp_path):
    """The controller in process on a real folder store: a private tmpfs where the tests may
    mount one (fsync is free there: the 200-round race loop stays fast), else a plain folder."""
    root = tmp_path / "store"
    mounted = _mount_tmpfs(root, "256m")
    config = _config(tmp_path, f"file://{root}")
    store = LocalStore(root)
    app = create_app(config, store=store)
    yield config, store, TestClient(app, headers={"Authorization": f"Bearer {ALPHA}"}), app
    if mounted:
        subprocess.run(["umount", "-l", str(root)], check=False)


# -- 2. purge is final -----------------------------------------------------------------------


def test_purge_racing_a_running_job_leaves_nothing_200_times(local):
    """A batch job runs on the real worker while the case is purged, the two started together;
    each round also leaves an uncommitted upload in staging. After every purge: no object, index
    entry, queue marker, staging entry or batch label of the case, whatever the interleaving."""
    config, store, client, _ = local
    worker = AlignWorker(config)
    rng = random.Random(13)
    outcomes: dict[str, int] = {}
    for round_ in range(ROUNDS):
        case = f"race-{round_:03d}"
        store.put(f"tenants/alpha/cases/{case}/inputs/fixed.stl", FIXED)
        store.put(f"tenants/alpha/cases/{case}/inputs/moving.stl", MOVING)
        assert client.post(f"/v1/cases/{case}/uploads", json={"name": "bite1.stl"}).status_code == 201
        created = client.post(
            "/v1/batches",
            json={"jobs": [{"case": case, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}]},
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["jobs"][0]["job_id"]
        start = threading.Barrier(2)
        result: dict = {}

        def run() -> None:
            start.wait()
            try:
                result["outcome"] = worker.run_batch([JobRef("alpha", case, job_id).key])[0].state
            except BaseException as exc:  # reported by the assertion below
                result["outcome"] = f"raised {exc!r}"

        thread = threading.Thread(target=run)
        thread.start()
        start.wait()
        phase = round_ % 3  # three schedules, so the race covers every part of the job by construction
        if phase == 1:  # purge while the job runs: once it announced its start
            deadline = time.monotonic() + 10
            while not store.list(f"testctl/{job_id}/") and time.monotonic() < deadline:
                time.sleep(0.0005)  # poll
        elif phase == 2:
            time.sleep(rng.random() * 0.005)  # a random point; 0: the two start together
        purged = client.delete(f"/v1/cases/{case}")
        thread.join(30)
        assert purged.status_code == 200, purged.text
        state = result["outcome"]
        assert not state.startswith("raised"), state
        outcomes[state] = outcomes.get(state, 0) + 1
        assert _leftovers(store, case, [job_id]) == [], (round_, state)
        if round_ % 20 == 0:
            batch = client.get(f"/v1/batches/{created.json()['batch_id']}").json()
            assert batch["counts"] == {"purged": 1}
    print(f"purge race, {ROUNDS} rounds, worker outcomes: {outcomes}")


def test_replayed_upload_grant_is_refused_after_commit_and_after_purge(tmp_path):
    config = _config(tmp_path)
    server = LiveServer(lambda: create_app(config)).start()
    store = config.open_store()
    try:
        import httpx

        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ALPHA}"}, timeout=30)
        grant = api.post("/v1/cases/case-301/uploads", json={"name": "fixed.stl"}).json()
        assert grant["url"].startswith(server.url)
        assert httpx.put(grant["url"], content=mesh_bytes(0)).status_code == 204
        assert httpx.put(grant["url"], content=b"raw bytes, second use").status_code == 409  # single use
        assert api.post(grant["commit"]).status_code == 201
        replay = httpx.put(grant["url"], content=b"raw bytes after commit")
        assert replay.status_code == 403, replay.text
        assert store.list("tenants/alpha/cases/case-301/") == ["tenants/alpha/cases/case-301/inputs/fixed.stl"]

        grant = api.post("/v1/cases/case-302/uploads", json={"name": "fixed.stl"}).json()
        assert httpx.put(grant["url"], content=mesh_bytes(0)).status_code == 204
        assert api.delete("/v1/cases/case-302").status_code == 200
        replay = httpx.put(grant["url"], content=b"raw bytes after purge")
        assert replay.status_code == 403, replay.text
        assert [k for k in store.list("") if "case-302" in k] == []
        fresh = api.post("/v1/cases/case-302/uploads", json={"name": "fixed.stl"}).json()  # a new grant works
        assert httpx.put(fresh["url"], content=mesh_bytes(0)).status_code == 204
    finally:
        server.stop()


def test_uncommitted_uploads_expire_and_are_deleted(local):
    config, store, client, app = local
    grant = client.post("/v1/cases/case-303/uploads", json={"name": "fixed.stl"}).json()
    assert client.put(grant["url"], content=b"never committed, never sanitised").status_code == 204
    assert any("/staging/" in k for k in store.list("tenants/alpha/cases/case-303/"))
    assert app.state.sweep_staging(time.time()) == 0  # not yet
    assert app.state.sweep_staging(time.time() + config.staging_ttl_s + 1) == 1
    assert store.list("tenants/alpha/cases/case-303/") == [] and store.list("staging/") == []
    assert client.post(grant["commit"]).status_code == 404
    assert config.staging_ttl_s == 3600  # the default: an hour


def test_job_inputs_are_committed_files_pinned_at_creation(local):
    config, store, client, _ = local
    case = "case-304"
    for name, data in (("fixed.stl", mesh_bytes(0)), ("moving.stl", mesh_bytes(1))):
        assert client.post(f"/v1/cases/{case}/files", files={"file": (name, data)}).status_code == 201
    grant = client.post(f"/v1/cases/{case}/uploads", json={"name": "raw.stl"}).json()
    assert client.put(grant["url"], content=b"solid raw, unsanitised").status_code == 204
    staged = f"tenants/alpha/cases/{case}/staging/{grant['upload_id']}/data"
    for bad in (staged, f"tenants/alpha/cases/{case}/jobs/j0000000000000000000000/job.json"):
        r = client.post(
            "/v1/jobs", json={"case": case, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": bad}}
        )
        assert r.status_code == 422 and "committed input" in r.json()["problem"], r.text
    body = {"case": case, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
    job = client.post("/v1/jobs", json=body).json()
    pinned = hashlib.sha256(store.get(f"tenants/alpha/cases/{case}/inputs/fixed.stl")).hexdigest()
    assert client.post(f"/v1/cases/{case}/files", files={"file": ("fixed.stl", mesh_bytes(9))}).status_code == 201
    outcome = AlignWorker(config).run_batch([JobRef("alpha", case, job["job_id"]).key])[0]
    assert outcome.state == "succeeded"
    result = client.get(f"/v1/jobs/{job['job_id']}/result").json()
    assert result["result"]["inputs"]["fixed"] == pinned  # the file as it was when the job was made
    assert {f["name"] for f in result["files"]} == {"outputs/result.json", "outputs/aligned.stl"}
    earlier = f"tenants/alpha/cases/{case}/jobs/{job['job_id']}/outputs/aligned.stl"  # an earlier output: fine
    again = client.post("/v1/jobs", json={**body, "inputs": {"fixed": earlier, "moving": "moving.stl"}})
    assert again.status_code == 201, again.text


def test_cancelling_a_running_job_removes_its_outputs(local):
    config, store, client, _ = local
    case = "hold-305"
    for name, data in (("fixed.stl", FIXED), ("moving.stl", MOVING)):
        store.put(f"tenants/alpha/cases/{case}/inputs/{name}", data)
    job = client.post(
        "/v1/jobs", json={"case": case, "kind": "pair", "inputs": {"fixed": "fixed.stl", "moving": "moving.stl"}}
    ).json()
    done: dict = {}
    thread = threading.Thread(
        target=lambda: done.update(
            state=AlignWorker(config).run_batch([JobRef("alpha", case, job["job_id"]).key])[0].state
        )
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not store.list(f"testctl/{job['job_id']}/") and time.monotonic() < deadline:
        time.sleep(0.02)  # poll: the job announces that it runs
    assert client.post(f"/v1/jobs/{job['job_id']}/cancel").status_code == 200
    store.put(f"testctl/{job['job_id']}/release", b"")
    thread.join(30)
    assert done["state"] == "cancelled"
    assert store.list(f"tenants/alpha/cases/{case}/jobs/{job['job_id']}/outputs/") == []


def test_versioned_bucket_purge_removes_old_versions(s3_server, s3_bucket, tmp_path):
    config = _config(
        tmp_path,
        f"s3://{s3_bucket}",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
    )
    store = config.open_store()
    store.put("ops/bucket", b"")  # creates the bucket
    raw = Minio(
        s3_server.endpoint.split("//")[1],
        s3_server.access_key,
        s3_server.secret_key,
        secure=False,
        region=s3_server.region,
    )
    raw.set_bucket_versioning(s3_bucket, VersioningConfig(ENABLED))
    client = TestClient(create_app(config), headers={"Authorization": f"Bearer {ALPHA}"})
    for seed in (0, 1):  # two versions of one input
        assert (
            client.post("/v1/cases/case-306/files", files={"file": ("fixed.stl", mesh_bytes(seed))}).status_code == 201
        )
    purged = client.delete("/v1/cases/case-306").json()
    assert purged["versions_removed"] >= 2 and purged["unremoved"] == []
    left = [
        o.object_name
        for o in raw.list_objects(
            s3_bucket, prefix="tenants/alpha/cases/case-306/", recursive=True, include_version=True
        )
    ]
    assert left == []


# -- 3. auth before bytes ----------------------------------------------------------------------


class _Counting:
    """Outermost ASGI layer: counts the request-body bytes the app pulls from the connection."""

    def __init__(self, app) -> None:
        self.app, self.received = app, 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def test_unauthenticated_150mb_upload_is_refused_before_the_body(tmp_path):
    config = _config(tmp_path, max_upload_bytes=200_000_000)
    counting: list[_Counting] = []
    server = LiveServer(lambda: counting.append(_Counting(create_app(config))) or counting[-1]).start()
    # a well-formed multipart body (a 150 MB file part), streamed: never more than 64 KiB in memory
    part_head = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.stl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    part_tail = b"\r\n--xyz--\r\n"
    file_bytes = 150 * 1024 * 1024
    total = len(part_head) + file_bytes + len(part_tail)
    chunk = b"\0" * 65536
    head = (
        f"POST /v1/cases/case-307/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong-token-000000\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {total}\r\n\r\n"
    ).encode()
    sent, answer = 0, b""

    def body_piece(offset: int) -> bytes:
        if offset < len(part_head):
            return part_head[offset:]
        if offset < len(part_head) + file_bytes:
            return chunk[: len(part_head) + file_bytes - offset]
        return part_tail[offset - len(part_head) - file_bytes :]

    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(head)
            while sent < total:
                readable, _, _ = select.select([sock], [sock], [], 60)
                if readable:  # the server answered (early): stop sending
                    break
                try:
                    sent += sock.send(body_piece(sent))
                except OSError:
                    break
            sock.settimeout(60)
            try:
                while b"\r\n\r\n" not in answer and (part := sock.recv(65536)):
                    answer += part
            except OSError:
                pass
    finally:
        server.stop()
    print(
        f"unauthenticated 150 MB upload: client sent {sent / 1e6:.1f} MB before the answer, "
        f"the app read {counting[-1].received} body bytes"
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert counting[-1].received < 1_000_000


def test_failed_logins_are_limited_per_address(local):
    _, _, client, app = local
    wrong = TestClient(app, headers={"Authorization": "Bearer not-a-token-0000000"})
    codes = [wrong.get("/v1/jobs").status_code for _ in range(40)]
    assert codes[:30] == [401] * 30 and codes[30:] == [429] * 10
    r = wrong.get("/v1/jobs")
    assert int(r.headers["retry-after"]) >= 1 and r.json()["error"] == "rate_limited"
    assert client.get("/v1/jobs").status_code == 429  # the same address: a right guess gains nothing


# -- 4. cheap requests stay cheap ----------------------------------------------------------------


class CountingStore(LocalStore):
    calls = 0

    def __getattribute__(self, name):
        if name in ("put", "get", "exists", "list", "delete", "put_if_absent", "size", "copy"):
            type(self).calls += 1
        return super().__getattribute__(name)


def test_a_job_body_with_thousands_of_roles_is_refused_before_any_store_call(tmp_path):
    config = _config(tmp_path)
    store = CountingStore(tmp_path / "store")
    client = TestClient(create_app(config, store=store), headers={"Authorization": f"Bearer {ALPHA}"})
    store.put("tenants/alpha/cases/case-308/inputs/fixed.stl", FIXED)
    body = {"case": "case-308", "kind": "pair", "inputs": {f"role{i}": "fixed.stl" for i in range(8000)}}
    CountingStore.calls = 0
    started = time.monotonic()
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422 and CountingStore.calls == 0, (r.status_code, CountingStore.calls)
    assert time.monotonic() - started < 5


def test_commit_learns_the_size_before_reading_the_object(s3_server, s3_bucket, tmp_path):
    config = _config(
        tmp_path,
        f"s3://{s3_bucket}",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
    )
    reads: list[str] = []

    class Watched(S3Store):
        def get(self, key: str) -> bytes:
            reads.append(key)
            return super().get(key)

    store = Watched(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, s3_bucket, region=s3_server.region)
    client = TestClient(create_app(config, store=store), headers={"Authorization": f"Bearer {ALPHA}"})
    grant = client.post("/v1/cases/case-309/uploads", json={"name": "fixed.stl"}).json()
    staged = f"tenants/alpha/cases/case-309/staging/{grant['upload_id']}/data"
    store.put(staged, b"\0" * (config.max_upload_bytes + 1))  # put there by some other way than our PUT
    r = client.post(grant["commit"])
    assert r.status_code == 413 and staged not in reads, (r.status_code, reads)


# -- 5. faults reported as what they are ---------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    if not _mount_tmpfs(mount, "1m"):
        pytest.skip("needs to mount a 1 MB tmpfs (root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_answers_json_503_and_readiness_fails(tmp_path, tiny_disk):
    config = _config(tmp_path, f"file://{tiny_disk}")
    server = LiveServer(lambda: create_app(config)).start()
    try:
        import httpx

        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ALPHA}"}, timeout=30)
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        try:
            with open(tiny_disk / "filler", "wb", buffering=0) as filler:  # fill the disk up
                while True:
                    filler.write(b"\0" * 4096)
        except OSError:
            pass
        r = api.post("/v1/cases/case-310/files", files={"file": ("fixed.stl", mesh_bytes(0))})
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json", (r.status_code, r.text)
        assert r.json()["error"] == "store_unavailable" and int(r.headers["retry-after"]) > 0
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["store"] == "StoreUnavailable"
        (tiny_disk / "filler").unlink()
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.stop()


# -- 7. callbacks --------------------------------------------------------------------------------


def test_one_tenants_stuck_receiver_does_not_delay_anothers_callbacks():
    from occlutrace_compute.service.callbacks import CallbackPool  # the dispatcher's and the controller's pool

    hung = socket.create_server(("127.0.0.1", 0), backlog=64)  # accepts, never answers
    sink = CallbackSink()
    pool = CallbackPool(per_tenant=2)
    try:
        stuck = f"http://127.0.0.1:{hung.getsockname()[1]}/hook"
        for i in range(8):
            pool.submit("slow-lab", deliver, stuck, {"job_id": f"j{i}"}, None, attempts=1, allow_private=True)
        started = time.monotonic()
        pool.submit("other-lab", deliver, sink.url, {"job_id": "k1"}, None, attempts=1, allow_private=True)
        while not sink.received and time.monotonic() - started < 10:
            time.sleep(0.02)  # poll the receiver
        delay = time.monotonic() - started
        print(f"callback of another tenant delivered after {delay:.2f} s (8 stuck ahead of it)")
        assert sink.received and delay < 2.0
        assert pool.pending("slow-lab") == 6  # two in flight, the rest wait their tenant's turn
    finally:
        sink.close()
        hung.close()


@pytest.mark.parametrize(
    "address",
    [
        "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254 (cloud metadata)
        "[64:ff9b:1::7f00:1]",  # local-use NAT64 of 127.0.0.1
        "[2002:a00:1::1]",  # 6to4 of 10.0.0.1
        "[::a00:1]",  # IPv4-compatible 10.0.0.1
        "[::ffff:7f00:1]",  # IPv4-mapped 127.0.0.1
        "[2001:0:4136:e378:8000:63bf:f5ff:fffe]",  # Teredo
    ],
)
def test_ipv6_addresses_carrying_internal_ipv4_are_refused(address):
    problem = callback_url_problem(f"http://{address}/hook")
    assert problem and "non-public" in problem


def test_ipv6_addresses_carrying_public_ipv4_pass():
    assert callback_url_problem("http://[64:ff9b::808:808]/hook") is None
    assert callback_url_problem("http://[2002:808:808::1]/hook") is None


def test_role_list_is_checked_in_the_body_model():
    from occlutrace_compute.service.schemas import JobCreate

    with pytest.raises(ValueError):
        JobCreate(case="c", kind="pair", inputs={"fixed": "a", "moving": "b", "extra": "c"})
    assert json.loads(JobCreate(case="c", kind="pair", inputs={"fixed": "a", "moving": "b"}).model_dump_json())


# -- properties ------------------------------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from occlutrace_compute.service.auth import parse_tokens  # noqa: E402
from occlutrace_compute.service.callbacks import is_public  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["nat64", "nat64-local", "6to4", "mapped", "compatible"]))
def test_an_ipv6_address_is_as_public_as_the_ipv4_address_it_carries(v4_int, form):
    import ipaddress

    v4 = ipaddress.IPv4Address(v4_int)
    embed = {
        "nat64": (0x0064FF9B << 96) | v4_int,
        "nat64-local": (0x0064FF9B0001 << 80) | v4_int,
        "6to4": (0x2002 << 112) | (v4_int << 80) | 1,
        "mapped": (0xFFFF << 32) | v4_int,
        "compatible": v4_int,
    }[form]
    v6 = ipaddress.IPv6Address(embed)
    if form == "compatible" and v4_int <= 1:
        return  # :: and ::1 are IPv6's own unspecified and loopback addresses
    if not v4.is_global:
        assert not is_public(v6), (form, v4, v6)
    elif v6.is_global:
        assert is_public(v6), (form, v4, v6)


_tenant = st.sampled_from(["alpha", "beta", "gamma", "lab-1", "lab-2"])
_token = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="#"), min_size=1, max_size=30)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_tenant, _token, st.sampled_from(["ok", "extra", "missing", "badtenant"])), max_size=12))
def test_a_tokens_file_never_proves_a_tenant_named_on_a_bad_line(lines):
    text = ""
    bad_tenants, any_unreadable = set(), False
    for tenant, token, kind in lines:
        if kind == "ok":
            text += f"{tenant} {token}\n"
        elif kind == "extra":
            text += f"{tenant} {token} extra\n"
            bad_tenants.add(tenant)
        elif kind == "missing":
            text += f"{tenant}\n"
            bad_tenants.add(tenant)
        else:
            text += f"!{tenant} {token}\n"
            any_unreadable = True
    parsed = parse_tokens(text)
    loaded = {e.tenant for e in parsed.entries}
    assert not loaded & bad_tenants
    if any_unreadable:
        assert not loaded
    owners: dict[bytes, set[str]] = {}
    for entry in parsed.entries:
        owners.setdefault(entry.digest, set()).add(entry.tenant)
    assert all(len(t) == 1 for t in owners.values())  # no token proves two tenants
    for tenant, token, kind in lines:  # every loaded plain token is long enough
        if kind == "ok" and tenant in loaded and not token.startswith("sha256:"):
            assert any(len(tok) >= 16 for t, tok, k in lines if t == tenant and k == "ok")
