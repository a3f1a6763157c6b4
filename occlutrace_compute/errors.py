"""Errors shared by every layer.

`InputRejected` is the one error for bad user input: it names the file (or label) and the
problem, so the CLI prints it as one line and the service answers 4xx / job state `rejected`.
Anything else that escapes is our fault (`failed`).
"""

from __future__ import annotations


class InputRejected(ValueError):
    """Input that will never succeed as given: a corrupt mesh, an identifier in a label, ..."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


def too_large(size: int, limit: int, setting: str, what: str = "file") -> str:
    """The problem text of an input over a byte limit: its size, by how much it is over, and the
    limit with the setting that holds it (what a person would raise), e.g. `file too large: 1001
    bytes, 1 over the limit of 1000 bytes (Limits.max_bytes)`."""
    return f"{what} too large: {size} bytes, {size - limit} over the limit of {limit} bytes ({setting})"
