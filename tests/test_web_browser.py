"""End to end in a real headless Chromium: a WAV file is the microphone, the page is the client.

Needs Debian's chromium (``apt-get install -y chromium``); skipped, with that reason, without it.
Set VOICEAGENT_SCREENSHOT=path to keep the screenshot taken mid-call.
"""

from __future__ import annotations

import math
import os
import struct
import time
import wave
from pathlib import Path

import anyio
import pytest

from voiceagent.adapters.web import PlaybackState, SessionClosedError, WebServer, WebSession
from voiceagent.adapters.web.__main__ import echo_bot
from voiceagent.adapters.web.chromium import Chromium, find_chromium
from voiceagent.tts import AudioChunk

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        find_chromium() is None, reason="chromium is not installed (apt-get install -y chromium)"
    ),
]

SPEECH_RMS = 500.0  # PCM16 RMS: a quiet room through the fake device is ~0; the test signal is ~10,000


def write_voice_like_wav(path: Path, seconds: float = 2.0, rate: int = 48000, pause: float = 0.0) -> Path:
    """Harmonics of a 180 Hz voice, amplitude-modulated at a syllable rate (noise suppression keeps it),
    then ``pause`` seconds of silence (Chromium loops the file)."""
    samples = bytearray()
    for i in range(int(seconds * rate)):
        t = i / rate
        envelope = 0.5 * (1 + math.sin(2 * math.pi * 3 * t))
        harmonics = sum(math.sin(2 * math.pi * f * t) / (k + 1) for k, f in enumerate((180, 360, 540)))
        value = envelope * 0.3 * harmonics
        samples += struct.pack("<h", int(max(-1.0, min(1.0, value)) * 32767))
    samples += b"\x00\x00" * int(pause * rate)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(samples))
    return path


def tone(seconds: float, rate: int = 24000, hz: float = 440.0) -> bytes:
    count = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(count)
    )


def rms(pcm: bytes) -> float:
    values = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(v * v for v in values) / len(values))


