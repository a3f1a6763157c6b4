"""`occlutrace submit DIR --server URL --token-file F [--wait] -o OUT`: a folder of cases to a
controller as one batch, resumable; with `wait`, results land in OUT/<case>/ like `batch`.

Resumable at every step: cases finished in OUT are skipped; the submission state (case ->
job id) is kept in OUT/.occlutrace-submit.json; and every request carries an Idempotency-Key
derived from the content, so a re-run after a crash re-finds its jobs instead of doubling them.
Files are uploaded under their role names (fixed.ply, ...), never their original names.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from tqdm import tqdm

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.batch import (
    ERROR_NAME,
    STAMP_NAME,
    BatchSummary,
    CaseRow,
    case_options,
    case_stamp,
    finished_row,
    stamp_bytes,
    write_summaries,
)
from occlutrace_compute.jobs.cases import CaseFiles, discover_cases
from occlutrace_compute.jobs.models import JobOptions
from occlutrace_compute.jobs.outputs import RESULT_NAME, write_case_outputs

if TYPE_CHECKING:
    from occlutrace_client import OccluTraceClient

STATE_NAME = ".occlutrace-submit.json"
RETRIES = 6
BATCH_CHUNK = 500


class SubmitError(RuntimeError):
    """The server refused or kept failing; the message says what to do."""


def read_token(path: str | Path) -> str:
    token = Path(path).read_text().strip()
    if not token or any(c.isspace() for c in token):
        raise SubmitError(f"{path}: expected one token on one line")
    return token


def case_id(label: str) -> str:
    """A store-safe case id from a folder label (`lab1/case 7` -> `lab1--case-7`)."""
    cid = re.sub(r"[^A-Za-z0-9._-]+", "-", label.replace("/", "--")).strip("-.")
    return cid[:128] or "case"


def _client(server: str, token: str, transport: httpx.BaseTransport | None) -> OccluTraceClient:
    try:
        from occlutrace_client import OccluTraceClient
    except ImportError:
        raise SubmitError(
            "occlutrace submit needs the client distribution: pip install -e clients/python (from the repository)"
        ) from None
    return OccluTraceClient(server, token, transport=transport, retries=RETRIES)


@contextmanager
def _api_errors(server: str) -> Iterator[None]:
    """The client's errors as SubmitError, saying what to do."""
    from occlutrace_client import ApiError, Unreachable

    try:
        yield
    except Unreachable as exc:
        raise SubmitError(f"{server}: unreachable ({exc.__cause__.__class__.__name__})") from None
    except ApiError as exc:
        if exc.status == 401:
            raise SubmitError("the server refused the token (401): check --token-file") from None
        raise SubmitError(f"{server} answered HTTP {exc.status}: {exc.message}; re-run to resume") from None


@dataclass
class Submission:
    """What has been sent: label -> {"case", "job_id", "kind"} (saved in OUT)."""

    path: Path
    jobs: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, out_dir: Path) -> Submission:
        path = out_dir / STATE_NAME
        try:
            return cls(path, json.loads(path.read_text())["jobs"])
        except (OSError, ValueError, KeyError):
            return cls(path)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"jobs": self.jobs}, indent=1))
        tmp.replace(self.path)


def _digest(case: CaseFiles, stamp: dict | None = None) -> str:
    """The case's content key: label, inputs and (when given) options, so that a changed case is a new job."""
    h = hashlib.sha256(case.label.encode())
    for role in sorted(case.files):
        h.update(role.encode() + hashlib.sha256(case.files[role].read_bytes()).digest())
    if stamp is not None:
        h.update(json.dumps(stamp["options"], sort_keys=True).encode())
    return h.hexdigest()


def _send_case(client: OccluTraceClient, case: CaseFiles, options: JobOptions) -> tuple[dict | None, str]:
    """Upload one case's files; the job to create (or None) and a rejection reason."""
    from occlutrace_client import ApiError

    cid = case_id(case.label)
    inputs = {}
    for role, path in case.files.items():
        name = f"{role}{path.suffix.lower()}"
        try:
            client.upload_file(cid, name, path)
        except ApiError as exc:
            if exc.status in (401, 429) or exc.status >= 500:
                raise
            return None, f"{case.label}/{path.name}: {exc.message}"
        inputs[role] = name
    return {"case": cid, "kind": case.kind, "inputs": inputs, "options": options.model_dump(mode="json")}, ""


