"""What a Lightning barge-in costs: the cancel itself, and the next turn's first audio.

``python -m bench.lightning_cancel [--rtt-ms 50] [--reps 15]``

The documented Lightning API has no cancel message, so a barge-in during a request retires the
WebSocket. ``FakeLightningServer`` sits behind a TCP proxy that delays every byte by half the RTT each
way (latency only; the fake answers at once), so a WebSocket upgrade, a close handshake and a request's
first byte each cost about one RTT, as on a real network. Contenders, interleaved in every repetition:

- **sequential** (the sink before 2026-12-02): ``cancel()`` awaited the old socket's close handshake,
  then started the reconnect; the output was cleared only after the close.
- **overlapped** (now): ``cancel()`` returns at once (the output is cleared), the close and the new
  connection run together in the background, and the next request waits only for what is left of them.

Measured from the barge-in (``cancel()`` called while a request is in flight): until the output is
cleared, and from the start of the next turn to its first audio; the next turn starts either as soon
as ``cancel()`` returns (a worst case) or 300 ms after the barge-in (the caller's interruption is
usually longer than that). Reference: the first audio of a turn on a warm socket.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import SocketStream

from bench.stats import summarize
from voiceagent.adapters.lightning import LightningSink, account_limiter
from voiceagent.adapters.lightning.websocket import LightningEngine, _close
from voiceagent.audio_output import CollectingOutput
from voiceagent.speaker import Speaker
from voiceagent.testing.lightning_server import FakeLightningServer
from voiceagent.tts import AudioChunk

KEY = "bench-key"
TEXT = "I can help you with that booking today."
PAUSE = 0.3


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that delivers each direction's bytes ``one_way`` seconds late, in order."""

    def __init__(self, upstream_port: int, one_way: float) -> None:
        self.upstream_port = upstream_port
        self.one_way = one_way
        self.port = 0

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._handle)

    async def _handle(self, client: SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.upstream_port) as upstream:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pipe, client, upstream, tg.cancel_scope)
                tg.start_soon(self._pipe, upstream, client, tg.cancel_scope)

    async def _pipe(self, source: SocketStream, sink: SocketStream, scope: anyio.CancelScope) -> None:
        send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](1000)

        async def deliver() -> None:
            async for due, data in receive:
                await anyio.sleep(max(due - anyio.current_time(), 0))
                await sink.send(data)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(deliver)
                async with send:
                    async for data in source:
                        await send.send((anyio.current_time() + self.one_way, data))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()  # one side closed: close both


class ProbeOutput(CollectingOutput):
    """Records when audio is first written after ``arm()``, and when the output is cleared."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self.armed = anyio.Event()
        self.first_audio_at = 0.0
        self.cleared_at = 0.0

    def arm(self) -> None:
        self.armed = anyio.Event()

    async def write(self, chunk: AudioChunk) -> None:
        if not self.armed.is_set():
            self.first_audio_at = time.perf_counter()
            self.armed.set()
        await super().write(chunk)

    async def clear(self) -> None:
        self.cleared_at = time.perf_counter()
        await super().clear()


class SequentialCancelEngine(LightningEngine):  # type: ignore[misc]  # (mypy sees adapters as Any)
    """The barge-in as it was: wait for the close handshake, then reconnect in the background."""

    async def interrupt(self) -> None:
        conn = self._conn  # type: ignore[has-type]
        if conn is None or not conn.in_request or self._tg is None:
            return
        conn.dead = True
        self._conn = None
        await _close(conn)
        self._tg.start_soon(self._reconnect_quietly)


@dataclass
class Samples:
    clear: list[float] = field(default_factory=list)
    next_audio: list[float] = field(default_factory=list)
    after_pause: list[float] = field(default_factory=list)


async def barge_in(
    server: FakeLightningServer, sink: Speaker, out: ProbeOutput, pause: float
) -> tuple[float, float]:
    """(seconds to the output clear, seconds to the next turn's first audio), from the barge-in."""
    server.first_byte_gate = anyio.Event()
    started = server.requests_started
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.speak, TEXT)
        await server.wait_until(lambda: server.requests_started > started)
        t0 = time.perf_counter()
        await sink.cancel()
    server.first_byte_gate.set()
    server.first_byte_gate = None
    # The caller's pause starts at the barge-in, not when cancel() returns.
    await anyio.sleep(max(t0 + pause - time.perf_counter(), 0))
    starts = max(t0 + pause, time.perf_counter())
    out.arm()
    await sink.speak(TEXT)
    # At once: from the barge-in (the close/reconnect are on this path). After a pause: from the turn's start.
    return out.cleared_at - t0, out.first_audio_at - (starts if pause else t0)


async def warm_first_audio(sink: Speaker, out: ProbeOutput) -> float:
    await sink.speak("Warming up.")
    out.arm()
    t0 = time.perf_counter()
    await sink.speak(TEXT)
    return out.first_audio_at - t0


async def measure(rtt: float, reps: int) -> dict[str, Any]:
    results: dict[str, Samples] = {"sequential": Samples(), "overlapped": Samples()}
    warm: list[float] = []
    async with FakeLightningServer(api_key=KEY, seconds_per_char=0.005) as server:
        port = int(server.ws_url.split(":")[2].split("/")[0])
        proxy = DelayProxy(port, rtt / 2)
        async with anyio.create_task_group() as tg:
            await tg.start(proxy.serve)
            url = f"ws://127.0.0.1:{proxy.port}/waves/v1/tts/live"
            makers: dict[str, Callable[[ProbeOutput], Speaker]] = {
                "sequential": lambda out: Speaker(
                    SequentialCancelEngine(api_key=KEY, url=url, keepalive_interval=None, check_voice=False),
                    out,
                    limiter=account_limiter(KEY),
                ),
                "overlapped": lambda out: LightningSink(
                    out, api_key=KEY, url=url, keepalive_interval=None, check_voice=False
                ),
            }
            for _ in range(reps):
                for name, make in makers.items():
                    out = ProbeOutput(24000)
                    async with make(out) as sink:
                        if name == "overlapped":
                            warm.append(await warm_first_audio(sink, out))
                        clear, next_audio = await barge_in(server, sink, out, 0.0)
                        _, after_pause = await barge_in(server, sink, out, PAUSE)
                    results[name].clear.append(clear)
                    results[name].next_audio.append(next_audio)
                    results[name].after_pause.append(after_pause)
            tg.cancel_scope.cancel()
    return {"rtt": rtt, "reps": reps, "warm": warm, "results": results}


def report(data: dict[str, Any]) -> str:
    ms = 1000.0
    warm = summarize([x * ms for x in data["warm"]])
    lines = [
        f"RTT {data['rtt'] * ms:.0f} ms through the delay proxy, {data['reps']} repetitions, "
        "median (min–max), ms",
        "",
        "| measure | sequential (before) | overlapped (now) |",
        "|---|---|---|",
    ]
    rows = [
        ("barge-in to the output cleared", "clear"),
        ("barge-in to the next turn's first audio (the turn starts when cancel() returns)", "next_audio"),
        (
            f"next turn's start to its first audio (it starts {PAUSE * ms:.0f} ms after the barge-in)",
            "after_pause",
        ),
    ]
    for label, attr in rows:
        cells = [
            summarize([x * ms for x in getattr(data["results"][n], attr)]).fmt(digits=1)
            for n in data["results"]
        ]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines.append(f"| (reference: first audio on a warm socket) | | {warm.fmt(digits=1)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    data = anyio.run(measure, args.rtt_ms / 1000, args.reps)
    print(report(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
