"""RecordingSink: a real TTSSink for tests and benchmarks that speaks at a simulated rate.

It records every call with its time, can gate ``speak`` on events, and models playback: text counts
as heard in proportion to elapsed speaking time, so barge-in truncation can be tested for real.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio


@dataclass(frozen=True, slots=True)
class SinkCall:
    kind: str  # "speak" (delivered) | "speak_start" | "flush" | "cancel"
    text: str
    at: float  # time.perf_counter()


@dataclass
class RecordingSink:
    """``seconds_per_char`` = 0 delivers instantly; 0.06 is roughly natural speech (~15 chars/s)."""

    seconds_per_char: float = 0.0
    calls: list[SinkCall] = field(default_factory=list)
    first_text: anyio.Event = field(default_factory=anyio.Event)
    _played: int = 0
    _speaking: str = ""
    _speaking_since: float = 0.0

    async def speak(self, text: str) -> None:
        self.calls.append(SinkCall("speak_start", text, time.perf_counter()))
        self.first_text.set()
        self._speaking, self._speaking_since = text, time.perf_counter()
        if self.seconds_per_char:
            await anyio.sleep(len(text) * self.seconds_per_char)
        self._played += len(text)
        self._speaking = ""
        self.calls.append(SinkCall("speak", text, time.perf_counter()))

    async def flush(self) -> None:
        self.calls.append(SinkCall("flush", "", time.perf_counter()))

    async def cancel(self) -> None:
        if self._speaking and self.seconds_per_char:
            elapsed = time.perf_counter() - self._speaking_since
            self._played += min(len(self._speaking), int(elapsed / self.seconds_per_char))
        self._speaking = ""
        self.calls.append(SinkCall("cancel", "", time.perf_counter()))

    @property
    def played_chars(self) -> int:
        return self._played

    @property
    def spoken(self) -> list[str]:
        return [c.text for c in self.calls if c.kind == "speak"]

    @property
    def text(self) -> str:
        return "".join(self.spoken)


@dataclass
class FlakySink(RecordingSink):
    """A RecordingSink whose TTS connection drops: speak call number ``fail_at`` (1-based) plays
    ``played_before_failure`` characters of its text, then raises ``ConnectionResetError``. The next
    ``failures - 1`` speak calls fail at once too; after that it works again, as after a reconnect
    (``failures=-1``: it never recovers). Failed calls are recorded with kind ``"speak_failed"``.
    ``gate``: the first failing call waits for it before failing (order the failure against the test)."""

    fail_at: int = 1
    failures: int = 1
    played_before_failure: int = 0
    gate: anyio.Event | None = None
    _speak_calls: int = 0
    _failed: int = 0

    async def speak(self, text: str) -> None:
        self._speak_calls += 1
        failing = self._speak_calls >= self.fail_at and (self.failures < 0 or self._failed < self.failures)
        if not failing:
            await super().speak(text)
            return
        first = self._failed == 0
        self._failed += 1
        if first and self.gate is not None:
            await self.gate.wait()
        self.calls.append(SinkCall("speak_failed", text, time.perf_counter()))
        if first:
            self._played += min(len(text), self.played_before_failure)
        raise ConnectionResetError("TTS socket closed mid-utterance")
