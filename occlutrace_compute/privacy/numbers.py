"""Identifiers made of digits: national ID numbers, phone numbers, chart numbers.

National IDs are checked lightly (shape, and the check digit where the scheme has one) so that
an ordinary long number is reported as a record number rather than as somebody's PESEL.
"""

from __future__ import annotations

import datetime as dt
import re

from occlutrace_compute.privacy.finding import Hit

_NO_DIGIT_BEFORE = r"(?<![\d+])"
_NO_DIGIT_AFTER = r"(?!\d)"
# `_` glues label parts: RSSMRA72C04H501X_upper still ends the ID.
_NO_ALNUM_BEFORE = r"(?<![0-9A-Za-z])"
_NO_ALNUM_AFTER = r"(?![0-9A-Za-z])"

_SSN = re.compile(
    rf"{_NO_DIGIT_BEFORE}(?!000|666|9\d\d)\d{{3}}(?P<s>[- ])(?!00)\d\d(?P=s)(?!0000)\d{{4}}{_NO_DIGIT_AFTER}"
)
_SSN_MARKED = re.compile(r"(?<![^\W\d_])(?:ssn|ss#|social security(?: number| no\.?)?)[\s:#._-]*\d{9}(?!\d)", re.I)
_UK_NINO = re.compile(rf"{_NO_ALNUM_BEFORE}[A-CEGHJ-PR-TW-Z]{{2}}\s?\d\d\s?\d\d\s?\d\d\s?[A-D]{_NO_ALNUM_AFTER}")
_CODICE_FISCALE = re.compile(
    rf"{_NO_ALNUM_BEFORE}[A-Z]{{6}}\d\d[A-EHLMPR-T]\d\d[A-Z]\d{{3}}[A-Z]{_NO_ALNUM_AFTER}", re.I
)
_DNI = re.compile(rf"{_NO_ALNUM_BEFORE}(?P<n>[XYZ]?\d{{7,8}})-?(?P<c>[A-Z]){_NO_ALNUM_AFTER}")
_NORDIC = re.compile(rf"{_NO_DIGIT_BEFORE}(?P<c>(?:19|20)?\d{{6}})(?P<s>[-+A])(?P<n>\d{{3}}[\dA-Y]){_NO_ALNUM_AFTER}")
_NHS = re.compile(rf"{_NO_DIGIT_BEFORE}\d{{3}}(?P<s>[ -])\d{{3}}(?P=s)\d{{4}}{_NO_DIGIT_AFTER}")
_FRENCH_NIR = re.compile(
    rf"{_NO_DIGIT_BEFORE}[12] ?\d\d ?(?:0[1-9]|1[0-2]) ?(?:\d\d|2[AB]) ?\d{{3}} ?\d{{3}}(?: ?\d\d)?{_NO_DIGIT_AFTER}"
)

_PHONES = (
    # International: +49 30 1234567, +1 (555) 123-4567, +44 (0)20 7946 0958, 0049 30 1234567.
    # (One bounded character class, so that a long digit run cannot make the regex backtrack.)
    re.compile(r"(?<![\w+])(?:\+|00(?=[1-9]\d{0,2}[\s./-]))[1-9][\d\s()./-]{5,22}\d(?!\d)"),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567.
    re.compile(rf"{_NO_DIGIT_BEFORE}(?:\(\d{{3}}\)\s?|\d{{3}}[\s.-])\d{{3}}[\s.-]\d{{4}}{_NO_DIGIT_AFTER}"),
    # National trunk prefix: 030/1234567, 0171-1234567, 06 12 34 56 78, 020 7946 0958.
    re.compile(rf"{_NO_DIGIT_BEFORE}0[1-9]\d{{0,3}}(?:[\s/-]\d{{2,8}}){{1,4}}{_NO_DIGIT_AFTER}"),
    # After a phone marker, any digit group: "tel 0301234567", "Handy: 0171 1234567".
    re.compile(
        r"(?<![^\W\d_])(?:tel|tél|phone|telefon|telefono|teléfono|telefone|fon|mobile?|mobil|cell|handy|"
        r"móvil|movil|cellulare|celular|gsm|fax)\.?[\s:#._-]*\+?\(?\d[\d\s()./-]{5,22}\d(?!\d)",
        re.I,
    ),
)

_MRN = re.compile(
    r"(?<![^\W\d_])(?:mrn|mr#|chart|pid|pat(?:ient)?(?:[\s._-]?(?:id|nr|no|num))?|pt|patid|record|akte|"
    r"kartei|patientennummer|patientennr|dossier|nhc|historia|prontu[aá]rio|cartella|hasta no)"
    r"(?:\s*(?:no|nr|num|number|#)\.?)?[\s:#=._-]*\d[\d-]{2,}\d(?!\d)",
    re.I,
)
_LONG_NUMBER = re.compile(r"(?<!\d)\d{6,}(?!\d)")
# Hashes and UUIDs are anonymous by construction; digit runs inside them are not chart numbers.
_HEX_ID = re.compile(
    r"(?<![0-9A-Za-z])(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|"
    r"(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{12,})(?![0-9A-Za-z])",
    re.I,
)


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _pesel_ok(n: str) -> bool:
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    return (10 - sum(int(d) * w for d, w in zip(n, weights)) % 10) % 10 == int(n[10])


