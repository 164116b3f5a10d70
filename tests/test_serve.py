"""``voiceagent serve`` as a deployment meets it: a replayed LLM behind real worker processes, fake
Twilio calls signed with the Auth Token, SIGTERM drains, a killed worker comes back, /metrics counts the
calls made."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest
from websockets.exceptions import InvalidStatus

from tests.serve_support import TOKEN, serve_process, started, worker_pids
from voiceagent.testing.twilio_client import FakeTwilioCall

LIMIT = 90.0
BOT = "voiceagent.examples.weather_bot:build_agent"
pytestmark = pytest.mark.anyio


def _raw_exchange(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        return sock.recv(200)


def _turns(serve: object) -> list[dict[str, object]]:
    return [r for r in serve.records() if r.get("event") == "turn"]  # type: ignore[attr-defined]


async def _call_until_answered(url: str, call_sid: str) -> FakeTwilioCall:
    phone = FakeTwilioCall(url, auth_token=TOKEN, call_sid=call_sid)
    await phone.__aenter__()
    await phone.send_pcm(b"\x00\x00" * 4000, 8000)
    return phone


async def test_serve_takes_signed_calls_and_metrics_count_them(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--replay-speed", "0", "--workers", "2") as serve:
        with anyio.fail_after(LIMIT):
            await started(serve, 2)
            assert serve.get("/healthz") == (200, "ok\n")
            assert serve.get("/readyz")[0] == 200
            # Garbage and an oversized head get an HTTP error; the port keeps serving.
            for junk in (
                b"\x00\xff garbage\r\n\r\n",
                b"GET /" + b"a" * 20000,
                b"GET /nowhere HTTP/1.1\r\n\r\n",
            ):
                answer = await anyio.to_thread.run_sync(_raw_exchange, serve.port, junk)
                assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5"), answer[:80]
            assert serve.get("/")[0] == 404  # no --web: nothing but /media and the admin paths
            assert serve.get("/healthz") == (200, "ok\n")
            for n in range(3):
                sid = f"CA{n:032d}"
                async with FakeTwilioCall(serve.url, auth_token=TOKEN, call_sid=sid) as phone:
                    await phone.send_pcm(b"\x00\x00" * 4000, 8000)
                    await serve.wait_for(lambda r, sid=sid: r.get("event") == "turn" and r.get("call") == sid)
                    await phone.wait_until(lambda phone=phone: len(phone.received_mulaw) > 8000)
                    await phone.stop()
                await serve.wait_for(lambda r: r.get("event") == "call", n + 1)
            # An unsigned upgrade is refused (403) through the supervisor too.
            with pytest.raises(InvalidStatus):
                async with FakeTwilioCall(serve.url, auth_token="wrong-token-123"):
                    pass
            turns = _turns(serve)
            assert len(turns) == 3 and all(t["heard_text"] for t in turns)
            assert all(t["session"] == t["call"] and t["turn"] == 1 and t["request_ids"] for t in turns)
            # Lines logged inside a round carry its call, turn, round and request id.
            inside = [
                r for r in serve.records() if r.get("round") == 1 and r.get("session") == turns[0]["call"]
            ]
            assert inside and all(
                r["turn"] == 1 and r["request_id"] in turns[0]["request_ids"] for r in inside
            )  # type: ignore[operator]
            assert serve.metric('voiceagent_calls_total{transport="twilio"}') == 3
            assert serve.metric('voiceagent_turns_total{outcome="completed"}') == 3
            assert serve.metric('voiceagent_tool_seconds_count{tool="get_weather"}') == 3
            assert serve.metric("voiceagent_ttft_seconds_count") == 3
            assert serve.metric("voiceagent_time_to_first_audio_seconds_count") == 3
            assert serve.metric("voiceagent_caller_stop_to_bot_audio_seconds_count") == 3
            assert serve.metric("voiceagent_active_calls") == 0
            fresh = sum(int(t["fresh_tokens"]) for t in turns)  # type: ignore[call-overload]
            assert fresh > 0 and serve.metric('voiceagent_llm_tokens_total{kind="fresh"}') == fresh
            chars = sum(int(t["tts_chars_synthesized"]) for t in turns)  # type: ignore[call-overload]
            assert serve.metric('voiceagent_tts_chars_total{kind="synthesized"}') == chars


async def test_sigterm_lets_a_live_call_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    # Recorded pace: the answer takes a while, and SIGTERM lands in the middle of the call.
    with serve_process(tmp_path, "--replay-speed", "1", "--drain-seconds", "60") as serve:
        with anyio.fail_after(LIMIT):
            await started(serve)
            sid = "CA" + "7" * 32
            async with FakeTwilioCall(serve.url, auth_token=TOKEN, call_sid=sid, playback_speed=20) as phone:
                await phone.send_pcm(b"\x00\x00" * 4000, 8000)
                while serve.metric("voiceagent_active_calls") < 1:  # noqa: ASYNC110 (another process)
                    await anyio.sleep(0.05)
                os.kill(serve.process.pid, signal.SIGTERM)
                await serve.wait_for(lambda r: r.get("event") == "drain" and r.get("worker") == 0)
                assert serve.get("/readyz")[0] == 503
                with pytest.raises(InvalidStatus):  # a new call is refused while draining
                    async with FakeTwilioCall(serve.url, auth_token=TOKEN):
                        pass
                await serve.wait_for(lambda r: r.get("event") == "turn")
                await phone.wait_until(lambda: len(phone.received_mulaw) > 8000)
                await phone.stop()
                await phone.wait_closed()
            await serve.exited()
            assert serve.process.returncode == 0
            turn = _turns(serve)[0]
            assert turn["call"] == sid and not turn["interrupted"] and "Paris" in str(turn["heard_text"])
            assert not [r for r in serve.records() if r.get("event") == "goodbye"]


async def test_drain_deadline_says_goodbye_and_keeps_the_record(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--replay-speed", "0", "--drain-seconds", "0.2") as serve:
        with anyio.fail_after(LIMIT):
            await started(serve)
            async with FakeTwilioCall(serve.url, auth_token=TOKEN) as phone:
                await phone.send_pcm(b"\x00\x00" * 4000, 8000)
                await serve.wait_for(lambda r: r.get("event") == "turn")
                before = len(phone.received_mulaw)
                os.kill(serve.process.pid, signal.SIGTERM)  # the caller never hangs up
                code, _ = await phone.wait_closed()
            assert code in (1000, 1001)  # a normal close or "going away"
            assert len(phone.received_mulaw) > before  # the goodbye line was sent
            await serve.exited()
            assert [r for r in serve.records() if r.get("event") == "goodbye"]
            assert len(_turns(serve)) == 1 and _turns(serve)[0]["heard_text"]


async def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--replay-speed", "0", "--workers", "2", "--web", "--twilio") as serve:
        with anyio.fail_after(LIMIT):
            await started(serve, 2)
            victim = worker_pids(serve)[0]
            os.kill(victim, signal.SIGKILL)
            await serve.wait_for(lambda r: r.get("event") == "worker_restart")
            await serve.wait_for(lambda r: r.get("event") == "worker_up", 3)
            assert serve.metric("voiceagent_worker_restarts_total") == 1
            assert victim not in worker_pids(serve)[2:]
            for _ in range(2):  # the web page comes through the supervisor from either worker
                status, page = serve.get("/")
                assert status == 200 and "<html" in page.lower()
            async with FakeTwilioCall(serve.url, auth_token=TOKEN) as phone:  # both workers take calls
                await phone.send_pcm(b"\x00\x00" * 4000, 8000)
                await serve.wait_for(lambda r: r.get("event") == "turn")
                await phone.stop()


@pytest.mark.slow
async def test_workers_share_the_plan_limit_through_redis(tmp_path: Path) -> None:
    redis_launcher = pytest.importorskip("voiceagent.testing.redis_server")  # may move to tests/support
    if redis_launcher.redis_server_path() is None:
        pytest.skip("redis-server is not installed")
    import redis

    from voiceagent.adapters.redis_limiter import RedisLimiterKeys, account_id

    with redis_launcher.RedisServer() as redis_server:
        args = ("--replay-speed", "0", "--workers", "2", "--redis", redis_server.url)
        with serve_process(tmp_path, *args) as serve:
            with anyio.fail_after(LIMIT):
                await started(serve, 2)
                for n in range(2):
                    async with FakeTwilioCall(serve.url, auth_token=TOKEN) as phone:
                        await phone.send_pcm(b"\x00\x00" * 4000, 8000)
                        await serve.wait_for(lambda r: r.get("event") == "turn", n + 1)
                        await phone.stop()
        keys = RedisLimiterKeys.for_account(account_id("replay"))
        client = redis.Redis.from_url(redis_server.url)
        try:
            tickets = int(client.get(keys.ticket) or 0)
        finally:
            client.close()
    # Every LLM request of both calls (two rounds each) took its slot through Redis.
    assert tickets >= 4
    assert all(not t["error"] for t in _turns(serve))


async def test_otel_console_spans_of_a_served_call(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--replay-speed", "0", "--otel", "console") as serve:
        with anyio.fail_after(LIMIT):
            await started(serve)
            async with FakeTwilioCall(serve.url, auth_token=TOKEN) as phone:
                await phone.send_pcm(b"\x00\x00" * 4000, 8000)
                await serve.wait_for(lambda r: r.get("event") == "turn")
                await phone.stop()
            await serve.wait_for(lambda r: r.get("event") == "call")
            os.kill(serve.process.pid, signal.SIGTERM)
            assert await serve.exited() == 0
    text = serve.log_path.read_text()
    for name in ("voiceagent.call", "voiceagent.turn", "voiceagent.round", "voiceagent.tool"):
        assert f'"name": "{name}"' in text
    request_id = _turns(serve)[0]["request_ids"][0]  # type: ignore[index]
    assert f'"voiceagent.request_id": "{request_id}"' in text


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("voiceagent.examples.weather_bot:build_agent", "--replay", "weather"), {}, "TWILIO_AUTH_TOKEN"),
        (("nosuchmodule:build", "--replay", "weather", "--allow-unsigned"), {}, "cannot load the agent"),
        (("voiceagent.examples.weather_bot:build_agent", "--allow-unsigned"), {}, "SMALLEST_API_KEY"),
        (
            ("voiceagent.examples.weather_bot:build_agent", "--replay", "nosuch", "--allow-unsigned"),
            {},
            "nosuch",
        ),
    ],
)
def test_serve_refuses_bad_setups_in_one_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("SMALLEST_API_KEY", "TWILIO_AUTH_TOKEN")}
    done = subprocess.run(
        [sys.executable, "-m", "voiceagent.cli", "serve", *args, "--port", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**clean, **env}, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]


async def test_ctrl_c_drains_and_exits_130(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--replay-speed", "0") as serve:
        with anyio.fail_after(LIMIT):
            await started(serve)
            os.kill(serve.process.pid, signal.SIGINT)
            assert await serve.exited() == 130
            assert [r for r in serve.records() if r.get("event") == "drained"]


async def test_a_turn_in_flight_at_the_drain_deadline_is_cut_recorded_and_followed_by_goodbye(
    tmp_path: Path,
) -> None:
    with serve_process(tmp_path, "--replay-speed", "0", "--drain-seconds", "0.2") as serve:
        with anyio.fail_after(LIMIT):
            await started(serve)
            # Paused playback: no mark comes back, so the answer's turn cannot finish on its own.
            async with FakeTwilioCall(serve.url, auth_token=TOKEN, start_paused=True) as phone:
                await phone.send_pcm(b"\x00\x00" * 4000, 8000)
                await phone.wait_until(lambda: len(phone.received_mulaw) > 0)
                assert not _turns(serve)
                os.kill(serve.process.pid, signal.SIGTERM)
                await serve.wait_for(lambda r: r.get("event") == "goodbye")
                phone.resume_playback()  # now the caller hears the goodbye
                await phone.wait_closed()
            assert await serve.exited() == 0
    (turn,) = _turns(serve)
    assert turn["interrupted"] and turn["user_text"]  # cut, and on the record
    # The cut cleared the answer's queued audio; what played after the resume is the goodbye.
    assert phone.clears >= 1 and len(phone.played_mulaw) > 0


def test_serve_without_prometheus_client_says_which_extra(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys; sys.modules['prometheus_client'] = None\n"  # as if not installed
        "from voiceagent.cli import main\n"
        f"sys.exit(main(['serve', {BOT!r}, '--replay', 'weather', '--allow-unsigned']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "voiceagent[serve]" in done.stderr, done.stderr
