"""A conformance kit any ``STTSource`` (ours or a third party's) runs against itself.

The source's author writes an ``SttHarness``: given an ``SttCase`` (what the caller says, at which
sample rate, with which fault), it stages a server (a fake, or a real service) and hands back the
caller's audio and a way to ``connect`` a source to it. ``STT_CHECKS`` then checks what every source
must do: hear the words at each sample rate, keep unicode text as it is, yield no empty transcripts,
give transcripts and speech events the right shapes, say where an utterance ends, survive a dropped
connection (recover by itself, or fail with a typed error and let a new source connect), turn refused
credentials into a ``VoiceAgentError``, and close cleanly. Run them all with ``run_stt_conformance``,
or one per test with ``pytest.mark.parametrize("check", STT_CHECKS)``.

The TTS half is the same for any ``TTSEngine``: a ``TtsHarness`` stages a server for a ``TtsCase`` and
makes engines for it; ``TTS_CHECKS`` (``run_tts_conformance``) drive them through a ``Speaker``: audio at
each sample rate, the played characters, empty and unicode text, a barge-in mid-utterance (nothing is
written after ``cancel`` and the engine speaks the next text), a dropped stream (a ``TTSError`` or a
recovery, and the next text is spoken), and refused credentials as a ``TTSError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

import anyio
import anyio.lowlevel

from voiceagent.audio_output import CollectingOutput
from voiceagent.errors import TTSError, VoiceAgentError
from voiceagent.speaker import Speaker, TTSEngine
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, STTSource, Transcript
from voiceagent.testing.outputs import GatedOutput

Fault = Literal["drop", "reject"]
LISTEN_TIMEOUT = 30.0  # a stage that hangs fails the check instead of the run


class ConformanceError(AssertionError):
    """A source does not do what the kit expects; the message says what and for which case."""


@dataclass(frozen=True, slots=True)
class SttCase:
    """``texts``: the utterances the caller says, in order, with pauses between them long enough for
    the source to hear each end. ``fault``: "drop" (the server drops the first connection about half
    way through the audio; later ones work) or "reject" (``connect`` uses refused credentials)."""

    texts: tuple[str, ...]
    sample_rate: int
    fault: Fault | None = None


class SttStage(Protocol):
    @property
    def sample_rate(self) -> int: ...

    @property
    def audio(self) -> bytes:
        """PCM16 mono at the case's sample rate: the caller saying the case's texts."""
        ...

    def connect(self) -> AbstractAsyncContextManager[STTSource]: ...


class SttHarness(Protocol):
    @property
    def sample_rates(self) -> Sequence[int]: ...

    def stage(self, case: SttCase) -> AbstractAsyncContextManager[SttStage]: ...


@dataclass
class Heard:
    """What one source yielded for one stage's audio."""

    events: list[STTEvent] = field(default_factory=list)
    error: VoiceAgentError | None = None

    @property
    def finals(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Transcript) and e.is_final]

    @property
    def words(self) -> list[str]:
        return " ".join(self.finals).split()


