"""Replaying speech-to-text: an ``STTSource`` that plays a recording's STT events back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from voiceagent.replay.cassette import (
    Cassette,
    STTRecord,
)
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, Transcript

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class ReplaySTTSource:
    """An STTSource that yields the recorded transcripts and speech events, at recorded pace / ``speed``
    (0: at once). A cassette without ``stt`` records yields each turn's user text as a final transcript."""

    def __init__(self, cassette: Cassette, *, speed: float = 0.0) -> None:
        self.cassette = cassette
        self.speed = speed
        self.audio_bytes = 0
        self.closed = False
        records = cassette.transcripts
        self.records: list[STTRecord] = records or [
            STTRecord("transcript", t.at, t.user_text, True) for t in cassette.turns
        ]

    async def send_audio(self, pcm: bytes) -> None:
        self.audio_bytes += len(pcm)  # the caller's audio is not needed: the words are recorded

    async def events(self) -> AsyncIterator[STTEvent]:
        previous = self.records[0].at if self.records else 0.0
        for record in self.records:
            if self.closed:
                return
            if self.speed and record.at > previous:
                await anyio.sleep((record.at - previous) / self.speed)
            previous = record.at
            if record.kind == "transcript":
                yield Transcript(record.text, record.is_final)
            elif record.kind == "speech_started":
                yield SpeechStarted(record.at)
            else:
                yield SpeechEnded(record.at)

    async def aclose(self) -> None:
        self.closed = True


# ---- speech ----------------------------------------------------------------------------------------
