from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from tests.audio_helpers import samples
from tests.conftest import ListenerClock
from voiceagent import audio
from voiceagent.adapters.espeak import EspeakSink, available_voices
from voiceagent.audio_output import CollectingOutput, WavFileOutput
from voiceagent.errors import TTSError
from voiceagent.testing.outputs import GatedOutput
from voiceagent.tts import TTSSink

LONG_TEXT = " ".join(["This sentence is long enough to take espeak a little while to say out loud."] * 20)


def child_processes() -> list[str]:
    """Names of this process's live (non-zombie) children, from /proc."""
    names = []
    for tid in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{pid}/comm") as comm:
                        if fields[0] != "Z":
                            names.append(comm.read().strip())
                except FileNotFoundError:
                    pass
    return names


@pytest.mark.anyio
async def test_speaks_real_audio_at_the_output_rate() -> None:
    out = CollectingOutput(16000)
    sink = EspeakSink(out)
    as_protocol: TTSSink = sink  # static check; and at runtime:
    assert isinstance(as_protocol, TTSSink)
    await sink.speak("Hello world. The weather today is sunny.")
    await sink.flush()
    pcm = out.pcm16
    assert all(c.sample_rate == 16000 for c in out.chunks)
    assert 1.0 < audio.duration_seconds(pcm, 16000) < 6.0
    assert audio.rms(pcm) > 500  # speech, not silence
    assert max(abs(s) for s in samples(pcm)) > 5000
    assert out.chunks[0].text_span == "Hello world. The weather today is sunny."
    assert all(c.text_span == "" for c in out.chunks[1:])
    assert len(sink.ttfb) == 1 and sink.ttfb[0].seconds > 0
    assert sink.played_chars == len("Hello world. The weather today is sunny.")
    [span] = sink.spoken_spans
    assert span.fully_played and span.audio_seconds == pytest.approx(out.written_seconds)


@pytest.mark.anyio
async def test_options_change_the_audio() -> None:
    slow, fast = CollectingOutput(16000), CollectingOutput(16000)
    await EspeakSink(slow, words_per_minute=100).speak("Counting one two three four five.")
    await EspeakSink(fast, words_per_minute=300, voice="en-gb", pitch=70).speak(
        "Counting one two three four five."
    )
    assert slow.written_seconds > 1.5 * fast.written_seconds


@pytest.mark.anyio
async def test_tricky_text_is_spoken_not_parsed_as_options() -> None:
    out = CollectingOutput(8000)
    sink = EspeakSink(out)
    for text in ["-v de --help", "Ünïcödé ça va? 日本", "<b>not markup</b> & done"]:
        await sink.speak(text)
    assert len(sink.ttfb) == 3 and out.written_seconds > 1
    assert sink.played_chars == sum(
        len(t) for t in ["-v de --help", "Ünïcödé ça va? 日本", "<b>not markup</b> & done"]
    )


@pytest.mark.anyio
async def test_whitespace_is_credited_without_running_espeak() -> None:
    out = CollectingOutput(8000)
    sink = EspeakSink(out)
    await sink.speak("Hi.")
    await sink.speak("  ")
    assert len(sink.ttfb) == 1 and sink.played_chars == 5


def test_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(TTSError, match="apt-get install espeak-ng"):
        EspeakSink(CollectingOutput(8000), binary="espeak-ng-does-not-exist")


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="words_per_minute"):
        EspeakSink(CollectingOutput(8000), words_per_minute=5)


def test_unknown_voice_is_a_clear_error() -> None:
    with pytest.raises(TTSError, match="'no-such-voice' does not exist"):
        EspeakSink(CollectingOutput(8000), voice="no-such-voice")
    assert {"en-us", "en-gb", "de"} <= available_voices()
    EspeakSink(CollectingOutput(8000), voice="en-us+f3")


