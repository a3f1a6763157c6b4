"""What the detectors report."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("name", "date", "mrn", "ssn", "phone", "email", "address")


@dataclass(frozen=True)
class Finding:
    """One part of a text that looks like a patient identifier.

    kind: one of KINDS; text: the offending part, verbatim; message: names the part and what it
    looks like, e.g. "'Smith_John' looks like a personal name (Lastname_Firstname)".
    """

    kind: str
    text: str
    message: str


@dataclass(frozen=True)
class Hit:
    """A finding with its place in the text, so overlapping detectors can be reconciled."""

    start: int
    end: int
    finding: Finding

    @staticmethod
    def of(text: str, start: int, end: int, kind: str, looks_like: str) -> Hit:
        part = text[start:end]
        return Hit(start, end, Finding(kind, part, f"'{part}' looks like {looks_like}"))

    def inside(self, start: int, end: int) -> bool:
        return start <= self.start and self.end <= end

    def overlaps(self, other: Hit) -> bool:
        return self.start < other.end and other.start < self.end