def _tc_kimlik_ok(n: str) -> bool:
    d = [int(c) for c in n]
    return d[0] != 0 and (7 * sum(d[0:9:2]) - sum(d[1:8:2])) % 10 == d[9] and sum(d[:10]) % 10 == d[10]


def _bsn_ok(n: str) -> bool:
    return sum(int(d) * w for d, w in zip(n, (9, 8, 7, 6, 5, 4, 3, 2, -1))) % 11 == 0 and n != "0" * 9


def _nhs_ok(n: str) -> bool:
    check = 11 - sum(int(d) * w for d, w in zip(n, range(10, 1, -1))) % 11
    return (0 if check == 11 else check) == int(n[9])


def _dni_ok(number: str, letter: str) -> bool:
    digits = number.translate(str.maketrans("XYZ", "012"))
    return "TRWAGMYFPDXBNJZSQVHLCKE"[int(digits) % 23] == letter


def _date_prefix_ok(n: str) -> bool:
    """Nordic IDs start with the birth date: (YY)YYMMDD in Sweden, DDMMYY elsewhere."""
    yymmdd = n[-6:]
    for y, m, d in ((yymmdd[:2], yymmdd[2:4], yymmdd[4:]), (yymmdd[4:], yymmdd[2:4], yymmdd[:2])):
        try:
            dt.date(2000 + int(y), int(m), int(d))
            return True
        except ValueError:
            continue
    return False


_BARE_IDS = (
    (11, _pesel_ok, "a national ID number (Polish PESEL)"),
    (11, _tc_kimlik_ok, "a national ID number (Turkish TC Kimlik No)"),
    (10, _nhs_ok, "a national ID number (UK NHS number)"),
    (9, _bsn_ok, "a national ID number (Dutch BSN)"),
)


def find_national_ids(text: str) -> list[Hit]:
    hits = [
        Hit.of(text, m.start(), m.end(), "ssn", "a US social security number")
        for pat in (_SSN, _SSN_MARKED)
        for m in pat.finditer(text)
    ]
    hits += [
        Hit.of(text, m.start(), m.end(), "ssn", "a national ID number (UK National Insurance)")
        for m in _UK_NINO.finditer(text)
    ]
    hits += [
        Hit.of(text, m.start(), m.end(), "ssn", "a national ID number (Italian codice fiscale)")
        for m in _CODICE_FISCALE.finditer(text)
    ]
    hits += [
        Hit.of(text, m.start(), m.end(), "ssn", "a national ID number (Spanish DNI/NIE)")
        for m in _DNI.finditer(text)
        if _dni_ok(m["n"], m["c"])
    ]
    hits += [
        Hit.of(text, m.start(), m.end(), "ssn", "a national ID number (Nordic personal number)")
        for m in _NORDIC.finditer(text)
        if _date_prefix_ok(m["c"])
    ]
    hits += [
        Hit.of(text, m.start(), m.end(), "ssn", "a national ID number (UK NHS number)")
        for m in _NHS.finditer(text)
        if _nhs_ok(_digits(m.group()))
    ]
    hits += [
        Hit.of(text, m.start(), m.end(), "ssn", "a national ID number (French NIR)")
        for m in _FRENCH_NIR.finditer(text)
        if len(_digits(m.group())) >= 13
    ]
    for m in _LONG_NUMBER.finditer(text):
        for length, valid, what in _BARE_IDS:
            if len(m.group()) == length and valid(m.group()):
                hits.append(Hit.of(text, m.start(), m.end(), "ssn", what))
                break
    return hits


def find_phones(text: str) -> list[Hit]:
    return [
        Hit.of(text, m.start(), m.end(), "phone", "a phone number")
        for pat in _PHONES
        for m in pat.finditer(text)
        if 7 <= len(_digits(m.group())) <= 15
    ]


def find_record_numbers(text: str) -> list[Hit]:
    hits = [Hit.of(text, m.start(), m.end(), "mrn", "a medical record / chart number") for m in _MRN.finditer(text)]
    hits += [
        Hit.of(text, m.start(), m.end(), "mrn", f"a chart / record number ({len(m.group())}-digit number)")
        for m in _LONG_NUMBER.finditer(text)
    ]
    return hits


def anonymous_id_spans(text: str) -> list[tuple[int, int]]:
    """Spans of UUIDs and hex hashes, which are anonymous whatever digits they contain."""
    return [m.span() for m in _HEX_ID.finditer(text)]
