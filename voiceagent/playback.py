"""What the listener heard: a ledger of spoken text spans against an ``AudioOutput``'s playhead.

Sinks call ``begin(text)`` before a text's audio, ``add_audio(seconds)`` per delivered chunk,
``finish()`` when synthesis of the text completed, and ``settle()`` after ``output.clear()``
(barge-in) or ``output.wait_played()``: settling freezes each span's heard seconds, so later audio on
the same output timeline cannot be credited to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from voiceagent.tts import AudioOutput, SpokenSpan

__all__ = ["PlaybackLedger", "heard_chars"]

# Float sums of chunk durations drift by a few ulps; a span this close to its end counts as heard.
_EPSILON = 1e-6
# When synthesis stopped early the text's full audio length is unknown; estimate it from a typical
# speaking rate (~150 words per minute) so a cut-off sentence is credited in proportion, never whole.
CHARS_PER_SECOND = 14.0


def heard_chars(text: str, fraction: float) -> int:
    """Characters of ``text`` heard when ``fraction`` of its audio played, cut back to a word boundary
    (a half-heard word is not kept in the conversation)."""
    if fraction >= 1:
        return len(text)
    if fraction <= 0:
        return 0
    n = int(len(text) * fraction)
    return max(text.rfind(" ", 0, n + 1), 0)


@dataclass(slots=True)
class _OpenSpan:
    text: str
    start: float
    audio_seconds: float = 0.0
    complete: bool = False


class PlaybackLedger:
    def __init__(self, output: AudioOutput) -> None:
        self._output = output
        self._open: list[_OpenSpan] = []
        self._settled: list[tuple[str, float, float, bool]] = []  # SpokenSpan's fields
        self._settled_chars = 0

    def begin(self, text: str, *, complete: bool = False) -> None:
        self._open.append(_OpenSpan(text=text, start=self._output.written_seconds, complete=complete))

    def extend(self, text: str) -> None:
        """The latest text goes on (a text streamed to the engine in pieces)."""
        if not self._open:
            raise RuntimeError("extend() before begin()")
        self._open[-1].text += text

    def finish(self) -> None:
        """Synthesis of the latest text completed: all its audio has been added."""
        if self._open:
            self._open[-1].complete = True

    def add_audio(self, seconds: float) -> None:
        if not self._open:
            raise RuntimeError("add_audio() before begin()")
        self._open[-1].audio_seconds += seconds

    def discard_last(self) -> None:
        """Forget the latest span: its text produced no audio (synthesis failed or was cancelled)."""
        if self._open:
            self._open.pop()

    @staticmethod
    def _played(span: _OpenSpan, playhead: float) -> float:
        played = min(max(playhead - span.start, 0.0), span.audio_seconds)
        if span.audio_seconds - played <= _EPSILON and playhead + _EPSILON >= span.start:
            return span.audio_seconds
        return played

    @staticmethod
    def _chars(span: _OpenSpan, played: float, playhead: float) -> int:
        """Characters of ``span`` heard, ``played`` being ``_played(span, playhead)``."""
        if not span.complete:
            expected = max(span.audio_seconds, len(span.text) / CHARS_PER_SECOND)
            return heard_chars(span.text, min(played / expected, 0.999)) if expected > 0 else 0
        if span.audio_seconds <= 0:
            # Text with no audio (whitespace, punctuation) counts once the playhead has reached it.
            return len(span.text) if playhead + _EPSILON >= span.start else 0
        return heard_chars(span.text, played / span.audio_seconds)

    def settle(self) -> None:
        """Freeze every open span at the current playhead (call after clear() or wait_played())."""
        playhead = self._output.played_seconds
        played_of, chars = self._played, self._chars
        settled = self._settled
        total = self._settled_chars
        for span in self._open:
            if span.complete and span.audio_seconds == 0.0 and playhead + _EPSILON >= span.start:
                # What _played and _chars give a text with no audio the playhead has reached, inline:
                # an instant engine's every text takes this path.
                settled.append((span.text, 0.0, 0.0, True))
                total += len(span.text)
                continue
            played = played_of(span, playhead)
            # Kept as a tuple: the SpokenSpan is built when spoken_spans is read (rarely; this runs per text).
            settled.append((span.text, span.audio_seconds, played, span.complete))
            total += chars(span, played, playhead)
        self._settled_chars = total
        self._open.clear()

    @property
    def spoken_spans(self) -> list[SpokenSpan]:
        playhead = self._output.played_seconds
        spans = [SpokenSpan(*fields) for fields in self._settled]
        for s in self._open:
            spans.append(SpokenSpan(s.text, s.audio_seconds, self._played(s, playhead), s.complete))
        return spans

    @property
    def played_chars(self) -> int:
        playhead = self._output.played_seconds
        played = self._played
        return self._settled_chars + sum(self._chars(s, played(s, playhead), playhead) for s in self._open)
