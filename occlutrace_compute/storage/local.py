"""A local folder as object store: the embedded default for one machine (CLI, local Ray).

Writes go to a temp file beside the target, are fsynced, then renamed over it with os.replace,
and the folder is fsynced: a reader (or a crash at any point) sees the old object or the new one,
never a partial one. An empty object (the index and batch entries: half the writes of a job) has
no data to sync: its temp file is not fsynced, only its folder after the rename, which makes the
new entry and the inode it names durable together (a journaling filesystem commits an inode's
creation with, or before, the entry naming it). Temp files are invisible to `list`. Files are
created mode 0600. The per-call paths are plain strings and `os` calls: every job costs about a
dozen store calls, and `pathlib` objects were a measurable part of each (bench/RESULTS.md).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.storage.base import DEFAULT_URL_EXPIRY, KeyNotFound, ObjectStore, StoreUnavailable
from occlutrace_compute.storage.keys import TEMP_PREFIX, check_key, folder_prefix

# A concurrent delete_prefix may remove the (empty) folder between our mkdir and our mkstemp.
_CREATE_ATTEMPTS = 3
# The disk, not the caller: full, over quota, read-only, failing. Raised as StoreUnavailable so the
# controller answers 503 + Retry-After (never a bare 500) and a worker re-queues the job uncharged.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})
# A temp file as tempfile.mkstemp opens it: new (O_EXCL), not through a symlink, not inherited.
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# An empty transient object made in place: created or truncated, never through a symlink.
_EMPTY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class LocalStore(ObjectStore):
    # A read, existence check or delete of a local file is a few syscalls (~20-100 us): handing
    # it to a thread pool costs as much again in CPU, so callers that batch store calls run
    # these inline (`records.light_map`) and keep threads for the synced writes, which overlap.
    light_calls_inline = True

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore(root={str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _file(self, key: str) -> str:
        """`_path` as a string, without building a `Path` (the hot paths: put, get, exists, delete)."""
        return os.path.join(self._root, *check_key(key).split("/"))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.put_stream(key, (data,), content_type)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream") -> None:
        """Stream into a temp file and rename it into place; content_type is not kept locally."""
        self._publish(key, chunks, os.replace)

    def put_transient(self, key: str, data: bytes) -> None:
        """A temp file renamed into place without fsync (see ObjectStore.put_transient): ~0.1 ms
        where a synced put waits for two journal commits (~10 ms on the dev box's disk). An empty
        one is created (or truncated) in place: an empty file has no partial state to hide."""
        if data:
            self._publish(key, (data,), os.replace, sync=False)
            return
        path = self._file(key)
        for attempt in range(_CREATE_ATTEMPTS):  # a concurrent purge may remove the folder again
            try:
                os.close(os.open(path, _EMPTY_FLAGS, 0o600))
                return
            except FileNotFoundError:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
            except IsADirectoryError:
                raise InputRejected(f"object key {key!r}", "other objects are stored under this key") from None
            except NotADirectoryError:
                raise InputRejected(f"object key {key!r}", "a parent of this key is itself an object") from None
            except OSError as exc:
                raise _disk_error(exc, f"put {key!r}", self.root) from exc
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise InputRejected(f"object key {key!r}", "a parent of this key is itself an object") from None

    def put_empty_many(self, keys: Iterable[str]) -> None:
        """Empty objects: each an empty temp file renamed into place, then each distinct folder
        fsynced once (an empty file has no data to sync; the folder's sync makes the entry and
        its inode durable): a round of a batch's entries, which share a few folders, costs a
        few journal commits instead of one per entry. A folder removed meanwhile by a purge
        (`_fsync_dir`) held entries the purge deleted: nothing to sync there."""
        folders: dict[str, None] = {}
        for key in keys:
            path = self._file(key)
            parent = os.path.dirname(path)
            try:
                fd, tmp = self._create_temp(key, parent)
                os.close(fd)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
            except IsADirectoryError:
                raise InputRejected(f"object key {key!r}", "other objects are stored under this key") from None
            except OSError as exc:
                raise _disk_error(exc, f"put {key!r}", self.root) from exc
            folders[parent] = None
        for folder in folders:
            _fsync_dir(folder)

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """The temp file linked into place: link(2) fails on an existing name, atomically."""
        try:
            self._publish(key, (data,), os.link)
        except FileExistsError:
            if self._path(key).is_dir():
                raise InputRejected(f"object key {key!r}", "other objects are stored under this key") from None
            return False
        return True

    def _publish(self, key: str, chunks: Iterable[bytes], place: Callable[[str, str], None], sync: bool = True) -> None:
        """Write `chunks` to a synced temp file beside the key's path, then `place(temp, path)`
        (rename or link); the temp file never outlives the call. A full or failing disk raises
        StoreUnavailable. Plain `os` calls on the file descriptor (no file object), and the temp
        file unlinked only where it was not renamed: this runs for every store write (~13 a job
        on the worker, 7 at creation), and each avoided call and exception is CPU per job.
        An empty object's temp file is not fsynced (module docstring); its folder is."""
        path = self._file(key)
        parent = os.path.dirname(path)
        try:
            fd, tmp = self._create_temp(key, parent)
        except OSError as exc:
            raise _disk_error(exc, f"put {key!r}", self.root) from exc
        placed = False
        try:
            try:
                written = 0
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:  # os.write may write less than asked (bounded: each call writes >= 1 byte)
                        n = os.write(fd, view)
                        written += n
                        view = view[n:]
                if sync and written:
                    os.fsync(fd)
            finally:
                os.close(fd)
            place(tmp, path)
            placed = place is os.replace  # a link leaves the temp name: unlinked below
        except IsADirectoryError:
            raise InputRejected(f"object key {key!r}", "other objects are stored under this key") from None
        except OSError as exc:
            raise _disk_error(exc, f"put {key!r}", self.root) from exc
        finally:
            if not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        if sync:
            _fsync_dir(parent)

    def copy(self, src: str, dst: str) -> None:
        """A hard link to `src`'s file under a temp name, renamed to `dst`: no byte is copied, and
        since every write replaces a key's file (rename), a later write to `src` leaves `dst` as it was.
        The link is made straight under a fresh random name (link(2) fails on an existing one);
        only when that fails for a missing folder are the folders made (`_create_temp`)."""
        source = self._file(src)
        if not os.path.isfile(source):
            raise KeyNotFound(src)
        path = self._file(dst)
        parent = os.path.dirname(path)
        tmp = os.path.join(parent, TEMP_PREFIX + os.urandom(8).hex())
        placed = False
        try:
            try:
                os.link(source, tmp)
            except (FileNotFoundError, NotADirectoryError):  # the source went, or a folder is missing
                if not os.path.isfile(source):
                    raise KeyNotFound(src) from None
                fd, made = self._create_temp(dst, parent)  # makes the folders; InputRejected for a file parent
                os.close(fd)
                os.unlink(made)
                os.link(source, tmp)
            os.replace(tmp, path)
            placed = True
        except FileNotFoundError:
            raise KeyNotFound(src) from None
        except OSError as exc:
            raise _disk_error(exc, f"copy {src!r} to {dst!r}", self.root) from exc
        finally:
            if not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        _fsync_dir(parent)

    def size(self, key: str) -> int:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(key) from None
        if not os.path.isfile(self._path(key)):
            raise KeyNotFound(key)
        return st.st_size

    def _create_temp(self, key: str, parent: str) -> tuple[int, str]:
        """A new private (0600) temp file in `parent`, created exclusively; the folders made
        only when the first try finds them missing (most writes go to an existing folder: one
        `open` instead of a `mkdir` that fails plus `mkstemp`'s name generation)."""
        attempt = 1
        while True:
            tmp = os.path.join(parent, TEMP_PREFIX + os.urandom(8).hex())
            try:
                return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
            except FileNotFoundError:
                pass  # a folder is missing: made below
            except (FileExistsError, NotADirectoryError):
                # a parent really is a file, or (FileExistsError) a 64-bit random name taken: try again
                if self._file_ancestor(Path(parent)) or attempt >= _CREATE_ATTEMPTS:
                    raise InputRejected(f"object key {key!r}", "a parent of this key is itself an object") from None
                attempt += 1
                continue
            try:
                os.makedirs(parent, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                # either a parent really is a file, or a concurrent delete_prefix removed a folder
                # between mkdir's "exists" and its is_dir check: only the first is the caller's fault
                if self._file_ancestor(Path(parent)) or attempt >= _CREATE_ATTEMPTS:
                    raise InputRejected(f"object key {key!r}", "a parent of this key is itself an object") from None
            except FileNotFoundError:
                if attempt >= _CREATE_ATTEMPTS:
                    raise
            if attempt >= _CREATE_ATTEMPTS + 1:  # a concurrent purge kept removing the folder
                raise FileNotFoundError(f"folder {parent} removed while writing {key!r}")
            attempt += 1

    def _file_ancestor(self, folder: Path) -> bool:
        """Whether `folder` or one of its parents below the root is a file (not a folder)."""
        while folder != self.root and self.root in folder.parents:
            if folder.is_file():
                return True
            folder = folder.parent
        return False

    def get(self, key: str) -> bytes:
        try:
            with open(self._file(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(key) from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._file(key))

    def list(self, prefix: str, start_after: str | None = None, limit: int | None = None) -> list[str]:
        """An ordered walk: each folder's entries are read and sorted as keys would sort (a
        folder `b` as `b/`), folders wholly before `start_after` are skipped unread, and the walk
        stops at `limit` keys. Cost: the folders along `start_after`'s path plus those that hold
        the page, each read whole (so keep folders bounded: the job indexes shard by time)."""
        if limit is not None and limit < 1:
            raise ValueError(f"list limit must be >= 1, got {limit}")
        prefix = folder_prefix(prefix)
        base = self.root.joinpath(*prefix.split("/")) if prefix else self.root
        walk = self._ordered(base, prefix, start_after)
        return list(walk) if limit is None else list(itertools.islice(walk, limit))

    def _ordered(self, folder: Path, rel: str, after: str | None) -> Iterator[str]:
        """Keys under `folder` (whose keys start with `rel`) greater than `after`, in order.
        Recursion depth is bounded by the key depth (keys are at most 1024 bytes)."""
        try:
            with os.scandir(folder) as it:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e.name)
                    for e in it
                    if not e.name.startswith(TEMP_PREFIX)
                ]
        except (FileNotFoundError, NotADirectoryError):  # gone (a concurrent purge) or an object
            return
        entries.sort()
        for sort_name, name in entries:
            key = rel + sort_name
            if not sort_name.endswith("/"):
                if after is None or key > after:
                    yield key
            elif after is None or key > after:
                yield from self._ordered(folder / name, key, None)  # every key in it is after
            elif after.startswith(key):
                yield from self._ordered(folder / name, key, after)
            # else: every key in the folder sorts before `after`: skipped unread

    def delete(self, key: str) -> None:
        path = self._file(key)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            os.unlink(path)
            self._prune(os.path.dirname(path))

    def delete_prefix(self, prefix: str) -> builtins.list[str]:  # (`list` is a method here)
        keys = self.list(prefix)
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()
        folder = folder_prefix(prefix)
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        walked = sorted((Path(w[0]) for w in os.walk(base)), key=lambda p: -len(p.parts))
        for sub in walked:
            if sub != self.root:
                with contextlib.suppress(OSError):  # not empty: a concurrent put, keep it
                    sub.rmdir()
        self._prune(str(base.parent))
        return keys

    def _prune(self, folder: str) -> None:
        """Remove now-empty folders from `folder` up to (not including) the root."""
        inside = self._root.rstrip(os.sep) + os.sep
        while folder.startswith(inside) and len(folder) > len(inside):  # each step is one level up
            try:
                os.rmdir(folder)
            except OSError:  # not empty (or already gone): stop
                return
            folder = os.path.dirname(folder)

    def presigned_get(self, key: str, expires: timedelta = DEFAULT_URL_EXPIRY) -> str | None:
        check_key(key)
        return None

    def presigned_put(self, key: str, expires: timedelta = DEFAULT_URL_EXPIRY) -> str | None:
        check_key(key)
        return None


def _disk_error(exc: OSError, what: str, root: Path) -> Exception:
    """StoreUnavailable for a disk fault (full, quota, read-only, I/O); anything else as it was."""
    if exc.errno in DISK_ERRNOS:
        return StoreUnavailable(f"{what}: local store {root} unavailable: {os.strerror(exc.errno)}")
    return exc


def _fsync_dir(folder: str) -> None:
    """Make the rename durable: without it a power loss can forget the new directory entry. A
    folder already gone was emptied and removed by a concurrent delete_prefix (a purge): the
    entry it would make durable is deleted, so there is nothing left to sync."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
