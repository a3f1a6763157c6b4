"""`occlutrace align`, `bite`, `batch`, `serve` and `submit`: the job and service commands of the
CLI (cli.py registers them with `inspect` and `sanitize`)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args, get_origin

from occlutrace_compute.errors import InputRejected

if TYPE_CHECKING:  # pydantic models are imported by the commands that run jobs, not by `inspect`
    from occlutrace_compute.jobs.models import JobOptions


def _read_input(path: str):
    from occlutrace_compute.jobs.pipeline import InputFile
    from occlutrace_compute.meshes.limits import Limits
    from occlutrace_compute.meshes.load import beside

    try:  # a textured OBJ/PLY finds its MTL and image beside the file
        return InputFile(Path(path).name, Path(path).read_bytes(), beside(path, Limits()))
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout of descriptions and examples (tables, command lines) as written."""


@functools.cache
def _defaults() -> JobOptions:
    """JobOptions' defaults (imported when a parser is built, so the help states them)."""
    from occlutrace_compute.jobs.models import JobOptions

    return JobOptions()


def _choices(name: str) -> tuple[str, ...]:
    """The values a Literal field of JobOptions allows (an optional field's None left out)."""
    from occlutrace_compute.jobs.models import JobOptions

    def values(tp: object) -> tuple[str, ...]:
        if get_origin(tp) is Literal:
            return get_args(tp)
        return tuple(v for arg in get_args(tp) for v in values(arg))

    return values(JobOptions.model_fields[name].annotation)


# (flag, JobOptions field, type, help); one table so batch, submit, align and bite agree.
ANALYSIS_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    (
        "--tolerance",
        "tolerance_mm",
        float,
        "pair: deviation tolerance in mm; a vertex within +/- it passes (default: %(default)s)",
    ),
    ("--band", "band_mm", float, "pair: flat green band of the deviation map, +/- mm (default: %(default)s)"),
    (
        "--color-scale",
        "color_scale_mm",
        float,
        "pair: the deviation colours span +/- this many mm; beyond it: "
        "'beyond the scale' colours (default: %(default)s)",
    ),
    (
        "--max-distance",
        "max_distance_mm",
        float,
        "pair: surfaces farther apart than this many mm count as no overlap (default: %(default)s)",
    ),
    (
        "--contact-threshold",
        "contact_threshold_mm",
        float,
        "bite: a contact is closer than this many mm (default: %(default)s)",
    ),
)


def add_analysis_options(p: argparse.ArgumentParser, kinds: tuple[str, ...] = ("pair", "bite")) -> None:
    """The analysis options of JobOptions as flags (the flags of `batch` and `submit`)."""
    g = p.add_argument_group("analysis options (a case's case.json overrides them)")
    for flag, name, typ, help_ in ANALYSIS_OPTIONS:
        if help_.split(":")[0] in kinds:
            g.add_argument(flag, dest=name, type=typ, default=getattr(_defaults(), name), metavar="MM", help=help_)
    if "pair" in kinds:
        g.add_argument(
            "--arch",
            choices=_choices("arch"),
            default=_defaults().arch,
            help="pair: which arch the scans show, so the maps name the patient's left and right "
            "(default: from file names such as upper_reference.stl, else not named)",
        )
        g.add_argument(
            "--region-sectors",
            metavar="LIST",
            default=None,
            help="pair: align on these arch sectors of the fixed scan only, comma-separated, e.g. "
            "'left molar,right molar' (sides need --arch); the deviation still covers the whole overlap "
            "(default: whole arch)",
        )
    if "bite" in kinds:
        g.add_argument(
            "--settle", action="store_true", help="bite: remove interpenetration by a small constrained refinement"
        )
    g.add_argument(
        "--device",
        choices=_choices("device"),
        default=_defaults().device,
        help="where registration runs; auto: a GPU when there is one (default: %(default)s)",
    )
    g.add_argument("--strict", action="store_true", help="exit code 3 when any alignment is doubtful (else a warning)")


def options_from_args(args: argparse.Namespace) -> JobOptions:
    """JobOptions from the flags of add_analysis_options (absent flags keep their defaults)."""
    values = {name: getattr(args, name) for _, name, _, _ in ANALYSIS_OPTIONS if hasattr(args, name)}
    values["settle"] = bool(getattr(args, "settle", _defaults().settle))
    values["keep_encoding"] = bool(getattr(args, "keep_encoding", _defaults().keep_encoding))
    if getattr(args, "arch", None):
        values["arch"] = args.arch
    region: dict = {}
    if getattr(args, "region_sectors", None):
        region["sectors"] = [w.strip() for w in args.region_sectors.split(",") if w.strip()]
    if getattr(args, "region_sphere", None):
        region["spheres"] = [_sphere(s) for s in args.region_sphere]
    if getattr(args, "region_mask", None):
        region["vertices"] = _mask_indices(args.region_mask)
    if region:
        values["reference_region"] = region
    return _options(args, **values)


