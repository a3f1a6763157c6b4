"""Case key layout, purge_case and open_store configuration."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from minio import Minio
from s3server import S3Endpoint

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.storage import LocalStore, ObjectStore, S3Store, open_store
from occlutrace_compute.storage.keys import (
    case_prefix,
    input_key,
    job_record_key,
    output_key,
    purge_case,
    split_case_key,
)


def test_case_layout() -> None:
    assert case_prefix("lab-1", "case_07.b") == "tenants/lab-1/cases/case_07.b/"
    assert input_key("t", "c", "upper.stl") == "tenants/t/cases/c/inputs/upper.stl"
    assert job_record_key("t", "c", "j1") == "tenants/t/cases/c/jobs/j1/job.json"
    assert output_key("t", "c", "j1", "result.json") == "tenants/t/cases/c/jobs/j1/outputs/result.json"
    parts = split_case_key(output_key("t", "c", "j1", "aligned.ply"))
    assert (parts.tenant, parts.case, parts.rest) == ("t", "c", "jobs/j1/outputs/aligned.ply")


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "../x", "a/b", "a b", ".hidden", "-x", "x" * 129, "café", "a\\b", "c\n"]
)
def test_bad_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InputRejected) as info:
        case_prefix("tenant", bad)
    assert info.value.source == f"case id {bad!r}"
    with pytest.raises(ValueError, match="tenant id"):
        case_prefix(bad, "case")


@pytest.mark.parametrize("key", ["tenants/t/cases/c", "tenants/t/other/c/x", "x/t/cases/c/y", "tenants/t/cases/../y"])
def test_split_case_key_rejects_keys_outside_a_case(key: str) -> None:
    with pytest.raises(InputRejected):
        split_case_key(key)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server: S3Endpoint = request.getfixturevalue("s3_server")
    return S3Store(server.endpoint, server.access_key, server.secret_key, request.getfixturevalue("s3_bucket"))


def everything(store: ObjectStore, request) -> list[str]:
    """Every object, read around the store: the folder on disk, or the bucket's own listing."""
    if isinstance(store, LocalStore):
        return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file())
    server: S3Endpoint = request.getfixturevalue("s3_server")
    client = Minio(urlsplit(server.endpoint).netloc, server.access_key, server.secret_key, secure=False)
    return sorted(o.object_name for o in client.list_objects(store.bucket, recursive=True))


def test_purge_case_removes_exactly_the_case(store: ObjectStore, request) -> None:
    doomed = [input_key("t1", "c1", "upper.stl"), output_key("t1", "c1", "j1", "result.json")]
    kept = [
        input_key("t1", "c10", "upper.stl"),  # same id prefix
        input_key("t2", "c1", "upper.stl"),  # same case id, other tenant
        input_key("t1", "c0", "lower.stl"),
    ]
    for key in doomed + kept:
        store.put(key, b"mesh")
    store.put_json(job_record_key("t1", "c1", "j1"), {"state": "succeeded"})
    doomed.append(job_record_key("t1", "c1", "j1"))

    assert purge_case(store, "t1", "c1") == sorted(doomed)
    assert everything(store, request) == sorted(kept)
    assert purge_case(store, "t1", "c1") == []


