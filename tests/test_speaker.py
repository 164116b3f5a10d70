"""The Speaker: one sink for any TTSEngine (splitting, slot, odd-byte carry, resampling, ledger, cancel)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from tests.audio_helpers import tone_power
from voiceagent import audio
from voiceagent.audio_output import CollectingOutput
from voiceagent.limiter import ConcurrencyLimiter
from voiceagent.speaker import Speaker, TTSEngine
from voiceagent.testing.outputs import GatedOutput
from voiceagent.testing.sinks import FlakySink, PacedEngine, RecordingSink
from voiceagent.testing.tone_sink import ToneEngine, ToneSink, tone_pcm
from voiceagent.tts import TTSSink

pytestmark = pytest.mark.anyio


async def test_an_engine_split_mid_sample_plays_exactly_its_bytes() -> None:
    engine = ToneEngine(8000, piece_bytes=333)  # odd pieces: every other one ends mid-sample
    assert isinstance(engine, TTSEngine)
    out = CollectingOutput(8000)
    speaker = Speaker(engine, out)
    assert isinstance(speaker, TTSSink)
    await speaker.speak("Hello there.")
    await speaker.flush()
    assert out.pcm16 == tone_pcm("Hello there.", 8000)  # same rate: passed through, no byte lost
    assert [c.text_span for c in out.chunks if c.text_span] == ["Hello there."]
    assert speaker.played_chars == len("Hello there.") and len(speaker.ttfb) == 1


async def test_audio_is_resampled_once_to_the_output_rate_without_aliasing() -> None:
    class HighTone:
        sample_rate = 24000

        async def synthesize(self, text: str) -> AsyncIterator[bytes]:
            pcm = audio.sine_pcm16(6000, 0.5, 24000, amplitude=0.9) + audio.sine_pcm16(440, 0.5, 24000)
            for start in range(0, len(pcm), 4801):
                yield pcm[start : start + 4801]

        async def interrupt(self) -> None:
            return None

    out = CollectingOutput(8000)
    await Speaker(HighTone(), out).speak("high then low")
    assert all(c.sample_rate == 8000 for c in out.chunks)
    assert abs(len(out.pcm16) // 2 - 8000) <= 2  # the filter's tail is flushed at the end of the text
    high, low = out.pcm16[800:3200], out.pcm16[-3200:-800]
    assert audio.rms(high) < 0.001 * 32767  # 6 kHz cannot exist at 8 kHz: filtered, not folded to 2 kHz
    assert tone_power(low, 8000, 440) > 1000 * tone_power(low, 8000, 2000)


async def test_long_texts_are_split_and_each_piece_holds_a_slot() -> None:
    limiter = ConcurrencyLimiter(1)
    slots: list[int] = []

    class Counting(ToneEngine):
        async def synthesize(self, text: str) -> AsyncIterator[bytes]:
            slots.append(limiter.in_flight)
            async for data in super().synthesize(text):
                yield data

    engine = Counting(8000)
    speaker = Speaker(engine, CollectingOutput(8000), max_chars=25, limiter=limiter)
    await speaker.speak("One short sentence. And another one here.")
    assert [t.strip() for t in engine.texts] == ["One short sentence.", "And another one here."]
    assert slots == [1, 1] and limiter.in_flight == 0
    assert speaker.played_chars == len("One short sentence. And another one here.")


async def test_cancel_mid_delivery_interrupts_the_engine_and_keeps_only_what_played() -> None:
    engine = ToneEngine(8000, piece_bytes=1600)  # 100 ms pieces
    out = GatedOutput(8000, free_writes=2, auto_play=False)
    speaker = Speaker(engine, out)
    text = "A fairly long sentence that will not finish playing."
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.speak, text)
        with anyio.fail_after(10):
            await out.blocked.wait()
        out.play(0.1)  # the listener heard the first 100 ms
        await speaker.cancel()
        out.release()
    assert engine.interrupts == 1 and out.clears == 1
    heard = speaker.played_chars
    assert 0 < heard < len(text)
    assert text[:heard].endswith(("", " ")) or text[heard] == " "
    [span] = speaker.spoken_spans
    assert not span.complete and span.played_seconds == pytest.approx(0.1)


async def test_vendor_attributes_read_through_to_the_engine() -> None:
    engine = ToneEngine(8000)
    speaker = Speaker(engine, CollectingOutput(8000))
    await speaker.speak("hi")
    assert speaker.texts == ["hi"] and speaker.engine is engine
    with pytest.raises(AttributeError):
        _ = speaker.no_such_attribute


async def test_a_tap_sees_each_piece_sent_to_the_engine_and_the_bytes_it_returned() -> None:
    engine = ToneEngine(24000, piece_bytes=333)
    out = CollectingOutput(8000)
    speaker = Speaker(engine, out, max_chars=12)
    seen: list[tuple[str, bytes, int]] = []
    speaker.tap(lambda text, pcm, rate: seen.append((text, pcm, rate)))
    await speaker.speak("Hello there. How are you?")
    pieces = engine.texts
    assert len(pieces) > 1 and "".join(pieces) == "Hello there. How are you?"
    for piece in pieces:  # what the engine returned for each piece, as returned (before resampling)
        assert b"".join(pcm for text, pcm, _ in seen if text == piece) == tone_pcm(piece, 24000)
    assert {rate for _, _, rate in seen} == {24000} and speaker.output is out


async def test_the_tone_sink_is_a_tone_engine_in_a_speaker() -> None:
    """The one playback path: the test sink the cassettes are recorded with is a Speaker like every vendor."""
    sink = ToneSink()
    assert isinstance(sink, Speaker) and isinstance(sink.engine, ToneEngine)
    await sink.speak("Hi.")
    await sink.cancel()
    assert sink.output.pcm16 == tone_pcm("Hi.", 8000) and sink.output.clears == 1
    assert sink.engine.interrupts == 1 and sink.played_chars == 3


async def test_the_test_sinks_are_paced_engines_in_speakers() -> None:
    """RecordingSink and FlakySink take the vendors' playback path: what was heard is the Speaker's
    ledger over the audio the engine returned."""
    sink = RecordingSink()
    assert isinstance(sink, Speaker) and isinstance(sink.engine, PacedEngine)
    await sink.speak("Hello there. ")
    assert sink.played_chars == len("Hello there. ") and sink.spoken == ["Hello there. "]

    flaky = FlakySink(fail_at=1, played_before_failure=9)
    with pytest.raises(ConnectionResetError):
        await flaky.speak("Second sentence is here.")
    await flaky.cancel()  # what a turn does after a sink failure
    assert flaky.played_chars == len("Second")  # 9 characters of audio, back to the word boundary
    assert [c.kind for c in flaky.calls] == ["speak_failed", "cancel"] and flaky.engine.interrupts == 1


async def test_a_paced_engine_cut_mid_text_is_credited_the_words_it_returned() -> None:
    sink = RecordingSink(seconds_per_char=0.001)
    out = sink.output
    assert isinstance(out, CollectingOutput)
    text = "one two three four five six seven eight nine ten"
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.speak, text)
        with anyio.fail_after(10):
            while out.written_seconds < 9 / 14:  # noqa: ASYNC110  # "one two " and more returned
                await anyio.sleep(0.001)
        await sink.cancel()
    heard = sink.played_chars
    assert 0 < heard < len(text) and text[heard] == " "  # whole words only
