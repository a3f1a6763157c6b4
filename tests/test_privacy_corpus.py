"""Precision and recall on the labelled corpus (bench/privacy_eval.py prints the details)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from occlutrace_compute.privacy.evaluation import CorpusRow, Outcome, kind_recall, load_corpus, run, score
from occlutrace_compute.privacy.lexicon import STOP, fold_variants
from occlutrace_compute.privacy.names import name_lists

CORPUS = Path(__file__).parent / "data" / "privacy_corpus.tsv"


@pytest.fixture(scope="module")
def rows() -> list[CorpusRow]:
    return load_corpus(CORPUS)


@pytest.fixture(scope="module")
def outcomes(rows: list[CorpusRow]) -> list[Outcome]:
    return run(rows)


def test_corpus_is_large_and_balanced(rows: list[CorpusRow]) -> None:
    phi = [r for r in rows if r.phi]
    assert len(rows) >= 300
    assert len(phi) >= 150 and len(rows) - len(phi) >= 150
    named = [r for r in phi if r.names in ("known", "heldout")]
    assert sum(r.names == "heldout" for r in named) >= 0.2 * len(named)
    assert {k for r in phi for k in r.kinds} == {"name", "date", "mrn", "ssn", "phone", "email", "address"}


def test_heldout_names_are_in_no_list(rows: list[CorpusRow]) -> None:
    """Held-out rows measure the patterns alone: none of their words may be a list hit."""
    lists = name_lists()
    for row in rows:
        if row.names != "heldout":
            continue
        for word in re.findall(r"[^\W\d_]+", row.text):
            keys = fold_variants(word)
            listed = any(k in lists.first or k in lists.last for k in keys) and not keys & STOP
            assert not listed, f"{row.text!r}: {word!r} is in the name lists"


def test_precision_and_recall(outcomes: list[Outcome]) -> None:
    s = score(outcomes)
    wrong = [o.row.text for o in outcomes if not o.correct]
    assert s.precision >= 0.95, wrong
    assert s.recall >= 0.95, wrong


def test_recall_on_names_without_list_hits(outcomes: list[Outcome]) -> None:
    heldout = score(o for o in outcomes if o.row.names == "heldout")
    assert heldout.tp + heldout.fn >= 60
    assert heldout.recall >= 0.85


def test_fresh_rows(outcomes: list[Outcome]) -> None:
    """Rows written after the rules were tuned."""
    s = score(o for o in outcomes if o.row.set == "fresh")
    assert s.tp + s.fn >= 25 and s.tn + s.fp >= 25
    assert s.precision >= 0.95 and s.recall >= 0.95


def test_the_expected_kinds_are_reported(outcomes: list[Outcome]) -> None:
    assert kind_recall(outcomes) >= 0.95
