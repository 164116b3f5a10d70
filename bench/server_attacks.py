"""Servers under attack: a good call's round trips while hostile connections flood the server, and how
long a peer that stops reading is kept.

    python -m bench.server_attacks [--seconds 3] [--attackers 8]

For the Twilio and the web server on 127.0.0.1: a good call round-trips 20 ms of caller audio (in ->
the bot echoes it with a mark -> the mark comes back) continuously, first alone, then while
``attackers`` threads open hostile connections back to back for ``seconds`` (multi-byte close reasons,
deep JSON, invalid UTF-8, 10 MB frame headers, garbage, unsigned or foreign-origin upgrades). Then a
peer that never reads while the bot talks, at the default send deadline: time until it is dropped,
and the bytes the server held for it. The figures are in docs/reliability.md ("Servers").
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import multiprocessing
import statistics
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from websockets.asyncio.client import connect

from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer, TwilioStreamClosed
from voiceagent.adapters.web import SessionClosedError, TokenSigner, WebServer, WebSession
from voiceagent.testing.raw_websocket import RawSocket, raw_upgrade
from voiceagent.testing.twilio_client import FakeTwilioCall, twilio_signature
from voiceagent.tts import AudioChunk
from voiceagent.ws_safety import DEFAULT_SEND_TIMEOUT

TOKEN = "bench-auth-token"
FRAME_PCM8K = struct.pack("<160h", *(int(6000 * math.sin(i / 3)) for i in range(160)))
FRAME_PCM16K = FRAME_PCM8K * 2
CJK = "事" * 40
DEEP = "[" * 30_000 + "]" * 30_000


@dataclass
class Figures:
    server: str
    baseline_ms: list[float]
    flood_ms: list[float]
    attacks: int
    drop_seconds: float
    held_bytes: int


def _start(stream_sid: str, encoding: str = "audio/x-mulaw") -> str:
    message = FakeTwilioCall("ws://x", stream_sid=stream_sid).start_message()
    message["start"]["mediaFormat"]["encoding"] = encoding
    return json.dumps(message)


def _media(stream_sid: str) -> str:
    media = {
        "track": "inbound",
        "chunk": "1",
        "timestamp": "0",
        "payload": base64.b64encode(b"\xff" * 160).decode(),
    }
    return json.dumps({"event": "media", "sequenceNumber": "2", "media": media, "streamSid": stream_sid})


Attack = Callable[[int], None]  # blocking; given the port


def _frames_attack(
    path: Callable[[], str], headers: Callable[[int], list[tuple[str, str]]], *frames: object
) -> Attack:
    def attack(port: int) -> None:
        raw = raw_upgrade(port, path(), headers(port), timeout=10)
        try:
            if raw.status != 101:
                return
            for frame in frames:
                if isinstance(frame, tuple):
                    raw.send_frame(frame[0], frame[1], claimed_length=frame[2])
                else:
                    raw.send_text(frame)  # type: ignore[arg-type]
            raw.read_close()
        finally:
            raw.close()

    return attack


SECRET = b"bench-web-token-secret-0123456789"


def _attacks(kind: str, port: int) -> list[Attack]:
    """The hostile connections, built in the attacking process (they hold closures)."""
    if kind == "twilio":

        def signed(port: int) -> list[tuple[str, str]]:
            return [("X-Twilio-Signature", twilio_signature(TOKEN, f"wss://127.0.0.1:{port}/media"))]

        mz = "MZ" + "0" * 32
        return [
            _frames_attack(lambda: "/media", signed, _start(mz, CJK)),
            _frames_attack(lambda: "/media", signed, _start(mz), _media(CJK)),
            _frames_attack(lambda: "/media", signed, _start(mz), DEEP),
            _frames_attack(lambda: "/media", signed, _start(mz), b'{"event": "\xff"}'),
            _frames_attack(lambda: "/media", signed, _start(mz), (0x1, b"{" * 1024, 10 * 2**20)),
            _frames_attack(lambda: "/media", lambda port: [], _start(mz)),  # unsigned: 403
            _frames_attack(
                lambda: "/media", lambda port: signed(port) * 2, _start(mz)
            ),  # two signatures: 403
        ]
    tokens = TokenSigner(SECRET)
    hello = json.dumps({"type": "hello", "sample_rate": 16000})

    def path() -> str:
        return f"/ws?token={tokens.issue()}"

    def own(port: int) -> list[tuple[str, str]]:
        return [("Origin", f"http://127.0.0.1:{port}")]

    return [
        _frames_attack(path, own, DEEP),
        _frames_attack(path, own, hello, json.dumps({"type": CJK * 3})),
        _frames_attack(path, own, hello, b'{"type": "\xff"}'),
        _frames_attack(path, own, hello, (0x2, b"\x00" * 1024, 10 * 2**20)),
        _frames_attack(path, own, hello, (0x2, b"\x00" * 641, None)),
        _frames_attack(path, lambda port: [("Origin", "http://evil.test")], hello),  # 403
        _frames_attack(lambda: "/ws?token=v2.1.x.y", own, hello),  # 403
    ]


def _flood(kind: str, port: int, stop: Any, count: Any) -> None:
    """One attacking process (so its CPU is not the server's GIL): hostile connections back to back."""
    attacks = _attacks(kind, port)
    i = 0
    while not stop.is_set():
        try:
            attacks[i % len(attacks)](port)
        except OSError:
            pass
        with count.get_lock():
            count.value += 1
        i += 1


async def _measure(
    round_trip: Callable[[], Awaitable[None]], kind: str, port: int, seconds: float, attackers: int
) -> tuple[list[float], list[float], int]:
    async def timed() -> float:
        began = time.perf_counter()
        await round_trip()
        return (time.perf_counter() - began) * 1000

    baseline = [await timed() for _ in range(300)]
    context = multiprocessing.get_context("spawn")
    stop, count = context.Event(), context.Value("i", 0)
    processes = [context.Process(target=_flood, args=(kind, port, stop, count)) for _ in range(attackers)]
    for process in processes:
        process.start()
    flood: list[float] = []
    try:
        while count.value == 0:  # the attackers are up (spawn takes a moment)
            await timed()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            flood.append(await timed())
    finally:
        stop.set()
        for process in processes:
            await anyio.to_thread.run_sync(process.join, 10)
    return baseline, flood, int(count.value)


async def twilio(seconds: float, attackers: int) -> Figures:
    dropped = anyio.Event()
    held: list[int] = []
    stall: list[float] = []

    async def handler(stream: TwilioMediaStream) -> None:
        if stream.stream_sid == "MZslow":
            began = time.perf_counter()
            try:
                while True:
                    held[:] = [stream._ws.transport.get_write_buffer_size()]
                    await stream.send_audio(AudioChunk(FRAME_PCM8K * 50, 8000))
            except TwilioStreamClosed:
                stall.append(time.perf_counter() - began)
                dropped.set()
            return
        marks, count = stream.played_marks(), 0
        async for pcm in stream.audio_in():
            count += 1
            await stream.send_audio(AudioChunk(pcm, 8000))
            await stream.mark(f"m{count}")
            await anext(marks)

    def signed(port: int) -> list[tuple[str, str]]:
        return [("X-Twilio-Signature", twilio_signature(TOKEN, f"wss://127.0.0.1:{port}/media"))]

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN, call_sid="CAgood") as good:

            async def round_trip() -> None:
                echoed = len(good.echoed_marks)
                await good.send_pcm(FRAME_PCM8K, 8000)
                await good.wait_until(lambda: len(good.echoed_marks) > echoed)

            baseline, flood, count = await _measure(round_trip, "twilio", server.port, seconds, attackers)

            def slow() -> RawSocket:
                raw = raw_upgrade(server.port, "/media", signed(server.port), rcvbuf=4096)
                raw.send_text(_start("MZslow"))
                return raw

            raw = await anyio.to_thread.run_sync(slow)
            with anyio.fail_after(DEFAULT_SEND_TIMEOUT * 4):
                await dropped.wait()
            raw.close()
            await good.stop()
    return Figures("Twilio", baseline, flood, count, stall[0], held[0])


