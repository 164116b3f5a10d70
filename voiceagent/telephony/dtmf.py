"""DTMF in: the keys a caller presses, collected into one entry ("1 2 3 #") the bot acts on.

``DtmfCollector`` is pure (time is passed in): digits gather until the terminator (default ``#``,
not part of the entry), ``max_digits``, or ``inter_digit_timeout`` seconds without a key. A transport
that carries key presses says so with ``ReceivesDtmf`` (``dtmf()`` yields one digit per press).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

DTMF_DIGITS = frozenset("0123456789*#ABCD")


@runtime_checkable
class ReceivesDtmf(Protocol):
    def dtmf(self) -> AsyncIterator[str]:
        """The digits the caller presses, one per press, until the call ends."""
        ...


class DtmfCollector:
    def __init__(
        self, *, terminator: str | None = "#", inter_digit_timeout: float | None = 2.0, max_digits: int = 16
    ) -> None:
        if terminator is not None and terminator not in DTMF_DIGITS:
            raise ValueError(f"terminator must be one DTMF key (0-9 * # A-D) or None, got {terminator!r}")
        if inter_digit_timeout is not None and not inter_digit_timeout > 0:
            raise ValueError("inter_digit_timeout must be a positive number of seconds or None")
        if terminator is None and inter_digit_timeout is None:
            raise ValueError("an entry needs an end: a terminator, an inter_digit_timeout, or both")
        if max_digits < 1:
            raise ValueError(f"max_digits must be at least 1, got {max_digits}")
        self.terminator = terminator
        self.inter_digit_timeout = inter_digit_timeout
        self.max_digits = max_digits
        self._digits: list[str] = []
        self._last: float | None = None
        self.ignored = 0  # presses that were not DTMF keys

    @property
    def pending(self) -> str:
        return "".join(self._digits)

    @property
    def deadline(self) -> float | None:
        """When the entry so far ends by the inter-digit timeout (None: nothing pending, or no timeout)."""
        if not self._digits or self._last is None or self.inter_digit_timeout is None:
            return None
        return self._last + self.inter_digit_timeout

    def add(self, digit: str, now: float) -> str | None:
        """Take one press; returns the finished entry, if this press ends one. The terminator alone
        (nothing before it) is an entry of its own ("press # to repeat")."""
        if digit not in DTMF_DIGITS:
            self.ignored += 1
            return None
        if digit == self.terminator:
            return self._take() or digit
        self._digits.append(digit)
        self._last = now
        return self._take() if len(self._digits) >= self.max_digits else None

    def expire(self, now: float) -> str | None:
        """The entry, if the inter-digit timeout has passed since its last key."""
        deadline = self.deadline
        return self._take() if deadline is not None and now >= deadline else None

    def _take(self) -> str:
        entry, self._digits, self._last = "".join(self._digits), [], None
        return entry
