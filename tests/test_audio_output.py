from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.conftest import ListenerClock
from voiceagent import audio
from voiceagent.audio_output import CollectingOutput, WavFileOutput
from voiceagent.playback import PlaybackLedger, heard_chars
from voiceagent.tts import AudioChunk, AudioOutput


def chunk(seconds: float, rate: int = 8000, text: str = "") -> AudioChunk:
    return AudioChunk(audio.sine_pcm16(440, seconds, rate), rate, text)


def test_outputs_implement_the_protocol(tmp_path: Path) -> None:
    assert isinstance(CollectingOutput(8000), AudioOutput)
    out = WavFileOutput(tmp_path / "a.wav", 8000)
    assert isinstance(out, AudioOutput)
    out.close()


@pytest.mark.anyio
async def test_wav_file_is_playable_after_every_write(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    async with WavFileOutput(path, 8000) as out:
        await out.write(chunk(0.25))
        assert audio.read_wav(path) == (chunk(0.25).pcm16, 8000)
        await out.write(chunk(0.5))
        await out.wait_played()
        assert out.written_seconds == out.played_seconds == 0.75
    pcm, rate = audio.read_wav(path)
    assert rate == 8000 and audio.duration_seconds(pcm, rate) == 0.75


@pytest.mark.anyio
async def test_wav_output_rejects_a_chunk_at_another_rate(tmp_path: Path) -> None:
    async with WavFileOutput(tmp_path / "out.wav", 16000) as out:
        with pytest.raises(ValueError, match="8000 Hz but this output plays 16000 Hz"):
            await out.write(chunk(0.1, 8000))
        assert out.written_seconds == 0


@pytest.mark.anyio
async def test_realtime_wav_waits_like_a_listener(tmp_path: Path, listener_clock: ListenerClock) -> None:
    async with WavFileOutput(tmp_path / "out.wav", 8000, realtime=True) as out:
        start = anyio.current_time()
        listener_clock.pause()  # "written, not yet played" holds however long the machine stalls here
        await out.write(chunk(0.3))
        assert out.written_seconds == 0.3 and out.played_seconds == 0
        listener_clock.resume()
        await out.wait_played()
        # lower bound only: playback cannot finish before the audio's duration
        assert anyio.current_time() - start >= 0.3 - 1e-3
        assert out.played_seconds == pytest.approx(0.3)


@pytest.mark.anyio
async def test_realtime_clear_truncates_the_file_to_what_was_heard(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    async with WavFileOutput(path, 8000, realtime=True) as out:
        await out.write(chunk(60.0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(out.wait_played)  # must wake on clear, not after 60 s
            await anyio.wait_all_tasks_blocked()
            await out.clear()
        heard = out.played_seconds
        assert heard < 60 and out.written_seconds == heard
        pcm, _ = audio.read_wav(path)
        assert audio.duration_seconds(pcm, 8000) == pytest.approx(heard, abs=1 / 8000)
        await out.write(chunk(0.1))
        assert out.written_seconds == pytest.approx(heard + 0.1)


@pytest.mark.anyio
async def test_collecting_output_manual_playback() -> None:
    out = CollectingOutput(8000, auto_play=False)
    await out.write(chunk(1.0, text="hello"))
    done = anyio.Event()

    async def wait() -> None:
        await out.wait_played()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        out.play(0.5)
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set() and out.played_seconds == 0.5
        out.play()
    assert done.is_set() and out.played_seconds == 1.0
    assert out.text == "hello"


def test_heard_chars_cuts_at_a_word_boundary() -> None:
    text = "Hello there, how are you?"
    assert heard_chars(text, 1.0) == len(text)
    assert heard_chars(text, 0.0) == 0
    assert text[: heard_chars(text, 0.5)] == "Hello there,"
    assert heard_chars("Supercalifragilistic", 0.9) == 0


@pytest.mark.anyio
async def test_ledger_credits_only_what_played_and_freezes_on_settle() -> None:
    out = CollectingOutput(8000, auto_play=False)
    ledger = PlaybackLedger(out)
    ledger.begin("One two. ")
    await out.write(chunk(1.0))
    ledger.add_audio(1.0)
    ledger.finish()
    ledger.begin(" ", complete=True)
    ledger.begin("Three four five six.")
    await out.write(chunk(2.0))
    ledger.add_audio(2.0)
    ledger.finish()
    assert ledger.played_chars == 0
    out.play(1.0)
    assert ledger.played_chars == len("One two. ") + 1
    out.play(1.0)  # half of the last span
    assert ledger.played_chars == len("One two.  ") + len("Three four")
    await out.clear()
    ledger.settle()
    spans = ledger.spoken_spans
    assert [s.played_seconds for s in spans] == [1.0, 0.0, 1.0]
    assert spans[2].audio_seconds == 2.0 and not spans[2].fully_played
    # new audio on the same output timeline is not credited to the cancelled span
    ledger.begin("Next.")
    await out.write(chunk(1.0))
    ledger.add_audio(1.0)
    ledger.finish()
    out.play()
    assert ledger.played_chars == len("One two.  ") + len("Three four") + len("Next.")


@pytest.mark.anyio
async def test_a_span_cut_off_mid_synthesis_is_never_credited_whole() -> None:
    out = CollectingOutput(8000)  # the listener keeps up with delivery
    ledger = PlaybackLedger(out)
    text = "This answer was going to be long, but the connection dropped after a second."
    ledger.begin(text)
    await out.write(chunk(1.0))
    ledger.add_audio(1.0)
    ledger.settle()  # synthesis never finished
    [span] = ledger.spoken_spans
    assert not span.complete and not span.fully_played and span.played_seconds == 1.0
    # ~14 characters per second of speech, cut back to a word boundary
    assert text[: ledger.played_chars] == "This answer"