def _sphere(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InputRejected("--region-sphere", f"expected X,Y,Z,RADIUS in mm, got '{text}'")
    return values


def _mask_indices(path: str) -> list[int]:
    """Fixed-scan vertex indices from a .npy (bool mask or integer indices) or a text file of indices."""
    import numpy as np

    try:
        if path.lower().endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
            idx = np.flatnonzero(arr) if arr.dtype == bool else np.asarray(arr, dtype=np.int64).ravel()
        else:
            idx = np.asarray([int(x) for x in Path(path).read_text().replace(",", " ").split()], dtype=np.int64)
    except (OSError, ValueError) as e:
        raise InputRejected(
            path, f"cannot read the region mask (.npy bool mask or indices, or a text file of indices): {e}"
        ) from None
    return idx.tolist()


def finish_help(parser: argparse.ArgumentParser) -> None:
    """Every argument of every command gets help text with its default (some come from modules
    that do not say them); run once on the whole parser."""
    known = {"host": "address to listen on (default: %(default)s)", "port": "TCP port (default: %(default)s)"}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for sub in subs:
        for p in sub.choices.values():
            for a in p._actions:
                if isinstance(a, argparse._HelpAction) or a.help == argparse.SUPPRESS:
                    continue
                if not a.help:
                    a.help = known.get(a.dest, a.dest.replace("_", " "))
                if (
                    "default" not in a.help
                    and a.default not in (None, False, [], argparse.SUPPRESS)
                    and a.option_strings
                ):
                    a.help += " (default: %(default)s)"


def _add_encoding_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keep-encoding",
        action="store_true",
        help="write the aligned meshes in their input's encoding (ASCII stays ASCII); default: binary",
    )


def _write(out: str, files: dict[str, bytes]) -> None:
    from occlutrace_compute.jobs.outputs import write_case_outputs

    write_case_outputs(Path(out), files)


def _print_pair(result: dict) -> None:
    m, d = result["metrics"], result["deviation"]
    print(
        f"rmse {m['rmse_mm'] * 1000:.1f} um  fitness {m['fitness']:.2f}  confidence {m['confidence']:.2f}"
        f"  deviation RMS {d['rms_mm'] if d['rms_mm'] is None else round(d['rms_mm'], 4)} mm"
        f"  changed regions {len(result['changed_regions'])}"
    )
    if m["doubtful"]:
        print(f"warning: alignment is doubtful: {m['reason']}", file=sys.stderr)


def _align(args: argparse.Namespace) -> int:
    from occlutrace_compute.jobs.pipeline import run_pair

    options = options_from_args(args).model_copy(update={"landmarks": _landmarks(args.init)})
    registrar = getattr(args, "registrar", None)  # cli.run(): the registration process
    if registrar is not None:
        from occlutrace_compute.analysis.report import warm_up

        registrar.meanwhile = warm_up
    out = run_pair(
        _read_input(args.fixed),
        _read_input(args.moving),
        options,
        registrar=registrar.register if registrar is not None else None,
    )
    _write(args.output, out.files)
    _print_pair(out.result)
    print(f"wrote {args.output}/: {', '.join(sorted(out.files))}")
    return 3 if out.result["metrics"]["doubtful"] and args.strict else 0


def register_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align",
        help="register MOVING onto FIXED (any pose), with a deviation map",
        formatter_class=HelpFormatter,
        description="Registers the rescan MOVING onto the reference FIXED (any pose, partial overlap) and "
        "measures the deviation of the aligned scan. Writes OUT/result.json, OUT/aligned.<ext>, "
        "OUT/deviation.ply (colours + signed mm as the per-vertex 'quality') and OUT/deviation.png.",
        epilog="example:\n  occlutrace align samples/case-0002-changed/fixed.stl samples/case-0002-changed/moving.stl "
        "-o out/case-0002 --tolerance 0.05",
    )
    p.add_argument("fixed", metavar="FIXED", help="the reference scan (.stl, .ply or .obj); results are in its frame")
    p.add_argument("moving", metavar="MOVING", help="the rescan to align onto FIXED (.stl, .ply or .obj)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if missing)")
    p.add_argument(
        "--init", metavar="LANDMARKS.json", help="corresponding points [[moving xyz], [fixed xyz]], >= 3 pairs"
    )
    p.add_argument(
        "--region-sphere",
        action="append",
        metavar="X,Y,Z,R",
        help="align on the fixed scan within R mm of (X,Y,Z) (fixed frame; repeatable; with other region options: the union)",
    )
    p.add_argument(
        "--region-mask",
        metavar="FILE",
        help="align on these fixed-scan vertices: .npy bool mask or indices, or a text file of indices",
    )
    add_analysis_options(p, ("pair",))
    _add_encoding_option(p)
    p.set_defaults(handler=_align)


