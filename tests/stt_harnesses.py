"""Conformance harnesses (voiceagent.testing.conformance) for our STT sources on their fakes."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from voiceagent.adapters.deepgram import DeepgramOptions, DeepgramSTT
from voiceagent.adapters.deepgram.fake import Emit as DeepgramEmit
from voiceagent.adapters.deepgram.fake import FakeDeepgramServer
from voiceagent.adapters.deepgram.fake import Speech as DeepgramSpeech
from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.pulse.fake import Emit as PulseEmit
from voiceagent.adapters.pulse.fake import FakePulseServer
from voiceagent.adapters.pulse.fake import Speech as PulseSpeech
from voiceagent.adapters.transcriptions import TranscriptionSTT
from voiceagent.adapters.transcriptions.fake import Clip, FakeTranscriptionServer, read_wav
from voiceagent.audio import resample
from voiceagent.stt import STTSource
from voiceagent.testing.conformance import SttCase
from voiceagent.vad import WebRtcVad

SPACING = 2.5  # seconds from one utterance's start to the next: room for every end-of-speech timer
TAIL = 1.5  # silence after the last one (Deepgram's UtteranceEnd comes 1 s after the last word)


def timeline(texts: Sequence[str]) -> list[tuple[str, float, float]]:
    return [
        (text, 0.3 + i * SPACING, 0.3 + i * SPACING + 0.15 * len(text.split()))
        for i, text in enumerate(texts)
    ]


def silence_for(texts: Sequence[str], rate: int) -> bytes:
    end = timeline(texts)[-1][2] if texts else 0.3
    return b"\0\0" * int((end + TAIL) * rate)


@dataclass
class ScriptedStage:
    """A stage on a scripted fake: the audio is silence, the script says when the words are."""

    sample_rate: int
    audio: bytes
    server: Any
    key: str
    make: Any  # (key, url) -> STTSource
    drop: Any = None  # the script item that drops the first connection
    connections: list[int] = field(default_factory=list)

    def connect(self) -> AbstractAsyncContextManager[STTSource]:
        if self.connections and self.drop is not None and self.drop in self.server.script:
            self.server.script.remove(self.drop)  # only the first connection is dropped
        self.connections.append(1)
        source: AbstractAsyncContextManager[STTSource] = self.make(self.key, self.server.url)
        return source


class PulseHarness:
    sample_rates = (8000, 16000)

    @asynccontextmanager
    async def stage(self, case: SttCase) -> AsyncIterator[ScriptedStage]:
        audio = silence_for(case.texts, case.sample_rate)
        script: list[Any] = [PulseSpeech(t, a, b) for t, a, b in timeline(case.texts)]
        drop = (
            PulseEmit(len(audio) // 2, close_code=1001, close_reason="going away")
            if case.fault == "drop"
            else None
        )
        async with FakePulseServer([*script, *([drop] if drop else [])], api_key="sk_ok") as server:

            def make(key: str, url: str) -> PulseSTT:
                return PulseSTT(key, PulseOptions(language="en", sample_rate=case.sample_rate), url=url)

            key = "sk_wrong" if case.fault == "reject" else "sk_ok"
            yield ScriptedStage(case.sample_rate, audio, server, key, make, drop)


class DeepgramHarness:
    sample_rates = (8000, 16000, 48000)

    @asynccontextmanager
    async def stage(self, case: SttCase) -> AsyncIterator[ScriptedStage]:
        audio = silence_for(case.texts, case.sample_rate)
        script: list[Any] = [DeepgramSpeech(t, a, b) for t, a, b in timeline(case.texts)]
        drop = (
            DeepgramEmit(len(audio) // 2, close_code=1001, close_reason="going away")
            if case.fault == "drop"
            else None
        )
        async with FakeDeepgramServer([*script, *([drop] if drop else [])], api_key="dg_ok") as server:

            def make(key: str, url: str) -> DeepgramSTT:
                return DeepgramSTT(key, DeepgramOptions(sample_rate=case.sample_rate), url=url)

            key = "dg_wrong" if case.fault == "reject" else "dg_ok"
            yield ScriptedStage(case.sample_rate, audio, server, key, make, drop)


@functools.cache
def spoken(text: str, rate: int) -> bytes:
    """``text`` said by espeak-ng, as PCM16 mono at ``rate``."""
    wav = subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True, timeout=60).stdout
    pcm, espeak_rate = read_wav(wav)
    return resample(pcm, espeak_rate, rate)


@dataclass
class TranscriptionStage:
    sample_rate: int
    audio: bytes
    server: FakeTranscriptionServer
    key: str

    def connect(self) -> AbstractAsyncContextManager[STTSource]:
        vad = WebRtcVad(min_silence=0.5)  # espeak's pause at a comma is not the end of the utterance
        source: AbstractAsyncContextManager[STTSource] = TranscriptionSTT(
            base_url=self.server.base_url, api_key=self.key, sample_rate=self.sample_rate, vad=vad
        )
        return source


class TranscriptionHarness:
    """Real speech (espeak-ng) segmented by webrtcvad; the fake knows which clip says what."""

    sample_rates = (8000, 16000)

    @asynccontextmanager
    async def stage(self, case: SttCase) -> AsyncIterator[TranscriptionStage]:
        rate = case.sample_rate
        pause = b"\0\0" * rate  # 1 s between utterances
        clips = [Clip(text, spoken(text, rate)) for text in case.texts]
        audio = pause[:rate] + b"".join(clip.pcm + pause for clip in clips)
        drop = 1 if case.fault == "drop" else 0
        async with FakeTranscriptionServer(clips, api_key="sk_ok", drop=drop) as server:
            key = "sk_wrong" if case.fault == "reject" else "sk_ok"
            yield TranscriptionStage(rate, audio, server, key)
