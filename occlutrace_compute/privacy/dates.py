"""Calendar dates, which may be birth (or treatment) dates.

A full day-month-year date is an identifier under HIPAA's safe harbour whatever it dates, so every
valid one is reported; a year alone is not (lab schemes like `LAB-2024-00017` carry one). After a
birth marker (DOB, geb., né, ...) even a partial date is reported.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache

from occlutrace_compute.privacy.finding import Hit
from occlutrace_compute.privacy.lexicon import fold, fold_variants

_MONTH_WORDS = (
    # en
    "january february march april may june july august september october november december",
    "jan feb mar apr may jun jul aug sep oct nov dec",
    # de
    "januar februar märz april mai juni juli august september oktober november dezember",
    "jänner feb mrz apr mai jun jul aug sept okt nov dez",
    # fr
    "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "janv févr mars avr mai juin juil août sept oct nov déc",
    # es
    "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "ene feb mar abr may jun jul ago setiembre oct nov dic",
    # it
    "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre",
    # pt
    "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
    "jan fev mar abr mai jun jul ago setembro out nov dez",
    # nl
    "januari februari maart april mei juni juli augustus september oktober november december",
    "jan feb mrt apr mei jun jul aug sep okt nov dec",
    # pl, nominative and genitive ("4 marca 1972")
    "styczeń luty marzec kwiecień maj czerwiec lipiec sierpień wrzesień październik listopad grudzień",
    "stycznia lutego marca kwietnia maja czerwca lipca sierpnia września października listopada grudnia",
    # tr
    "ocak şubat mart nisan mayıs haziran temmuz ağustos eylül ekim kasım aralık",
    # sv, no, da
    "januari februari mars april maj juni juli augusti september oktober november december",
    "januar februar mars april mai juni juli august september oktober november desember",
    "januar februar marts april maj juni juli august september oktober november december",
    # fi (nominative and partitive)
    "tammikuu helmikuu maaliskuu huhtikuu toukokuu kesäkuu heinäkuu elokuu syyskuu lokakuu marraskuu joulukuu",
    "tammikuuta helmikuuta maaliskuuta huhtikuuta toukokuuta kesäkuuta heinäkuuta elokuuta syyskuuta"
    " lokakuuta marraskuuta joulukuuta",
)


@lru_cache(maxsize=1)
def _months() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _MONTH_WORDS:
        for number, word in enumerate(line.split(), start=1):
            for form in {word.casefold(), *fold_variants(word)}:
                out.setdefault(form, number)
    return out


_SEP = r"[-./_ ]"
_YEAR4 = r"(?:19|20)\d\d"
_NOT_LETTER_BEFORE = r"(?<![^\W\d_])"


@lru_cache(maxsize=1)
def _patterns() -> dict[str, re.Pattern[str]]:
    # Any word stands where a month name may; _text_dates looks it up (faster than an alternation).
    month = f"{_NOT_LETTER_BEFORE}(?P<mon>[^\\W\\d_]{{3,12}})\\.?"
    # A number inside a dotted version string (v2.1.24, 21.4.0.12) is not a date.
    not_version = r"(?<![vV\d])(?<!\d\.)"
    return {
        "ymd": re.compile(rf"(?<!\d)(?P<y>{_YEAR4})(?P<s>{_SEP})(?P<m>\d{{1,2}})(?P=s)(?P<d>\d{{1,2}})(?![.]?\d)"),
        "dmy": re.compile(
            rf"{not_version}(?P<a>\d{{1,2}})(?P<s>{_SEP})(?P<b>\d{{1,2}})(?P=s)(?P<y>{_YEAR4}|\d\d)(?![.]?\d)"
        ),
        "compact": re.compile(r"(?<!\d)(?P<n>\d{8})(?P<time>[-_T ]?(?:\d{6}|\d{4}))?(?!\d)"),
        "day_month": re.compile(
            rf"(?<!\d)(?P<d>\d{{1,2}})(?:st|nd|rd|th|er|\.|º)?[\s_.,-]*(?:de[\s_]+)?{month}"
            rf"[\s_.,-]*(?:de[\s_]+)?(?P<y>{_YEAR4}|'?\d\d)(?!\d)",
            re.IGNORECASE,
        ),
        "month_day": re.compile(
            rf"{month}[\s_-]*(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?[\s_-]*(?P<y>{_YEAR4})(?!\d)", re.IGNORECASE
        ),
        "birth_marker": re.compile(
            r"(?<![^\W\d_])(?:d\.?o\.?b|birth(?:day|date)?|born|geb(?:urtsdatum|oren)?|n[ée]e?|nacid[oa]|"
            r"nat[oa]|nascid[oa]|nasc(?:imento)?|naissance|ur\.|urodzon[ya]|do[ğg]um|f[öo]dd|f[øo]dt|"
            r"syntynyt|geboortedatum|f\.?\s?nac)(?![^\W\d_])[\s:.=_-]*",
            re.IGNORECASE,
        ),
        "partial": re.compile(r"\d{1,4}(?:[-./]\d{1,4}){0,2}(?!\d)"),
    }


# FDI tooth numbers: `bridge_11-12-13` lists teeth, it is not 12 Nov 2013.
_FDI = {f"{q}{t}" for q in (1, 2, 3, 4) for t in range(1, 9)} | {f"{q}{t}" for q in (5, 6, 7, 8) for t in range(1, 6)}


def _valid(year: int, month: int, day: int) -> bool:
    if year < 100:
        year += 1900 if year > dt.date.today().year % 100 else 2000
    if not 1900 <= year <= dt.date.today().year:
        return False
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def _numeric_dates(text: str) -> list[Hit]:
    pats = _patterns()
    hits: list[Hit] = []
    for m in pats["ymd"].finditer(text):
        if _valid(int(m["y"]), int(m["m"]), int(m["d"])):
            hits.append(Hit.of(text, m.start(), m.end(), "date", "a date (possible birth date)"))
    for m in pats["dmy"].finditer(text):
        a, b, year = int(m["a"]), int(m["b"]), m["y"]
        if len(year) == 2 and (m["s"] == " " or (m["s"] in "-_" and {m["a"], m["b"], year} <= _FDI)):
            continue
        if _valid(int(year), b, a) or _valid(int(year), a, b):
            hits.append(Hit.of(text, m.start(), m.end(), "date", "a date (possible birth date)"))
    for m in pats["compact"].finditer(text):
        n = m["n"]
        candidates = (
            ((n[:4], n[4:6], n[6:]),)
            if m["time"]
            else ((n[:4], n[4:6], n[6:]), (n[4:], n[2:4], n[:2]), (n[4:], n[:2], n[2:4]))
        )
        if any(_valid(int(y), int(mo), int(d)) for y, mo, d in candidates):
            hits.append(Hit.of(text, m.start(), m.end(), "date", "a date (possible birth date)"))
    return hits


def _text_dates(text: str) -> list[Hit]:
    months = _months()
    hits: list[Hit] = []
    for key in ("day_month", "month_day"):
        for m in _patterns()[key].finditer(text):
            month = months.get(m["mon"].casefold()) or months.get(fold(m["mon"]))
            if month and _valid(int(m["y"].lstrip("'")), month, int(m["d"])):
                hits.append(Hit.of(text, m.start(), m.end(), "date", "a date (possible birth date)"))
    return hits


def find_dates(text: str) -> list[Hit]:
    """Every valid date, widened to 'birth date' where a birth marker stands before it."""
    hits = _numeric_dates(text) + _text_dates(text)
    pats = _patterns()
    for marker in pats["birth_marker"].finditer(text):
        after = marker.end()
        following = [h for h in hits if h.start == after]
        if following:
            end = max(h.end for h in following)
        else:
            partial = pats["partial"].match(text, after)
            if partial is None:
                continue
            end = partial.end()
        hits = [h for h in hits if h.start != after]
        hits.append(Hit.of(text, marker.start(), end, "date", "a birth date"))
    return hits
