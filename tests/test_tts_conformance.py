"""Every shipped TTS engine passes the TTS half of the conformance kit (voiceagent.testing.conformance)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.tts_harnesses import (
    CartesiaHarness,
    ElevenLabsHarness,
    EspeakHarness,
    LightningHarness,
    OpenAISpeechHarness,
)
from voiceagent.errors import TTSError
from voiceagent.speaker import TTSEngine
from voiceagent.testing.conformance import (
    TTS_CHECKS,
    ConformanceError,
    TtsCase,
    TtsHarness,
    TtsStage,
    run_tts_conformance,
)

pytestmark = pytest.mark.anyio

HARNESSES: dict[str, TtsHarness] = {
    "cartesia": CartesiaHarness(),
    "elevenlabs": ElevenLabsHarness(),
    "lightning_http": LightningHarness(http=True),
    "lightning_ws": LightningHarness(),
    "openai_speech": OpenAISpeechHarness(),
}


@pytest.mark.parametrize("check", sorted(TTS_CHECKS))
@pytest.mark.parametrize("engine", sorted(HARNESSES))
async def test_tts_engine_passes_the_conformance_check(engine: str, check: str) -> None:
    await TTS_CHECKS[check](HARNESSES[engine])


# espeak-ng runs locally: no stream to drop, no credentials to refuse.
LOCAL_CHECKS = sorted(set(TTS_CHECKS) - {"reconnect_after_drop", "errors_are_typed"})


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
@pytest.mark.parametrize("check", LOCAL_CHECKS)
async def test_the_local_espeak_engine_passes_the_checks_that_apply(check: str) -> None:
    await TTS_CHECKS[check](EspeakHarness())


# ---- the kit fails an engine that breaks the rules -----------------------------------------------------


class _Broken:
    """Wraps an engine: ``untyped`` turns its errors into RuntimeError; ``silent`` yields no audio;
    ``wrong_rate`` claims another rate; ``dead_after_interrupt`` fails every text after a barge-in."""

    def __init__(self, inner: TTSEngine, mode: str) -> None:
        self.inner, self.mode = inner, mode
        self.interrupted = False

    @property
    def sample_rate(self) -> int:
        rate = self.inner.sample_rate
        return rate * 2 if self.mode == "wrong_rate" else rate

    async def __aenter__(self) -> _Broken:
        enter = getattr(self.inner, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        leave = getattr(self.inner, "__aexit__", None)
        if leave is not None:
            await leave(*exc)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if self.mode == "dead_after_interrupt" and self.interrupted:
            raise TTSError("gone")
        try:
            async with aclosing(self.inner.synthesize(text)) as audio:  # type: ignore[type-var]
                async for data in audio:
                    if self.mode != "silent":
                        yield data
        except TTSError as exc:
            if self.mode == "untyped":
                raise RuntimeError(str(exc)) from None
            raise

    async def interrupt(self) -> None:
        self.interrupted = True
        await self.inner.interrupt()


@dataclass
class _BrokenStage:
    inner: TtsStage
    mode: str

    def engine(self) -> TTSEngine:
        return _Broken(self.inner.engine(), self.mode)


@dataclass
class _BrokenHarness:
    mode: str
    inner: ElevenLabsHarness = field(default_factory=ElevenLabsHarness)

    @property
    def sample_rates(self) -> Sequence[int]:
        return self.inner.sample_rates

    @asynccontextmanager
    async def stage(self, case: TtsCase) -> AsyncIterator[TtsStage]:
        async with self.inner.stage(case) as stage:
            yield _BrokenStage(stage, self.mode)


@pytest.mark.parametrize(
    ("mode", "check", "says"),
    [
        ("untyped", "errors_are_typed", "is not a TTSError"),
        ("silent", "sample_rates", "no audio"),
        ("wrong_rate", "sample_rates", "the engine says"),
        ("dead_after_interrupt", "cancel_mid_utterance", None),
    ],
)
async def test_the_kit_fails_a_broken_engine(mode: str, check: str, says: str | None) -> None:
    with pytest.raises((ConformanceError, TTSError)) as info:
        await TTS_CHECKS[check](_BrokenHarness(mode))
    if says is not None:
        assert info.type is ConformanceError and says in str(info.value)


async def test_run_tts_conformance_runs_every_check() -> None:
    assert await run_tts_conformance(ElevenLabsHarness()) == list(TTS_CHECKS)
