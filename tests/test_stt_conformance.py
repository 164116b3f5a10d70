"""Every shipped STT source passes the conformance kit (voiceagent.testing.conformance) on its fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from tests.stt_harnesses import DeepgramHarness, PulseHarness, ScriptedStage, TranscriptionHarness
from voiceagent.errors import VoiceAgentError
from voiceagent.stt import STTEvent, STTSource, Transcript
from voiceagent.testing.conformance import (
    STT_CHECKS,
    ConformanceError,
    SttCase,
    SttHarness,
    run_stt_conformance,
)

pytestmark = pytest.mark.anyio

HARNESSES: dict[str, SttHarness] = {
    "pulse": PulseHarness(),
    "deepgram": DeepgramHarness(),
    "transcriptions": TranscriptionHarness(),
}


@pytest.mark.parametrize("check", sorted(STT_CHECKS))
@pytest.mark.parametrize("source", sorted(HARNESSES))
async def test_stt_source_passes_the_conformance_check(source: str, check: str) -> None:
    await STT_CHECKS[check](HARNESSES[source])


# ---- the kit fails a source that breaks the rules ------------------------------------------------------


class _Broken:
    """Wraps a source: ``empty`` adds an empty transcript; ``untyped`` turns its errors into RuntimeError;
    ``swallow`` hides them (a dropped connection then loses words silently)."""

    def __init__(
        self, inner: STTSource, *, empty: bool = False, untyped: bool = False, swallow: bool = False
    ) -> None:
        self.inner, self.empty, self.untyped, self.swallow = inner, empty, untyped, swallow

    async def __aenter__(self) -> _Broken:
        try:
            await self.inner.__aenter__()  # type: ignore[attr-defined]
        except VoiceAgentError as exc:
            raise RuntimeError(str(exc)) if self.untyped else exc from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)  # type: ignore[attr-defined]

    async def send_audio(self, pcm: bytes) -> None:
        try:
            await self.inner.send_audio(pcm)
        except VoiceAgentError:
            if not self.swallow:
                raise

    async def events(self) -> AsyncIterator[STTEvent]:
        try:
            async for event in self.inner.events():
                if self.empty and isinstance(event, Transcript) and event.is_final:
                    yield Transcript("", is_final=True)
                yield event
        except VoiceAgentError:
            if not self.swallow:
                raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class _BrokenHarness:
    sample_rates = (16000,)

    def __init__(self, **broken: bool) -> None:
        self.broken = broken

    @asynccontextmanager
    async def stage(self, case: SttCase) -> AsyncIterator[ScriptedStage]:
        async with DeepgramHarness().stage(case) as stage:
            make = stage.make
            stage.make = lambda key, url: _Broken(make(key, url), **self.broken)
            yield stage


async def test_the_kit_fails_a_source_that_yields_empty_transcripts() -> None:
    with pytest.raises(ConformanceError, match="empty transcript"):
        await STT_CHECKS["event_shapes"](_BrokenHarness(empty=True))


async def test_the_kit_fails_a_source_whose_errors_are_untyped() -> None:
    with pytest.raises(RuntimeError, match="refused"):
        await STT_CHECKS["refused_credentials"](_BrokenHarness(untyped=True))


async def test_the_kit_fails_a_source_that_loses_words_silently_on_a_drop() -> None:
    with pytest.raises(ConformanceError, match="recovered from"):
        await STT_CHECKS["reconnect_after_drop"](_BrokenHarness(swallow=True))


async def test_run_stt_conformance_runs_every_check() -> None:
    assert await run_stt_conformance(DeepgramHarness()) == list(STT_CHECKS)


async def test_closing_a_source_that_was_never_opened_returns() -> None:
    from voiceagent.adapters.deepgram import DeepgramSTT
    from voiceagent.adapters.transcriptions import TranscriptionSTT
    from voiceagent.vad import WebRtcVad

    with anyio.fail_after(10):
        await DeepgramSTT("dg_key").aclose()
        await TranscriptionSTT(base_url="http://127.0.0.1:9/v1", api_key="k", vad=WebRtcVad()).aclose()
