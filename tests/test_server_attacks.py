"""Adversarial clients against the Twilio and web servers on 127.0.0.1, while a good call goes on.

Each attack is one hostile connection (a raw socket speaking WebSocket by hand where a real client
would refuse to send the bytes). For every attack the test asserts that the attacker is refused or
closed with a reason that fits a close frame, that the server's task group never sees the failure,
and that a well-behaved call on the same server keeps its audio and marks flowing during and after
the attack. Round trips of the good call (caller audio in -> bot audio + mark out -> mark echoed) are
recorded per attack and printed (``pytest -s``) for docs/reliability.md; nothing asserts on timing.

Every wait is bounded by ``anyio.fail_after``; every attack stops by itself.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import statistics
import struct
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer, TwilioStreamClosed
from voiceagent.adapters.twilio.fake_call import FakeTwilioCall, twilio_signature
from voiceagent.adapters.web import SessionClosedError, WebServer, WebSession
from voiceagent.testing.raw_websocket import RawSocket, raw_upgrade
from voiceagent.tts import AudioChunk
from voiceagent.ws_safety import MAX_CLOSE_REASON_BYTES, close_reason

pytestmark = pytest.mark.anyio

TOKEN = "attack-test-auth-token"
ATTACK_SECONDS = 20  # bound on any one attack; each normally takes well under a second
STALL_SECONDS = 0.5  # the servers' send deadline in these tests (default 5 s)
FRAME_PCM8K = struct.pack("<160h", *(int(6000 * math.sin(i / 3)) for i in range(160)))  # 20 ms
FRAME_PCM16K = FRAME_PCM8K * 2  # 20 ms at 16 kHz (the content does not matter)


# ---- round trips of the good call ------------------------------------------------------------------


@dataclass
class RoundTrips:
    by_attack: dict[str, list[float]] = field(default_factory=dict)
    current: str = "baseline"

    def add(self, seconds: float) -> None:
        self.by_attack.setdefault(self.current, []).append(seconds)

    @contextmanager
    def during(self, attack: str) -> Iterator[None]:
        self.current = attack
        try:
            yield
        finally:
            self.current = "between attacks"

    def table(self, server: str) -> str:
        rows = [f"{server}: good call round trips (ms) during each attack", "attack | n | p50 | max"]
        for attack, values in self.by_attack.items():
            ms = sorted(v * 1000 for v in values)
            rows.append(f"{attack} | {len(ms)} | {statistics.median(ms):.1f} | {ms[-1]:.1f}")
        return "\n".join(rows)


def reason_fits(raw: bytes) -> bool:
    return len(raw) <= MAX_CLOSE_REASON_BYTES and raw.decode("utf-8") is not None


# ---- the attacks both servers get, and the run around them --------------------------------------

Frame = str | bytes | tuple[int, bytes, int | None]  # text, or (opcode, payload, claimed length)
Server = TypeVar("Server", TwilioServer, WebServer)


async def closed_with_a_fitting_reason(
    port: int, path: str, headers: list[tuple[str, str]], frames: Sequence[Frame]
) -> None:
    """An accepted connection sends ``frames`` and must be closed with a reason that fits a close frame."""

    def run() -> tuple[int | None, bytes]:
        raw = raw_upgrade(port, path, headers)
        assert raw.status == 101
        try:
            for frame in frames:
                if isinstance(frame, tuple):
                    opcode, payload, claimed = frame
                    raw.send_frame(opcode, payload, claimed_length=claimed)
                else:
                    raw.send_text(frame)
            return raw.read_close()
        finally:
            raw.close()

    code, reason = await anyio.to_thread.run_sync(run)
    assert code in (1007, 1008, 1009, 1011, None)
    assert reason_fits(reason)


async def refused(port: int, path: str, headers: list[tuple[str, str]], status: int) -> None:
    raw = await anyio.to_thread.run_sync(raw_upgrade, port, path, headers)
    raw.close()
    assert raw.status == status


async def stops_reading(
    port: int, path: str, headers: list[tuple[str, str]], first: str, dropped: anyio.Event
) -> None:
    """A connection that sends ``first`` and then never reads while the bot talks, until ``dropped``."""

    def run() -> RawSocket:
        raw = raw_upgrade(port, path, headers, rcvbuf=4096)
        raw.send_text(first)
        return raw

    raw = await anyio.to_thread.run_sync(run)
    try:
        await dropped.wait()
    finally:
        raw.close()


async def attack_during_a_good_call(
    server: Server,
    attacks: Mapping[str, Callable[[Server], Awaitable[None]]],
    exchange: Callable[[], Awaitable[None]],
    trips: RoundTrips,
) -> None:
    """20 round trips of the good call (``exchange``), then each attack while it keeps talking, and one
    more round trip after each: the good call must never notice."""

    async def round_trip() -> None:
        began = time.perf_counter()
        await exchange()
        trips.add(time.perf_counter() - began)

    async def keep_talking(stop: anyio.Event) -> None:
        while not stop.is_set():
            await round_trip()

    for _ in range(20):
        await round_trip()
    for name, attack in attacks.items():
        stop = anyio.Event()
        with anyio.fail_after(ATTACK_SECONDS), trips.during(name):
            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_talking, stop)
                await attack(server)
                stop.set()
        with anyio.fail_after(ATTACK_SECONDS):
            await round_trip()  # the good call still works after the attack


# ---- Twilio ----------------------------------------------------------------------------------------

MZ = "MZ" + "0" * 32
LONG_CJK = "事" * 40  # 120 bytes of UTF-8: any reason quoting it is over the 123-byte limit


def start_frame(stream_sid: str = MZ, encoding: str = "audio/x-mulaw") -> str:
    call = FakeTwilioCall("ws://unused", stream_sid=stream_sid)
    message = call.start_message()
    message["start"]["mediaFormat"]["encoding"] = encoding
    return json.dumps(message)


def media_frame(stream_sid: str) -> str:
    payload = base64.b64encode(b"\xff" * 160).decode()
    media = {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}
    return json.dumps({"event": "media", "sequenceNumber": "2", "media": media, "streamSid": stream_sid})


TwilioAttack = Callable[[TwilioServer], Awaitable[None]]


def signed_headers(server: TwilioServer) -> list[tuple[str, str]]:
    return [("X-Twilio-Signature", twilio_signature(TOKEN, f"wss://127.0.0.1:{server.port}/media"))]


def twilio_frames(*frames: Frame) -> TwilioAttack:
    """A signed connection that sends ``frames``."""

    async def attack(server: TwilioServer) -> None:
        await closed_with_a_fitting_reason(server.port, "/media", signed_headers(server), frames)

    return attack


def twilio_refused(headers: Callable[[TwilioServer], list[tuple[str, str]]], status: int) -> TwilioAttack:
    async def attack(server: TwilioServer) -> None:
        await refused(server.port, "/media", headers(server), status)

    return attack


async def twilio_handler_exits(server: TwilioServer) -> None:
    """The app's handler raises SystemExit (argparse inside a handler does): only that call ends."""
    async with FakeTwilioCall(server.url, auth_token=TOKEN, call_sid="CAexit") as call:
        code, _ = await call.wait_closed()
    assert code == 1011


