"""`occlutrace batch`: every case of a folder tree on Ray, resumable, with summaries.

The driver reads input bytes and writes outputs; Ray tasks only compute. That keeps the
same code right on a remote cluster (`--address`), where workers share no disk with us.
A case counts as finished once `OUT/<case>/result.json` says so AND `OUT/<case>/run.json` (the
SHA-256 of each input and the options it ran with) matches the case as it is now: a changed
input or option re-runs it, `force` re-runs every case. result.json is written last and
atomically, so a crash mid-batch loses at most the cases in flight; an interrupted batch
(Ctrl-C, an exception) still writes summary.csv/json and report.html of what finished.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.cases import CaseFiles, discover_cases
from occlutrace_compute.jobs.models import JobOptions
from occlutrace_compute.jobs.outputs import RESULT_NAME, write_case_outputs
from occlutrace_compute.jobs.pipeline import InputFile, run_case, summary_fields

ERROR_NAME = "error.json"
STAMP_NAME = "run.json"


@dataclass
class CaseRow:
    """One line of summary.csv / summary.json."""

    case: str
    kind: str
    status: str  # succeeded | failed | rejected | skipped (finished in an earlier run) | interrupted
    reason: str = ""
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)


def _execute(
    label: str, kind: str, inputs: dict[str, InputFile], options: JobOptions, allow: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Runs one case; never raises for a bad case (it is a row, not a crash)."""
    t0 = time.perf_counter()
    try:
        out = run_case(kind, inputs, options, label, allow)
    except InputRejected as e:
        return {"status": "rejected", "reason": str(e), "seconds": time.perf_counter() - t0}
    except Exception as e:
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}
    return {"status": "succeeded", "result": out.result, "files": out.files, "seconds": time.perf_counter() - t0}


def _companions(folder: Path) -> dict[str, bytes]:
    """The case folder's MTL and texture files (a textured OBJ/PLY finds its own among them by name)."""
    from occlutrace_compute.meshes.texture import COMPANION_SUFFIXES

    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in COMPANION_SUFFIXES
    }


def _read_inputs(case: CaseFiles) -> dict[str, InputFile]:
    folders = {path.parent for path in case.files.values()}
    extra = {f: _companions(f) for f in folders}
    return {role: InputFile(path.name, path.read_bytes(), extra[path.parent]) for role, path in case.files.items()}


def case_options(case: CaseFiles, options: JobOptions) -> JobOptions:
    """The batch options with the case's own (case.json) on top; InputRejected when they are invalid."""
    if not case.options:
        return options
    try:
        return JobOptions.model_validate({**options.model_dump(), **case.options})
    except ValueError as e:
        raise InputRejected(f"{case.label}/case.json", f"invalid options: {e}") from None


def case_stamp(case: CaseFiles, options: JobOptions) -> dict[str, Any]:
    """What a finished case ran on: each input's name and SHA-256, and the options (run.json).

    Reads every input once, streaming (O(1) memory); cheap beside the case itself."""
    inputs = {}
    for role, path in sorted(case.files.items()):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        inputs[role] = {"file": path.name, "sha256": h.hexdigest()}
    return {"inputs": inputs, "options": options.model_dump(mode="json")}


def stamp_bytes(stamp: dict[str, Any]) -> bytes:
    return json.dumps(stamp, indent=2, sort_keys=True).encode()


def finished_row(case: CaseFiles, out_dir: Path, stamp: dict[str, Any] | None = None) -> CaseRow | None:
    """The row of a case already finished in OUT with the same inputs and options, else None
    (`stamp` None: any finished result counts)."""
    path = out_dir / case.label / RESULT_NAME
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if result.get("status") != "succeeded":
        return None
    if stamp is not None:
        try:
            if json.loads((out_dir / case.label / STAMP_NAME).read_text()) != json.loads(stamp_bytes(stamp)):
                return None
        except (OSError, ValueError):
            return None
    return CaseRow(
        case.label,
        case.kind,
        "skipped",
        "finished in an earlier run",
        metrics=summary_fields(result),
        previews=_previews(out_dir / case.label),
    )


