"""Vocabulary that is never a name, and words that introduce one.

Many dental and everyday words are also someone's name ("Crown", "Bridge", "Will", "May", "Can").
Labels are full of them, so these words win over the name lists: a stopped token is never a name.
Everything is stored as `fold()` keys (case- and accent-free).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Letters that NFKD does not decompose into base letter + mark.
_SPECIAL = str.maketrans(
    {"ß": "ss", "ł": "l", "ø": "o", "æ": "ae", "œ": "oe", "đ": "d", "ð": "d", "þ": "th", "ı": "i", "’": "", "'": ""}
)
# German and Nordic spelling without umlauts: Müller -> Mueller, Søren -> Soeren, Åse -> Aase.
_DIGRAPHS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ø": "oe", "å": "aa", "æ": "ae", "ß": "ss"})


def _strip_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@lru_cache(maxsize=1 << 16)  # labels repeat their words; folding is the hot path of name lookup
def fold(word: str) -> str:
    """Case- and accent-free key: 'Müller' -> 'muller', "O'Brien" -> 'obrien'."""
    return _strip_marks(word.casefold().translate(_SPECIAL))


def fold_variants(word: str) -> set[str]:
    """Every key a spelling of `word` may arrive as: 'Müller' -> {'muller', 'mueller'}."""
    low = word.casefold()
    return {fold(low), fold(low.translate(_DIGRAPHS))}


def _keys(words: str) -> frozenset[str]:
    return frozenset(fold(w) for w in words.split())


DENTAL = _keys("""
    upper lower maxilla maxillary mandible mandibular bite bites buccal lingual palatal labial occlusal
    mesial distal incisal cervical gingival gingiva left right prep preps preparation crown crowns bridge
    bridges implant implants scan scans rescan scanned arch arches tooth teeth jaw jaws molar molars
    premolar premolars canine canines incisor incisors anterior posterior quadrant sextant antagonist
    opposing opposite registration occlusion articulator articulated abutment abutments scanbody body
    bodies coping copings pontic pontics framework inlay onlay overlay veneer veneers denture dentures
    partial full base model models die dies stump stone plaster cast impression impressions tray trays
    wax waxup mockup mock diagnostic setup aligner aligners retainer retainers splint splints guard
    nightguard surgical guide guides drill sleeve ortho orthodontic prosthetic prosth resto restoration
    restorations margin margins emergence profile contact contacts point points cusp cusps fissure root
    roots canal gum gums palate tongue lip lips cheek smile design digital dental dentistry dentist lab
    labs clinic clinical zirconia zirkon zirkonia emax lithium disilicate pmma resin composite titanium
    cobalt chrome chromium gold metal ceramic ceramics porcelain acrylic peek temp temporary provisional
    final finals definitive screw retained cemented hybrid bar overdenture attachment locator analog
    analogue healing cap caps tissue soft hard bone sinus ridge edentulous dentate quad segment
    vertical horizontal dimension shade shades mamelon gingivectomy span unit units
    oberkiefer unterkiefer ok uk biss bissregistrierung bissnahme zahn zahne zaehne krone kronen brucke
    bruecke brucken praparation praep stumpf modell sagemodell situationsmodell gegenkiefer kiefer
    provisorium schiene aufbiss implantat implantate abutment links rechts oben unten vorne hinten
    mâchoire machoire maxillaire mandibule dent dents couronne couronnes pont ponts morsure occlusion
    haut bas gauche droite empreinte
    maxilar mandibula mandibular arcada superior inferior mordida diente dientes corona coronas puente
    puentes implante implantes izquierda izquierdo derecha derecho muela muelas
    arcata superiore inferiore mascella mandibola morso dente denti ponte impianto impianti sinistra
    destra
    arcada superior inferior dente dentes coroa coroas ponte implante esquerda direita
    boven onder bovenkaak onderkaak beet kroon kronen brug tand tanden links rechts
    szczeka szczęka zuchwa żuchwa gorna górna dolna zgryz korona korony most zab ząb zeby zęby implant
    ust alt ceneler dis kron kopru köprü isirma ısırma
    overkaeft underkaeft overkjeve underkjeve overkake underkake tand tann tander bett bid
    ylaleuka alaleuka hammas
    """)

# Scanner and CAD brands, and the words of mesh file formats and their headers.
VENDORS = _keys("""
    trios itero medit primescan omnicam cerec carestream planmeca emerald shining aoralscan autoscan
    exocad dentalcad 3shape shape dentsply sirona ivoclar straumann nobel nobelbiocare zirkonzahn amann
    girrbach ceramill cara heraeus kulzer vita glidewell align invisalign clearcorrect spark ios
    intraoral lava katana procad meshmixer blender meshlab geomagic freeform dental wings dentalwings
    ply stl obj mtl dcm off glb gltf zip xml json csv txt png jpg jpeg mesh meshes pointcloud cloud
    solid endsolid facet normal outer loop endloop endfacet vertex vertices element property format
    comment info mtllib usemtl ascii binary little big endian header
    """)

# Words common in file names and metadata that are not names.
GENERAL = _keys("""
    a an the and or of for to from by with without in on at as is it its be this that these those
    new old copy final draft version ver rev revision edit edited export exported import imported
    file files data test tests testing sample samples demo example examples case cases lab order orders
    job jobs batch batches study project group site team part parts set sets series no nr num number id
    ref reference target source fixed moving moved aligned alignment merged merge cut trimmed trim clean
    cleaned raw processed result results output input original orig backup tmp temp day days week weeks
    month year date time am pm today yesterday before after pre post initial follow followup check
    control baseline visit session first second third last next prev previous one two three four five
    six seven eight nine ten both all any other only main extra more less high low big small large
    mini max min top bottom front back side inside outside center centre middle up down over under
    open close closed half quarter whole single double triple multi view views pass fail ok okay good
    bad best better yes not none unknown misc various default standard custom user admin system
    software scanner device color colour colored coloured texture textured grey gray white black red
    blue green yellow pink gold silver light dark will may can could should would shall must might
    mark marks art bill grace hope faith joy rose page case chase hunter mason dean lane dawn summer
    autumn winter spring june july april august march feb mar apr jun jul aug sep sept oct nov dec
    mon tue wed thu fri sat sun doctor dr patient pat pt name names surname
    """)

STOP: frozenset[str] = DENTAL | VENDORS | GENERAL

# Joiners inside multi-part surnames (van der Berg, de la Cruz, bin Laden): never names on their
# own, but they do not break a name either.
PARTICLES: frozenset[str] = _keys("""
    van von der den de del della dei la le da di dos das do du des al el bin ibn ben abu ter te het zu
    y e i ten mac
    """)

# Words that put a name right after them: titles and "patient"/"name" field labels.
NAME_MARKERS: frozenset[str] = _keys("""
    mr mrs ms miss mx dr prof herr frau hr fr sr sra srta mme mlle sig sigra dott dhr mevr pan pani
    bay bayan bey hanim patient patientin patiente paciente paziente pat pt name nom nombre nome naam
    imie nazwisko vorname nachname surname apellido cognome
    """)
