"""The Python client distribution (clients/python, `occlutrace_client`) against the real
controller on 127.0.0.1 (uvicorn, the local store, no dispatcher: jobs stay queued here; the
round trip through Ray is in test_service_e2e.py): its models agree with the server's OpenAPI
document, it imports nothing of the server stack, retries are safe (a lost response does not
double a job), 429's Retry-After is honoured, both upload paths work, errors are specific."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import tomllib
from pydantic import BaseModel
from test_service_support import LiveServer, mesh_bytes, write_tokens

import occlutrace_client
from occlutrace_client import ApiError, JobCreate, OccluTraceClient, Unreachable
from occlutrace_compute.service import schemas
from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig

CLIENT_DIR = Path(__file__).resolve().parents[1] / "clients" / "python"
TOKENS = {"tok-alpha-0123456789": "alpha"}


def _config(tmp: Path, **extra) -> ServiceConfig:
    return ServiceConfig.from_env(
        store=f"file://{tmp / 'store'}", tokens_file=str(write_tokens(tmp / "tokens", TOKENS)), **extra
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    config = _config(tmp, rate_per_s=1000.0, rate_burst=5000)
    live = LiveServer(lambda: create_app(config)).start()
    live.store = config.open_store()
    yield live
    live.stop()


class LoseResponses(httpx.BaseTransport):
    """A real HTTP transport that drops the first answer to `POST path` after the server has
    handled the request: what a reset connection or a client timeout looks like."""

    def __init__(self, path: str, times: int = 1) -> None:
        self.inner, self.path, self.left, self.lost = httpx.HTTPTransport(), path, times, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == self.path and self.left:
            response.read()
            response.close()
            self.left -= 1
            self.lost += 1
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


def _pair_files(api: OccluTraceClient, case: str) -> dict[str, str]:
    for seed, role in enumerate(("fixed", "moving")):
        assert api.upload_file(case, f"{role}.stl", mesh_bytes(seed)).name == f"{role}.stl"
    return {"fixed": "fixed.stl", "moving": "moving.stl"}


def _job_records(store, case: str) -> list[str]:
    return [k for k in store.list(f"tenants/alpha/cases/{case}/") if k.endswith("/job.json")]


def test_models_have_the_fields_of_the_servers_schema(server):
    schemas = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["components"]["schemas"]
    names = [n for n in occlutrace_client.__all__ if n in schemas]
    assert len(names) == 12, names  # every body of the API that the client models
    for name in names:
        assert set(getattr(occlutrace_client, name).model_fields) == set(schemas[name]["properties"]), name


def _wire_shape(node: dict, defs: dict) -> object:
    """A JSON-schema node as the wire sees it: its type, item and value shapes, models by name;
    an enum or const counts as its base type (the client reads `state` and `kind` as plain
    strings on purpose, so a newer server's new state does not break it)."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return ("model", name) if "properties" in defs[name] else _wire_shape(defs[name], defs)
    if "anyOf" in node:
        return ("anyOf", *sorted({_wire_shape(n, defs) for n in node["anyOf"]}, key=repr))
    if "enum" in node or "const" in node:
        value = node["enum"][0] if "enum" in node else node["const"]
        return {str: "string", int: "integer", bool: "boolean"}[type(value)]
    kind = node.get("type", "any")
    if kind == "array":
        return ("array", _wire_shape(node.get("items", {}), defs))
    if kind == "object":
        extra = node.get("additionalProperties")
        return ("object", _wire_shape(extra, defs) if isinstance(extra, dict) and extra else "any")
    return kind


def _wire_fields(model: type[BaseModel]) -> dict[str, tuple[object, bool, object]]:
    """Each field of a body model: (its wire shape, required, its default when optional)."""
    schema = model.model_json_schema()
    out = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out[key] = (_wire_shape(schema["properties"][key], schema.get("$defs", {})), info.is_required(), default)
    return out


# Where the client is looser than the server on purpose: it does not validate job options (the
# server does, and answers 422 naming the option), so a newer server's options need no new client.
LOOSER = {("JobCreate", "options")}


def test_models_agree_with_the_servers_in_field_types_and_defaults():
    """The client stays a standalone distribution (no import of the server package, see the
    next test), so its models are a copy of service/schemas.py: this is the test that fails
    when the two drift apart. Per model of the same name: the same fields, each with the same
    wire type, the same required-ness and the same default."""
    models = [
        n
        for n in occlutrace_client.__all__
        if isinstance(m := getattr(occlutrace_client, n), type) and issubclass(m, BaseModel)
    ]
    assert len(models) == 12, models
    for name in models:
        ours, theirs = _wire_fields(getattr(occlutrace_client, name)), _wire_fields(getattr(schemas, name))
        assert set(ours) == set(theirs), name
        for field in ours:
            if (name, field) in LOOSER:
                shape, required, default = ours[field]
                assert shape == ("object", "any") and not required and not theirs[field][1], (name, field)
                # the client's default is the server's default once the server reads it
                assert type(theirs[field][2]).model_validate(default) == theirs[field][2], (name, field)
                continue
            assert ours[field] == theirs[field], (name, field, ours[field], theirs[field])


def test_the_client_imports_nothing_of_the_server_stack(tmp_path):
    deps = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(d.split(">")[0].split("=")[0] for d in deps) == ["httpx", "pydantic"]
    code = (
        "import sys, occlutrace_client; bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'ray', 'numpy', 'occlutrace_compute', 'fastapi', 'trimesh'}); print(bad); assert not bad"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(CLIENT_DIR)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_lost_create_response_is_retried_without_a_second_job(server):
    lose = LoseResponses("/v1/jobs")
    with OccluTraceClient(server.url, "tok-alpha-0123456789", transport=lose, sleep=lambda s: None) as api:
        inputs = _pair_files(api, "lost-1")
        job = api.create_job(case="lost-1", kind="pair", inputs=inputs)
        assert lose.lost == 1 and job.state == "queued"
        assert _job_records(server.store, "lost-1") == [f"tenants/alpha/cases/lost-1/jobs/{job.job_id}/job.json"]
        assert api.get_job(job.job_id).job_id == job.job_id

        lose_batch = LoseResponses("/v1/batches", times=2)
        api_b = OccluTraceClient(server.url, "tok-alpha-0123456789", transport=lose_batch, sleep=lambda s: None)
        batch = api_b.create_batch([JobCreate(case="lost-1", kind="pair", inputs=inputs)] * 3)
        api_b.close()
        assert lose_batch.lost == 2 and len({j.job_id for j in batch.jobs}) == 3
        assert len(_job_records(server.store, "lost-1")) == 1 + 3
        assert api.get_batch(batch.batch_id).total == 3


def test_429_retry_after_is_honoured(tmp_path):
    config = _config(tmp_path, rate_per_s=0.5, rate_burst=1)  # one token per 2 s
    live = LiveServer(lambda: create_app(config)).start()
    waits: list[float] = []
    try:
        with OccluTraceClient(
            live.url, "tok-alpha-0123456789", sleep=lambda s: (waits.append(s), time.sleep(s))
        ) as api:
            assert api.list_jobs().jobs == []
            assert api.list_jobs().jobs == []  # the bucket is empty: 429, Retry-After 2 (1 if slow), then served
        assert len(waits) == 1 and waits[0] in (1.0, 2.0)
        with OccluTraceClient(live.url, "tok-alpha-0123456789", retries=1) as api:
            with pytest.raises(ApiError) as err:
                api.list_jobs()
                api.list_jobs()
        assert err.value.status == 429 and err.value.code == "rate_limited"
    finally:
        live.stop()


def test_presigned_upload_path_and_listing_and_purge(server, monkeypatch):
    import occlutrace_client.client as module

    monkeypatch.setattr(module, "PRESIGNED_ABOVE_BYTES", 1000)  # every mesh goes PUT URL + commit
    with OccluTraceClient(server.url, "tok-alpha-0123456789") as api:
        inputs = _pair_files(api, "big-1")
        assert server.store.exists("tenants/alpha/cases/big-1/inputs/moving.stl")
        assert not server.store.list("tenants/alpha/cases/big-1/staging/")  # committed and cleaned up
        created = [api.create_job(case="big-1", kind="pair", inputs=inputs) for _ in range(5)]
        listed = [j.job_id for j in api.iter_jobs(page_size=2) if j.case == "big-1"]
        assert listed == sorted(j.job_id for j in created)
        cancelled = api.cancel_job(created[0].job_id)
        assert cancelled.state == "cancelled" and cancelled.final
        purged = api.purge("big-1")
        assert purged.count >= 5 and not _job_records(server.store, "big-1")
        with pytest.raises(ApiError) as err:
            api.get_job(created[1].job_id)
        assert err.value.status == 404 and err.value.code == "not_found"


def test_errors_are_specific(server, tmp_path):
    with OccluTraceClient(server.url, "tok-alpha-0123456789") as api:
        with pytest.raises(ApiError) as err:
            api.upload_file("err-1", "fixed.stl", b"solid nothing\nendsolid nothing\n")
        assert err.value.status == 422 and err.value.source and "fixed.stl" in str(err.value)
        with pytest.raises(ApiError) as err:
            api.create_job(case="err-1", kind="pair", inputs={"fixed": "nope.stl", "moving": "nope.stl"})
        assert err.value.status == 422 and "nope.stl" in err.value.message
        with pytest.raises(ApiError) as err:
            api.list_jobs(limit=0)  # FastAPI's own validation error shape
        assert err.value.status == 422 and err.value.source and "limit" in err.value.source
        with pytest.raises(ValueError):
            api.create_job(case="err-1", kind="triple", inputs={})  # checked before it travels
    with OccluTraceClient(server.url, "wrong-token") as api, pytest.raises(ApiError) as err:
        api.list_jobs()
    assert err.value.status == 401
    with OccluTraceClient("http://127.0.0.1:9", "tok-alpha-0123456789", retries=2, sleep=lambda s: None) as api:
        with pytest.raises(Unreachable):
            api.list_jobs()


def test_the_client_builds_as_its_own_wheel(tmp_path):
    """clients/python is a distribution of its own: a wheel with the package, its py.typed and
    nothing of the server."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(CLIENT_DIR, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "out"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "out").glob("occlutrace_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {
        "occlutrace_client/__init__.py",
        "occlutrace_client/client.py",
        "occlutrace_client/models.py",
        "occlutrace_client/py.typed",
    } <= set(names)
    assert not [n for n in names if not n.startswith(("occlutrace_client/", "occlutrace_client-"))], names


def _cases(tmp_path: Path) -> Path:
    for i, role in enumerate(("fixed", "moving")):
        (tmp_path / "cases" / "case-1").mkdir(parents=True, exist_ok=True)
        (tmp_path / "cases" / "case-1" / f"{role}.stl").write_bytes(mesh_bytes(i))
    (tmp_path / "token").write_text("wrong-token\n")
    return tmp_path / "cases"


def test_submit_says_what_to_do_on_a_refused_token_and_a_missing_client(server, tmp_path, monkeypatch, capsys):
    from occlutrace_compute.service.client import submit_main

    argv = [
        str(_cases(tmp_path)),
        "--server",
        server.url,
        "--token-file",
        str(tmp_path / "token"),
        "-o",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert submit_main(argv) == 2
    assert "refused the token (401): check --token-file" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "occlutrace_client", None)  # not installed
    assert submit_main(argv) == 2
    assert "pip install -e clients/python" in capsys.readouterr().err