ENV_VARS = [
    "OCCLUTRACE_STORE",
    "OCCLUTRACE_S3_ENDPOINT",
    "OCCLUTRACE_S3_REGION",
    "OCCLUTRACE_S3_PUBLIC_ENDPOINT",
    "OCCLUTRACE_S3_ACCESS_KEY",
    "OCCLUTRACE_S3_ACCESS_KEY_FILE",
    "OCCLUTRACE_S3_SECRET_KEY",
    "OCCLUTRACE_S3_SECRET_KEY_FILE",
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_default_is_a_local_folder_in_the_user_data_home(env, tmp_path: Path) -> None:
    env.setenv("XDG_DATA_HOME", str(tmp_path))
    store = open_store()
    assert isinstance(store, LocalStore) and store.root == tmp_path / "occlutrace"


def test_file_urls_and_plain_paths(env, tmp_path: Path) -> None:
    env.setenv("OCCLUTRACE_STORE", f"file://{tmp_path}/from-env")
    assert open_store().root == tmp_path / "from-env"
    assert open_store(f"file://{tmp_path}/x").root == tmp_path / "x"
    assert open_store(str(tmp_path / "y")).root == tmp_path / "y"
    env.chdir(tmp_path)
    assert open_store("file://rel/dir").root == tmp_path / "rel" / "dir"


def test_s3_from_env_with_secret_files(env, tmp_path: Path, s3_server: S3Endpoint, s3_bucket: str, caplog) -> None:
    for var, value in s3_server.env(s3_bucket, "deep/prefix").items():
        env.setenv(var, value)
    env.delenv("OCCLUTRACE_S3_SECRET_KEY")
    (tmp_path / "secret").write_text(s3_server.secret_key + "\n")
    env.setenv("OCCLUTRACE_S3_SECRET_KEY_FILE", str(tmp_path / "secret"))
    caplog.set_level(logging.DEBUG)

    store = open_store()
    assert isinstance(store, S3Store)
    assert (store.endpoint, store.bucket, store.prefix) == (s3_server.endpoint, s3_bucket, "deep/prefix/")
    store.put("k", b"v")
    assert store.get("k") == b"v"
    assert s3_server.secret_key not in repr(store) + caplog.text


def test_s3_overrides_replace_env(env, s3_server: S3Endpoint, s3_bucket: str) -> None:
    env.setenv("OCCLUTRACE_S3_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    store = open_store(
        f"s3://{s3_bucket}",
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    store.put("k", b"v")
    assert store.exists("k")


@pytest.mark.parametrize(
    "setup, error, match",
    [
        ({"OCCLUTRACE_STORE": "s3://b-1"}, ValueError, "OCCLUTRACE_S3_ENDPOINT is not set"),
        (
            {
                "OCCLUTRACE_STORE": "s3://b-1",
                "OCCLUTRACE_S3_ENDPOINT": "http://h:9000",
                "OCCLUTRACE_S3_ACCESS_KEY": "ak",
            },
            ValueError,
            "set OCCLUTRACE_S3_SECRET_KEY or OCCLUTRACE_S3_SECRET_KEY_FILE",
        ),
        (
            {
                "OCCLUTRACE_STORE": "s3://b-1",
                "OCCLUTRACE_S3_ENDPOINT": "http://h:9000",
                "OCCLUTRACE_S3_ACCESS_KEY": "ak",
                "OCCLUTRACE_S3_SECRET_KEY_FILE": "/nonexistent/secret",
            },
            ValueError,
            "OCCLUTRACE_S3_SECRET_KEY_FILE '/nonexistent/secret': cannot read",
        ),
        (
            {
                "OCCLUTRACE_STORE": "s3://Bad_Bucket",
                "OCCLUTRACE_S3_ENDPOINT": "http://h:9000",
                "OCCLUTRACE_S3_ACCESS_KEY": "ak",
                "OCCLUTRACE_S3_SECRET_KEY": "s3cr3t-value",
            },
            ValueError,
            "S3 bucket 'Bad_Bucket'",
        ),
        (
            {
                "OCCLUTRACE_STORE": "s3://b-1",
                "OCCLUTRACE_S3_ENDPOINT": "ftp://h/x",
                "OCCLUTRACE_S3_ACCESS_KEY": "ak",
                "OCCLUTRACE_S3_SECRET_KEY": "s3cr3t-value",
            },
            ValueError,
            "S3 endpoint 'ftp://h/x'",
        ),
        ({"OCCLUTRACE_STORE": "gs://b"}, ValueError, "expected file:///path or s3://bucket/prefix"),
    ],
)
def test_bad_configuration_is_named(env, setup: dict[str, str], error: type, match: str) -> None:
    for var, value in setup.items():
        env.setenv(var, value)
    with pytest.raises(error, match=match) as info:
        open_store()
    assert "s3cr3t" not in str(info.value)


def test_unknown_or_misplaced_overrides(env, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown option"):
        open_store(str(tmp_path), bukket="x")
    with pytest.raises(TypeError, match="s3:// stores only"):
        open_store(str(tmp_path), endpoint="http://h:9000")
