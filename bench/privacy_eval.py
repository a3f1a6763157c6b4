"""Precision and recall of the privacy detector on the labelled corpus, and what each rule buys.

    python bench/privacy_eval.py                    # tests/data/privacy_corpus.tsv
    python bench/privacy_eval.py --corpus my.tsv    # same TSV format (see privacy/evaluation.py)

Prints overall precision/recall, recall on names that are in the shipped lists ('known') and on
names that are in none of them ('heldout', caught by patterns only), the 'fresh' rows that the
rules were never tuned on, every misclassified item, timing, and an ablation table: the same
corpus with one rule switched off, to show the precision/recall tradeoff each rule makes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from occlutrace_compute.privacy import people
from occlutrace_compute.privacy.evaluation import (
    CorpusRow,
    Outcome,
    kind_recall,
    load_corpus,
    run,
    score,
)
from occlutrace_compute.privacy.names import name_lists

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "privacy_corpus.tsv"


def _line(label: str, outcomes: list[Outcome]) -> str:
    s = score(outcomes)
    return (
        f"{label:<34} n={len(outcomes):>4}  precision={s.precision:.3f}  recall={s.recall:.3f}"
        f"  (tp={s.tp} fp={s.fp} fn={s.fn} tn={s.tn})"
    )


def _patched_lists(**changes: frozenset[str]) -> Callable[[], object]:
    lists = dataclasses.replace(name_lists(), **changes)
    return lambda: lists


@contextmanager
def _ablation(name: str) -> Iterator[None]:
    """One rule of people.py switched off (bench only: the library has no such switches)."""
    original_alone = people._alone_is_name
    original_tag = people._tag
    patches = {
        "baseline": {},
        "no English-word filter for unlisted words": {"name_lists": _patched_lists(english=frozenset())},
        "ambiguous names (Brown, Long) never alone": {
            "_alone_is_name": lambda t, lists: t.key not in lists.words and original_alone(t, lists)
        },
        "lowercase listed names never alone": {
            "_alone_is_name": lambda t, lists: (t.word.is_title or t.word.is_caps) and original_alone(t, lists)
        },
        "no unlisted-name patterns": {
            "_tag": lambda w, lists: (
                lambda t: dataclasses.replace(t, cls=people.Cls.OTHER, score=0.0) if t.cls is people.Cls.NAMEY else t
            )(original_tag(w, lists))
        },
        "no ambiguity: every listed name strong": {"name_lists": _patched_lists(words=frozenset())},
    }[name]
    with _patches(patches):
        yield


@contextmanager
def _patches(patches: dict[str, object]) -> Iterator[None]:
    managers = [mock.patch.object(people, attr, value) for attr, value in patches.items()]
    for m in managers:
        m.start()
    try:
        yield
    finally:
        for m in reversed(managers):
            m.stop()


ABLATIONS = (
    "baseline",
    "no English-word filter for unlisted words",
    "ambiguous names (Brown, Long) never alone",
    "lowercase listed names never alone",
    "no unlisted-name patterns",
    "no ambiguity: every listed name strong",
)


def _report(rows: list[CorpusRow]) -> None:
    name_lists()  # load once, outside the timing
    t0 = time.perf_counter()
    outcomes = run(rows)
    elapsed = time.perf_counter() - t0
    phi = sum(r.phi for r in rows)
    print(f"corpus: {len(rows)} texts ({phi} with identifiers, {len(rows) - phi} clean)")
    print(_line("overall", outcomes))
    print(_line("names in the lists (known)", [o for o in outcomes if o.row.names == "known"]))
    print(_line("names in no list (heldout)", [o for o in outcomes if o.row.names == "heldout"]))
    print(_line("no name (other kinds / clean)", [o for o in outcomes if o.row.names == "-"]))
    print(_line("dev rows (rules tuned on them)", [o for o in outcomes if o.row.set == "dev"]))
    print(_line("fresh rows (never tuned on)", [o for o in outcomes if o.row.set == "fresh"]))
    print(f"kind recall (expected kind reported): {kind_recall(outcomes):.3f}")
    print(f"time: {elapsed * 1e3:.1f} ms for the corpus, {elapsed / len(rows) * 1e6:.0f} us per text")
    print("\nmisclassified:")
    for o in outcomes:
        if not o.correct:
            what = "missed" if o.row.phi else "false alarm"
            detail = "; ".join(f.message for f in o.findings) or f"expected {','.join(sorted(o.row.kinds))}"
            print(f"  {what:<11} [{o.row.names:>7}] {o.row.text!r}: {detail}")
    print("\nablations (one rule off):")
    for name in ABLATIONS:
        with _ablation(name):
            ablated = run(rows)
        heldout = score(o for o in ablated if o.row.names == "heldout")
        s = score(ablated)
        print(f"  {name:<44} precision={s.precision:.3f} recall={s.recall:.3f} heldout recall={heldout.recall:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    _report(load_corpus(args.corpus))


if __name__ == "__main__":
    main()