def submit_cases(
    cases_dir: Path,
    server: str,
    token: str,
    out_dir: Path,
    wait: bool = False,
    options: JobOptions | None = None,
    progress: bool = True,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    transport: httpx.BaseTransport | None = None,
    force: bool = False,
) -> BatchSummary:
    """Send every unfinished case of `cases_dir` (options: the batch's, under each case.json's);
    with `wait`, download results into `out_dir`. A case whose inputs or options changed since
    it was sent or finished is sent again; `force` sends every case again."""
    options = options or JobOptions()
    out_dir = Path(out_dir)
    client = _client(server, token, transport)
    from occlutrace_client import ApiError

    cases, bad = discover_cases(Path(cases_dir))
    rows: dict[str, CaseRow] = {b.label: CaseRow(b.label, "unknown", "rejected", b.reason) for b in bad}
    state = Submission.load(out_dir)
    try:
        with _api_errors(server):
            todo = []
            stamps: dict[str, dict] = {}
            for case in cases:
                try:
                    opts = case_options(case, options)
                    stamps[case.label] = stamp = case_stamp(case, opts)
                except (InputRejected, OSError) as e:
                    rows[case.label] = CaseRow(case.label, case.kind, "rejected", str(e))
                    continue
                done = None if force else finished_row(case, out_dir, stamp)
                if done:
                    rows[case.label] = done
                else:
                    todo.append((case, opts))
            new = [
                (c, o)
                for c, o in todo
                if force
                or c.label not in state.jobs
                or state.jobs[c.label].get("digest") != _digest(c, stamps[c.label])
            ]
            specs: list[tuple[CaseFiles, dict]] = []
            for case, opts in tqdm(new, desc="upload", unit="case", disable=not progress or not new):
                spec, reason = _send_case(client, case, opts)
                if spec is None:
                    rows[case.label] = CaseRow(case.label, case.kind, "rejected", reason)
                else:
                    specs.append((case, spec))
            for start in range(0, len(specs), BATCH_CHUNK):
                chunk = specs[start : start + BATCH_CHUNK]
                key = (
                    "submit-"
                    + hashlib.sha256("".join(_digest(c, stamps[c.label]) for c, _ in chunk).encode()).hexdigest()[:40]
                )
                try:
                    created = client.create_batch([s for _, s in chunk], idempotency_key=key)
                except ApiError as exc:
                    if exc.status == 401:
                        raise
                    raise SubmitError(f"the server refused the batch: {exc.message}") from None
                for (case, spec), job in zip(chunk, created.jobs):
                    state.jobs[case.label] = {
                        "case": spec["case"],
                        "job_id": job.job_id,
                        "kind": case.kind,
                        "digest": _digest(case, stamps[case.label]),
                    }
                state.save()
            todo_labels = {c.label for c, _ in todo}
            pending = {label: job for label, job in state.jobs.items() if label not in rows and label in todo_labels}
            if wait:
                _wait_and_download(client, pending, out_dir, rows, progress, poll_s, timeout_s, stamps)
            else:
                for label, job in pending.items():
                    rows[label] = CaseRow(label, job["kind"], "submitted", job["job_id"])
    finally:
        client.close()
    ordered = sorted(rows.values(), key=lambda r: r.case)
    if wait:
        write_summaries(ordered, out_dir)
    return BatchSummary(ordered)


def _wait_and_download(
    client: OccluTraceClient,
    pending: dict[str, dict],
    out_dir: Path,
    rows: dict[str, CaseRow],
    progress: bool,
    poll_s: float,
    timeout_s: float | None,
    stamps: dict[str, dict],
) -> None:
    from occlutrace_client import ApiError

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    bar = tqdm(total=len(pending), desc="results", unit="case", disable=not progress or not pending)
    try:
        while pending:  # bounded by the deadline, or by every job reaching a final state
            for label, job in list(pending.items()):
                try:
                    final = client.get_job(job["job_id"]).final
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    rows[label] = CaseRow(label, job["kind"], "failed", "the job no longer exists (purged?)")
                else:
                    if not final:
                        continue
                    rows[label] = _collect(client, label, job, out_dir, stamps.get(label))
                del pending[label]
                bar.update(1)
            if pending:
                if deadline is not None and time.monotonic() > deadline:
                    raise SubmitError(f"{len(pending)} case(s) still running after {timeout_s} s; re-run to resume")
                time.sleep(poll_s)
    finally:
        bar.close()