@pytest.mark.anyio
async def test_a_failing_engine_is_a_clear_error_and_the_sink_still_works(tmp_path: Path) -> None:
    fake = tmp_path / "espeak-ng"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = --voices ] && exec /usr/bin/espeak-ng --voices\n'
        "echo 'synthesis exploded' >&2; exit 3\n"
    )
    fake.chmod(0o755)
    out = CollectingOutput(8000)
    sink = EspeakSink(out, binary=str(fake))
    with pytest.raises(TTSError, match="status 3: synthesis exploded"):
        await sink.speak("hello")
    assert sink.played_chars == 0 and out.chunks == []
    sink.engine.binary = "espeak-ng"
    await sink.speak("hello")
    assert sink.played_chars == len("hello")


@pytest.mark.anyio
async def test_cancel_kills_in_flight_synthesis() -> None:
    out = GatedOutput(16000, free_writes=1, auto_play=False)
    sink = EspeakSink(out)
    returned = anyio.Event()

    async def speak() -> None:
        await sink.speak(LONG_TEXT)
        returned.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(speak)
        await out.blocked.wait()  # espeak is running and its audio is mid-delivery
        assert "espeak-ng" in child_processes()
        await sink.cancel()
        assert returned.is_set()  # speak returned quietly: it was a barge-in, not an error
        out.release()
    assert "espeak-ng" not in child_processes()
    assert len(out.chunks) == 1 and out.clears == 1
    assert sink.played_chars == 0  # nothing had played
    [span] = sink.spoken_spans
    assert span.played_seconds == 0 and span.audio_seconds == out.chunks[0].duration


@pytest.mark.anyio
async def test_barge_in_keeps_what_was_heard() -> None:
    out = CollectingOutput(16000, auto_play=False)
    sink = EspeakSink(out)
    first, second = "The first sentence.", "And here is the second sentence, which gets interrupted."
    await sink.speak(first)
    await sink.speak(second)
    first_seconds, second_seconds = (s.audio_seconds for s in sink.spoken_spans)
    out.play(first_seconds + second_seconds / 2)
    await sink.cancel()
    heard = sink.played_chars
    assert len(first) < heard < len(first) + len(second)
    assert (first + second)[:heard].endswith(" ") is False
    # after a barge-in the sink keeps working for the next turn
    await sink.speak("Okay.")
    out.play()
    assert sink.played_chars == heard + len("Okay.")


@pytest.mark.anyio
async def test_flush_waits_until_played() -> None:
    out = CollectingOutput(8000, auto_play=False)
    sink = EspeakSink(out)
    await sink.speak("Wait for me.")
    flushed = anyio.Event()

    async def flush() -> None:
        await sink.flush()
        flushed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(flush)
        await anyio.wait_all_tasks_blocked()
        assert not flushed.is_set() and sink.played_chars == 0
        out.play()
    assert flushed.is_set() and sink.played_chars == len("Wait for me.")


@pytest.mark.anyio
async def test_into_a_realtime_wav_file(tmp_path: Path, listener_clock: ListenerClock) -> None:
    path = tmp_path / "speech.wav"
    async with WavFileOutput(path, 22050, realtime=True) as out:
        sink = EspeakSink(out)
        listener_clock.pause()  # the listener hears nothing until resumed, however slow the machine
        await sink.speak("Short.")
        assert out.written_seconds > 0 and sink.played_chars == 0  # delivered, not yet heard
        listener_clock.resume()
        await sink.flush()
        assert sink.played_chars == len("Short.")
    pcm, rate = audio.read_wav(path)
    assert rate == 22050 and audio.rms(pcm) > 500


@pytest.mark.anyio
async def test_text_cancelled_before_its_audio_is_not_credited() -> None:
    out = GatedOutput(16000, free_writes=0)
    sink = EspeakSink(out)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.speak, "Never heard.")
        await out.blocked.wait()
        await sink.cancel()
        out.release()
    assert out.chunks == [] and sink.played_chars == 0 and sink.spoken_spans == []


@pytest.mark.anyio
async def test_cancel_while_flushing_stops_waiting() -> None:
    out = CollectingOutput(16000, auto_play=False)
    sink = EspeakSink(out)
    await sink.speak("You will not hear all of this.")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.flush)
        await anyio.wait_all_tasks_blocked()
        out.play(0.5)
        await sink.cancel()  # the flush above returns: nothing more will play
    [span] = sink.spoken_spans
    assert span.played_seconds == 0.5 and not span.fully_played
    assert 0 < sink.played_chars < len("You will not hear all of this.")
