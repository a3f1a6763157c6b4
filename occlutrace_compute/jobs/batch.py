"""`occlutrace batch`: every case of a folder tree on Ray, resumable, with summaries.

The driver reads input bytes and writes outputs; Ray tasks only compute. That keeps the
same code right on a remote cluster (`--address`), where workers share no disk with us.
A case counts as finished once `OUT/<case>/result.json` says so: it is written last and
atomically, so a crash mid-batch loses at most the cases in flight.
"""

from __future__ import annotations

import csv
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.cases import CaseFiles, discover_cases
from occlutrace_compute.jobs.models import JobOptions
from occlutrace_compute.jobs.outputs import RESULT_NAME, write_case_outputs
from occlutrace_compute.jobs.pipeline import InputFile, run_case, summary_fields

ERROR_NAME = "error.json"


@dataclass
class CaseRow:
    """One line of summary.csv / summary.json."""

    case: str
    kind: str
    status: str  # succeeded | failed | rejected | skipped (finished in an earlier run)
    reason: str = ""
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)


def _execute(label: str, kind: str, inputs: dict[str, InputFile], options: JobOptions,
             allow: tuple[str, ...] = ()) -> dict[str, Any]:
    """Runs one case; never raises for a bad case (it is a row, not a crash)."""
    t0 = time.perf_counter()
    try:
        out = run_case(kind, inputs, options, label, allow)
    except InputRejected as e:
        return {"status": "rejected", "reason": str(e), "seconds": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - our fault; reported per case, the batch goes on
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}
    return {"status": "succeeded", "result": out.result, "files": out.files, "seconds": time.perf_counter() - t0}


def _read_inputs(case: CaseFiles) -> dict[str, InputFile]:
    return {role: InputFile(path.name, path.read_bytes()) for role, path in case.files.items()}


def finished_row(case: CaseFiles, out_dir: Path) -> CaseRow | None:
    path = out_dir / case.label / RESULT_NAME
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if result.get("status") != "succeeded":
        return None
    return CaseRow(case.label, case.kind, "skipped", "finished in an earlier run",
                   metrics=summary_fields(result), previews=_previews(out_dir / case.label))


def _previews(case_dir: Path) -> list[str]:
    return [str(p) for p in sorted(case_dir.glob("*.png"))]


def _store_outcome(case: CaseFiles, outcome: dict[str, Any], out_dir: Path) -> CaseRow:
    case_dir = out_dir / case.label
    if outcome["status"] == "succeeded":
        write_case_outputs(case_dir, outcome["files"])
        (case_dir / ERROR_NAME).unlink(missing_ok=True)  # an earlier run's failure is history
        return CaseRow(case.label, case.kind, "succeeded", seconds=outcome["seconds"],
                       metrics=summary_fields(outcome["result"]), previews=_previews(case_dir))
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


def write_summaries(rows: list[CaseRow], out_dir: Path) -> None:
    from occlutrace_compute.analysis.report import write_batch_report

    out_dir.mkdir(parents=True, exist_ok=True)
    metric_keys = sorted({k for r in rows for k in r.metrics})
    with open(out_dir / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "kind", "status", "reason", "seconds", *metric_keys])
        for r in rows:
            w.writerow([r.case, r.kind, r.status, r.reason, f"{r.seconds:.3f}", *(r.metrics.get(k, "") for k in metric_keys)])
    payload = [{"case": r.case, "kind": r.kind, "status": r.status, "reason": r.reason,
                "seconds": round(r.seconds, 3), "metrics": r.metrics} for r in rows]
    (out_dir / "summary.json").write_text(json.dumps(payload, indent=2))
    write_batch_report([{**p, "previews": r.previews} for p, r in zip(payload, rows)], out_dir / "report.html")


def _connect_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


def run_batch(
    cases_dir: Path,
    out_dir: Path,
    options: JobOptions | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    on_row: Callable[[CaseRow], None] | None = None,
    allow: tuple[str, ...] = (),
) -> BatchSummary:
    """Runs every unfinished case of `cases_dir` on Ray and writes OUT/<case>/... and summaries."""
    import ray
    from tqdm import tqdm

    options = options or JobOptions()
    cases, bad = discover_cases(Path(cases_dir))
    out_dir = Path(out_dir)
    rows: list[CaseRow] = [CaseRow(b.label, "unknown", "rejected", b.reason) for b in bad]
    todo: list[CaseFiles] = []
    for case in cases:
        done = finished_row(case, out_dir)
        rows.append(done) if done else todo.append(case)

    if todo:
        _connect_ray(address, num_cpus)
        task = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)(_execute)
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))  # bounded in flight: flat memory
        pending: dict[Any, CaseFiles] = {}
        queue = deque(todo)
        bar = tqdm(total=len(todo), unit="case", disable=not progress, dynamic_ncols=True)
        failed = 0
        try:
            while queue or pending:
                while queue and len(pending) < window:
                    case = queue.popleft()
                    try:
                        inputs = _read_inputs(case)
                    except OSError as e:
                        rows.append(CaseRow(case.label, case.kind, "rejected", f"{case.label}: cannot read input: {e}"))
                        bar.update(1)
                        continue
                    pending[task.remote(case.label, case.kind, inputs, options, allow)] = case
                if not pending:
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1)
                case = pending.pop(ready[0])
                try:
                    outcome = ray.get(ready[0])
                except Exception as e:  # noqa: BLE001 - a worker crash after retries
                    outcome = {"status": "failed", "reason": f"worker crashed: {type(e).__name__}", "seconds": 0.0}
                row = _store_outcome(case, outcome, out_dir)
                rows.append(row)
                failed += row.status != "succeeded"
                bar.update(1)
                bar.set_postfix(failed=failed)
                if on_row:
                    on_row(row)
        finally:
            bar.close()
    rows.sort(key=lambda r: r.case)
    write_summaries(rows, out_dir)
    return BatchSummary(rows)
