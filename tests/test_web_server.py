"""WebServer over real loopback sockets, with the websockets client standing in for the browser."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voiceagent.adapters.web import SessionClosedError, WebServer, WebSession
from voiceagent.transport import TextDisplay, Transport
from voiceagent.tts import AudioChunk

FRAME = bytes(range(256)) * 2 + b"\x00\x01" * 64  # 640 bytes: 20 ms at 16 kHz


@asynccontextmanager
async def running(
    handler: Callable[[WebSession], Awaitable[None]], **options: Any
) -> AsyncIterator[WebServer]:
    async with WebServer(handler, secret=b"k" * 32, **options) as server:
        yield server


async def open_client(server: WebServer, *, hello: bool = True) -> ClientConnection:
    client = await connect(server.ws_url(server.tokens.issue()), origin=server.origin)
    if hello:
        await client.send(json.dumps({"type": "hello", "sample_rate": 16000}))
        ready = json.loads(await client.recv())
        assert ready["type"] == "ready"
        assert ready["sample_rate"] == 16000
    return client


async def closed_code(client: ClientConnection) -> tuple[int | None, str]:
    """Read until the server closes; return the close code and reason it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.recv()
    frame = closed.value.rcvd or closed.value.sent
    return (frame.code, frame.reason) if frame else (None, "")


async def echo_bot(session: WebSession) -> None:
    async for pcm in session.audio_in():
        await session.send_audio(AudioChunk(pcm, session.input_sample_rate))


def http_get(url: str | urllib.request.Request) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@pytest.mark.anyio
async def test_page_and_scripts_are_served_with_a_valid_token() -> None:
    async with running(echo_bot) as server:
        status, headers, page = await anyio.to_thread.run_sync(http_get, server.url)
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Cache-Control"] == "no-store"
        token = page.split('name="voiceagent-token" content="', 1)[1].split('"', 1)[0]
        server.tokens.check(token)
        for script in ("client.js", "capture-worklet.js"):
            status, headers, body = await anyio.to_thread.run_sync(http_get, server.url + script)
            assert status == 200
            assert headers["Content-Type"].startswith("text/javascript")
            assert "voiceagent" in body
        status, _, _ = await anyio.to_thread.run_sync(http_get, server.url + "secrets.txt")
        assert status == 404


@pytest.mark.anyio
async def test_upgrade_needs_a_genuine_unexpired_token() -> None:
    offset = [0.0]
    handled: list[WebSession] = []

    async def handler(session: WebSession) -> None:
        handled.append(session)

    async with running(handler, token_ttl=30, clock=lambda: time.time() + offset[0]) as server:
        base = f"ws://127.0.0.1:{server.port}/ws"
        with pytest.raises(InvalidStatus) as missing:
            await connect(base, origin=server.origin)
        assert missing.value.response.status_code == 401

        forged = WebServer(handler, secret=b"other" * 8).tokens.issue()
        with pytest.raises(InvalidStatus) as bad:
            await connect(f"{base}?token={forged}", origin=server.origin)
        assert bad.value.response.status_code == 403
        assert b"signature" in bad.value.response.body

        token = server.tokens.issue()
        offset[0] = 31
        with pytest.raises(InvalidStatus) as expired:
            await connect(f"{base}?token={token}", origin=server.origin)
        assert expired.value.response.status_code == 403
        assert b"expired" in expired.value.response.body

        offset[0] = 0
        async with await open_client(server):
            pass
        assert server.rejected_upgrades == 3
        assert len(handled) <= 1  # only the genuine one ever reached the handler