def _previews(case_dir: Path) -> list[str]:
    return [str(p) for p in sorted(case_dir.glob("*.png"))]


def _store_outcome(
    case: CaseFiles, outcome: dict[str, Any], out_dir: Path, stamp: dict[str, Any] | None = None
) -> CaseRow:
    case_dir = out_dir / case.label
    if outcome["status"] == "succeeded":
        files = dict(outcome["files"])
        if stamp is not None:
            files[STAMP_NAME] = stamp_bytes(stamp)
        write_case_outputs(case_dir, files)
        (case_dir / ERROR_NAME).unlink(missing_ok=True)  # an earlier run's failure is history
        return CaseRow(
            case.label,
            case.kind,
            "succeeded",
            seconds=outcome["seconds"],
            metrics=summary_fields(outcome["result"]),
            previews=_previews(case_dir),
        )
    case_dir.mkdir(parents=True, exist_ok=True)
    (case_dir / ERROR_NAME).write_text(json.dumps({"status": outcome["status"], "reason": outcome["reason"]}, indent=2))
    return CaseRow(case.label, case.kind, outcome["status"], outcome["reason"], outcome["seconds"])


@dataclass
class BatchSummary:
    rows: list[CaseRow]

    @property
    def ok(self) -> bool:
        return all(r.status in ("succeeded", "skipped") for r in self.rows)

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for r in self.rows:
            c[r.status] = c.get(r.status, 0) + 1
        return c


def csv_value(key: str, value: Any) -> str:
    """A summary.csv cell: booleans true/false, millimetres to 3 decimals (micrometres to 1),
    shares to 4, other floats to 6 significant digits, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if key.endswith("_um"):
            return f"{value:.1f}"
        if key.endswith(("_mm", "_mm2")):
            return f"{value:.3f}"
        if key.endswith(("share", "fitness", "confidence")):
            return f"{value:.4f}"
        return f"{value:.6g}"
    return str(value)


def _csv_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Registration errors in micrometres in the CSV, as in the report (rmse_mm -> rmse_um)."""
    return {
        (k[:-3] + "_um" if k == "rmse_mm" else k): (v * 1000.0 if k == "rmse_mm" and isinstance(v, (int, float)) else v)
        for k, v in metrics.items()
    }


def write_summaries(rows: list[CaseRow], out_dir: Path) -> None:
    from occlutrace_compute.analysis.report import write_batch_report

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_rows = [_csv_metrics(r.metrics) for r in rows]
    metric_keys = sorted({k for m in csv_rows for k in m})
    with open(out_dir / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "kind", "status", "reason", "seconds", *metric_keys])
        for r, m in zip(rows, csv_rows):
            w.writerow(
                [r.case, r.kind, r.status, r.reason, f"{r.seconds:.3f}", *(csv_value(k, m.get(k)) for k in metric_keys)]
            )
    payload = [
        {
            "case": r.case,
            "kind": r.kind,
            "status": r.status,
            "reason": r.reason,
            "seconds": round(r.seconds, 3),
            "metrics": r.metrics,
        }
        for r in rows
    ]
    (out_dir / "summary.json").write_text(json.dumps(payload, indent=2))
    write_batch_report([{**p, "previews": r.previews} for p, r in zip(payload, rows)], out_dir / "report.html")


def _connect_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    else:
        # address="local": always our own Ray, never a cluster someone started with `ray start` here.
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )


class _Plan:
    """The cases still to look at, largest inputs first, each judged (options, input hashes,
    finished in an earlier run?) only when its turn comes: the first case starts computing after
    one case's hashing, not everyone's, and later cases are hashed while earlier ones compute.
    Largest first: a long case started last would leave the other cores idle at the end.

    Judging one case costs O(its input bytes) time and O(1) memory (streamed hash)."""

    def __init__(self, cases: list[CaseFiles], options: JobOptions, out_dir: Path, force: bool) -> None:
        self.queue = deque(sorted(cases, key=lambda c: (-_input_bytes(c), c.label)))
        self.options = options
        self.out_dir = out_dir
        self.force = force
        self.rows: list[CaseRow] = []  # cases settled while judging: rejected, skipped

    def next(self) -> tuple[CaseFiles, JobOptions, dict[str, Any]] | None:
        """The next case to run with its options and stamp; None when none is left."""
        while self.queue:
            case = self.queue.popleft()
            try:
                opts = case_options(case, self.options)
                stamp = case_stamp(case, opts)
            except InputRejected as e:
                self.rows.append(CaseRow(case.label, case.kind, "rejected", str(e)))
                continue
            except OSError as e:
                self.rows.append(CaseRow(case.label, case.kind, "rejected", f"{case.label}: cannot read input: {e}"))
                continue
            done = None if self.force else finished_row(case, self.out_dir, stamp)
            if done:
                self.rows.append(done)
                continue
            return case, opts, stamp
        return None