def _collect(client: OccluTraceClient, label: str, job: dict, out_dir: Path, stamp: dict | None = None) -> CaseRow:
    from occlutrace_client import ApiError
    from occlutrace_compute.jobs.pipeline import summary_fields

    body = client.get_result(job["job_id"])
    case_dir = out_dir / label
    if body.state != "succeeded":
        case_dir.mkdir(parents=True, exist_ok=True)
        (case_dir / ERROR_NAME).write_text(json.dumps({"status": body.state, "reason": body.reason}, indent=2))
        return CaseRow(label, job["kind"], body.state, body.reason or "")
    files: dict[str, bytes] = {}
    for f in body.files:
        try:
            files[f.name.rsplit("/", 1)[-1]] = client.download(f.url)
        except ApiError as exc:
            raise SubmitError(f"{label}: download of {f.name} failed (HTTP {exc.status}); re-run to resume") from None
    if RESULT_NAME not in files:
        files[RESULT_NAME] = json.dumps(body.result, indent=2).encode()
    if stamp is not None:
        files[STAMP_NAME] = stamp_bytes(stamp)
    write_case_outputs(case_dir, files)
    try:
        metrics = summary_fields(body.result)
    except (KeyError, TypeError):
        metrics = {}
    return CaseRow(
        label, job["kind"], "succeeded", metrics=metrics, previews=[str(p) for p in sorted(case_dir.glob("*.png"))]
    )


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `occlutrace submit`."""
    from occlutrace_compute.cli_jobs import add_analysis_options

    parser.add_argument(
        "cases_dir", type=Path, metavar="DIR", help="folder of case folders (layout: occlutrace batch --help)"
    )
    parser.add_argument("--server", required=True, help="controller URL, e.g. https://occlutrace.example")
    parser.add_argument(
        "--token-file", required=True, type=Path, metavar="FILE", help="file holding the API token (one line)"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("occlutrace-results"),
        metavar="OUT",
        help="where submission state and, with --wait, results go (default: %(default)s)",
    )
    parser.add_argument(
        "--out", dest="output", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )  # the old spelling
    parser.add_argument("--wait", action="store_true", help="wait and download every result into OUT/<case>/")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up waiting after this many seconds (default: wait until every job ends)",
    )
    parser.add_argument("--force", action="store_true", help="send every case again, even those finished in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_analysis_options(parser)


def submit_from_args(args: argparse.Namespace) -> int:
    """Exit code 0 only when every case was submitted (and, with --wait, succeeded); 3 with
    --strict --wait when one is doubtful."""
    from occlutrace_compute.cli_jobs import options_from_args

    try:
        summary = submit_cases(
            args.cases_dir,
            args.server,
            read_token(args.token_file),
            args.output,
            wait=args.wait,
            options=options_from_args(args),
            progress=not args.no_progress,
            timeout_s=args.timeout,
            force=args.force,
        )
    except (SubmitError, InputRejected) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = summary.counts()
    print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for r in summary.rows:
        if r.status in ("failed", "rejected"):
            print(f"  {r.case}: {r.status}: {r.reason}")
    ok_states = ("succeeded", "skipped") if args.wait else ("succeeded", "skipped", "submitted")
    if not all(r.status in ok_states for r in summary.rows):
        return 1
    return 3 if args.strict and args.wait and any(r.metrics.get("doubtful") is True for r in summary.rows) else 0


def submit_main(argv: list[str] | None = None) -> int:
    """`occlutrace submit` as a stand-alone entry point."""
    parser = argparse.ArgumentParser(prog="occlutrace submit", description=__doc__.split("\n\n")[0])
    add_submit_arguments(parser)
    return submit_from_args(parser.parse_args(argv))
