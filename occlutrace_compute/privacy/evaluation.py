"""Scoring the detector on a labelled corpus (shared by the corpus test and bench/privacy_eval.py).

Corpus format: a TSV file with `#` comment lines, a header, then one row per text with columns
text, expected (phi | clean), kinds (comma list, '-' when clean), names (known | heldout | -),
set (dev | fresh).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from occlutrace_compute.privacy.detect import find_in_filename
from occlutrace_compute.privacy.finding import KINDS, Finding


@dataclass(frozen=True)
class CorpusRow:
    text: str
    phi: bool
    kinds: frozenset[str]
    names: str
    set: str


@dataclass(frozen=True)
class Outcome:
    row: CorpusRow
    findings: tuple[Finding, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.findings)

    @property
    def correct(self) -> bool:
        return self.flagged == self.row.phi


@dataclass(frozen=True)
class Scores:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load_corpus(path: Path) -> list[CorpusRow]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    rows = []
    for rec in csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE):
        kinds = frozenset() if rec["kinds"] == "-" else frozenset(rec["kinds"].split(","))
        if rec["expected"] not in ("phi", "clean") or not kinds <= set(KINDS):
            raise ValueError(f"{path}: bad row {rec!r}")
        rows.append(CorpusRow(rec["text"], rec["expected"] == "phi", kinds, rec["names"], rec["set"]))
    return rows


def run(rows: Iterable[CorpusRow], detect: Callable[[str], list[Finding]] = find_in_filename) -> list[Outcome]:
    return [Outcome(row, tuple(detect(row.text))) for row in rows]


def score(outcomes: Iterable[Outcome]) -> Scores:
    tp = fp = fn = tn = 0
    for o in outcomes:
        if o.row.phi:
            tp, fn = (tp + 1, fn) if o.flagged else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if o.flagged else (fp, tn + 1)
    return Scores(tp, fp, fn, tn)


def kind_recall(outcomes: Iterable[Outcome]) -> float:
    """Share of expected (row, kind) pairs for which a finding of that kind was reported."""
    expected = found = 0
    for o in outcomes:
        kinds = {f.kind for f in o.findings}
        expected += len(o.row.kinds)
        found += len(o.row.kinds & kinds)
    return found / expected if expected else 1.0
