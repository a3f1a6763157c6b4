"""Street addresses: a house number next to a street word, in the orders languages use.

`12 Main Street`, `221B Baker St`, `Hauptstraße 5`, `Berliner Str. 12`, `Kerkstraat 12a`,
`12 rue de la Paix`, `Calle Mayor 5`, `Via Roma 10`, `ul. Marszałkowska 10`, `Atatürk Cad. No: 5`.
"""

from __future__ import annotations

import re

from occlutrace_compute.privacy.finding import Hit
from occlutrace_compute.privacy.lexicon import DENTAL, PARTICLES, STOP, VENDORS, fold

_NUM = r"\d{1,5}[a-zA-Z]?"
_NAME_WORD = r"[^\W\d_][\w'’.-]*"
_L = r"(?<![^\W\d_])"  # no letter before
_R = r"(?![^\W\d_])"  # no letter after

_ENGLISH_STREET = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|"
    r"Terrace|Way|Crescent|Close|Square|Sq|Highway|Hwy|Parkway|Pkwy"
)
_FULL_ENGLISH = r"street|avenue|road|boulevard|lane|drive|terrace|crescent|highway|parkway"
_LEADING_STREET = (
    r"rue|avenue|av|bd|boulevard|chemin|all[ée]e|impasse|place|quai|calle|c/|avenida|avda|"
    r"paseo|plaza|carrera|camino|via|viale|corso|piazza|piazzale|largo|vicolo|rua|travessa|"
    r"pra[çc]a|estrada|alameda|ulica|ul|aleja|al|os|osiedle"
)
_TRAILING_STREET = r"cad(?:desi)?|sok(?:ak)?|sk|bulvar[ıi]|mahallesi|mah"
_COMPOUND = (
    r"stra(?:ß|ss)e|str|weg|allee|gasse|platz|ring|damm|ufer|chaussee|pfad|steig|straat|laan|"
    r"plein|gracht|kade|steeg|singel|dijk|gatan|v[äa]gen|gata|gr[äa]nd|veien|vei|vej|vegen|gade|"
    r"str[æa]de|torv|katu|tie|kuja"
)
_SEPARATE_GERMANIC = (
    r"Stra(?:ß|ss)e|Str|Weg|Allee|Platz|Ring|Damm|Gasse|Chaussee|Ufer|gate|vei|vej|veien|gade|gata|gatan"
)

_PATTERNS = (
    # 12 Main Street, 221B Baker St., 12, Oak Avenue
    re.compile(rf"{_L}{_NUM},?\s+(?:[A-Z][\w'’.-]*\s+){{1,3}}(?:{_ENGLISH_STREET}){_R}\.?"),
    re.compile(rf"{_L}{_NUM},?\s+(?:{_NAME_WORD}\s+){{1,3}}(?:{_FULL_ENGLISH}){_R}", re.I),
    # 12 rue de la Paix / 12, Calle Mayor
    re.compile(rf"{_L}{_NUM},?\s+(?:{_LEADING_STREET}){_R}\.?\s+(?:{_NAME_WORD}\s*){{1,4}}", re.I),
    # Calle Mayor 5, Via Roma 10, Rua Augusta 25, ul. Marszałkowska 10, Av. da Liberdade, 12
    re.compile(rf"{_L}(?:{_LEADING_STREET}){_R}\.?\s+(?:{_NAME_WORD}\s+){{1,4}},?\s*(?:n[º°o.]?\s*)?{_NUM}{_R}", re.I),
    # Atatürk Cad. No: 5, Gül Sok. 12
    re.compile(rf"{_L}(?:{_NAME_WORD}\s+){{1,3}}(?:{_TRAILING_STREET})\.?\s*(?:no\s*[:.]?\s*)?{_NUM}{_R}", re.I),
    # Hauptstraße 5, Kerkstraat 12a, Storgatan 5, Vesterbrogade 3
    re.compile(rf"{_L}[^\W\d_]{{3,}}(?:{_COMPOUND})\.?\s*{_NUM}{_R}", re.I),
    # Berliner Str. 12, Karl Johans gate 5
    re.compile(rf"{_L}(?:[A-ZÄÖÜ][\w'’.-]*\s+){{1,3}}(?:{_SEPARATE_GERMANIC}){_R}\.?\s*{_NUM}{_R}"),
    # PO Box 123, Postfach 12 34
    re.compile(rf"{_L}(?:p\.?\s?o\.?\s?box|postfach|apartado|casilla|bo[îi]te postale)\s*\d[\d ]*\d", re.I),
)
_WORD = re.compile(r"[^\W\d_]+")
_STREET_WORDS = frozenset(
    fold(w)
    for w in [
        "street",
        "st",
        "avenue",
        "ave",
        "road",
        "rd",
        "boulevard",
        "blvd",
        "lane",
        "ln",
        "drive",
        "dr",
        "court",
        "ct",
        "place",
        "pl",
        "terrace",
        "way",
        "crescent",
        "close",
        "square",
        "sq",
        "highway",
        "hwy",
        "parkway",
        "pkwy",
        "rue",
        "av",
        "bd",
        "chemin",
        "allee",
        "impasse",
        "quai",
        "calle",
        "avenida",
        "avda",
        "paseo",
        "plaza",
        "carrera",
        "camino",
        "via",
        "viale",
        "corso",
        "piazza",
        "piazzale",
        "largo",
        "vicolo",
        "rua",
        "travessa",
        "praca",
        "estrada",
        "alameda",
        "ulica",
        "ul",
        "aleja",
        "al",
        "os",
        "osiedle",
        "cad",
        "caddesi",
        "sok",
        "sokak",
        "sk",
        "bulvari",
        "mahallesi",
        "mah",
        "strasse",
        "str",
        "weg",
        "allee",
        "platz",
        "ring",
        "damm",
        "gasse",
        "chaussee",
        "ufer",
        "gate",
        "vei",
        "vej",
        "veien",
        "gade",
        "gata",
        "gatan",
        "no",
        "n",
    ]
)


_LAST_WORD = re.compile(r"\s+([^\W\d_][\w'’.-]*)\s*$")


def _trim(part: str) -> str:
    """Drop lab words a greedy match took after the street name: '12 rue de la Paix upper'."""
    for _ in range(4):
        last = _LAST_WORD.search(part)
        if last is None:
            break
        word = fold(last.group(1).rstrip("."))
        if word in _STREET_WORDS or word not in STOP:
            break
        part = part[: last.start()]
    return part


def _only_vocabulary(part: str) -> bool:
    """`scan 2 via Trios 5` is not an address: apart from the street word, it is lab vocabulary."""
    words = [fold(w) for w in _WORD.findall(part)]
    named = [w for w in words if w not in _STREET_WORDS and w not in PARTICLES]
    return all(w in DENTAL or w in VENDORS for w in named)


def find_addresses(text: str) -> list[Hit]:
    spaced = text.replace("_", " ")  # same length, so spans stay valid for `text`
    hits = []
    for pat in _PATTERNS:
        for m in pat.finditer(spaced):
            part = _trim(m.group().rstrip(" ,"))
            if not _only_vocabulary(part):
                hits.append(Hit.of(text, m.start(), m.start() + len(part), "address", "a street address"))
    return hits