async def twilio_stops_reading(server: TwilioServer) -> None:
    """A connection that starts a call and then never reads while the bot talks: dropped, not buffered."""
    first = start_frame(stream_sid="MZslow")
    await stops_reading(server.port, "/media", signed_headers(server), first, SLOW_CALL_DROPPED)


async def twilio_unknown_event_flood(server: TwilioServer) -> None:
    async with FakeTwilioCall(server.url, auth_token=TOKEN, call_sid="CAflood") as call:
        for i in range(200):
            await call.send_json({"event": f"futureEvent{i}", "streamSid": call.stream_sid, "x": LONG_CJK})
        await call.stop()
        assert (await call.wait_closed())[0] == 1000


SLOW_CALL_DROPPED = anyio.Event()  # replaced per test run

TWILIO_ATTACKS: dict[str, TwilioAttack] = {
    "start with a multi-byte close reason": twilio_frames(start_frame(encoding=LONG_CJK)),
    "mid-call multi-byte close reason": twilio_frames(start_frame(), media_frame(LONG_CJK)),
    "pre-start unknown event, multi-byte": twilio_frames(
        json.dumps({"event": LONG_CJK}), start_frame(), "{bad"
    ),
    "malformed JSON": twilio_frames(start_frame(), '{"event": '),
    "deeply nested JSON": twilio_frames(start_frame(), "[" * 30_000 + "]" * 30_000),
    "binary garbage": twilio_frames(start_frame(), (0x2, os.urandom(512), None)),
    "invalid UTF-8 text": twilio_frames(start_frame(), b'{"event": "\xff\xfe"}'),
    "10 MB frame": twilio_frames(start_frame(), (0x1, b"{" * 1024, 10 * 2**20)),
    "unknown event flood": twilio_unknown_event_flood,
    "handler raises SystemExit": twilio_handler_exits,
    "peer stops reading": twilio_stops_reading,
    "unsigned upgrade": twilio_refused(lambda s: [], 403),
    "forged signature": twilio_refused(lambda s: [("X-Twilio-Signature", twilio_signature("x", s.url))], 403),
    "duplicate signature header": twilio_refused(lambda s: signed_headers(s) * 2, 403),
}


