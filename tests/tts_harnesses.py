"""``TtsHarness``es for the shipped TTS engines, each on its own fake (voiceagent.testing.conformance)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import openai

from voiceagent.adapters.cartesia import CartesiaEngine
from voiceagent.adapters.cartesia_fake import FakeCartesiaServer
from voiceagent.adapters.elevenlabs import ElevenLabsEngine
from voiceagent.adapters.elevenlabs_fake import FakeElevenLabsServer
from voiceagent.adapters.espeak import EspeakEngine
from voiceagent.adapters.lightning import LightningEngine, LightningHTTPEngine
from voiceagent.adapters.lightning.fake import FakeLightningServer
from voiceagent.adapters.openai_speech import OpenAISpeechEngine
from voiceagent.adapters.openai_speech_fake import FakeSpeechServer
from voiceagent.speaker import TTSEngine
from voiceagent.testing.conformance import TtsCase, TtsStage


@dataclass
class _Stage:
    make: Any

    def engine(self) -> TTSEngine:
        engine: TTSEngine = self.make()
        return engine


class ElevenLabsHarness:
    sample_rates: Sequence[int] = (16000, 24000, 8000)

    @asynccontextmanager
    async def stage(self, case: TtsCase) -> AsyncIterator[TtsStage]:
        async with FakeElevenLabsServer() as server:
            if case.fault == "drop":
                server.drop_next(after_chunks=2)
            key = "wrong-key" if case.fault == "reject" else server.api_key
            yield _Stage(
                lambda: ElevenLabsEngine(
                    api_key=key, voice_id="voice", base_url=server.base_url, sample_rate=case.sample_rate
                )
            )


class LightningHarness:
    """Lightning's WebSocket engine, or with ``http=True`` its HTTP engine, on the one fake."""

    def __init__(self, *, http: bool = False) -> None:
        self.http = http
        self.sample_rates: Sequence[int] = (16000, 24000, 8000) if http else (16000, 24000, 8000, 44100)

    @asynccontextmanager
    async def stage(self, case: TtsCase) -> AsyncIterator[TtsStage]:
        key = f"conformance-{uuid.uuid4()}"  # the account limiter is per key: one per stage
        async with FakeLightningServer(api_key=key, chunk_seconds=0.1) as server:
            if case.fault == "drop":
                server.drop_next(after_chunks=2)
            used = "wrong-key" if case.fault == "reject" else key
            options: dict[str, Any] = {"api_key": used, "voice_id": "magnus", "check_voice": False}

            def make() -> TTSEngine:
                if self.http:
                    return LightningHTTPEngine(
                        base_url=server.http_base, sample_rate=case.sample_rate, **options
                    )
                return LightningEngine(
                    url=server.ws_url, sample_rate=case.sample_rate, keepalive_interval=None, **options
                )

            yield _Stage(make)


class OpenAISpeechHarness:
    sample_rates: Sequence[int] = (24000,)  # raw PCM from /audio/speech is 24 kHz

    @asynccontextmanager
    async def stage(self, case: TtsCase) -> AsyncIterator[TtsStage]:
        async with FakeSpeechServer(chunk_seconds=0.1) as server:
            if case.fault == "drop":
                server.drop_next(after_chunks=2)
            key = "wrong-key" if case.fault == "reject" else server.api_key

            def make() -> OpenAISpeechEngine:
                client = openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0)
                return OpenAISpeechEngine(client=client, model="kokoro")

            yield _Stage(make)


class CartesiaHarness:
    sample_rates: Sequence[int] = (24000, 16000, 8000, 44100)

    @asynccontextmanager
    async def stage(self, case: TtsCase) -> AsyncIterator[TtsStage]:
        async with FakeCartesiaServer(chunk_seconds=0.1) as server:
            if case.fault == "drop":
                server.drop_next(after_chunks=2)
            key = "wrong-key" if case.fault == "reject" else server.api_key
            yield _Stage(
                lambda: CartesiaEngine(
                    api_key=key, voice_id="v1", url=server.ws_url, sample_rate=case.sample_rate
                )
            )


class EspeakHarness:
    """A local process: no connection to drop and no credentials, so only the checks without faults apply."""

    sample_rates: Sequence[int] = (22050,)  # espeak-ng's own rate; the Speaker resamples for the output

    @asynccontextmanager
    async def stage(self, case: TtsCase) -> AsyncIterator[TtsStage]:
        yield _Stage(EspeakEngine)
