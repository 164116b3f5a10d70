"""RecordingSink: the test and benchmark sink, a ``PacedEngine`` in a ``Speaker`` (the one playback path
every vendor's engine takes), with every call recorded.

The engine "speaks" silence at a simulated rate: ``seconds_per_char`` of synthesis time per character
(0: at once), and 1/``CHARS_PER_SECOND`` of audio per character, the length the Speaker's heard-ledger
assumes for a text whose synthesis stopped early; so a text cut after k characters of audio is credited
k characters (back to a word boundary, as for any engine), and barge-in truncation is tested for real.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from voiceagent.audio_output import CollectingOutput
from voiceagent.playback import CHARS_PER_SECOND
from voiceagent.speaker import Speaker
from voiceagent.tts import AudioOutput

__all__ = ["RATE", "FlakySink", "PacedEngine", "RecordingSink", "SinkCall", "StreamingPacedEngine"]

SAMPLES_PER_CHAR = 100
RATE = round(CHARS_PER_SECOND * SAMPLES_PER_CHAR)  # 1400 Hz: a character is 100 samples of silence


@dataclass(frozen=True, slots=True)
class SinkCall:
    kind: str  # "speak" (delivered) | "speak_start" | "speak_failed" | "flush" | "cancel"
    text: str
    at: float  # time.perf_counter()


@dataclass(frozen=True, slots=True)
class _Failure:
    chars: int  # characters of audio returned before the connection drops
    gate: anyio.Event | None


class PacedEngine:
    """A ``TTSEngine`` of silence: each word's audio after ``seconds_per_char`` per character of it
    (all of it at once when 0). ``fail_next(chars)`` makes the next text drop after ``chars``
    characters of audio, raising ``ConnectionResetError`` (a TTS socket closed mid-utterance)."""

    sample_rate = RATE

    def __init__(self, seconds_per_char: float = 0.0) -> None:
        self.seconds_per_char = seconds_per_char
        self.texts: list[str] = []
        self.interrupts = 0
        self._failure: _Failure | None = None

    def fail_next(self, chars: int = 0, gate: anyio.Event | None = None) -> None:
        self._failure = _Failure(chars, gate)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        failure, self._failure = self._failure, None
        if failure is not None:
            if failure.gate is not None:
                await failure.gate.wait()
            if failure.chars:
                yield _silence(failure.chars)
            raise ConnectionResetError("TTS socket closed mid-utterance")
        if not self.seconds_per_char:
            return  # instant: no audio, so the Speaker credits the whole text at once
        for word in _words(text):
            await anyio.sleep(len(word) * self.seconds_per_char)
            yield _silence(len(word))

    async def interrupt(self) -> None:
        self.interrupts += 1


class StreamingPacedEngine(PacedEngine):
    """A ``PacedEngine`` that takes text as it is written (``TextStreamingEngine``): each piece is
    spoken, at the same pace, as soon as it arrives, as a streaming vendor (Lightning's ``continue``) does."""

    streams_text = True

    async def synthesize_stream(self, texts: AsyncIterator[str]) -> AsyncIterator[bytes]:
        spoken = ""
        async for piece in texts:
            spoken += piece
            if self.seconds_per_char and piece:
                await anyio.sleep(len(piece) * self.seconds_per_char)
                yield _silence(len(piece))
        self.texts.append(spoken)


def _silence(chars: int) -> bytes:
    # One sample more than the characters' length, so float sums never credit one character less.
    return bytes(2 * (SAMPLES_PER_CHAR * chars + 1))


def _words(text: str) -> list[str]:
    """``text`` cut after each space: every piece a word and the spaces after it."""
    pieces: list[str] = []
    start = 0
    for i in range(1, len(text)):
        if text[i - 1] == " " and text[i] != " ":
            pieces.append(text[start:i])
            start = i
    pieces.append(text[start:])
    return pieces


class RecordingSink(Speaker):
    """A ``PacedEngine`` in a ``Speaker`` that records every call with its time. ``seconds_per_char`` = 0
    delivers instantly; 0.06 is roughly natural speech (~15 chars/s). ``first_text`` is set when the
    first text arrives; ``output`` (default: an in-memory collector where written audio counts as
    played) is where the audio goes."""

    def __init__(self, seconds_per_char: float = 0.0, *, output: AudioOutput | None = None) -> None:
        super().__init__(PacedEngine(seconds_per_char), output or CollectingOutput(RATE))
        self.seconds_per_char = seconds_per_char
        self.calls: list[SinkCall] = []
        self.first_text = anyio.Event()

    async def speak(self, text: str) -> None:
        self.calls.append(SinkCall("speak_start", text, time.perf_counter()))
        self.first_text.set()
        await super().speak(text)
        self.calls.append(SinkCall("speak", text, time.perf_counter()))

    async def flush(self) -> None:
        self.calls.append(SinkCall("flush", "", time.perf_counter()))
        await super().flush()

    async def cancel(self) -> None:
        await super().cancel()
        self.calls.append(SinkCall("cancel", "", time.perf_counter()))

    @property
    def spoken(self) -> list[str]:
        return [c.text for c in self.calls if c.kind == "speak"]

    @property
    def text(self) -> str:
        return "".join(self.spoken)


class FlakySink(RecordingSink):
    """A RecordingSink whose TTS connection drops: speak call number ``fail_at`` (1-based) plays
    ``played_before_failure`` characters of its text, then raises ``ConnectionResetError``. The next
    ``failures - 1`` speak calls fail at once too; after that it works again, as after a reconnect
    (``failures=-1``: it never recovers). Failed calls are recorded with kind ``"speak_failed"``.
    ``gate``: the first failing call waits for it before failing (order the failure against the test)."""

    def __init__(
        self,
        seconds_per_char: float = 0.0,
        *,
        fail_at: int = 1,
        failures: int = 1,
        played_before_failure: int = 0,
        gate: anyio.Event | None = None,
    ) -> None:
        super().__init__(seconds_per_char)
        self.fail_at = fail_at
        self.failures = failures
        self.played_before_failure = played_before_failure
        self.gate = gate
        self._speak_calls = 0
        self._failed = 0

    async def speak(self, text: str) -> None:
        self._speak_calls += 1
        failing = self._speak_calls >= self.fail_at and (self.failures < 0 or self._failed < self.failures)
        if not failing:
            await super().speak(text)
            return
        first = self._failed == 0
        self._failed += 1
        assert isinstance(self.engine, PacedEngine)
        chars = min(len(text), self.played_before_failure) if first else 0
        self.engine.fail_next(chars, self.gate if first else None)
        try:
            if not text.strip():  # the Speaker sends no engine a text with nothing to say
                raise ConnectionResetError("TTS socket closed mid-utterance")
            await Speaker.speak(self, text)
        except ConnectionResetError:
            self.calls.append(SinkCall("speak_failed", text, time.perf_counter()))
            raise
