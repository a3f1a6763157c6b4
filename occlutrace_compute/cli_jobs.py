"""`occlutrace align`, `bite` and `batch`: the job commands of the CLI (see cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from occlutrace_compute.errors import InputRejected

if TYPE_CHECKING:  # pydantic models are imported by the commands that run jobs, not by `inspect`
    from occlutrace_compute.jobs.models import JobOptions


def _read_input(path: str):
    from occlutrace_compute.jobs.pipeline import InputFile

    try:
        return InputFile(Path(path).name, Path(path).read_bytes())
    except OSError as e:
        raise InputRejected(path, f"cannot read the file: {e.strerror or e}") from None


def _landmarks(path: str | None) -> list | None:
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputRejected(path, f"cannot read landmarks JSON: {e}") from None
    pairs = data.get("pairs") if isinstance(data, dict) else data
    if not isinstance(pairs, list):
        raise InputRejected(path, 'expected a list of [[x,y,z] in moving, [x,y,z] in fixed] pairs or {"pairs": [...]}')
    return pairs


def _options(args: argparse.Namespace, **extra) -> JobOptions:
    from occlutrace_compute.jobs.models import JobOptions

    try:
        return JobOptions(device=args.device, **extra)
    except ValueError as e:
        raise InputRejected("options", str(e)) from None


def _add_encoding_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-encoding", action="store_true",
                   help="write the aligned meshes in their input's encoding (ASCII stays ASCII); default: binary")


def _write(out: str, files: dict[str, bytes]) -> None:
    from occlutrace_compute.jobs.outputs import write_case_outputs

    write_case_outputs(Path(out), files)


def _print_pair(result: dict) -> None:
    m, d = result["metrics"], result["deviation"]
    print(f"rmse {m['rmse_mm'] * 1000:.1f} um  fitness {m['fitness']:.2f}  confidence {m['confidence']:.2f}"
          f"  deviation RMS {d['rms_mm'] if d['rms_mm'] is None else round(d['rms_mm'], 4)} mm"
          f"  changed regions {len(result['changed_regions'])}")
    if m["doubtful"]:
        print(f"warning: alignment is doubtful: {m['reason']}", file=sys.stderr)


def _align(args: argparse.Namespace) -> int:
    from occlutrace_compute.jobs.pipeline import run_pair

    options = _options(args, tolerance_mm=args.tolerance, landmarks=_landmarks(args.init), keep_encoding=args.keep_encoding)
    out = run_pair(_read_input(args.fixed), _read_input(args.moving), options)
    _write(args.output, out.files)
    _print_pair(out.result)
    print(f"wrote {args.output}/: {', '.join(sorted(out.files))}")
    return 3 if out.result["metrics"]["doubtful"] and args.strict else 0


def register_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="register MOVING onto FIXED (any pose), with a deviation map")
    p.add_argument("fixed", metavar="FIXED")
    p.add_argument("moving", metavar="MOVING")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--init", metavar="LANDMARKS.json", help="corresponding points [[moving xyz], [fixed xyz]], >= 3 pairs")
    p.add_argument("--tolerance", type=float, default=0.05, help="deviation tolerance in mm (default 0.05)")
    p.add_argument("--strict", action="store_true", help="exit 3 when the alignment is doubtful")
    _add_encoding_option(p)
    p.set_defaults(handler=_align)


def _bite(args: argparse.Namespace) -> int:
    from occlutrace_compute.jobs.pipeline import run_bite

    if len(args.bite) > 2:
        raise InputRejected("--bite", f"at most two bite scans, got {len(args.bite)}")
    inputs = {"upper": _read_input(args.upper), "lower": _read_input(args.lower)}
    inputs.update({f"bite{i + 1}": _read_input(b) for i, b in enumerate(args.bite)})
    options = _options(args, contact_threshold_mm=args.threshold, settle=args.settle, keep_encoding=args.keep_encoding)
    out = run_bite(inputs, options)
    _write(args.output, out.files)
    per_side = out.result["contacts"]["per_side"]
    print(f"contacts: left {per_side['left']['contact_area_mm2']:.2f} mm2, right {per_side['right']['contact_area_mm2']:.2f} mm2;"
          f" max penetration {out.result['contacts']['max_penetration_mm']:.3f} mm")
    if out.result["registration"].get("doubtful"):
        print(f"warning: bite registration is doubtful: {out.result['registration'].get('reason')}", file=sys.stderr)
    print(f"wrote {args.output}/: {', '.join(sorted(out.files))}")
    return 0


def register_bite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bite", help="place upper and lower arch into occlusion through buccal bite scans")
    p.add_argument("--upper", required=True)
    p.add_argument("--lower", required=True)
    p.add_argument("--bite", required=True, action="append", help="a buccal bite scan (give one or two)")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threshold", type=float, default=0.1, help="contact distance threshold in mm (default 0.1)")
    p.add_argument("--settle", action="store_true", help="remove interpenetration by a small constrained refinement")
    _add_encoding_option(p)
    p.set_defaults(handler=_bite)


def _batch(args: argparse.Namespace) -> int:
    from occlutrace_compute.jobs.batch import run_batch

    summary = run_batch(Path(args.cases), Path(args.output), _options(args, keep_encoding=args.keep_encoding), address=args.address,
                        num_cpus=args.num_cpus, progress=not args.no_progress, allow=tuple(args.allow))
    counts = summary.counts()
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f"  -> {args.output}/summary.csv, report.html")
    for r in summary.rows:
        if r.status in ("failed", "rejected"):
            print(f"{r.case}: {r.status}: {r.reason}", file=sys.stderr)
    return 0 if summary.ok else 1


def register_batch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="run every case folder under DIR on Ray (resumable)")
    p.add_argument("cases", metavar="DIR")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--address", default=os.environ.get("OCCLUTRACE_RAY_ADDRESS"), help="Ray cluster address (default: env OCCLUTRACE_RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-progress", action="store_true")
    _add_encoding_option(p)
    p.add_argument("--allow", action="append", default=[], metavar="REGEX",
                   help="the lab's own label scheme, exempt from identifier detection (repeatable)")
    p.set_defaults(handler=_batch)


def _serve(args: argparse.Namespace) -> int:
    from occlutrace_compute.service.server import config_from_args, run_server

    run_server(args.host, args.port, config_from_args(args), with_dispatcher=not args.no_dispatcher)
    return 0


def register_serve(sub: argparse._SubParsersAction, full: bool = True) -> None:
    """full=False: the subcommand is listed but its options (which import the service: FastAPI,
    the store clients) are left out; main() asks for them only when `serve` is the command."""
    p = sub.add_parser("serve", help="run the HTTP controller (and the Ray dispatcher)")
    if full:
        from occlutrace_compute.service.server import add_serve_arguments

        add_serve_arguments(p)
    p.set_defaults(handler=_serve)


def _submit(args: argparse.Namespace) -> int:
    from occlutrace_compute.service.client import submit_from_args

    return submit_from_args(args)


def register_submit(sub: argparse._SubParsersAction, full: bool = True) -> None:
    """full=False: listed without its options (see register_serve)."""
    p = sub.add_parser("submit", help="send a folder of cases to a controller as one batch (resumable)")
    if full:
        from occlutrace_compute.service.client import add_submit_arguments

        add_submit_arguments(p)
    p.set_defaults(handler=_submit)
