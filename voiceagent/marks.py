"""The mark ledger: which sent audio the listener has heard, as proven by the far end's mark echoes.

The one place marks are counted: ``TransportOutput`` (any ``Transport``: a phone call, a browser) and
``TwilioMediaStream`` (Twilio's own echoes, which also name marks a ``clear`` flushed) both use it.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum


class MarkOutcome(Enum):
    PLAYED = "played"  # everything sent before the mark has played to the caller
    CLEARED = "cleared"  # pending when we sent clear: Twilio flushed it unplayed
    UNKNOWN = "unknown"  # an echo for a mark we never sent (or already accounted for)


@dataclass(frozen=True, slots=True)
class _Audio:
    seconds: float
    text: str


@dataclass(frozen=True, slots=True)
class _Mark:
    name: str


class MarkLedger:
    """Audio and marks in the order they were sent; an echoed mark moves everything before it to "heard".

    Playback is known only through marks, so heard audio is known at mark granularity and the count
    is conservative: audio after the last played mark counts as unheard. ``echoes_cleared``: the far
    end also echoes the marks a ``clear`` flushed (Twilio does); their echoes cannot be told apart from
    a mark that played just before the clear arrived, so every mark pending at clear time counts as not
    played. Without it (a ``Transport``'s ``played_marks()`` reports played marks only) flushed marks
    are simply forgotten.
    """

    def __init__(self, *, echoes_cleared: bool = True) -> None:
        self._entries: deque[_Audio | _Mark] = deque()
        self._echoes_cleared = echoes_cleared
        self._cleared: Counter[str] = Counter()
        self._unconfirmed = 0.0
        self.sent_seconds = 0.0
        self.heard_seconds = 0.0
        self.cleared_seconds = 0.0
        self._heard_text: list[str] = []

    @property
    def heard_text(self) -> str:
        return "".join(self._heard_text)

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(e.name for e in self._entries if isinstance(e, _Mark))

    @property
    def unconfirmed_seconds(self) -> float:
        """Audio sent but not yet proven played (queued at the far end, or playing now)."""
        return self._unconfirmed if self._entries else 0.0

    @property
    def timeline_seconds(self) -> float:
        """Audio that played or may still play: heard plus unconfirmed (what a clear keeps is heard)."""
        return self.heard_seconds + self.unconfirmed_seconds

    def audio_sent(self, seconds: float, text: str = "") -> None:
        self.sent_seconds += seconds
        self._unconfirmed += seconds
        self._entries.append(_Audio(seconds, text))

    def mark_sent(self, name: str) -> None:
        self._entries.append(_Mark(name))

    def cleared(self) -> tuple[str, ...]:
        """Everything unconfirmed is dropped; returns the marks whose echoes will now mean "flushed"."""
        flushed = self.pending_marks
        if self._echoes_cleared:
            self._cleared.update(flushed)
        self.cleared_seconds += self.unconfirmed_seconds
        self._entries.clear()
        self._unconfirmed = 0.0
        return flushed

    def mark_echoed(self, name: str) -> MarkOutcome:
        # Twilio echoes the marks a clear flushed before any mark sent after the clear, so a name
        # that is both flushed and pending again is the flushed one first.
        if self._cleared[name] > 0:
            self._cleared[name] -= 1
            return MarkOutcome.CLEARED
        if not any(isinstance(e, _Mark) and e.name == name for e in self._entries):
            return MarkOutcome.UNKNOWN
        while self._entries:
            entry = self._entries.popleft()
            if isinstance(entry, _Mark):
                if entry.name == name:
                    break
                continue  # echoes come in order: an earlier mark whose echo we missed has played too
            self.heard_seconds += entry.seconds
            self._unconfirmed -= entry.seconds
            if entry.text:
                self._heard_text.append(entry.text)
        return MarkOutcome.PLAYED
