"""The STT side: transcripts and speech-activity events from a speech-to-text source."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The user started speaking (VAD). Used for barge-in before any transcript arrives."""

    at: float = 0.0


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    at: float = 0.0


STTEvent = Transcript | SpeechStarted | SpeechEnded


@runtime_checkable
class STTSource(Protocol):
    """Consumes caller audio and yields transcripts and speech events."""

    async def send_audio(self, pcm: bytes) -> None: ...

    def events(self) -> AsyncIterator[STTEvent]: ...

    async def aclose(self) -> None: ...