@pytest.mark.anyio
async def test_audio_marks_clear_and_display_messages_round_trip() -> None:
    received: list[bytes] = []
    got_audio = anyio.Event()
    done = anyio.Event()
    results: dict[str, Any] = {}

    async def handler(session: WebSession) -> None:
        results["is_transport"] = isinstance(session, Transport)
        results["shows_text"] = isinstance(session, TextDisplay)
        audio = session.audio_in()
        received.append(await anext(audio))
        received.append(await anext(audio))
        got_audio.set()
        await session.send_audio(AudioChunk(b"\x00\x10" * 2400, 24000))  # 100 ms at 24 kHz
        await session.mark("m1")
        await session.send_transcript("hello", is_final=True)
        await session.send_agent_text("hi there", final=False)
        results["pending"] = session.pending_marks
        results["played"] = await anext(session.played_marks())
        await session.mark("m2")
        await session.clear()
        results["cleared"] = await session.wait_playback(lambda s: s.event == "cleared")
        results["pending_after_clear"] = session.pending_marks
        done.set()
        await anyio.sleep_forever()  # the browser leaving ends the session

    async with running(handler) as server, await open_client(server) as client:
        await client.send(FRAME)
        await client.send(FRAME[::-1])
        await got_audio.wait()
        assert received == [FRAME, FRAME[::-1]]

        audio = b""
        while isinstance(frame := await client.recv(), bytes):  # the resampler's tail comes before the mark
            audio += frame
        assert abs(len(audio) // 2 - 1600) <= 2  # resampled to the browser's 16 kHz
        assert json.loads(frame) == {"type": "mark", "name": "m1"}
        assert json.loads(await client.recv()) == {"type": "transcript", "text": "hello", "is_final": True}
        assert json.loads(await client.recv()) == {"type": "agent_text", "text": "hi there", "final": False}
        await client.send(json.dumps({"type": "mark", "name": "m1"}))
        assert json.loads(await client.recv()) == {"type": "mark", "name": "m2"}
        assert json.loads(await client.recv()) == {"type": "clear"}
        await client.send(
            json.dumps(
                {
                    "type": "state",
                    "event": "cleared",
                    "playing": False,
                    "queued_ms": 0,
                    "dropped_marks": ["m2"],
                }
            )
        )
        await done.wait()
    assert results["is_transport"] and results["shows_text"]
    assert results["pending"] == ["m1"]
    assert results["played"] == "m1"
    assert results["cleared"].dropped_marks == ("m2",)
    assert results["pending_after_clear"] == []


@pytest.mark.anyio
async def test_the_output_reads_the_sessions_one_mark_ledger() -> None:
    """Marks are counted once: the session's ledger, which its output reads. A mark pending when the
    server cleared counts as not heard, whether the page reports it played (it was playing as the clear
    arrived) or dropped; only a mark that played before any clear is a played mark."""
    results: dict[str, Any] = {}
    done = anyio.Event()

    async def handler(session: WebSession) -> None:
        output = session.output
        await output.write(AudioChunk(b"\x00\x10" * 1600, 16000))  # 100 ms, then its mark va-1
        await session.mark("m2")
        marks = session.played_marks()
        results["played"] = [await anext(marks)]
        await output.clear()
        await session.wait_playback(lambda s: s.event == "cleared")
        results["heard"] = output.played_seconds
        results["pending"] = session.pending_marks
        with anyio.move_on_after(0.2):  # nothing more is a played mark (m2 was pending at the clear)
            results["played"].append(await anext(marks))
        done.set()
        await anyio.sleep_forever()

    async with running(handler) as server, await open_client(server) as client:
        while isinstance(frame := await client.recv(), bytes):
            pass
        assert json.loads(frame) == {"type": "mark", "name": "va-1"}
        assert json.loads(await client.recv()) == {"type": "mark", "name": "m2"}
        await client.send(json.dumps({"type": "mark", "name": "va-1"}))
        assert json.loads(await client.recv()) == {"type": "clear"}
        await client.send(json.dumps({"type": "mark", "name": "m2"}))  # it played as the clear came
        cleared = {"type": "state", "event": "cleared", "playing": False, "queued_ms": 0, "dropped_marks": []}
        await client.send(json.dumps(cleared))
        await done.wait()
    assert results["played"] == ["va-1"]
    assert results["heard"] == pytest.approx(0.1)
    assert results["pending"] == []


@pytest.mark.anyio
async def test_a_page_that_drops_a_mark_no_clear_dropped_breaks_the_protocol() -> None:
    async def handler(session: WebSession) -> None:
        await session.mark("m1")
        await anyio.sleep_forever()

    async with running(handler) as server, await open_client(server) as client:
        assert json.loads(await client.recv()) == {"type": "mark", "name": "m1"}
        dropped = {
            "type": "state",
            "event": "cleared",
            "playing": False,
            "queued_ms": 0,
            "dropped_marks": ["m1"],
        }
        await client.send(json.dumps(dropped))
        code, reason = await closed_code(client)
    assert code == 1008 and "never cleared" in reason


BAD_INPUTS: list[tuple[str, bool, Callable[[ClientConnection], Awaitable[None]], int, str]] = [
    ("garbage text", True, lambda c: c.send("\x00\xffnot json"), 1008, "not JSON"),
    ("unknown type", True, lambda c: c.send('{"type":"dance"}'), 1008, "unknown message type"),
    ("odd-length audio", True, lambda c: c.send(b"\x01\x02\x03"), 1008, "not PCM16"),
    ("empty audio", True, lambda c: c.send(b""), 1008, "not PCM16"),
    ("oversized frame", True, lambda c: c.send(b"\x00" * (64 * 1024 + 2)), 1009, "exceeds limit"),
    ("unsent mark", True, lambda c: c.send('{"type":"mark","name":"x"}'), 1008, "never sent"),
    ("second hello", True, lambda c: c.send('{"type":"hello","sample_rate":16000}'), 1008, "duplicate hello"),
    ("audio before hello", False, lambda c: c.send(FRAME), 1008, "not audio"),
    ("bad hello", False, lambda c: c.send('{"type":"hello","sample_rate":3}'), 1008, "sample_rate"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("hello", "misbehave", "code", "reason"),
    [case[1:] for case in BAD_INPUTS],
    ids=[c[0] for c in BAD_INPUTS],
)
async def test_bad_input_closes_only_that_session(
    hello: bool,
    misbehave: Callable[[ClientConnection], Awaitable[None]],
    code: int,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voiceagent")
    async with running(echo_bot) as server, await open_client(server) as good:
        bad = await open_client(server, hello=hello)
        await misbehave(bad)
        sent_code, sent_reason = await closed_code(bad)
        assert sent_code == code
        assert reason in sent_reason or code == 1009

        await good.send(FRAME)  # the well-behaved session carries on
        assert await good.recv() == FRAME
        closed_logs = [r for r in caplog.records if "session closed" in r.getMessage()]
        assert closed_logs and reason in closed_logs[-1].getMessage()
        assert closed_logs[-1].levelno == logging.WARNING
        assert closed_logs[-1].session.startswith("web-")  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_abrupt_disconnect_cancels_the_handler_and_spares_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voiceagent")
    entered = anyio.Event()
    cancelled = anyio.Event()

    async def handler(session: WebSession) -> None:
        if entered.is_set():
            await echo_bot(session)
            return
        entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with running(handler) as server:
        doomed = await open_client(server)
        await entered.wait()
        async with await open_client(server) as good:
            doomed.transport.abort()  # no close frame: the network just went away
            with anyio.fail_after(10):  # bounded: an unnoticed abort fails instead of hanging
                await cancelled.wait()
            await good.send(FRAME)
            assert await good.recv() == FRAME
    assert any("connection failed" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_disconnect_is_noticed_while_the_app_is_not_reading_audio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voiceagent")
    entered = anyio.Event()
    cancelled = anyio.Event()
    session_closed = anyio.Event()

    class Notice(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("session closed"):
                session_closed.set()

    notice = Notice()
    logging.getLogger("voiceagent").addHandler(notice)

    async def handler(session: WebSession) -> None:
        entered.set()
        try:
            await anyio.sleep_forever()  # never reads audio_in(): the reader backs up
        finally:
            cancelled.set()

    # Bounded: a regression (the close goes unnoticed) fails here instead of hanging until pytest's timeout.
    try:
        with anyio.fail_after(10):
            async with running(handler, audio_buffer_frames=2) as server:
                client = await open_client(server)
                await entered.wait()
                for _ in range(10):
                    await client.send(FRAME)
                await client.close()
                await cancelled.wait()
                await session_closed.wait()  # its own close step, still before the shutdown
    finally:
        logging.getLogger("voiceagent").removeHandler(notice)
    closed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("session closed")]
    # The browser's close ended the session, not the server's shutdown at the end of the block.
    assert closed == [closed[0]] and "browser closed the connection" in closed[0], closed


@pytest.mark.anyio
async def test_handler_crash_closes_1011_and_sends_fail_after_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voiceagent")
    sessions: list[WebSession] = []

    async def handler(session: WebSession) -> None:
        sessions.append(session)
        if len(sessions) == 1:
            raise RuntimeError("bug in the app")
        await echo_bot(session)

    async with running(handler) as server:
        crashing = await open_client(server)
        assert await closed_code(crashing) == (1011, "internal error")
        async with await open_client(server) as good:
            await good.send(FRAME)
            assert await good.recv() == FRAME
        with pytest.raises(SessionClosedError):
            await sessions[0].send_audio(AudioChunk(FRAME, 16000))
    assert any(r.exc_info and "bug in the app" in str(r.exc_info[1]) for r in caplog.records)


@pytest.mark.anyio
async def test_silent_client_is_closed_after_the_hello_timeout() -> None:
    async with running(echo_bot, hello_timeout=0.2) as server:
        client = await open_client(server, hello=False)
        assert await closed_code(client) == (1008, "no hello in time")


@pytest.mark.anyio
async def test_stopping_the_server_ends_every_session(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voiceagent")
    ended: list[str] = []

    async def handler(session: WebSession) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            ended.append(session.id)

    async with running(handler) as server:
        clients = [await open_client(server) for _ in range(3)]
        await anyio.wait_all_tasks_blocked()
        assert server.active_sessions == 3
    for client in clients:
        code, _ = await closed_code(client)
        assert code == 1001
    assert len(ended) == 3
    assert sum("server shutting down" in r.getMessage() for r in caplog.records) == 3


def as_host(host: str, url: str) -> tuple[str, socket.socket]:
    """``url`` rewritten to name ``host`` (sent as Host), with a socket that still reaches the server:
    a browser whose DNS answered 127.0.0.1 for ``host`` (DNS rebinding) looks exactly like this."""
    parts = urllib.parse.urlsplit(url)
    assert parts.port is not None
    sock = socket.create_connection(("127.0.0.1", parts.port))
    return parts._replace(netloc=f"{host}:{parts.port}").geturl(), sock


async def upgrade_status(url: str, **options: Any) -> int:
    """The HTTP status of a refused upgrade (fails the test if the upgrade is accepted)."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **options):
            pass
    return refused.value.response.status_code


@pytest.mark.anyio
async def test_upgrade_is_refused_for_a_foreign_origin_or_host() -> None:
    handled: list[WebSession] = []

    async def handler(session: WebSession) -> None:
        handled.append(session)

    async with running(handler, allowed_origins=["https://app.example.com"]) as server:

        def url() -> str:
            return server.ws_url(server.tokens.issue())

        # Another site's page opening a session in the visitor's browser (cross-site WebSocket hijack).
        assert await upgrade_status(url(), origin="http://evil.test") == 403
        assert await upgrade_status(url(), origin="null") == 403
        assert await upgrade_status(url()) == 403  # no Origin at all
        assert await upgrade_status(url(), origin=f"http://127.0.0.1:{server.port + 1}") == 403
        assert await upgrade_status(url(), additional_headers=[("Origin", server.origin)] * 2) == 403
        # DNS rebinding: evil.test resolves to 127.0.0.1, so Origin and Host both say evil.test.
        evil_url, sock = as_host("evil.test", url())
        assert await upgrade_status(evil_url, sock=sock, origin=f"http://evil.test:{server.port}") == 403
        assert server.rejected_upgrades == 6
        # The page itself is not served on an unexpected Host either (it would leak a token).
        request = urllib.request.Request(server.url, headers={"Host": f"evil.test:{server.port}"})
        status, _, body = await anyio.to_thread.run_sync(http_get, request)
        assert status == 403 and "voiceagent-token" not in body

        for origin in (server.origin, f"https://127.0.0.1:{server.port}", "https://app.example.com"):
            async with connect(url(), origin=origin):  # type: ignore[arg-type]
                pass
        local_url, sock = as_host("localhost", url())
        async with connect(local_url, sock=sock, origin=f"http://localhost:{server.port}"):  # type: ignore[arg-type]
            pass
    assert len(handled) <= 4


@pytest.mark.anyio
async def test_a_named_host_must_be_allowed_explicitly() -> None:
    async with running(echo_bot, allowed_hosts=["Bot.Example.com"]) as server:
        other_url, sock = as_host("other.example.com", server.ws_url(server.tokens.issue()))
        assert await upgrade_status(other_url, sock=sock, origin="https://other.example.com") == 403
        # A proxy that passes "Host: bot.example.com:443" for the page https://bot.example.com.
        via_proxy = f"ws://bot.example.com:443/ws?token={server.tokens.issue()}"
        sock = socket.create_connection(("127.0.0.1", server.port))
        async with connect(via_proxy, sock=sock, origin="https://bot.example.com"):  # type: ignore[arg-type]
            pass
        named_url, sock = as_host("bot.example.com", server.ws_url(server.tokens.issue()))
        origin = f"https://bot.example.com:{server.port}"  # the page as the proxy serves it
        async with connect(named_url, sock=sock, origin=origin):  # type: ignore[arg-type]
            pass


@pytest.mark.anyio
async def test_page_may_only_be_framed_by_itself() -> None:
    async with running(echo_bot) as server:
        status, headers, _ = await anyio.to_thread.run_sync(http_get, server.url)
        assert status == 200
        assert "frame-ancestors 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "SAMEORIGIN"


@pytest.mark.anyio
async def test_a_page_token_opens_one_session_on_its_own_path_only() -> None:
    async with running(echo_bot) as server:
        token = server.tokens.issue()
        async with connect(server.ws_url(token), origin=server.origin):
            pass
        assert await upgrade_status(server.ws_url(token), origin=server.origin) == 403  # replayed
        other = server.tokens.issue("/admin")
        assert await upgrade_status(server.ws_url(other), origin=server.origin) == 403
        assert server.rejected_upgrades == 2


@pytest.mark.anyio
async def test_token_endpoint_gives_the_page_a_fresh_token_for_its_next_start() -> None:
    async with running(echo_bot) as server:
        status, headers, body = await anyio.to_thread.run_sync(http_get, server.url + "token")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        async with connect(server.ws_url(body.strip()), origin=server.origin):
            pass