async def test_browser_call_mic_playback_marks_clear_and_token(tmp_path: Path) -> None:
    mic_wav = write_voice_like_wav(tmp_path / "mic.wav")
    clock_offset = [0.0]
    heard_speech = anyio.Event()
    long_audio_playing = anyio.Event()
    do_clear = anyio.Event()
    finished = anyio.Event()
    session_ended = anyio.Event()
    sessions: list[WebSession] = []
    played: list[str] = []
    mic: dict[str, float] = {"frames": 0, "peak_rms": 0.0}
    states: dict[str, PlaybackState] = {}

    async def listen(session: WebSession) -> None:
        # A real bot reads the mic for the whole call (STT, barge-in); so does this one.
        async for pcm in session.audio_in():
            mic["frames"] += 1
            mic["peak_rms"] = max(mic["peak_rms"], rms(pcm))
            if mic["peak_rms"] > SPEECH_RMS:
                heard_speech.set()

    async def bot(session: WebSession) -> None:
        sessions.append(session)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(listen, session)
                await speak(session)
        finally:
            session_ended.set()

    async def speak(session: WebSession) -> None:
        await heard_speech.wait()
        await session.send_transcript("hello there", is_final=True)
        await session.send_agent_text("Hi! Playing a short tone.")
        marks = session.played_marks()

        await session.send_audio(AudioChunk(tone(0.3), 24000))
        await session.mark("short")
        played.append(await anext(marks))

        for _ in range(20):  # 20 s, far longer than the test waits: clear must cut it
            await session.send_audio(AudioChunk(tone(1.0), 24000))
        await session.mark("long")
        states["long"] = await session.wait_playback(lambda s: s.playing and s.queued_ms > 500)
        long_audio_playing.set()
        await do_clear.wait()

        await session.clear()
        states["cleared"] = await session.wait_playback(lambda s: s.event == "cleared")
        await session.send_audio(AudioChunk(tone(0.2), 24000))
        await session.mark("after-clear")
        played.append(await anext(marks))
        finished.set()
        await anyio.sleep_forever()  # keep the call up until the page hangs up

    async with (
        WebServer(bot, token_ttl=60, clock=lambda: time.time() + clock_offset[0]) as server,
        Chromium(fake_microphone=mic_wav) as browser,
    ):
        try:
            page = await browser.new_page(server.url)
            assert await page.evaluate("document.title") == "Voice agent"
            assert await page.evaluate("document.getElementById('start').textContent") == "Start"

            await page.click("#start")
            await page.wait_for("window.voiceagent.connected")
            # The page's AudioContext runs at the PCM rate: the browser resamples the mic (filtered).
            assert await page.evaluate("window.voiceagent.contextRate") == 16000
            with anyio.fail_after(30):
                await heard_speech.wait()
            assert mic["peak_rms"] > SPEECH_RMS

            with anyio.fail_after(30):
                await long_audio_playing.wait()
            assert played == ["short"]
            assert await page.evaluate("window.voiceagent.playing") is True
            assert await page.evaluate("window.voiceagent.queuedSources") > 0
            # The page reports "playing" from the audio; the mark frame after it may still be in flight.
            await page.wait_for("window.voiceagent.pendingMarks.join() === 'long'")
            assert await page.evaluate("window.voiceagent.pendingMarks") == ["long"]
            assert "hello there" in await page.evaluate("document.getElementById('transcript').textContent")
            assert await page.evaluate("document.getElementById('start').textContent") == "Stop"
            shot = await page.screenshot(Path(os.environ.get("VOICEAGENT_SCREENSHOT", tmp_path / "page.png")))
            assert shot.stat().st_size > 5000

            do_clear.set()
            with anyio.fail_after(30):
                await finished.wait()
            cleared = states["cleared"]
            assert cleared.playing is False
            assert cleared.queued_ms == 0
            assert cleared.dropped_marks == ("long",)
            # "long" was dropped, never reported played; the audio after the clear played normally.
            assert played == ["short", "after-clear"]
            assert sessions[0].pending_marks == []
            assert await page.evaluate("window.voiceagent.queuedSources") == 0

            await page.click("#start")  # Stop: the page hangs up and the session ends
            await page.wait_for("window.voiceagent.status === 'Stopped'")
            with anyio.fail_after(10):
                await session_ended.wait()  # the bot was cancelled...
                with pytest.raises(SessionClosedError):  # ...and the session is closed
                    await sessions[0].wait_playback(lambda state: False)

            # A page whose token expired before Start cannot open a session.
            rejected_before = server.rejected_upgrades
            await page.goto(server.url)
            clock_offset[0] = 61
            await page.click("#start")
            status = await page.wait_for(
                "window.voiceagent.status.startsWith('Disconnected') && window.voiceagent.status"
            )
            assert "refused" in status
            assert server.rejected_upgrades == rejected_before + 1
            assert len(sessions) == 1
        except BaseException:
            print("chromium log tail:\n" + browser.log_tail())
            raise


async def test_echo_demo_plays_back_what_the_microphone_said(tmp_path: Path) -> None:
    mic_wav = write_voice_like_wav(tmp_path / "utterance.wav", seconds=1.0, pause=2.0)
    sessions: list[WebSession] = []
    second_session = anyio.Event()

    async def handler(session: WebSession) -> None:
        sessions.append(session)
        if len(sessions) == 2:
            second_session.set()
        await echo_bot(session)

    async with WebServer(handler) as server, Chromium(fake_microphone=mic_wav) as browser:
        try:
            page = await browser.new_page(server.url)
            await page.click("#start")
            await page.wait_for("document.getElementById('transcript').textContent.includes('s of speech')")
            with anyio.fail_after(30):
                assert await anext(sessions[0].played_marks()) == "echo-1"
            # The page's token opened that session and is used up; Start again gets a fresh one.
            rejected = server.rejected_upgrades
            await page.click("#start")
            await page.wait_for("window.voiceagent.status === 'Stopped'")
            await page.click("#start")
            await page.wait_for("window.voiceagent.connected")
            with anyio.fail_after(30):
                await second_session.wait()
            assert server.rejected_upgrades == rejected
        except BaseException:
            print("chromium log tail:\n" + browser.log_tail())
            raise