async def test_twilio_attacks_end_only_the_attacking_connection() -> None:
    global SLOW_CALL_DROPPED
    SLOW_CALL_DROPPED = anyio.Event()
    trips = RoundTrips()
    slow_reason: list[str] = []

    async def handler(stream: TwilioMediaStream) -> None:
        if stream.call_sid == "CAexit":
            raise SystemExit(2)
        if stream.stream_sid == "MZslow":
            try:
                while True:  # the bot talks; the peer never reads
                    await stream.send_audio(AudioChunk(FRAME_PCM8K * 50, 8000))
            except TwilioStreamClosed:
                slow_reason.append(await stream.wait_closed())
                SLOW_CALL_DROPPED.set()
            return
        marks = stream.played_marks()
        count = 0
        async for pcm in stream.audio_in():  # every caller frame answered with audio and a mark
            count += 1
            await stream.send_audio(AudioChunk(pcm, 8000))
            await stream.mark(f"m{count}")
            await anext(marks)

    async with TwilioServer(handler, auth_token=TOKEN, send_timeout=STALL_SECONDS) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN, call_sid="CAgood") as good:

            async def exchange() -> None:
                echoed = len(good.echoed_marks)
                await good.send_pcm(FRAME_PCM8K, 8000)
                await good.wait_until(lambda: len(good.echoed_marks) > echoed)

            await attack_during_a_good_call(server, TWILIO_ATTACKS, exchange, trips)
            assert not good.closed.is_set() and good.errors == []
            await good.stop()
            assert (await good.wait_closed())[0] == 1000
    assert slow_reason and "stopped reading" in slow_reason[0]
    print("\n" + trips.table("Twilio"))


# ---- web -------------------------------------------------------------------------------------------

WebAttack = Callable[[WebServer], Awaitable[None]]
HELLO = json.dumps({"type": "hello", "sample_rate": 16000})
WEB_STALLED = anyio.Event()


def web_headers(server: WebServer, origin: str | None = None) -> list[tuple[str, str]]:
    return [("Origin", origin or server.origin)]


def web_path(server: WebServer, token: str | None = None) -> str:
    return f"/ws?token={token or server.tokens.issue()}"


def web_frames(*frames: Frame) -> WebAttack:
    async def attack(server: WebServer) -> None:
        await closed_with_a_fitting_reason(server.port, web_path(server), web_headers(server), frames)

    return attack


def web_refused(
    headers: Callable[[WebServer], list[tuple[str, str]]],
    status: int,
    path: Callable[[WebServer], str] = web_path,
) -> WebAttack:
    async def attack(server: WebServer) -> None:
        await refused(server.port, path(server), headers(server), status)

    return attack


async def web_replayed_token(server: WebServer) -> None:
    token = server.tokens.issue()
    first = await anyio.to_thread.run_sync(
        raw_upgrade, server.port, web_path(server, token), web_headers(server)
    )
    first.close()
    again = await anyio.to_thread.run_sync(
        raw_upgrade, server.port, web_path(server, token), web_headers(server)
    )
    again.close()
    assert (first.status, again.status) == (101, 403)


async def web_rebinding(server: WebServer) -> None:
    def run() -> int:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=ATTACK_SECONDS)
        with sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: evil.test:{server.port}\r\n\r\n".encode())
            return int(sock.recv(64).split(b" ", 2)[1])

    assert await anyio.to_thread.run_sync(run) == 403


