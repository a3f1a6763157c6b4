"""The ObjectStore interface on a local folder and on a real S3 server (moto_server on loopback)."""

from __future__ import annotations

import pickle
import threading
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from minio import Minio
from s3server import S3Endpoint

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.storage import (
    KeyNotFound,
    LocalStore,
    ObjectStore,
    S3Store,
    StoreUnavailable,
)
from occlutrace_compute.storage.keys import TEMP_PREFIX
from occlutrace_compute.storage.retry import is_transient


def make_s3(server: S3Endpoint, bucket: str, prefix: str = "pfx", **kw) -> S3Store:
    return S3Store(server.endpoint, server.access_key, server.secret_key, bucket, prefix, **kw)


def raw_client(server: S3Endpoint) -> Minio:
    host = urlsplit(server.endpoint).netloc
    return Minio(host, server.access_key, server.secret_key, secure=False, region=server.region)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return make_s3(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))


def temp_files(store: ObjectStore) -> list[Path]:
    assert isinstance(store, LocalStore)
    return [p for p in store.root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def test_put_get_overwrite(store: ObjectStore) -> None:
    data = bytes(range(256)) * 100
    store.put("tenants/t/cases/c/inputs/a.stl", data)
    assert store.get("tenants/t/cases/c/inputs/a.stl") == data
    store.put("tenants/t/cases/c/inputs/a.stl", b"short")
    assert store.get("tenants/t/cases/c/inputs/a.stl") == b"short"
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_exists_and_missing(store: ObjectStore) -> None:
    store.put("a/b", b"1")
    assert store.exists("a/b")
    assert not store.exists("a/c")
    assert not store.exists("a")  # a folder is not an object
    with pytest.raises(KeyNotFound) as info:
        store.get("a/c")
    assert isinstance(info.value, KeyError)


def test_list_is_recursive_sorted_and_folder_scoped(store: ObjectStore) -> None:
    keys = ["a/b/d", "a/b/c/e", "a/bc/f", "z"]
    for key in keys:
        store.put(key, key.encode())
    assert store.list("") == sorted(keys)
    assert store.list("a/b") == store.list("a/b/") == ["a/b/c/e", "a/b/d"]
    assert store.list("a/b/c/e") == []  # an object is not a folder
    assert store.list("nothing/here") == []


def test_delete_and_delete_prefix(store: ObjectStore) -> None:
    for key in ["c/1/x", "c/1/y/z", "c/10/x", "d"]:
        store.put(key, b"v")
    store.delete("d")
    store.delete("d")  # idempotent
    assert not store.exists("d")
    assert store.delete_prefix("c/1") == ["c/1/x", "c/1/y/z"]
    assert store.list("") == ["c/10/x"]  # a case whose id merely starts the same survives
    assert store.delete_prefix("c/1") == []
    if isinstance(store, LocalStore):  # no empty folders left behind
        assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")) == [
            "c",
            "c/10",
            "c/10/x",
        ]