async def web(seconds: float, attackers: int) -> Figures:
    dropped = anyio.Event()
    held: list[int] = []
    stall: list[float] = []

    async def handler(session: WebSession) -> None:
        if session.input_sample_rate == 24000:
            began = time.perf_counter()
            try:
                while True:
                    held[:] = [session._ws.transport.get_write_buffer_size()]
                    await session.send_audio(AudioChunk(FRAME_PCM16K * 50, 24000))
            except SessionClosedError:
                stall.append(time.perf_counter() - began)
                dropped.set()
            return
        marks, count = session.played_marks(), 0
        async for pcm in session.audio_in():
            count += 1
            await session.send_audio(AudioChunk(pcm, session.input_sample_rate))
            await session.mark(f"m{count}")
            await anext(marks)

    hello = json.dumps({"type": "hello", "sample_rate": 16000})
    async with WebServer(handler, secret=SECRET) as server:

        def path() -> str:
            return f"/ws?token={server.tokens.issue()}"

        def own(port: int) -> list[tuple[str, str]]:
            return [("Origin", server.origin)]

        async with await connect(server.ws_url(server.tokens.issue()), origin=server.origin) as good:  # type: ignore[arg-type]
            await good.send(hello)
            await good.recv()

            async def round_trip() -> None:
                await good.send(FRAME_PCM16K)
                await good.recv()
                mark = json.loads(await good.recv())
                await good.send(json.dumps({"type": "mark", "name": mark["name"]}))

            baseline, flood, count = await _measure(round_trip, "web", server.port, seconds, attackers)

            def slow() -> RawSocket:
                raw = raw_upgrade(server.port, path(), own(server.port), rcvbuf=4096)
                raw.send_text(json.dumps({"type": "hello", "sample_rate": 24000}))
                return raw

            raw = await anyio.to_thread.run_sync(slow)
            with anyio.fail_after(DEFAULT_SEND_TIMEOUT * 4):
                await dropped.wait()
            raw.close()
    return Figures("web", baseline, flood, count, stall[0], held[0])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def render(figures: list[Figures], seconds: float, attackers: int) -> str:
    lines = [
        f"good call round trip (ms), alone and during {seconds:g} s of {attackers} attackers",
        "server | alone p50 / p99 | under attack p50 / p99 / max | round trips | hostile connections "
        "| non-reading peer dropped after | bytes held for it",
    ]
    for f in figures:
        lines.append(
            f"{f.server} | {statistics.median(f.baseline_ms):.2f} / {_pct(f.baseline_ms, 0.99):.2f} "
            f"| {statistics.median(f.flood_ms):.2f} / {_pct(f.flood_ms, 0.99):.2f} / {max(f.flood_ms):.1f} "
            f"| {len(f.flood_ms)} | {f.attacks} | {f.drop_seconds:.2f} s | {f.held_bytes}"
        )
    return "\n".join(lines)


async def run(seconds: float, attackers: int) -> str:
    return render([await twilio(seconds, attackers), await web(seconds, attackers)], seconds, attackers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--attackers", type=int, default=8)
    args = parser.parse_args(argv)
    print(anyio.run(run, args.seconds, args.attackers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
