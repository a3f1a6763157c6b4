"""Name lists shipped with the package, loaded once.

The lists are stored as folded keys with every spelling variant (Müller -> muller, mueller), so a
lookup is one set membership test whatever the label's spelling or case.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from occlutrace_compute.privacy.lexicon import PARTICLES, STOP, fold, fold_variants


@dataclass(frozen=True)
class NameLists:
    first: frozenset[str]
    last: frozenset[str]
    # Names that are also ordinary English words ("brown", "long"): weak evidence alone.
    words: frozenset[str]
    # Ordinary English words that are in no name list: never taken for an unlisted name, so that
    # "Emergency_Repair" is not read as Firstname_Lastname.
    english: frozenset[str]

    def is_first(self, key: str) -> bool:
        return key in self.first

    def is_known(self, key: str) -> bool:
        return key in self.first or key in self.last


def _read_lines(name: str) -> list[str]:
    data = resources.files("occlutrace_compute.privacy").joinpath("data").joinpath(name).read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    lines = (line.strip() for line in data.decode("utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _name_keys(name: str) -> frozenset[str]:
    keys: set[str] = set()
    for entry in _read_lines(name):
        keys |= fold_variants(entry)
    return frozenset(k for k in keys if len(k) >= 2 and k not in STOP and k not in PARTICLES)


@lru_cache(maxsize=1)
def name_lists() -> NameLists:
    """The shipped lists (~85,000 keys in all; a fraction of a second the first time)."""
    return NameLists(
        first=_name_keys("first_names.txt.gz"),
        last=_name_keys("last_names.txt.gz"),
        words=frozenset(fold(w) for w in _read_lines("word_names.txt")),
        english=frozenset(fold(w) for w in _read_lines("english_words.txt.gz")),
    )
