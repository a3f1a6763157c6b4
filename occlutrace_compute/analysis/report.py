"""Inspection reports: a page per case (report.html + report.pdf) and the batch index (report.html).

Rendered with Jinja2 templates (analysis/templates/, autoescaped: every value from a row, a file
name or a reason is text, never markup). Everything a page needs is inside it — CSS, the sheets as
PNG data URIs, the 3D viewer (a small hand-written WebGL script, templates/viewer.js) and its
mesh as base64 — so a page can be mailed, archived or opened offline. Units: registration errors
in µm, deviations in mm with 3 decimals, areas in mm², stated in every header.

A pair case passes when at least PASS_SHARE of the measured surface lies within ±tolerance and the
alignment is not doubtful (then: "check"). Bite cases have no tolerance verdict.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

THUMB_WIDTH_PX = 320
PASS_SHARE = 0.90
VIEWER_MAX_VERTICES = 60_000  # the embedded 3D mesh: ~1.3 MB of base64 at most
CASE_PAGE = "report.html"
CASE_PDF = "report.pdf"


def _base64_text(raw: bytes, prefix: str = "") -> str:
    """`prefix` + base64 of `raw`, marked safe for the autoescaping templates: base64's alphabet
    (A-Z a-z 0-9 + / =) and our fixed data-URI prefixes hold no character HTML escapes, so the
    escaper scanned ~3 MB of a case page (the sheet and the 3D mesh) to change nothing: ~10 ms
    of the report stage, the job's last serial step. The page's bytes are the same. O(len)."""
    from markupsafe import Markup

    if not set(prefix) <= _SAFE_PREFIX_CHARS:
        raise ValueError(f"prefix {prefix!r} needs escaping")
    return Markup(prefix + base64.b64encode(raw).decode("ascii"))


_SAFE_PREFIX_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=:;,")


@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=False,
    )
    env.filters["status_class"] = lambda s: s if s in ("succeeded", "skipped", "failed", "rejected") else "other"
    env.filters["verdict_class"] = lambda v: {"pass": "pass", "fail": "fail", "check": "check"}.get(str(v), "na")
    return env


def warm_up() -> None:
    """Loads what a case's first report loads (jinja2, the case page's compiled template, the PDF
    writer and Pillow's PNG reader, ~0.07 s CPU) ahead of it: `occlutrace align` calls it while
    its registration runs in the other process (jobs/registrar.py), off the job's last stage."""
    _env().get_template("case.html.j2")
    from PIL import PngImagePlugin  # noqa: F401

    from occlutrace_compute.analysis import pdfpage  # noqa: F401


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value: Any, pattern: str = "{}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def _scaled(value: Any, k: float) -> float | None:
    x = _num(value)
    return None if x is None else x * k