def _bite(args: argparse.Namespace) -> int:
    from occlutrace_compute.jobs.pipeline import run_bite

    if len(args.bite) > 2:
        raise InputRejected("--bite", f"at most two bite scans, got {len(args.bite)}")
    inputs = {"upper": _read_input(args.upper), "lower": _read_input(args.lower)}
    inputs.update({f"bite{i + 1}": _read_input(b) for i, b in enumerate(args.bite)})
    options = options_from_args(args)
    out = run_bite(inputs, options)
    _write(args.output, out.files)
    per_side = out.result["contacts"]["per_side"]
    print(
        f"contacts: left {per_side['left']['contact_area_mm2']:.2f} mm2, right {per_side['right']['contact_area_mm2']:.2f} mm2;"
        f" max penetration {out.result['contacts']['max_penetration_mm']:.3f} mm"
    )
    if out.result["registration"].get("doubtful"):
        print(f"warning: bite registration is doubtful: {out.result['registration'].get('reason')}", file=sys.stderr)
    print(f"wrote {args.output}/: {', '.join(sorted(out.files))}")
    return 3 if out.result["registration"].get("doubtful") and args.strict else 0


def register_bite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bite",
        help="place upper and lower arch into occlusion through buccal bite scans",
        formatter_class=HelpFormatter,
        description="Places LOWER into occlusion with UPPER (UPPER's frame) through one or two buccal bite "
        "scans and measures occlusal contacts. Writes OUT/result.json, the arches in occlusion, "
        "OUT/contacts_upper.ply and OUT/contacts_lower.ply (colours + signed mm as 'quality') and OUT/contacts.png.",
        epilog="example:\n  occlutrace bite --upper samples/case-0003-bite/upper.ply --lower samples/case-0003-bite/lower.ply "
        "--bite samples/case-0003-bite/bite1.ply -o out/case-0003",
    )
    p.add_argument("--upper", required=True, metavar="FILE", help="upper arch scan (.stl, .ply or .obj)")
    p.add_argument("--lower", required=True, metavar="FILE", help="lower arch scan (.stl, .ply or .obj)")
    p.add_argument(
        "--bite", required=True, action="append", metavar="FILE", help="a buccal bite scan (give one or two)"
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if missing)")
    p.add_argument(
        "--threshold",
        dest="contact_threshold_mm",
        type=float,
        default=_defaults().contact_threshold_mm,
        metavar="MM",
        help=argparse.SUPPRESS,
    )  # the old spelling of --contact-threshold
    add_analysis_options(p, ("bite",))
    _add_encoding_option(p)
    p.set_defaults(handler=_bite)


def _batch(args: argparse.Namespace) -> int:
    from occlutrace_compute.jobs.batch import run_batch

    summary = run_batch(
        Path(args.cases),
        Path(args.output),
        options_from_args(args),
        address=args.address,
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
        allow=tuple(args.allow),
        force=args.force,
    )
    return report_rows(summary, args.output, args.strict)


def report_rows(summary, output: str | Path, strict: bool) -> int:
    """Prints the counts, each case that did not succeed (stdout, and its reason on stderr) and
    the exit code: 1 when a case did not succeed, else 3 when --strict and one is doubtful."""
    counts = summary.counts()
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f"  -> {output}/summary.csv, report.html")
    doubtful = [r for r in summary.rows if r.metrics.get("doubtful") is True]
    for r in summary.rows:
        if r.status in ("failed", "rejected", "interrupted"):
            print(f"  {r.case}: {r.status}")
            print(f"{r.case}: {r.status}: {r.reason}", file=sys.stderr)
    for r in doubtful:
        print(f"warning: {r.case}: alignment is doubtful", file=sys.stderr)
    if not summary.ok:
        return 1
    return 3 if strict and doubtful else 0


