"""Self-contained batch report (report.html): one file a technician opens in any browser.

Everything is inline (CSS, thumbnails as base64 PNG data URIs) so the file can be mailed or
archived alone. All text from rows is escaped. Thumbnails are downscaled and palette-quantised
(a few tens of kB each) so a thousand-case batch stays openable.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

THUMB_WIDTH_PX = 320

# Headline columns per kind: (label, accepted metric keys (first present wins), format).
_HEADLINES: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "pair": [
        ("RMSE", ("rmse_mm", "metrics.rmse_mm"), "{:.3f} mm"),
        ("fitness", ("fitness", "metrics.fitness"), "{:.1%}"),
        ("deviation RMS", ("deviation_rms_mm", "deviation.rms_mm"), "{:.3f} mm"),
        ("within tol.", ("within_tolerance_share", "deviation_within_tolerance_share", "deviation.within_tolerance_share"), "{:.1%}"),
        ("confidence", ("confidence", "metrics.confidence"), "{:.2f}"),
        ("doubtful", ("doubtful", "metrics.doubtful"), "{}"),
    ],
    "bite": [
        ("contact L", ("contact_area_left_mm2", "contacts.per_side.left.contact_area_mm2"), "{:.1f} mm\u00b2"),
        ("contact R", ("contact_area_right_mm2", "contacts.per_side.right.contact_area_mm2"), "{:.1f} mm\u00b2"),
        ("max penetration", ("max_penetration_mm", "contacts.max_penetration_mm"), "{:.3f} mm"),
        ("confidence", ("confidence", "metrics.confidence"), "{:.2f}"),
        ("doubtful", ("doubtful", "metrics.doubtful"), "{}"),
    ],
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px}.meta{color:#666;font-size:13px;margin-bottom:12px}
.counts span{display:inline-block;margin:0 8px 8px 0;padding:4px 10px;border-radius:12px;font-size:13px}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:8px;vertical-align:top;text-align:left;font-size:13px}
th{background:#f4f4f4;position:sticky;top:0}
.st{font-weight:600;border-radius:4px;padding:2px 6px;white-space:nowrap}
.succeeded,.skipped{background:#e3f4e1;color:#1d6b1a}.failed{background:#fbe3e3;color:#a11}
.rejected{background:#fff0d6;color:#8a5300}.other{background:#eee;color:#444}
.doubtful{color:#a11;font-weight:600}.reason{color:#a11;max-width:420px;word-break:break-word}
dl{margin:0;display:grid;grid-template-columns:auto auto;gap:2px 10px}dt{color:#666}dd{margin:0}
img{max-width:320px;border:1px solid #ccc;display:block;margin-bottom:4px}
.missing{color:#999;font-style:italic}details{font-size:12px;margin-top:6px}
"""


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


def _fmt(value: Any, pattern: str = "{}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def _thumbnail(path: Any) -> str:
    """An <img> with the PNG inlined, or a note saying why there is none."""
    name = html.escape(Path(str(path)).name)
    try:
        with Image.open(str(path)) as im:
            im = im.convert("RGB")
            if im.width > THUMB_WIDTH_PX:
                im = im.resize((THUMB_WIDTH_PX, round(im.height * THUMB_WIDTH_PX / im.width)), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.quantize(colors=256).save(buf, format="PNG", optimize=True)
    except (OSError, ValueError) as e:
        return f'<div class="missing">preview {name} unavailable ({html.escape(type(e).__name__)})</div>'
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{name}" title="{name}" src="data:image/png;base64,{data}">'


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        return ""
    return f'<div class="meta">{value:.1f} s</div>'


def _status_class(status: str) -> str:
    return status if status in ("succeeded", "skipped", "failed", "rejected") else "other"


def _row_html(row: dict) -> str:
    status = str(row.get("status", ""))
    kind = str(row.get("kind", ""))
    flat = _flatten(row.get("metrics") or {})
    headline, used = [], set()
    for label, keys, pattern in _HEADLINES.get(kind, []):
        key = next((k for k in keys if k in flat), None)
        if key is None:
            continue
        used.add(key)
        css = ' class="doubtful"' if label == "doubtful" and flat[key] is True else ""
        headline.append(f"<dt>{html.escape(label)}</dt><dd{css}>{html.escape(_fmt(flat[key], pattern))}</dd>")
    rest = [f"<dt>{html.escape(k)}</dt><dd>{html.escape(_fmt(v))}</dd>" for k, v in sorted(flat.items()) if k not in used]
    metrics_html = f"<dl>{''.join(headline)}</dl>" if headline else ""
    if rest:
        metrics_html += f"<details><summary>all metrics ({len(rest)})</summary><dl>{''.join(rest)}</dl></details>"
    reason = row.get("reason") or ""
    previews = row.get("previews") or []
    thumbs = "".join(_thumbnail(p) for p in previews) or '<div class="missing">no preview</div>'
    return (
        "<tr>"
        f"<td>{html.escape(str(row.get('case', '')))}</td>"
        f"<td>{html.escape(kind)}</td>"
        f'<td><span class="st {_status_class(status)}">{html.escape(status)}</span>{_seconds(row.get("seconds"))}</td>'
        f"<td>{metrics_html}</td>"
        f'<td class="reason">{html.escape(str(reason))}</td>'
        f"<td>{thumbs}</td>"
        "</tr>"
    )


def _counts(rows: Iterable[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        status = str(row.get("status", ""))
        counts[status] = counts.get(status, 0) + 1
    return counts


def write_batch_report(rows: list[dict], out_path: str | Path, title: str = "OccluTrace batch report") -> Path:
    """Write report.html for a batch: summary counts, then one row per case.

    Each row: case, kind, status, reason, metrics (dict, may be nested), previews (PNG paths;
    missing or unreadable files are noted, not fatal), optionally seconds (run time).
    """
    counts = _counts(rows)
    order = ["succeeded", "skipped", "failed", "rejected"]
    labels = order + sorted(k for k in counts if k not in order)
    badges = "".join(
        f'<span class="st {_status_class(s)}">{html.escape(s)}: {counts.get(s, 0)}</span>' for s in labels if s in counts or s in ("succeeded", "failed", "rejected")
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(_row_html(r) for r in rows)
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<div class="meta">{len(rows)} cases \u00b7 generated {stamp}</div>'
        f'<div class="counts">{badges}</div>'
        "<table><thead><tr><th>case</th><th>kind</th><th>status</th><th>key numbers</th>"
        "<th>reason</th><th>previews</th></tr></thead>"
        f"<tbody>{body}</tbody></table></body></html>\n"
    )
    out = Path(out_path)
    out.write_text(doc, encoding="utf-8")
    return out
