"""Split labels into words the way people glue names into file names.

`Smith_John`, `smith-john`, `Smith.John`, `SmithJohn`, `SMITHJohn` and `Smith, John` all give the
words Smith + John with only separators between them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
# What may stand between two parts of one name: `Smith_John`, `Smith, John`, `J. Smith`.
_NAME_GAP = re.compile(r"[\s_.,\-]{0,3}")


@dataclass(frozen=True)
class Word:
    text: str
    start: int
    end: int

    @property
    def is_title(self) -> bool:
        """Capitalised: 'Smith', 'García', "O'Brien" (not 'SMITH', not 'smith')."""
        return self.text[0].isupper() and not self.text.isupper()

    @property
    def is_caps(self) -> bool:
        return self.text.isupper() and len(self.text) > 1

    @property
    def is_initial(self) -> bool:
        return len(self.text) == 1 and self.text.isupper()

    @property
    def non_ascii(self) -> bool:
        return not self.text.isascii()


def _camel_cuts(run: str) -> list[int]:
    """Split points lower->Upper (smithJohn) and UPPER->Upperlower (SMITHJohn)."""
    return [
        i
        for i in range(1, len(run))
        if (run[i - 1].islower() and run[i].isupper())
        or (run[i - 1].isupper() and run[i].isupper() and i + 1 < len(run) and run[i + 1].islower())
    ]


def split_words(text: str, keep_whole: Callable[[str], bool]) -> list[Word]:
    """Letter runs of `text`, camelCase split unless `keep_whole(run)` (McDonald, iTero)."""
    out: list[Word] = []
    for m in _WORD.finditer(text):
        run, start = m.group(), m.start()
        if keep_whole(run):
            out.append(Word(run, start, m.end()))
            continue
        cuts = [0, *_camel_cuts(run), len(run)]
        out.extend(Word(run[a:b], start + a, start + b) for a, b in zip(cuts, cuts[1:]) if b > a)
    return out


def joined(text: str, left: Word, right: Word) -> bool:
    """Whether only name separators (at most three) stand between two words."""
    return _NAME_GAP.fullmatch(text, left.end, right.start) is not None