BATCH_LAYOUT = """\
Layout of DIR: one folder per case, at any depth; the case's label is its path under DIR.
File roles come from names labs use (case-insensitive, any of .stl .ply .obj; separators,
camelCase and a prefix such as case7_ are fine):

  role                   names recognised (examples)
  ---------------------  ---------------------------------------------------------------
  pair: reference        fixed, reference, ref, baseline, initial, first, before
  pair: rescan           moving, rescan, followup, follow-up, second, after
  bite: upper arch       upper, UpperJaw, maxilla, maxillary
  bite: lower arch       lower, LowerJaw, mandible, mandibular
  bite: bite scan (1-2)  bite*, BuccalBite*, occlusion*

An optional case.json in a case folder names roles and options explicitly:
  {"kind": "pair", "files": {"fixed": "scan_a.stl", "moving": "scan_b.stl"},
   "options": {"tolerance_mm": 0.1, "arch": "upper", "landmarks": [[[x,y,z], [x,y,z]], ...],
               "reference_region": {"sectors": ["left molar"], "spheres": [[x,y,z,r]], "vertices": [...]}}}
A folder whose meshes form no case is reported as rejected (summary.csv/json, report.html and
here), with the reason and the names expected; it never stops the batch.

Resume: a case finished in OUT with the same input files (SHA-256) and options is skipped;
--force re-runs every case. An interrupted batch still writes its summary and report.
Exit code: 0 all succeeded, 1 a case failed/was rejected/interrupted, 3 --strict and a doubtful one.

example:
  occlutrace batch samples -o out --tolerance 0.05 --num-cpus 2
"""


def register_batch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="run every case folder under DIR on Ray (resumable)",
        formatter_class=HelpFormatter,
        description="Runs every case folder under DIR on Ray "
        "and writes OUT/<case>/... (as align/bite do), OUT/summary.csv, OUT/summary.json and "
        "OUT/report.html.",
        epilog=BATCH_LAYOUT,
    )
    p.add_argument("cases", metavar="DIR", help="folder of case folders (see the layout below)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if missing; resumable)")
    p.add_argument(
        "--address",
        default=os.environ.get("OCCLUTRACE_RAY_ADDRESS"),
        help="Ray cluster address (default: env OCCLUTRACE_RAY_ADDRESS, else a local Ray)",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    p.add_argument("--force", action="store_true", help="re-run every case, even those finished in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_encoding_option(p)
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="REGEX",
        help="the lab's own label scheme, exempt from identifier detection (repeatable)",
    )
    add_analysis_options(p)
    p.set_defaults(handler=_batch)


def _serve(args: argparse.Namespace) -> int:
    from occlutrace_compute.service.server import config_from_args, run_server

    run_server(args.host, args.port, config_from_args(args), with_dispatcher=not args.no_dispatcher)
    return 0


def register_serve(sub: argparse._SubParsersAction, full: bool = True) -> None:
    """full=False: the subcommand is listed but its options (which import the service: FastAPI,
    the store clients) are left out; main() asks for them only when `serve` is the command."""
    p = sub.add_parser(
        "serve",
        help="run the HTTP controller (and the Ray dispatcher)",
        formatter_class=HelpFormatter,
        epilog="example:\n  occlutrace serve --host 0.0.0.0 --port 8000 --store file:///srv/occlutrace "
        "--tokens-file /etc/occlutrace/tokens",
    )
    if full:
        from occlutrace_compute.service.server import add_serve_arguments

        add_serve_arguments(p)
    p.set_defaults(handler=_serve)


def _submit(args: argparse.Namespace) -> int:
    from occlutrace_compute.service.client import submit_from_args

    return submit_from_args(args)


def register_submit(sub: argparse._SubParsersAction, full: bool = True) -> None:
    """full=False: listed without its options (see register_serve)."""
    p = sub.add_parser(
        "submit",
        help="send a folder of cases to a controller as one batch (resumable)",
        formatter_class=HelpFormatter,
        description="Sends every case folder under DIR (the layout "
        "of `occlutrace batch --help`) to a controller as one batch; with --wait, results land in "
        "OUT/<case>/ with OUT/summary.csv, summary.json and report.html, as with batch.",
        epilog="example:\n  occlutrace submit samples --server https://occlutrace.example "
        "--token-file ~/.occlutrace-token --wait -o out --tolerance 0.05",
    )
    if full:
        from occlutrace_compute.service.client import add_submit_arguments

        add_submit_arguments(p)
    p.set_defaults(handler=_submit)
