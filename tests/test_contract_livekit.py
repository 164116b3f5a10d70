"""LiveKit Agents' Smallest AI STT stream (livekit-plugins-smallestai 1.8.9) against the Pulse fake.

It sends ``{"type": "keepalive"}`` every few seconds and reads the answer: against the fake's old
error reply the stream died. Opt-in, as the plugin pulls in LiveKit's native runtime (~175 MB):
``pip install -e ".[contract-livekit]"``; skipped without it.
"""

from __future__ import annotations

import math
import struct

import anyio
import pytest

from voiceagent.adapters.pulse.fake import Emit, FakePulseServer, speech_ended, speech_started, transcript

smallestai = pytest.importorskip("livekit.plugins.smallestai")
rtc = pytest.importorskip("livekit.rtc")
aiohttp = pytest.importorskip("aiohttp")

pytestmark = pytest.mark.anyio

KEY = "sk_test"


def tone(seconds: float, rate: int = 16000) -> bytes:
    n = int(seconds * rate)
    return struct.pack(f"<{n}h", *(int(6000 * math.sin(2 * math.pi * 300 * i / rate)) for i in range(n)))


async def test_livekit_stt_stream_survives_keepalives_and_reads_the_fake() -> None:
    script = [
        Emit(1600, speech_started(0.05)),
        Emit(3200, transcript("hello")),
        Emit(6400, transcript("hello world", is_final=True)),
        Emit(9000, speech_ended(0.3)),
    ]
    async with FakePulseServer(script, api_key=KEY) as server, aiohttp.ClientSession() as session:
        base = server.url.replace("ws://", "http://").removesuffix("/stt/live")
        stt = smallestai.STT(api_key=KEY, base_url=base, http_session=session, keepalive_interval=0.02)
        stream = stt.stream()
        pcm = tone(0.4)
        for offset in range(0, len(pcm), 640):
            chunk = pcm[offset : offset + 640]
            stream.push_frame(rtc.AudioFrame(chunk, 16000, 1, len(chunk) // 2))
        events: list[tuple[str, str]] = []
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    async for event in stream:
                        text = event.alternatives[0].text if event.alternatives else ""
                        events.append((event.type.name, text))

                tg.start_soon(read)
                while not server.sessions or server.sessions[0].controls.count("keepalive") < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.02)  # polling the fake's record; no timing is asserted
                stream.flush()
                stream.end_input()
        await stream.aclose()
    session_record = server.sessions[0]
    assert session_record.controls.count("keepalive") >= 3 and session_record.controls[-1] == "close_stream"
    assert all(m == {"type": "pong"} for m in session_record.sent if m.get("type") == "pong")
    assert not any(m.get("type") == "error" for m in session_record.sent)
    spoken = [e for e in events if e[0] != "RECOGNITION_USAGE"]
    assert spoken == [
        ("START_OF_SPEECH", ""),
        ("INTERIM_TRANSCRIPT", "hello"),
        ("FINAL_TRANSCRIPT", "hello world"),
        ("END_OF_SPEECH", ""),
    ]
    assert len(server.sessions) == 1  # never reconnected
