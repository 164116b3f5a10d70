"""The STT side: transcripts and speech-activity events from a speech-to-text source."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Transcript:
    """``is_final``: this segment will not be revised. A final is the end of a *segment*, not of the
    user's turn (Pulse cuts finals every few words); ``end_of_turn`` is set when the STT itself says the
    speaker is done (Pulse: ``is_last``, ``from_finalize``, ``speech_final``)."""

    text: str
    is_final: bool
    end_of_turn: bool = False


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


@runtime_checkable
class ReportsSpeech(Protocol):
    """An STT that may send ``SpeechStarted``/``SpeechEnded`` (its own VAD). When ``vad_events`` is
    False (or the STT is not one of these) the session runs a local VAD on the caller's audio, if it has
    one, else every final counts as the end of an utterance."""

    @property
    def vad_events(self) -> bool: ...


@runtime_checkable
class Finalizes(Protocol):
    """An STT that can be asked to make the words it still holds final now (Pulse's ``finalize``)."""

    async def finalize(self) -> None: ...
