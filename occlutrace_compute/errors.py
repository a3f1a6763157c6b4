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
