"""Which turn and round is running: set by ``Turn``, read by anything it calls (the recorder's wrappers).

A context variable of its own, so that the parts a turn calls can tag what they record without reading
the logging context (whose ``turn``/``round`` fields are for log lines, and may be ``"-"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TurnPosition:
    turn: int | None = None
    round: int | None = None


_OUTSIDE = TurnPosition()
_position: ContextVar[TurnPosition | None] = ContextVar("voiceagent_turn_position", default=None)


def current_position() -> TurnPosition:
    """The running turn and round; ``TurnPosition()`` (both None) outside a turn."""
    return _position.get() or _OUTSIDE


@contextmanager
def at_position(turn: int | None, round: int | None = None) -> Iterator[TurnPosition]:
    position = TurnPosition(turn, round)
    token = _position.set(position)
    try:
        yield position
    finally:
        _position.reset(token)
