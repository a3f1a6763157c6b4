"""`occlutrace align`'s registration in a process of its own, started before the command's imports.

Why: a one-shot `align` spends ~1.9 s of CPU importing torch (the registration's engine), and that
import is Python code holding the GIL: on a thread it only takes turns with the command's other
imports (bench/RESULTS.md, "Issue 12: the align command, third session"). In a second process it
runs on the second core while the command imports the rest of the job (argument parsing with the
pydantic options, the mesh readers, the analysis stack), parses both inputs and builds the
deviation's index: those leave the torch import's path. The command's process never imports
torch; this one imports nothing the job's other stages need.

`ForkedRegistrar.start()` forks at the command's start, before any Python thread exists, after numpy
is imported (both processes need it, so it is imported once; its OpenBLAS worker pool, started by
the import, is stopped and restarted around the fork by OpenBLAS's own fork handlers). The child imports the
registration engine at once, then waits for one request on a pipe: the two meshes' arrays,
landmarks and device; it answers with the `RegistrationResult` (or the error) and ends without
interpreter teardown. `register()` in the parent sends the request and waits for the answer;
`close()` ends a child that never got one (bad input, --help, Ctrl-C) and reaps it.

Worst case: two pickled copies of both meshes' vertices and faces in flight (O(N + F) memory,
~15 MB at 150k vertices) and one extra process (torch's ~500 MB resident, which the command's
own process no longer holds). Where fork is missing (not POSIX) or OCCLUTRACE_REGISTER_INPROCESS=1
is set, the command registers in its own process as `run_pair` does for every other caller.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol

from occlutrace_compute.errors import InputRejected

if TYPE_CHECKING:
    import numpy as np

    from occlutrace_compute.meshes.model import Mesh
    from occlutrace_compute.registration.result import RegistrationResult

INPROCESS_ENV = "OCCLUTRACE_REGISTER_INPROCESS"


class Registrar(Protocol):
    """What `run_pair` registers with: `registration.register` itself, or ForkedRegistrar.register."""

    def __call__(
        self, fixed: Mesh, moving: Mesh, *, landmarks: tuple[np.ndarray, np.ndarray] | None, device: str
    ) -> RegistrationResult: ...


class RegistrationProcessFailed(RuntimeError):
    """The registration process failed with an error of its own (its traceback in the message)."""


def _child(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The registration process: import the engine, register one pair, answer, exit."""
    code = 0
    try:
        from occlutrace_compute.registration.engine import register

        request = pickle.load(requests)
        from occlutrace_compute.meshes.model import Mesh

        fixed_v, fixed_f, moving_v, moving_f, landmarks, device = request
        try:
            reply: tuple[str, Any] = (
                "ok",
                register(Mesh(fixed_v, fixed_f), Mesh(moving_v, moving_f), landmarks=landmarks, device=device),
            )
        except InputRejected as e:
            reply = ("rejected", (e.source, e.problem))
        except Exception as e:  # our fault: the parent reports it as the command's internal error
            reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()
    except BaseException:  # EOF (the parent ended first), Ctrl-C, a broken pipe: nothing to say
        code = 1
    finally:
        os._exit(code)  # no teardown, no atexit of the parent's, no flush of inherited buffers


class ForkedRegistrar:
    """The registration process of one `align` command (see the module docstring)."""

    def __init__(self, pid: int, requests: IO[bytes], replies: IO[bytes]) -> None:
        self.pid = pid
        self._requests = requests
        self._replies = replies
        self._done = False
        # Run by register() while the other process works (this one would only wait): loading
        # what the job's later stages load on first use. Its errors are ignored (a warm-up only).
        self.meanwhile: Callable[[], None] | None = None

    @classmethod
    def start(cls) -> ForkedRegistrar | None:
        """Forks the registration process; None where it cannot or should not be (then the job
        registers in this process). Call before any thread is started."""
        if os.environ.get(INPROCESS_ENV) or not hasattr(os, "fork"):
            return None
        import numpy  # noqa: F401  (imported once, before the fork: both processes use it)

        from occlutrace_compute.jobs.heap import keep_heap

        keep_heap()  # both processes' heaps (jobs/heap.py): set before the fork, inherited

        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: keeps its ends only
            os.close(req_w)
            os.close(rep_r)
            _child(os.fdopen(req_r, "rb"), os.fdopen(rep_w, "wb"))
        os.close(req_r)
        os.close(rep_w)
        return cls(pid, os.fdopen(req_w, "wb"), os.fdopen(rep_r, "rb"))

    def register(
        self, fixed: Mesh, moving: Mesh, *, landmarks: tuple[np.ndarray, np.ndarray] | None, device: str
    ) -> RegistrationResult:
        """`registration.register(fixed, moving, landmarks=..., device=...)` in the registration
        process (geometry only: colours and textures stay here). Once per process."""
        if self._done:
            raise RuntimeError("the registration process serves one request")
        self._done = True
        request = (fixed.vertices, fixed.faces, moving.vertices, moving.faces, landmarks, device)
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        # Written on a thread (the pipe takes it as the other process reads it, once its imports
        # are done) so that this one can warm up meanwhile; the writes release the GIL.
        sender = threading.Thread(target=self._send, args=(payload,), name="occlutrace-registrar")
        sender.start()
        if self.meanwhile is not None:
            try:
                self.meanwhile()
            except Exception:
                pass
        try:
            kind, value = pickle.load(self._replies)
        except (OSError, EOFError, pickle.UnpicklingError):
            sender.join()
            status = self._reap(kill=False)
            raise RegistrationProcessFailed(
                f"the registration process ended without a result (wait status {status})"
            ) from None
        sender.join()
        # Not reaped here: the child's exit (unmapping torch) runs beside the job; close() reaps.
        if kind == "ok":
            return value
        if kind == "rejected":
            raise InputRejected(*value)
        raise RegistrationProcessFailed(value)

    def _send(self, payload: bytes) -> None:
        try:
            self._requests.write(payload)
            self._requests.close()  # EOF after the request: the child reads exactly one
        except OSError:  # the process ended early: register() reports it from the reply side
            pass

    def _reap(self, kill: bool) -> int | None:
        if self.pid <= 0:
            return None
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = None
        self.pid = 0
        return status

    def close(self) -> None:
        """Ends the process if it is still waiting (the command ended before registering) and
        reaps it; closes the pipes. Safe to call twice."""
        for f in (self._requests, self._replies):
            try:
                f.close()
            except OSError:
                pass
        self._reap(kill=True)