async def listen(stage: SttStage, *, chunk_ms: int = 20) -> Heard:
    """Connect, send the stage's audio in ``chunk_ms`` pieces, close, and collect every event. A
    ``VoiceAgentError`` (from connecting, sending, the events or closing) is kept, not raised; any other
    exception propagates: errors must be typed."""
    heard = Heard()
    step = max(2, 2 * stage.sample_rate * chunk_ms // 1000 // 2 * 2)
    with anyio.fail_after(LISTEN_TIMEOUT):
        try:
            async with stage.connect() as stt:
                async with anyio.create_task_group() as tg:

                    async def read() -> None:
                        try:
                            async for event in stt.events():
                                heard.events.append(event)
                        except VoiceAgentError as exc:
                            heard.error = heard.error or exc

                    tg.start_soon(read)
                    try:
                        for offset in range(0, len(stage.audio), step):
                            await stt.send_audio(stage.audio[offset : offset + step])
                            await anyio.lowlevel.checkpoint()  # let the reader keep up, as real time would
                    except VoiceAgentError as exc:
                        heard.error = heard.error or exc
                    await stt.aclose()
        except VoiceAgentError as exc:
            heard.error = heard.error or exc
    return heard


def _expect(condition: bool, what: str, heard: Heard | None = None) -> None:
    if not condition:
        detail = f"; events={heard.events!r}, error={heard.error!r}" if heard is not None else ""
        raise ConformanceError(what + detail)


def _expect_words(heard: Heard, texts: Sequence[str], case: str) -> None:
    _expect(heard.error is None, f"{case}: the source failed", heard)
    expected = " ".join(texts).split()
    _expect(heard.words == expected, f"{case}: finals say {heard.words!r}, not {expected!r}", heard)


async def check_sample_rates(harness: SttHarness) -> None:
    for rate in harness.sample_rates:
        async with harness.stage(SttCase(("hello there",), rate)) as stage:
            _expect_words(await listen(stage), ["hello there"], f"{rate} Hz")


async def check_unicode_text(harness: SttHarness) -> None:
    texts = ("héllo wörld, ça va?", "日本語 テキスト 🙂")
    async with harness.stage(SttCase(texts, harness.sample_rates[0])) as stage:
        _expect_words(await listen(stage), texts, "unicode")


async def check_silence_yields_no_transcripts(harness: SttHarness) -> None:
    async with harness.stage(SttCase((), harness.sample_rates[0])) as stage:
        heard = await listen(stage)
    _expect(heard.error is None, "silence: the source failed", heard)
    _expect(not any(isinstance(e, Transcript) for e in heard.events), "silence: a transcript came", heard)


async def check_event_shapes(harness: SttHarness) -> None:
    texts = ("one two three four five six", "seven eight")
    async with harness.stage(SttCase(texts, harness.sample_rates[0])) as stage:
        heard = await listen(stage)
    _expect_words(heard, texts, "two utterances")
    speaking = False
    for event in heard.events:
        _expect(isinstance(event, Transcript | SpeechStarted | SpeechEnded), f"not an STTEvent: {event!r}")
        if isinstance(event, Transcript):
            _expect(isinstance(event.text, str) and bool(event.text.strip()), f"empty transcript {event!r}")
            _expect(isinstance(event.is_final, bool) and isinstance(event.end_of_turn, bool), repr(event))
            _expect(event.is_final or not event.end_of_turn, f"end_of_turn on a partial: {event!r}")
        else:
            _expect(isinstance(event.at, int | float), f"speech event time is not a number: {event!r}")
            _expect(isinstance(event, SpeechStarted) != speaking, "speech starts and ends alternate", heard)
            speaking = isinstance(event, SpeechStarted)
    first_words = next(i for i, e in enumerate(heard.events) if isinstance(e, Transcript))
    if any(isinstance(e, SpeechStarted | SpeechEnded) for e in heard.events):
        starts = [e for e in heard.events[:first_words] if isinstance(e, SpeechStarted)]
        _expect(bool(starts), "speech events, but none started the speech before the first words", heard)
    ends = [
        e
        for e in heard.events[first_words:]
        if isinstance(e, SpeechEnded) or getattr(e, "end_of_turn", False)
    ]
    _expect(len(ends) >= len(texts), "each utterance needs an end (SpeechEnded or end_of_turn)", heard)


async def check_reconnect_after_drop(harness: SttHarness) -> None:
    texts = ("before the drop", "after the drop")
    async with harness.stage(SttCase(texts, harness.sample_rates[0], fault="drop")) as stage:
        first = await listen(stage)
        if first.error is None:  # the source recovered by itself: then it must have lost nothing
            _expect_words(first, texts, "a dropped connection the source recovered from")
            return
        again = await listen(stage)
    _expect_words(again, texts, "a new source after a drop")


async def check_refused_credentials_are_typed(harness: SttHarness) -> None:
    async with harness.stage(SttCase(("hello",), harness.sample_rates[0], fault="reject")) as stage:
        heard = await listen(stage)
    _expect(heard.error is not None, "refused credentials: no VoiceAgentError", heard)


async def check_close(harness: SttHarness) -> None:
    async with harness.stage(SttCase(("hello",), harness.sample_rates[0])) as stage:
        with anyio.fail_after(LISTEN_TIMEOUT):
            async with stage.connect() as stt:
                await stt.aclose()
                await stt.aclose()  # a second close is a no-op
                rest = [event async for event in stt.events()]  # and the events end
                try:
                    await stt.send_audio(b"\0\0" * 160)
                except VoiceAgentError:
                    pass
                else:
                    raise ConformanceError("send_audio after aclose must raise a VoiceAgentError")
    _expect(not any(isinstance(e, Transcript) for e in rest), f"no words were sent, yet {rest!r}")


STT_CHECKS: dict[str, Callable[[SttHarness], Awaitable[None]]] = {
    "sample_rates": check_sample_rates,
    "unicode_text": check_unicode_text,
    "silence": check_silence_yields_no_transcripts,
    "event_shapes": check_event_shapes,
    "reconnect_after_drop": check_reconnect_after_drop,
    "refused_credentials": check_refused_credentials_are_typed,
    "close": check_close,
}


async def run_stt_conformance(harness: SttHarness) -> list[str]:
    """Run every check; raises ``ConformanceError`` on the first that fails; the names that passed."""
    for check in STT_CHECKS.values():
        await check(harness)
    return list(STT_CHECKS)


# ---- TTS: the same kit for any ``TTSEngine`` ------------------------------------------------------------

TtsFault = Literal["drop", "reject"]
SPEAK_TIMEOUT = 30.0
# Long enough for several chunks of audio on every fake, so a drop or a barge-in lands mid-utterance.
LONG_TEXT = (
    "This sentence is long enough that its audio arrives in several pieces, so that a barge-in or a "
    "dropped connection can land in the middle of it."
)


@dataclass(frozen=True, slots=True)
class TtsCase:
    """``fault``: "drop" (the server drops the first request's stream after some audio; later ones
    work) or "reject" (the engine uses refused credentials)."""

    sample_rate: int
    fault: TtsFault | None = None


class TtsStage(Protocol):
    def engine(self) -> TTSEngine:
        """A new engine for the case (asking for audio at the case's rate); a Speaker enters it."""
        ...


class TtsHarness(Protocol):
    @property
    def sample_rates(self) -> Sequence[int]: ...

    def stage(self, case: TtsCase) -> AbstractAsyncContextManager[TtsStage]: ...


async def _speak(speaker: Speaker, *texts: str) -> None:
    with anyio.fail_after(SPEAK_TIMEOUT):
        for text in texts:
            await speaker.speak(text)
        await speaker.flush()


def _expect_spoken(out: CollectingOutput, speaker: Speaker, texts: Sequence[str], case: str) -> None:
    _expect(bool(out.pcm16), f"{case}: no audio was written")
    _expect(all(c.sample_rate == out.sample_rate for c in out.chunks), f"{case}: chunks at the wrong rate")
    heard = sum(len(t) for t in texts)
    _expect(speaker.played_chars == heard, f"{case}: played {speaker.played_chars} chars, not {heard}")
    tags = [c.text_span for c in out.chunks if c.text_span]
    _expect(tags == [t for t in texts if t.strip()], f"{case}: first chunks are tagged {tags!r}")


async def check_tts_sample_rates(harness: TtsHarness) -> None:
    for rate in harness.sample_rates:
        async with harness.stage(TtsCase(rate)) as stage:
            engine = stage.engine()
            out = CollectingOutput(rate)
            async with Speaker(engine, out) as speaker:
                await _speak(speaker, "Hello there.")
            _expect(engine.sample_rate == rate, f"{rate} Hz: the engine says {engine.sample_rate} Hz")
            _expect_spoken(out, speaker, ["Hello there."], f"{rate} Hz")


async def check_tts_played_chars(harness: TtsHarness) -> None:
    texts = ["First sentence. ", "And a second one."]
    async with harness.stage(TtsCase(harness.sample_rates[0])) as stage:
        out = CollectingOutput(harness.sample_rates[0])
        async with Speaker(stage.engine(), out) as speaker:
            await _speak(speaker, *texts)
    _expect_spoken(out, speaker, texts, "two texts")


async def check_tts_empty_and_unicode_text(harness: TtsHarness) -> None:
    texts = ["", "   ", "Grüße, ça va? 日本語のテキスト 🙂"]
    async with harness.stage(TtsCase(harness.sample_rates[0])) as stage:
        out = CollectingOutput(harness.sample_rates[0])
        async with Speaker(stage.engine(), out) as speaker:
            await _speak(speaker, *texts)
    _expect_spoken(out, speaker, texts, "empty and unicode text")


async def check_tts_cancel_mid_utterance(harness: TtsHarness) -> None:
    async with harness.stage(TtsCase(harness.sample_rates[0])) as stage:
        out = GatedOutput(harness.sample_rates[0], free_writes=1)
        async with Speaker(stage.engine(), out) as speaker:
            with anyio.fail_after(SPEAK_TIMEOUT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(speaker.speak, LONG_TEXT)
                    await out.blocked.wait()  # audio is flowing: the second write waits
                    await speaker.cancel()
                    out.release()
            _expect(len(out.chunks) == 1, f"cancel: {len(out.chunks)} chunks written, not 1")
            _expect(speaker.played_chars < len(LONG_TEXT), "cancel: the whole text counts as heard")
            # The engine is usable after a barge-in: the next text is spoken in full.
            await _speak(speaker, "After the barge-in.")
    _expect(any(c.text_span == "After the barge-in." for c in out.chunks), "after cancel: not spoken")


async def check_tts_reconnect_after_drop(harness: TtsHarness) -> None:
    async with harness.stage(TtsCase(harness.sample_rates[0], fault="drop")) as stage:
        out = CollectingOutput(harness.sample_rates[0])
        async with Speaker(stage.engine(), out) as speaker:
            try:
                await _speak(speaker, LONG_TEXT)
            except TTSError:
                pass  # typed, as it must be; some engines recover by themselves instead
            before = len(out.chunks)
            await _speak(speaker, "After the drop.")
    _expect(any(c.text_span == "After the drop." for c in out.chunks[before:]), "after a drop: not spoken")


async def check_tts_errors_are_typed(harness: TtsHarness) -> None:
    async with harness.stage(TtsCase(harness.sample_rates[0], fault="reject")) as stage:
        out = CollectingOutput(harness.sample_rates[0])
        try:
            async with Speaker(stage.engine(), out) as speaker:
                await _speak(speaker, "Nobody hears this.")
        except TTSError:
            pass
        except Exception as exc:
            raise ConformanceError(f"refused credentials: {exc!r} is not a TTSError") from exc
        else:
            raise ConformanceError("refused credentials: no TTSError")
    _expect(not out.pcm16, "refused credentials: audio was written")


TTS_CHECKS: dict[str, Callable[[TtsHarness], Awaitable[None]]] = {
    "sample_rates": check_tts_sample_rates,
    "played_chars": check_tts_played_chars,
    "empty_and_unicode_text": check_tts_empty_and_unicode_text,
    "cancel_mid_utterance": check_tts_cancel_mid_utterance,
    "reconnect_after_drop": check_tts_reconnect_after_drop,
    "errors_are_typed": check_tts_errors_are_typed,
}


async def run_tts_conformance(harness: TtsHarness) -> list[str]:
    """Run every TTS check; raises ``ConformanceError`` on the first that fails; the names that passed."""
    for check in TTS_CHECKS.values():
        await check(harness)
    return list(TTS_CHECKS)