def _flatten(metrics: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(metrics, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif not isinstance(value, list):
            out[name] = value
    return out


# --- verdict -----------------------------------------------------------------------------------


def verdict(kind: str, within_share: Any, tolerance_mm: Any, doubtful: Any) -> dict[str, str]:
    """{"key": pass|fail|check|n/a, "title", "text"} of a case against its tolerance."""
    if doubtful is True:
        return {
            "key": "check",
            "title": "CHECK: alignment doubtful",
            "text": "The registration is not clearly right; look at the views before trusting any figure.",
        }
    share, tol = _num(within_share), _num(tolerance_mm)
    if kind != "pair" or share is None:
        text = (
            "Bite cases have no tolerance verdict; contacts and penetration are listed below."
            if kind == "bite"
            else "Nothing was measured against a tolerance."
        )
        return {"key": "n/a", "title": "no verdict", "text": text}
    within = f"{100 * share:.1f} % of the measured surface lies within \u00b1{_fmt(tol, '{:.3f}')} mm"
    if share >= PASS_SHARE:
        return {"key": "pass", "title": "PASS", "text": f"{within} (pass: at least {100 * PASS_SHARE:.0f} %)."}
    return {"key": "fail", "title": "FAIL", "text": f"{within}; a pass needs at least {100 * PASS_SHARE:.0f} %."}


# --- the batch index ---------------------------------------------------------------------------

# (label, accepted metric keys (first present wins), scale, format, explanation)
_COLUMNS: list[tuple[str, tuple[str, ...], float, str, str]] = [
    ("reg. RMSE [µm]", ("rmse_mm", "metrics.rmse_mm"), 1000.0, "{:.1f}", "registration error on the unchanged surface"),
    ("fitness [%]", ("fitness", "metrics.fitness"), 100.0, "{:.1f}", "share of the rescan matched to the reference"),
    ("dev. RMS [mm]", ("deviation_rms_mm", "deviation.rms_mm"), 1.0, "{:.3f}", "RMS deviation over the overlap"),
    (
        "within tol. [%]",
        ("within_tolerance_share", "deviation_within_tolerance_share", "deviation.within_tolerance_share"),
        100.0,
        "{:.1f}",
        "share of the measured surface within the tolerance",
    ),
    (
        "confidence",
        ("confidence", "metrics.confidence", "registration.confidence"),
        1.0,
        "{:.2f}",
        "0-1, how clearly the alignment wins",
    ),
    (
        "contact L [mm²]",
        ("contact_area_left_mm2", "contacts.per_side.left.contact_area_mm2"),
        1.0,
        "{:.1f}",
        "contact area, patient left",
    ),
    (
        "contact R [mm²]",
        ("contact_area_right_mm2", "contacts.per_side.right.contact_area_mm2"),
        1.0,
        "{:.1f}",
        "contact area, patient right",
    ),
    (
        "max penetration [mm]",
        ("max_penetration_mm", "contacts.max_penetration_mm"),
        1.0,
        "{:.3f}",
        "deepest interpenetration",
    ),
    ("doubtful", ("doubtful", "metrics.doubtful", "registration.doubtful"), 1.0, "{}", "the alignment needs a look"),
]


def _thumbnail(path: Any) -> dict[str, str]:
    """{"src": data URI, "name"} of a downscaled PNG, or {"note"} saying why there is none."""
    name = Path(str(path)).name
    try:
        with Image.open(str(path)) as src:
            im = src.convert("RGB")
            if im.width > THUMB_WIDTH_PX:
                im = im.resize((THUMB_WIDTH_PX, round(im.height * THUMB_WIDTH_PX / im.width)), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.quantize(colors=256).save(buf, format="PNG", optimize=True)
    except (OSError, ValueError) as e:
        return {"note": f"preview {name} unavailable ({type(e).__name__})", "name": name}
    return {"src": _base64_text(buf.getvalue(), "data:image/png;base64,"), "name": name}


def _index_row(row: dict, base: Path | None) -> dict[str, Any]:
    kind, status = str(row.get("kind", "")), str(row.get("status", ""))
    flat = _flatten(row.get("metrics") or {})
    cells, used = [], set()
    for label, keys, scale, pattern, _ in _COLUMNS:
        key = next((k for k in keys if k in flat), None)
        value = flat.get(key) if key else None
        used.add(key)
        num = _num(value)
        shown = num * scale if num is not None else value
        cells.append(
            {
                "text": _fmt(shown, pattern) if value is not None else "",
                "sort": ""
                if value is None
                else (f"{num * scale:.9g}" if num is not None else ("1" if value is True else "0")),
                "flag": label == "doubtful" and value is True,
            }
        )
    rest = [(k, _fmt(v)) for k, v in sorted(flat.items()) if k not in used]
    seconds = _num(row.get("seconds"))
    case = str(row.get("case", ""))
    page = None
    if base is not None and status in ("succeeded", "skipped") and (base / case / CASE_PAGE).is_file():
        page = f"{case}/{CASE_PAGE}"
    tol = next((flat[k] for k in ("tolerance_mm", "deviation.tolerance_mm") if k in flat), None)
    within = next((flat[k] for k in _COLUMNS[3][1] if k in flat), None)
    doubtful = next((flat[k] for k in _COLUMNS[-1][1] if k in flat), None)
    v = verdict(kind, within, tol, doubtful)["key"] if status in ("succeeded", "skipped") else "n/a"
    return {
        "case": case,
        "kind": kind,
        "status": status,
        "reason": str(row.get("reason") or ""),
        "seconds": f"{seconds:.1f} s" if seconds and seconds > 0 else "",
        "cells": cells,
        "rest": rest,
        "thumbs": [_thumbnail(p) for p in (row.get("previews") or [])],
        "page": page,
        "verdict": v,
    }


def _counts(rows: Iterable[dict]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for row in rows:
        status = str(row.get("status", ""))
        counts[status] = counts.get(status, 0) + 1
    order = ["succeeded", "skipped", "failed", "rejected", "interrupted"]
    labels = [s for s in order if s in counts or s in ("succeeded", "failed", "rejected")]
    return [(s, counts.get(s, 0)) for s in labels + sorted(k for k in counts if k not in order)]


def write_batch_report(rows: list[dict], out_path: str | Path, title: str = "OccluTrace batch report") -> Path:
    """Write the batch index: counts, a filterable and sortable table with one row per case (its
    verdict, key figures, reason, preview thumbnail, link to its page when OUT/<case>/report.html
    exists). Rows: case, kind, status, reason, metrics (dict, may be nested), previews (PNG paths;
    missing or unreadable files are noted, not fatal), optionally seconds."""
    out = Path(out_path)
    doc = (
        _env()
        .get_template("batch.html.j2")
        .render(
            title=title,
            stamp=_stamp(),
            rows=[_index_row(r, out.parent) for r in rows],
            counts=_counts(rows),
            columns=[{"label": c[0], "explain": c[4]} for c in _COLUMNS],
        )
    )
    out.write_text(doc, encoding="utf-8")
    return out


# --- a case's page and PDF ---------------------------------------------------------------------


def _pair_metrics(result: dict) -> list[dict[str, Any]]:
    m, d = result.get("metrics", {}), result.get("deviation", {})
    tol, maxd = d.get("tolerance_mm"), d.get("max_distance_mm")
    p5, p95 = _num(d.get("p5_mm")), _num(d.get("p95_mm"))
    rows = [
        (
            "registration RMSE",
            _fmt(_scaled(m.get("rmse_mm"), 1000), "{:.1f} µm"),
            "root-mean-square distance between the scans over the unchanged surface the alignment used",
        ),
        (
            "fitness",
            _fmt(_scaled(m.get("fitness"), 100), "{:.1f} %"),
            "share of the rescan's sampled surface matched to the reference by the alignment",
        ),
        (
            "confidence",
            _fmt(m.get("confidence"), "{:.2f}"),
            "0-1: how clearly the chosen alignment beats the alternatives tried; below 0.5, check by eye",
        ),
        (
            "alignment doubtful",
            _fmt(m.get("doubtful")) + (f" ({m['reason']})" if m.get("doubtful") and m.get("reason") else ""),
            "yes: the registration may be wrong, so every deviation below may be too",
        ),
        (
            "deviation RMS",
            _fmt(d.get("rms_mm"), "{:.3f} mm"),
            "root-mean-square signed distance of the aligned rescan from the reference, over the overlap",
        ),
        (
            "mean deviation",
            _fmt(d.get("mean_mm"), "{:+.3f} mm"),
            "average signed distance: positive = rescan outside the reference (more material)",
        ),
        (
            "median deviation",
            _fmt(d.get("median_mm"), "{:+.3f} mm"),
            "half the measured surface lies above, half below",
        ),
        (
            "5th \u2013 95th percentile",
            "\u2013" if p5 is None or p95 is None else f"{p5:+.3f} \u2026 {p95:+.3f} mm",
            "90 % of the measured surface lies between these two values",
        ),
        (
            "largest |deviation|",
            _fmt(d.get("max_abs_mm"), "{:.3f} mm"),
            "the largest distance measured within the overlap",
        ),
        (
            "within tolerance",
            _fmt(_scaled(d.get("within_tolerance_share"), 100), "{:.1f} %") + f" within \u00b1{_fmt(tol, '{:.3f}')} mm",
            "share of the measured surface inside the tolerance",
        ),
        (
            "overlap",
            _fmt(_scaled(d.get("overlap_share"), 100), "{:.1f} %"),
            "share of the rescan lying over the reference; elsewhere: grey, not measured",
        ),
        (
            "beyond max distance",
            _fmt(_scaled(d.get("beyond_max_distance_share"), 100), "{:.1f} %"),
            f"share farther than {_fmt(maxd, '{:g}')} mm from the reference (deep changes, violet/magenta, not in the statistics)",
        ),
        (
            "changed regions",
            str(len(result.get("changed_regions", []))),
            "connected areas where the rescan differs from the reference",
        ),
    ]
    region = result.get("reference_region")
    if region:
        spec = region.get("spec", {})
        parts = [", ".join(spec.get("sectors") or [])] if spec.get("sectors") else []
        parts += [f"{len(spec['spheres'])} sphere(s)"] if spec.get("spheres") else []
        parts += [f"{spec['vertices']} chosen vertices"] if spec.get("vertices") else []
        rows.insert(
            0,
            (
                "aligned on",
                f"{'; '.join(parts)} ({_fmt(_scaled(region.get('fixed_share'), 100), '{:.0f} %')} of the reference)",
                f"registered on this stable region only (fit RMS {_fmt(region.get('rmse_um'), '{:.1f}')} µm; it moved the "
                f"rescan by up to {_fmt(region.get('change_from_whole_arch_um'), '{:.0f}')} µm from the whole-arch fit); "
                "deviations cover the whole overlap",
            ),
        )
    return [
        {"label": a, "text": b, "explain": c, "flag": a == "alignment doubtful" and m.get("doubtful") is True}
        for a, b, c in rows
    ]


def _bite_metrics(result: dict, threshold: Any) -> list[dict[str, Any]]:
    c, reg = result.get("contacts", {}), result.get("registration", {})
    per = c.get("per_side", {})
    rows = []
    for side in ("left", "right"):
        s = per.get(side, {})
        rows.append(
            (
                f"contact area, patient {side}",
                _fmt(s.get("contact_area_mm2"), "{:.2f} mm²"),
                f"arch surface closer than {_fmt(threshold, '{:g}')} mm to the opposing arch on the patient's {side}",
            )
        )
    rows += [
        (
            "max penetration",
            _fmt(c.get("max_penetration_mm"), "{:.3f} mm"),
            "deepest interpenetration of the arches in occlusion; scan noise alone gives a few hundredths",
        ),
        ("registration confidence", _fmt(reg.get("confidence"), "{:.2f}"), "0-1: how clearly the bite placement wins"),
        (
            "bite doubtful",
            _fmt(reg.get("doubtful")) + (f" ({reg['reason']})" if reg.get("doubtful") and reg.get("reason") else ""),
            "yes: the occlusion may be wrong, so may the contacts",
        ),
    ]
    return [
        {"label": a, "text": b, "explain": e, "flag": a == "bite doubtful" and reg.get("doubtful") is True}
        for a, b, e in rows
    ]


def viewer_payload(
    vertices: np.ndarray, faces: np.ndarray, values: np.ndarray, ramp, frame, arch: str | None
) -> dict[str, Any]:
    """The 3D view's data: the mesh (merged to at most ~VIEWER_MAX_VERTICES) in the arch's own
    frame (x, anterior, occlusal), colours from `ramp`, base64; camera presets for the arch."""
    from occlutrace_compute.analysis.preview import cluster

    v, f, vals = (
        np.asarray(vertices, dtype=np.float64),
        np.asarray(faces, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
    )
    # About one vertex per cell where the surface crosses cells squarely; a surface cuts ~1.5x as
    # many cells as its area / cell^2 (oblique crossings), so the first try usually fits.
    cross = frame.face_cross(vertices, faces)  # arch_frame's, when it was computed for this mesh
    area = (float((0.5 * cross[3]).sum()) or 1.0) if cross is not None else _area(vertices, faces)
    cell = math.sqrt(1.5 * area / VIEWER_MAX_VERTICES)
    for _ in range(8):  # bounded: each try merges 1.5x coarser
        if len(v) <= VIEWER_MAX_VERTICES:
            break
        v, f, vals = cluster(vertices, faces, values, cell)
        cell *= 1.5
    local = frame.local(v).astype("<f4")
    rgb = np.ascontiguousarray(ramp.rgba8(vals)[:, :3])
    head = local.tobytes() + rgb.tobytes()
    head += b"\0" * ((4 - len(head) % 4) % 4)
    data = _base64_text(head + f.astype("<u4").tobytes())
    # yaw/pitch of each preset camera (see viewer.js): pitch +90 puts the frame's -occlusal up.
    upper = arch == "upper"
    pitch = 90 if upper else -90
    right = (-1.0, 0.0) if upper else (1.0, 0.0)  # the patient's right in (x, anterior)

    def yaw(tx: float, ty: float) -> float:
        return math.degrees(math.atan2(tx, ty) if upper else math.atan2(-tx, -ty))

    presets = {
        "occlusal": [0, 0],
        "front": [yaw(0.0, 1.0), pitch],
        "right": [yaw(*right), pitch],
        "left": [yaw(-right[0], -right[1]), pitch],
    }
    note = "" if arch else "Arch (upper/lower) not stated: the side buttons may show the other side."
    return {"n_vertices": len(local), "n_faces": len(f), "data": data, "presets": json.dumps(presets), "note": note}


def _area(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Surface area (mm^2; 1.0 for none), from the face normals' columns (a fraction of the
    time of np.cross on (F, 3) rows)."""
    from occlutrace_compute.analysis.preview import face_areas

    return float(face_areas(vertices, faces).sum()) or 1.0


def _regions(result: dict) -> list[dict[str, str]] | None:
    if result.get("kind") != "pair":
        return None
    out = []
    for r in sorted(result.get("changed_regions", []), key=lambda r: -float(r.get("area_mm2", 0))):
        loc = r.get("location") or {}
        out.append(
            {
                "where": loc.get("text", "\u2013"),
                "area": _fmt(r.get("area_mm2"), "{:.1f}"),
                "mean": _fmt(r.get("mean_deviation_mm"), "{:+.3f}"),
                "centroid": ", ".join(f"{c:.1f}" for c in r.get("centroid_mm", [])),
            }
        )
    return out


def case_page(
    result: dict,
    images: list[tuple[str, bytes]],
    viewer: dict | None = None,
    options: dict | None = None,
    batch_link: str | None = None,
) -> str:
    """The case's inspection page (HTML text). images: (title, PNG bytes) shown full size."""
    from occlutrace_compute import __version__

    kind = result.get("kind", "")
    options = options or {}
    if kind == "pair":
        d = result.get("deviation", {})
        v = verdict(
            kind, d.get("within_tolerance_share"), d.get("tolerance_mm"), result.get("metrics", {}).get("doubtful")
        )
        metrics, kind_text = _pair_metrics(result), "pair: rescan aligned onto the reference"
    else:
        v = verdict(kind, None, None, result.get("registration", {}).get("doubtful"))
        metrics, kind_text = (
            _bite_metrics(result, options.get("contact_threshold_mm")),
            "bite: arches placed into occlusion",
        )
    inputs = [(f"input: {role}", name) for role, name in sorted((result.get("inputs") or {}).items())]
    relevant = {
        "pair": ("tolerance_mm", "band_mm", "color_scale_mm", "max_distance_mm", "arch"),
        "bite": ("contact_threshold_mm", "settle"),
    }.get(kind, ())
    inputs += [(f"option: {k}", _fmt(val)) for k, val in sorted(options.items()) if k in relevant and val is not None]
    return (
        _env()
        .get_template("case.html.j2")
        .render(
            case=result.get("case") or "(no label)",
            kind_text=kind_text,
            stamp=_stamp(),
            version=__version__,
            verdict=v,
            metrics=metrics,
            regions=_regions(result),
            viewer=viewer,
            inputs=inputs,
            warnings=result.get("warnings") or [],
            batch_link=batch_link,
            images=[{"title": t, "src": _base64_text(png, "data:image/png;base64,")} for t, png in images],
        )
    )


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    return tuple(int(hex_colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]


def case_pdf(result: dict, images: list[tuple[str, bytes]], options: dict | None = None) -> bytes:
    """One A4 page per case: verdict, key figures, changed regions, the first sheet. Written by
    analysis/pdfpage.py (base-14 fonts, the sheet's PNG rows as they are): a few ms, no plotting
    library imported."""
    from occlutrace_compute.analysis.pdfpage import PdfPage

    kind = result.get("kind", "")
    options = options or {}
    if kind == "pair":
        d = result.get("deviation", {})
        v = verdict(
            kind, d.get("within_tolerance_share"), d.get("tolerance_mm"), result.get("metrics", {}).get("doubtful")
        )
        metrics = _pair_metrics(result)
    else:
        v = verdict(kind, None, None, result.get("registration", {}).get("doubtful"))
        metrics = _bite_metrics(result, options.get("contact_threshold_mm"))
    page = PdfPage()
    page.text(0.06, 0.965, f"Inspection report: {result.get('case') or '(no label)'}", 15, bold=True)
    colour = {"pass": "#1d6b1a", "fail": "#a11111", "check": "#8a5300"}.get(v["key"], "#444444")
    page.text(0.06, 0.935, v["title"], 13, bold=True, color=_rgb(colour))
    y = min(0.885, page.wrapped(0.06, 0.915, v["text"], 8.5) - 0.004)
    for m in metrics:
        page.text(0.06, y, m["label"], 8.5, bold=True)
        page.text(0.26, y, m["text"], 8.5, color=_rgb("#a11111") if m["flag"] else (0.0, 0.0, 0.0))
        explain = m["explain"] if len(m["explain"]) <= 84 else m["explain"][:83] + "\u2026"
        page.text(0.45, y, explain, 6.3, color=_rgb("#555555"))
        y -= 0.018
    for r in (_regions(result) or [])[:8]:
        page.text(0.06, y, f"changed: {r['where']}, {r['area']} mm\u00b2, mean {r['mean']} mm", 7.5)
        y -= 0.015
    if images:
        page.image(images[0][1], 0.04, 0.03, 0.92, max(0.1, y - 0.045))
    return page.tobytes()


def case_report_files(
    result: dict, files: dict[str, bytes], viewer: dict | None = None, options: dict | None = None
) -> dict[str, bytes]:
    """report.html and report.pdf of a finished case, from its result and output files."""
    titles = {
        "deviation.png": "Deviation map: occlusal, frontal and buccal views, colour scale and histogram",
        "contacts.png": "Occlusal contacts: both arches, colour scale",
    }
    images = [(titles.get(n, n), data) for n, data in sorted(files.items()) if n.endswith(".png")]
    return {
        CASE_PAGE: case_page(result, images, viewer, options, batch_link=None).encode("utf-8"),
        CASE_PDF: case_pdf(result, images, options),
    }
