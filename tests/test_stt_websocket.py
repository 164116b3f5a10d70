"""The two extension points a new streaming STT vendor builds on, used as a vendor would: ``WebSocketSTT``
(the client's lifecycle) and ``FakeWebSocketServer`` (its fake). ``ToySTT`` and ``ToyFake`` are a whole
vendor in a few lines each: URL and auth, three control messages, the parsing, one close code."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from voiceagent.errors import VoiceAgentError
from voiceagent.stt import STTEvent, Transcript
from voiceagent.stt_websocket import STTErrors, WebSocketSTT
from voiceagent.testing.fake_server import FakeWebSocketServer, json_response

pytestmark = pytest.mark.anyio


class ToyError(VoiceAgentError):
    pass


class ToyHandshakeError(ToyError):
    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"refused: {status_code} {body}")
        self.status_code = status_code


class ToyConnectionError(ToyError):
    pass


class ToyLimitError(ToyError):
    pass


class ToySTT(WebSocketSTT):
    vendor = "Toy"
    errors = STTErrors(ToyError, ToyHandshakeError, ToyConnectionError)
    end_marker = "last"

    def __init__(self, key: str, url: str, *, keepalive: float | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        super().__init__(
            url, headers, secret=key, encoding="mulaw", frame_bytes=100, flush_bytes=300, keepalive=keepalive
        )

    def _close_message(self) -> dict[str, Any]:
        return {"type": "close"}

    def _finalize_message(self) -> dict[str, Any]:
        return {"type": "finalize"}

    def _keepalive_message(self) -> dict[str, Any]:
        return {"type": "keepalive"}

    def _closed_error(self, code: int | None, reason: str) -> VoiceAgentError | None:
        return ToyLimitError(reason) if code == 4029 else None

    def _on_message(self, raw: str | bytes) -> bool:
        message = json.loads(raw)
        if message.get("text"):
            self._emit(Transcript(message["text"], message["final"], message["final"]))
        return bool(message.get("last"))


class ToyFake(FakeWebSocketServer):
    """Says how many bytes it has heard after each frame; ``finalize`` makes that final, ``close``
    answers ``last`` and closes. ``close_with``: close with this code after the first frame instead."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[int] = []
        self.controls: list[str] = []
        self.close_with: int | None = None

    def _process_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != "Bearer key":
            return json_response(401, {"error": "bad key"})
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        async for raw in ws:
            if isinstance(raw, bytes):
                self.frames.append(len(raw))
                self._notify()
                if self.close_with is not None:
                    await ws.close(self.close_with, "over the limit")
                    return
                await ws.send(json.dumps({"text": f"{sum(self.frames)} bytes", "final": False}))
                continue
            kind = json.loads(raw)["type"]
            self.controls.append(kind)
            self._notify()
            if kind == "finalize":
                await ws.send(json.dumps({"text": f"{sum(self.frames)} bytes", "final": True}))
            elif kind == "close":
                await ws.send(json.dumps({"last": True}))
                await ws.close()
                return


async def collect(stt: ToySTT, into: list[STTEvent]) -> None:
    async for event in stt.events():
        into.append(event)


async def test_audio_is_batched_finalized_and_the_close_waits_for_the_last_message() -> None:
    events: list[STTEvent] = []
    with anyio.fail_after(20):
        async with ToyFake() as fake, anyio.create_task_group() as tg:
            async with ToySTT("key", fake.base_url) as stt:
                tg.start_soon(collect, stt, events)
                await stt.send_audio(b"\x00\x00" * 250)  # 250 mu-law bytes: not yet a batch of 300
                assert fake.frames == []
                await stt.send_audio(b"\x00\x00" * 200)  # 450: one batch of 300, in frames of 100
                await fake.wait_until(lambda: len(fake.frames) == 3)
                await stt.finalize()  # the 150 left go first
            assert stt.frames_sent == 5 and stt.bytes_sent == 450
    assert fake.frames == [100, 100, 100, 100, 50]
    assert fake.controls == ["finalize", "close"]
    assert events[-1] == Transcript("450 bytes", True, True)
    assert [e.is_final for e in events if isinstance(e, Transcript)] == [False] * 5 + [True]


async def test_a_refused_upgrade_is_the_vendors_handshake_error() -> None:
    with anyio.fail_after(20):
        async with ToyFake() as fake:
            with pytest.raises(ToyHandshakeError) as info:
                async with ToySTT("wrong", fake.base_url):
                    pass
    assert info.value.status_code == 401


async def test_a_close_code_maps_to_the_vendors_error_and_sends_fail_after_it() -> None:
    with anyio.fail_after(20):
        async with ToyFake() as fake:
            fake.close_with = 4029
            async with ToySTT("key", fake.base_url) as stt:
                await stt.send_audio(b"\x00\x00" * 50)
                await stt.flush()  # one frame of 50: the fake closes after it
                with pytest.raises(ToyLimitError, match="over the limit"):
                    async for _ in stt.events():
                        pass
                with pytest.raises(ToyLimitError):
                    await stt.send_audio(b"\x00\x00" * 300)


async def test_a_connection_lost_before_the_last_message_is_the_vendors_connection_error() -> None:
    with anyio.fail_after(20):
        async with ToyFake() as fake:
            async with ToySTT("key", fake.base_url) as stt:
                await fake.wait_until(lambda: fake.connections_opened == 1)
                assert await fake.close_all() == 1
                with pytest.raises(ToyConnectionError, match="Toy closed the stream before last"):
                    async for _ in stt.events():
                        pass


async def test_keepalives_fill_a_pause_in_the_audio() -> None:
    with anyio.fail_after(20):
        async with ToyFake() as fake:
            async with ToySTT("key", fake.base_url, keepalive=0.01) as stt:
                await fake.wait_until(lambda: fake.controls.count("keepalive") >= 2)
            assert stt.keepalives_sent >= 2


async def test_sending_before_connecting_says_how_to_connect() -> None:
    with pytest.raises(
        ToyConnectionError, match=r"ToySTT is not connected; use 'async with ToySTT\(\.\.\.\)'"
    ):
        await ToySTT("key", "ws://127.0.0.1:9").send_audio(b"\x00\x00")
