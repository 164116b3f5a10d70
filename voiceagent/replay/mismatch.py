"""The one error a replay reports."""

from __future__ import annotations


class ReplayMismatch(AssertionError):
    """The agent did something the recording did not: ``diff`` says what."""

    def __init__(self, message: str, *, exchange: int | None = None, diff: str = "") -> None:
        super().__init__(message)
        self.exchange = exchange
        self.diff = diff