def _input_bytes(case: CaseFiles) -> int:
    """Total size of a case's inputs (0 for one that cannot be read: its error shows when judged)."""
    total = 0
    for path in case.files.values():
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def run_batch(
    cases_dir: Path,
    out_dir: Path,
    options: JobOptions | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    on_row: Callable[[CaseRow], None] | None = None,
    allow: tuple[str, ...] = (),
    force: bool = False,
) -> BatchSummary:
    """Runs every unfinished case of `cases_dir` on Ray and writes OUT/<case>/... and summaries.

    A case runs with `options` overridden by its case.json; it is skipped when OUT holds its
    result for the same inputs and options (unless `force`). Summaries are written even when
    the batch is interrupted: cases not finished then are rows with status "interrupted".
    Cases are judged and read as their turn comes (largest inputs first) while the cases in
    flight compute: up to 2 x CPUs cases wait in Ray with their inputs read, so a core that
    finishes a case starts the next one at once.
    """
    import ray
    from tqdm import tqdm

    options = options or JobOptions()
    cases, bad = discover_cases(Path(cases_dir))
    out_dir = Path(out_dir)
    rows: list[CaseRow] = [CaseRow(b.label, "unknown", "rejected", b.reason) for b in bad]
    plan = _Plan(cases, options, out_dir, force)
    ran: list[CaseRow] = []
    try:
        first = plan.next()
        if first is not None:
            _connect_ray(address, num_cpus)
            task = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)(_execute)
            window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))  # bounded in flight: flat memory
            pending: dict[Any, tuple[CaseFiles, dict[str, Any]]] = {}
            nxt: tuple[CaseFiles, JobOptions, dict[str, Any]] | None = first
            bar = tqdm(total=len(cases), unit="case", disable=not progress, dynamic_ncols=True)
            failed = 0
            try:
                while nxt is not None or pending:
                    while nxt is not None and len(pending) < window:
                        case, opts, stamp = nxt
                        try:
                            inputs = _read_inputs(case)
                        except OSError as e:
                            ran.append(
                                CaseRow(case.label, case.kind, "rejected", f"{case.label}: cannot read input: {e}")
                            )
                        else:
                            pending[task.remote(case.label, case.kind, inputs, opts, allow)] = (case, stamp)
                        nxt = plan.next()
                        bar.n = len(ran) + len(plan.rows)
                        bar.refresh()
                    if not pending:
                        continue
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    case, stamp = pending.pop(ready[0])
                    try:
                        outcome = ray.get(ready[0])
                    except Exception as e:
                        outcome = {"status": "failed", "reason": f"worker crashed: {type(e).__name__}", "seconds": 0.0}
                    row = _store_outcome(case, outcome, out_dir, stamp)
                    ran.append(row)
                    failed += row.status != "succeeded"
                    bar.n = len(ran) + len(plan.rows)
                    bar.set_postfix(failed=failed)
                    if on_row:
                        on_row(row)
            finally:
                bar.close()
        else:
            plan.queue.clear()  # every case judged: nothing to run
    finally:
        # Interrupted (Ctrl-C, an exception): what finished is on disk; say so in the summaries too.
        rows += plan.rows + ran
        seen = {r.case for r in rows}
        rows.extend(
            CaseRow(c.label, c.kind, "interrupted", "the batch stopped before this case finished")
            for c in cases
            if c.label not in seen
        )
        rows.sort(key=lambda r: r.case)
        write_summaries(rows, out_dir)
    return BatchSummary(rows)
