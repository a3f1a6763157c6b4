"""Entry points: find identifiers in a label, file name or metadata text, or reject it.

Detectors run in order of specificity; a part claimed by one (an e-mail address) is not reported
again by a vaguer one (the name inside it). A lab's allow patterns (regular expressions for its own
label scheme) exempt every part of the text they match whole, from one separator to the next.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.privacy.addresses import find_addresses
from occlutrace_compute.privacy.dates import find_dates
from occlutrace_compute.privacy.finding import Finding, Hit
from occlutrace_compute.privacy.numbers import (
    anonymous_id_spans,
    find_national_ids,
    find_phones,
    find_record_numbers,
)
from occlutrace_compute.privacy.people import find_names

_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")


def _find_emails(text: str) -> list[Hit]:
    if "@" not in text:
        return []
    return [Hit.of(text, m.start(), m.end(), "email", "an e-mail address") for m in _EMAIL.finditer(text)]


_DETECTORS: tuple[Callable[[str], list[Hit]], ...] = (
    _find_emails,
    find_national_ids,
    find_dates,
    find_phones,
    find_addresses,
    find_record_numbers,
    find_names,
)
_SEPARATORS = frozenset(" \t\r\n_-./\\,;:()[]{}|+#=&'\"")
_MAX_ALLOWED_SPAN = 256  # longest label part an allow pattern is tried on


@lru_cache(maxsize=256)
def _compile(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as err:
            raise InputRejected("allow pattern", f"{p!r} is not a valid regular expression ({err})") from None
    return tuple(compiled)


def _allowed_spans(text: str, patterns: tuple[re.Pattern[str], ...]) -> list[tuple[int, int]]:
    """Parts of `text` that an allow pattern matches, from a separator (or the start) to a separator
    (or the end). One match attempt per pattern and start keeps this linear in the text length."""
    if not patterns:
        return []
    starts = [0] + [i + 1 for i, c in enumerate(text) if c in _SEPARATORS]
    spans = []
    for s in starts:
        for p in patterns:
            m = p.match(text, s, min(len(text), s + _MAX_ALLOWED_SPAN))
            if m and m.end() > s and (m.end() == len(text) or text[m.end()] in _SEPARATORS):
                spans.append((s, m.end()))
    return spans


def find_identifiers(text: str, allow: Sequence[str] = ()) -> list[Finding]:
    """Every part of `text` that looks like a patient identifier, in reading order.

    `allow`: regular expressions for the lab's own label scheme; a label, or a part of it between
    separators, that one of them matches whole is not reported.
    """
    patterns = _compile(tuple(allow))
    if not text or any(p.fullmatch(text) for p in patterns):
        return []
    exempt = _merged(_allowed_spans(text, patterns) + anonymous_id_spans(text))
    exempt_starts = [s for s, _ in exempt]
    kept: list[Hit] = []  # non-overlapping, sorted by start
    for detect in _DETECTORS:
        for hit in sorted(detect(text), key=lambda h: (h.start - h.end, h.start)):
            i = bisect.bisect_right(exempt_starts, hit.start) - 1
            if i >= 0 and hit.inside(*exempt[i]):
                continue
            j = bisect.bisect_left([k.start for k in kept], hit.start)
            if (j > 0 and kept[j - 1].overlaps(hit)) or (j < len(kept) and kept[j].overlaps(hit)):
                continue
            kept.insert(j, hit)
    return [h.finding for h in kept]


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of spans as sorted, disjoint intervals."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _problem(findings: list[Finding]) -> str:
    return "; ".join(f.message for f in findings) + (
        " (only de-identified case labels and file names are accepted; rename it, or have the lab's"
        " label scheme configured as an allow pattern)"
    )


def ensure_anonymous(text: str, source: str, allow: Sequence[str] = ()) -> None:
    """Raise InputRejected(source, ...) naming every part of `text` that looks like an identifier."""
    findings = find_identifiers(text, allow)
    if findings:
        raise InputRejected(source, _problem(findings))


_EXTENSION = re.compile(r"\.(?=[0-9A-Za-z]*[A-Za-z])[0-9A-Za-z]{1,5}(?:\.(?:gz|bz2|xz|zip|7z))?$", re.I)


def filename_stem(name: str) -> str:
    """`Smith_John_upper.stl` -> `Smith_John_upper`; `scan.ply.gz` -> `scan`."""
    stem = _EXTENSION.sub("", name)
    return stem or name


def find_in_filename(name: str, allow: Sequence[str] = ()) -> list[Finding]:
    """find_identifiers on a file name without its extension (directories are checked too)."""
    patterns = _compile(tuple(allow))
    if any(p.fullmatch(name) for p in patterns):
        return []
    # An e-mail address keeps its domain: `john@example.com` has no extension to strip.
    return find_identifiers(name if _EMAIL.search(name) else filename_stem(name), allow)


def check_filename(name: str, allow: Sequence[str] = ()) -> None:
    """Raise InputRejected(name, ...) when the file name looks like it identifies a patient."""
    findings = find_in_filename(name, allow)
    if findings:
        raise InputRejected(name, _problem(findings))