def test_local_delete_removes_empty_folders(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/b/c/d", b"1")
    store.put("a/e", b"2")
    store.delete("a/b/c/d")
    assert not (tmp_path / "a" / "b").exists()
    assert (tmp_path / "a" / "e").is_file()


def test_json_roundtrip(store: ObjectStore) -> None:
    record = {"state": "queued", "matrix": [[1.0, 0.0, 0.0, 0.5]] * 4, "n": 3, "label": "ü"}
    store.put_json("jobs/j1/job.json", record)
    assert store.get_json("jobs/j1/job.json") == record


def test_json_readers_never_see_a_partial_object(store: ObjectStore) -> None:
    """A reader racing a writer always parses a whole version (atomic replace / atomic PUT)."""
    versions = [{"version": i, "pad": "x" * 50_000} for i in range(20)]
    store.put_json("race.json", versions[0])
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            for _ in range(200):  # bounded; stops early when the writer is done
                seen.append(store.get_json("race.json")["version"])
                if done.is_set():
                    return
        except BaseException as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for version in versions[1:]:
        store.put_json("race.json", version)
    done.set()
    reader.join(30)
    assert not errors
    assert seen and set(seen) <= set(range(20))
    assert store.get_json("race.json")["version"] == 19


def test_put_if_absent_writes_once(store: ObjectStore) -> None:
    assert store.put_json_if_absent("claims/k.json", {"job_id": "j-1"}) is True
    assert store.put_json_if_absent("claims/k.json", {"job_id": "j-2"}) is False
    assert store.get_json("claims/k.json") == {"job_id": "j-1"}
    assert store.list("claims/") == ["claims/k.json"]  # no temp file left behind


def test_local_put_if_absent_on_a_folder_key_is_rejected(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/b", b"x")
    with pytest.raises(InputRejected, match="other objects are stored under this key"):
        store.put_if_absent("a", b"y")


def test_put_if_absent_has_one_winner_among_simultaneous_writers(tmp_path: Path) -> None:
    """Eight threads race to create one key: exactly one wins and its content is what stays.
    (Local folder only: moto_server checks If-None-Match and then writes, not atomically as S3
    and MinIO do.)"""
    store = LocalStore(tmp_path)
    start = threading.Barrier(8)
    won: list[int] = []

    def claim(i: int) -> None:
        start.wait(10)
        if store.put_json_if_absent("claims/race.json", {"writer": i}):
            won.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1
    assert store.get_json("claims/race.json") == {"writer": won[0]}


def test_put_stream_failure_writes_nothing(store: ObjectStore) -> None:
    store.put_stream("s/obj", [b"ab", b"cd"])
    assert store.get("s/obj") == b"abcd"

    def failing():
        yield b"x" * 100_000
        raise OSError("client went away mid-upload")

    with pytest.raises(OSError, match="mid-upload"):
        store.put_stream("s/obj", failing())
    with pytest.raises(OSError, match="mid-upload"):
        store.put_stream("s/new", failing())
    assert store.get("s/obj") == b"abcd"
    assert store.list("s") == ["s/obj"]
    if isinstance(store, LocalStore):
        assert temp_files(store) == []


BAD_KEYS = ["", "/abs", "a//b", "a/", "a/../b", "..", "./a", "a\\b", "a/\x00b", TEMP_PREFIX + "x"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(store: ObjectStore, key: str) -> None:
    for op in (store.get, store.exists, store.delete, lambda k: store.put(k, b"1")):
        with pytest.raises(InputRejected) as info:
            op(key)
        assert repr(key) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("prefix", ["/abs", "a/../b", "a//"])
def test_bad_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        store.list(prefix)
    with pytest.raises(ValueError):
        store.delete_prefix(prefix)


def test_local_key_under_an_object_is_rejected(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/b", b"1")
    with pytest.raises(InputRejected, match="itself an object"):
        store.put("a/b/c", b"2")
    store.put("x/y/z", b"1")
    with pytest.raises(InputRejected, match="other objects"):
        store.put("x/y", b"2")
    assert temp_files(store) == []


def test_local_presigned_urls_are_none(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert store.presigned_get("a") is None
    assert store.presigned_put("a") is None


def test_presigned_get_and_put_with_plain_http(s3_server: S3Endpoint, s3_bucket: str) -> None:
    store = make_s3(s3_server, s3_bucket)
    store.put("cases/c/result.json", b'{"ok": true}')
    url = store.presigned_get("cases/c/result.json")
    assert httpx.get(url).content == b'{"ok": true}'

    up = store.presigned_put("cases/c/inputs/scan.stl", expires=timedelta(minutes=2))
    assert httpx.put(up, content=b"solid x\nendsolid x\n").status_code == 200
    assert store.get("cases/c/inputs/scan.stl") == b"solid x\nendsolid x\n"


def test_presigned_expiry_is_signed_and_bounded(s3_server: S3Endpoint, s3_bucket: str) -> None:
    """moto does not reject expired URLs, so we check the expiry the URL is signed with."""
    store = make_s3(s3_server, s3_bucket)

    def expires_s(url: str) -> int:
        return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])

    assert expires_s(store.presigned_get("k")) == 15 * 60
    assert expires_s(store.presigned_put("k", timedelta(seconds=42))) == 42
    for bad in (timedelta(0), timedelta(days=8)):
        with pytest.raises(ValueError, match="between 1 second and 7 days"):
            store.presigned_get("k", bad)


def test_presigned_urls_name_the_public_endpoint(s3_server: S3Endpoint, s3_bucket: str) -> None:
    public = s3_server.endpoint.replace("127.0.0.1", "localhost")
    store = make_s3(s3_server, s3_bucket, public_endpoint=public)
    store.put("k", b"data")
    url = store.presigned_get("k")
    assert url.startswith(f"{public}/{s3_bucket}/pfx/k?")
    assert httpx.get(url).content == b"data"


def test_bucket_is_created_on_first_use(s3_server: S3Endpoint, s3_bucket: str) -> None:
    client = raw_client(s3_server)
    assert not client.bucket_exists(s3_bucket)
    store = make_s3(s3_server, s3_bucket)
    assert store.list("") == []
    assert client.bucket_exists(s3_bucket)


def test_s3_prefix_isolates_stores_in_one_bucket(s3_server: S3Endpoint, s3_bucket: str) -> None:
    one, two = make_s3(s3_server, s3_bucket, "one"), make_s3(s3_server, s3_bucket, "two/")
    one.put("k", b"1")
    two.put("k", b"2")
    assert one.list("") == two.list("") == ["k"]
    assert (one.get("k"), two.get("k")) == (b"1", b"2")
    names = sorted(o.object_name for o in raw_client(s3_server).list_objects(s3_bucket, recursive=True))
    assert names == ["one/k", "two/k"]
    assert one.delete_prefix("") == ["k"]
    assert two.exists("k")


def test_s3_secrets_stay_out_of_repr_and_pickles(s3_server: S3Endpoint, s3_bucket: str) -> None:
    store = make_s3(s3_server, s3_bucket)
    assert s3_server.secret_key not in repr(store)
    assert s3_bucket in repr(store)
    with pytest.raises(TypeError, match="open_store"):
        pickle.dumps(store)


def test_transient_classification() -> None:
    from minio.error import ServerError
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    assert is_transient(ServerError("boom", 503))
    assert not is_transient(ServerError("odd", 304))
    assert is_transient(MaxRetryError(None, "/", NewConnectionError(None, "refused")))
    assert is_transient(ConnectionResetError())
    assert not is_transient(ValueError("bad"))
    assert not is_transient(StoreUnavailable("already wrapped"))
