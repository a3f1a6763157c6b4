"""Personal names: name-list hits plus the shapes names take in labels.

Evidence per word, then per run of words glued only by separators (`_`, `-`, `.`, `,`, space,
camelCase):
- two listed names side by side are a name in any case ("mueller juergen", "john smith");
- one listed name alone needs 4+ letters, or 3 when capitalised ("Ali"); one that is also an
  ordinary English word ("Brown", "Long") needs a capital and 4+ letters;
- an unlisted capitalised word (or one with non-ASCII letters) that is not an English word counts
  only next to other name-like words or an initial: that is how names missing from the lists are
  still caught ("Novák_Jiří", "J. Horvath", "NOVAK, Jiri");
- lab vocabulary (lexicon.STOP: dental words in several languages, brands, "Will", "May") is never
  a name and breaks a run;
- a title or field marker (Dr, Frau, Patient:, Name:) makes the next words a name whatever they are.
bench/privacy_eval.py measures what each of these rules buys in precision and recall.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from occlutrace_compute.privacy.finding import Hit
from occlutrace_compute.privacy.lexicon import NAME_MARKERS, PARTICLES, STOP, fold
from occlutrace_compute.privacy.names import NameLists, name_lists
from occlutrace_compute.privacy.tokens import Word, joined, split_words


class Cls(Enum):
    KNOWN = "known"  # in the name lists
    NAMEY = "namey"  # unknown, but shaped like a name
    INITIAL = "initial"
    PARTICLE = "particle"
    MARKER = "marker"
    OTHER = "other"  # vocabulary, lowercase unknown words


@dataclass(frozen=True)
class _Tagged:
    word: Word
    cls: Cls
    score: float
    key: str


_MARKER_GAP = re.compile(r"[\s_.,:\-]{0,4}")


def _tag(word: Word, lists: NameLists) -> _Tagged:
    key = fold(word.text)
    capital = word.is_title or word.is_caps
    if key in NAME_MARKERS:
        return _Tagged(word, Cls.MARKER, 0.0, key)
    if key in PARTICLES:
        return _Tagged(word, Cls.PARTICLE, 0.0, key)
    if word.is_initial:
        return _Tagged(word, Cls.INITIAL, 1.0, key)
    if key in STOP:
        return _Tagged(word, Cls.OTHER, 0.0, key)
    if len(key) >= 2 and lists.is_known(key):
        plain_word = key in lists.words or len(key) == 2
        return _Tagged(word, Cls.KNOWN, (1.0 if capital else 0.5) if plain_word else 2.0, key)
    shaped = word.is_title or word.non_ascii or (word.is_caps and len(key) >= 4)
    if len(key) >= 3 and shaped and key not in lists.english:
        return _Tagged(word, Cls.NAMEY, 1.0, key)
    return _Tagged(word, Cls.OTHER, 0.0, key)


def _alone_is_name(t: _Tagged, lists: NameLists) -> bool:
    """A single listed word: long enough, and capitalised where it is also an English word."""
    if t.cls is not Cls.KNOWN or len(t.key) < 3:
        return False
    capital = t.word.is_title or t.word.is_caps
    if t.key in lists.words:
        return capital and len(t.key) >= 4
    return len(t.key) >= 4 or capital


def _runs(tagged: list[_Tagged], text: str) -> list[list[_Tagged]]:
    """Maximal sequences of name-ish words joined only by separators (particles included)."""
    runs: list[list[_Tagged]] = []
    current: list[_Tagged] = []
    for t in tagged:
        nameish = t.cls in (Cls.KNOWN, Cls.NAMEY, Cls.INITIAL, Cls.PARTICLE)
        if nameish and current and joined(text, current[-1].word, t.word):
            current.append(t)
            continue
        if current:
            runs.append(current)
        current = [t] if nameish else []
    if current:
        runs.append(current)
    trimmed = []
    for run in runs:
        while run and run[0].cls is Cls.PARTICLE:
            run = run[1:]
        while run and run[-1].cls is Cls.PARTICLE:
            run = run[:-1]
        if run:
            trimmed.append(run)
    return trimmed


def _layout(run: list[_Tagged], text: str, lists: NameLists) -> str:
    parts = [t for t in run if t.cls is not Cls.PARTICLE]
    if len(parts) == 1:
        return "in the name lists"
    if any(t.cls is Cls.INITIAL for t in parts):
        return "initial + surname"
    a, b = parts[0], parts[-1]
    gap = text[a.word.end : parts[1].word.start]
    if "," in gap:
        return ("LASTNAME" if a.word.is_caps else "Lastname") + gap + "Firstname"

    def firstness(t: _Tagged) -> int:
        return (t.key in lists.first) - (t.key in lists.last)

    if firstness(a) == firstness(b) == 0 and _all_unknown(a, b):
        return "name-like words"
    if firstness(a) < firstness(b) or (firstness(a) == firstness(b) and gap.strip() in ("_", ",")):
        return f"Lastname{gap}Firstname"
    return f"Firstname{gap}Lastname"


def _all_unknown(*tagged: _Tagged) -> bool:
    return all(t.cls is not Cls.KNOWN for t in tagged)


def _flag(run: list[_Tagged], lists: NameLists) -> bool:
    parts = [t for t in run if t.cls is not Cls.PARTICLE]
    if len(parts) == 1:
        return _alone_is_name(parts[0], lists)
    # Two listed names side by side ("john smith") count even when each is also an English word.
    if sum(t.cls is Cls.KNOWN and len(t.key) >= 3 for t in parts) >= 2:
        return True
    if not any(t.cls is not Cls.INITIAL and t.score >= 1.0 for t in parts):
        return False
    return sum(t.score for t in parts) >= 2.0 or any(_alone_is_name(t, lists) for t in parts)


def _after_markers(tagged: list[_Tagged], text: str) -> list[Hit]:
    """`Dr_Kovacs`, `Frau Horvath`, `Patient: novak jiri`: the word after a marker is a name."""
    hits = []
    for i, t in enumerate(tagged[:-1]):
        if t.cls is not Cls.MARKER:
            continue
        end = None
        for nxt in tagged[i + 1 :]:
            prev_end = end if end is not None else t.word.end
            if nxt.cls is Cls.MARKER or _MARKER_GAP.fullmatch(text, prev_end, nxt.word.start) is None:
                break
            if nxt.key in STOP and nxt.cls is not Cls.PARTICLE:
                break
            end = nxt.word.end
        if end is not None:
            hits.append(Hit.of(text, t.word.start, end, "name", f"a personal name (after '{t.word.text}')"))
    return hits


def find_names(text: str) -> list[Hit]:
    lists = name_lists()
    words = split_words(text, keep_whole=lambda run: (k := fold(run)) in STOP or lists.is_known(k))
    tagged = [_tag(w, lists) for w in words]
    hits = _after_markers(tagged, text)
    for run in _runs(tagged, text):
        if _flag(run, lists):
            start, end = run[0].word.start, run[-1].word.end
            hits.append(Hit.of(text, start, end, "name", f"a personal name ({_layout(run, text, lists)})"))
    return hits
