"""The `occlutrace` command.

Each subcommand is a `register(subparsers)` function that adds its parser and sets `handler`
(args -> exit code); add new commands to COMMANDS. Bad input ends as one line
`error: <file>: <problem>` on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from occlutrace_compute import __version__, cli_jobs
from occlutrace_compute.errors import InputRejected


def _limits(args: argparse.Namespace):
    from occlutrace_compute.meshes import Limits

    return Limits(units=args.units)


def _add_limit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--units",
        choices=("warn", "reject"),
        default="warn",
        help="a bounding box outside 5-300 mm (not millimetres?) warns or rejects (default: warn)",
    )


# --- inspect -------------------------------------------------------------------------------


def _privacy_flags(name: str, metadata: Sequence[tuple[str, str]], allow: Sequence[str]) -> list[dict[str, str]]:
    """Identifier findings in the file name (a rejection) and in metadata values (stripped)."""
    from occlutrace_compute.privacy import find_identifiers, find_in_filename

    found = [("filename", f) for f in find_in_filename(name, allow)]
    found += [(field, f) for field, value in metadata for f in find_identifiers(value, allow)]
    return [{"field": where, "kind": f.kind, "text": f.text, "message": f.message} for where, f in found]


def _watertight(faces) -> bool:
    """Every undirected edge used by exactly two faces (trimesh's is_watertight, without the
    seconds its import costs a short command)."""
    import numpy as np

    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 2).all())


def describe(path: str, limits, allow: Sequence[str] = ()) -> dict[str, Any]:
    """What `inspect` reports for one file; InputRejected when the service would reject it
    (an unusable mesh, or a file name that looks like a patient identifier)."""
    import numpy as np

    from occlutrace_compute.meshes import load_mesh

    lm = load_mesh(path, limits)
    flags = _privacy_flags(Path(path).name, lm.metadata, allow)
    v = lm.mesh.vertices
    lo, hi = v.min(axis=0), v.max(axis=0)
    watertight = _watertight(lm.mesh.faces)
    report = {
        "file": path,
        "format": lm.format,
        "encoding": lm.encoding,
        "vertices": lm.mesh.n_vertices,
        "faces": lm.mesh.n_faces,
        "bbox_min_mm": np.round(lo, 4).tolist(),
        "bbox_max_mm": np.round(hi, 4).tolist(),
        "bbox_size_mm": np.round(hi - lo, 4).tolist(),
        "watertight": bool(watertight),
        "has_colors": lm.mesh.vertex_colors is not None,
        "metadata": [{"field": f, "value": val} for f, val in lm.metadata],
        "privacy": flags,
        "warnings": lm.warnings,
    }
    named = [f["message"] for f in flags if f["field"] == "filename"]
    if named:
        report["rejected"] = "file name looks like a patient identifier: " + "; ".join(named)
    return report


def _print_report(r: dict[str, Any]) -> None:
    def xyz(values: list[float]) -> str:
        return "(" + ", ".join(f"{x:.3f}" for x in values) + ")"

    print(f"{r['file']}: {r['format'].upper()} ({r['encoding']})")
    print(f"  vertices: {r['vertices']}  faces: {r['faces']}")
    print(f"  bounding box (mm): min {xyz(r['bbox_min_mm'])} max {xyz(r['bbox_max_mm'])} size {xyz(r['bbox_size_mm'])}")
    print(f"  watertight: {'yes' if r['watertight'] else 'no'}  colours: {'yes' if r['has_colors'] else 'no'}")
    print(f"  metadata ({len(r['metadata'])} fields, dropped by `occlutrace sanitize`):")
    for m in r["metadata"]:
        print(f"    {m['field']}: {m['value']}")
    print(f"  privacy flags: {len(r['privacy'])}")
    for f in r["privacy"]:
        print(f"    {f['field']}: [{f['kind']}] {f['message']}")
    for w in r["warnings"]:
        print(f"  warning: {w}")


def _inspect(args: argparse.Namespace) -> int:
    limits = _limits(args)
    reports: list[dict[str, Any]] = []
    rejected = 0
    for path in args.files:
        try:
            report = describe(path, limits, args.allow)
        except InputRejected as e:
            report = {"file": path, "rejected": e.problem}
        reports.append(report)
        if "rejected" in report:
            print(f"error: {path}: {report['rejected']}", file=sys.stderr)
            rejected += 1
        if not args.json and "format" in report:
            _print_report(report)
    if args.json:
        json.dump(reports, sys.stdout, indent=2)
        print()
    return 1 if rejected else 0


def register_inspect(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="describe mesh files: format, size, metadata to strip, privacy flags",
        description="Exit code 1 when any file would be rejected (unusable mesh, or a file name "
        "that looks like a patient identifier); metadata findings are listed, sanitize strips them.",
        formatter_class=cli_jobs.HelpFormatter,
        epilog="example:\n  occlutrace inspect samples/case-0001-pair/fixed.ply samples/case-0001-pair/moving.ply --json",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="mesh files (.stl, .ply, .obj) to describe")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per file")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="REGEX",
        help="the lab's own label scheme: parts matching it are not flagged (repeatable)",
    )
    _add_limit_options(p)
    p.set_defaults(handler=_inspect)


# --- sanitize ------------------------------------------------------------------------------


def _sanitize(args: argparse.Namespace) -> int:
    from occlutrace_compute.meshes import sanitize_file
    from occlutrace_compute.meshes.detect import FORMATS, suffix_of

    fmt = suffix_of(args.output)
    if fmt not in FORMATS:
        raise InputRejected(args.output, f"the output needs a mesh suffix ({', '.join('.' + f for f in FORMATS)})")
    same = fmt == suffix_of(args.input)
    try:
        removed = sanitize_file(
            args.input, args.output, _limits(args), fmt=None if same else fmt, encoding=args.encoding
        )
    except OSError as e:
        raise InputRejected(args.output, f"cannot write: {e.strerror or e}") from None
    print(f"{args.input} -> {args.output}: rewritten from its geometry; dropped {len(removed)} metadata fields")
    for field, value in removed:
        print(f"  {field}: {value}")
    return 0


def register_sanitize(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sanitize",
        help="write a copy of a mesh from its geometry alone (positions, triangles, colours): "
        "nothing else of the input survives",
        description="The copy keeps the input's format (the output's suffix may name another) and "
        "encoding (unless --encoding); it is re-read and must give the same geometry.",
        formatter_class=cli_jobs.HelpFormatter,
        epilog="example:\n  occlutrace sanitize scan.ply -o scan.clean.ply",
    )
    p.add_argument("input", metavar="IN", help="the mesh to copy (.stl, .ply or .obj)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="the clean copy (the suffix picks the format: same as IN unless another is named)",
    )
    p.add_argument(
        "--encoding",
        choices=("ascii", "binary"),
        default=None,
        help="the copy's encoding (default: the input's)",
    )
    _add_limit_options(p)
    p.set_defaults(handler=_sanitize)


# --- entry point ---------------------------------------------------------------------------

COMMANDS: tuple[Callable[..., None], ...] = (
    register_inspect,
    register_sanitize,
    cli_jobs.register_align,
    cli_jobs.register_bite,
    cli_jobs.register_batch,
    cli_jobs.register_serve,
    cli_jobs.register_submit,
)


# Commands whose options import heavy modules (the service: FastAPI, store clients): built in
# full only when they are the command being run (or for the top-level help), so `align` and
# `inspect` start without them.
LAZY_COMMANDS: dict[str, Callable[..., None]] = {
    "serve": cli_jobs.register_serve,
    "submit": cli_jobs.register_submit,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the command being run, other heavy commands are listed without
    their options (see LAZY_COMMANDS)."""
    parser = argparse.ArgumentParser(
        prog="occlutrace", description="Rigid alignment and analysis of dental surface meshes."
    )
    parser.add_argument("--version", action="version", version=f"occlutrace {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    lazy = {fn: name for name, fn in LAZY_COMMANDS.items()}
    for register in COMMANDS:
        if register in lazy and command is not None and command != lazy[register]:
            register(subparsers, full=False)
        else:
            register(subparsers)
    cli_jobs.finish_help(parser)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the top level has only flag options)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None, registrar: Any = None) -> int:
    """Runs one command; `registrar` (run(): align's registration process, jobs/registrar.py)
    is handed to the command as args.registrar."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    if registrar is not None:
        args.registrar = registrar
    try:
        return int(args.handler(args))
    except InputRejected as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("OCCLUTRACE_DEBUG"):
            raise
        print(f"error: internal error ({type(e).__name__}: {e}); set OCCLUTRACE_DEBUG=1 for details", file=sys.stderr)
        return 2


# Commands that end the process without the interpreter's teardown once their output is out:
# with torch loaded, finalising its modules costs ~0.4 s CPU (0.5-1.3 s wall on a shared box) of a
# ~5 s command and does nothing a finished job needs (bench/RESULTS.md, "Issue 12: the align
# command, third session"). Their outputs are written and closed by then (jobs/outputs.py) and no
# thread of theirs outlives main(); `batch` and `serve` keep the normal exit (Ray's and the
# server's shutdown hooks).
FAST_EXIT = frozenset({"align", "bite"})


# Commands whose registration runs in a process of its own, forked at the command's start so
# that torch's import (~1.9 s CPU, GIL-bound) runs on the second core beside this process's
# imports and loads (jobs/registrar.py; bench/RESULTS.md, "Fourth session of 2026-12-06").
FORKED_REGISTRATION = frozenset({"align"})


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The console entry point (`occlutrace`, `python -m occlutrace_compute.cli`): main(), then
    exit; after align/bite without the interpreter's teardown (FAST_EXIT)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    fast = command in FAST_EXIT
    if fast:
        # A one-shot job process: the cyclic collector would walk the ~10^6 objects the imports
        # make (torch) again and again while they load (~0.25 s CPU of ~2.5 s of imports) and
        # then during the job, whose data are numpy arrays without reference cycles; the
        # process ends without teardown (below), so nothing is left for it to free.
        gc.disable()
        # Work torch and pydantic would do at import for nothing here: scanning every installed
        # package's entry points for out-of-tree device backends and validation plugins (~20 ms
        # CPU each). The user's own setting wins.
        os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    registrar = None
    if command in FORKED_REGISTRATION:
        from occlutrace_compute.jobs.registrar import ForkedRegistrar

        registrar = ForkedRegistrar.start()
    try:
        code = main(argv, registrar)
    finally:
        if registrar is not None:
            registrar.close()
    if not fast:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: what the interpreter's own exit reports as 120
        code = code or 120
    os._exit(code)


if __name__ == "__main__":
    run()