async def web_handler_exits(server: WebServer) -> None:
    async with await connect(server.ws_url(server.tokens.issue()), origin=server.origin) as client:  # type: ignore[arg-type]
        await client.send(json.dumps({"type": "hello", "sample_rate": 8000}))  # 8 kHz: the exiting one
        await client.recv()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def web_stops_reading(server: WebServer) -> None:
    first = json.dumps({"type": "hello", "sample_rate": 24000})  # 24 kHz: the talking one
    await stops_reading(server.port, web_path(server), web_headers(server), first, WEB_STALLED)


WEB_ATTACKS: dict[str, WebAttack] = {
    "pre-hello deeply nested JSON": web_frames("[" * 30_000 + "]" * 30_000),
    "deeply nested JSON": web_frames(HELLO, '{"type": "mark", "name": ' + "[" * 30_000 + "]" * 30_000 + "}"),
    "multi-byte unknown type": web_frames(HELLO, json.dumps({"type": LONG_CJK * 3})),
    "pre-hello multi-byte type": web_frames(json.dumps({"type": LONG_CJK * 3})),
    "malformed JSON": web_frames(HELLO, '{"type": '),
    "binary garbage (odd length)": web_frames(HELLO, (0x2, os.urandom(641), None)),
    "invalid UTF-8 text": web_frames(HELLO, b'{"type": "\xff\xfe"}'),
    "10 MB frame": web_frames(HELLO, (0x2, b"\x00" * 1024, 10 * 2**20)),
    "handler raises SystemExit": web_handler_exits,
    "peer stops reading": web_stops_reading,
    "foreign Origin": web_refused(lambda s: web_headers(s, "http://evil.test"), 403),
    "no Origin": web_refused(lambda s: [], 403),
    "DNS rebinding (Host: evil.test)": web_rebinding,
    "token for another path": web_refused(web_headers, 403, lambda s: web_path(s, s.tokens.issue("/other"))),
    "replayed token": web_replayed_token,
}


async def test_web_attacks_end_only_the_attacking_session() -> None:
    global WEB_STALLED
    WEB_STALLED = anyio.Event()
    trips = RoundTrips()
    stalled_reason: list[str] = []

    async def handler(session: WebSession) -> None:
        if session.input_sample_rate == 8000:
            raise SystemExit(2)
        if session.input_sample_rate == 24000:
            try:
                while True:
                    await session.send_audio(AudioChunk(FRAME_PCM16K * 50, 24000))
            except SessionClosedError as exc:
                stalled_reason.append(str(exc))
                WEB_STALLED.set()
            return
        marks = session.played_marks()
        count = 0
        async for pcm in session.audio_in():
            count += 1
            await session.send_audio(AudioChunk(pcm, session.input_sample_rate))
            await session.mark(f"m{count}")
            await anext(marks)

    async with WebServer(handler, send_timeout=STALL_SECONDS) as server:
        good: ClientConnection
        async with await connect(server.ws_url(server.tokens.issue()), origin=server.origin) as good:  # type: ignore[arg-type]
            await good.send(HELLO)
            assert json.loads(await good.recv())["type"] == "ready"

            async def exchange() -> None:
                await good.send(FRAME_PCM16K)
                assert await good.recv() == FRAME_PCM16K
                mark = json.loads(await good.recv())
                await good.send(json.dumps({"type": "mark", "name": mark["name"]}))

            await attack_during_a_good_call(server, WEB_ATTACKS, exchange, trips)
    assert stalled_reason and "stopped reading" in stalled_reason[0]
    print("\n" + trips.table("web"))


# ---- the shared helper -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "plain", "事" * 40, "é" * 100, "a" * 122 + "事", "\ud800 lone surrogate"]
)
def test_close_reason_fits_a_close_frame_on_a_character_boundary(text: str) -> None:
    cut = close_reason(text)
    raw = cut.encode("utf-8")
    assert len(raw) <= MAX_CLOSE_REASON_BYTES
    assert text.startswith(cut) or "\ud800" in text
    if len(text.encode("utf-8", "replace")) <= MAX_CLOSE_REASON_BYTES:
        assert cut == text.encode("utf-8", "replace").decode()
