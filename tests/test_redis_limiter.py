"""RedisConcurrencyLimiter against a real redis-server, with real worker processes and real turns.

No wall-clock assertions: every "wait until" polls Redis state under a generous bound, and ordering
claims (the dead lease expired before the next grant) are checked with the Redis server's own clock.
Every limiter runs with the default settings a deployment gets.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from tests.conftest import fast_retry
from tests.support.redis_server import RedisServer, redis_server_path, running_redis_server
from voiceagent.adapters.redis_limiter import (
    DEFAULT_LEASE_TTL,
    LimiterUnavailableError,
    RedisConcurrencyLimiter,
    SlotTimeoutError,
    account_id,
)
from voiceagent.agent import Agent
from voiceagent.errors import LLMError
from voiceagent.events import SpeechQueued, TurnEvent
from voiceagent.limiter import Limiter
from voiceagent.llm import LLMClient
from voiceagent.results import TurnResult
from voiceagent.testing.openai_server import FakeOpenAIServer, Reply, error_reply, text_reply
from voiceagent.testing.sinks import RecordingSink
from voiceagent.turn import TurnConfig

WORKER = Path(__file__).with_name("redis_limiter_worker.py")
PATIENCE = 30.0  # generous bound for "eventually"; never a measured claim
# A SIGKILLed worker's slot must come back well inside this (expected: one 3 s TTL plus a poll). The
# old 30 s lease never could; the bound is loose so a loaded machine does not fail it.
DEAD_SLOT_BOUND = 15.0
LOGGER = "voiceagent.adapters.redis_limiter"

pytestmark = pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    # A Redis that has been up for a while, as a deployment's is: in its first restart_grace after a
    # start, a Redis may have lost leases still in flight, and grants nothing new.
    with running_redis_server() as url:
        time.sleep(DEFAULT_LEASE_TTL + 1)
        yield url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop, restart or pause."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def book(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=None)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def account() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as server:
        yield server


def make(url: str, account: str, limit: int = 1, **kwargs: Any) -> RedisConcurrencyLimiter:
    return RedisConcurrencyLimiter(limit, url, account=account, **kwargs)


def llm_client(server: FakeOpenAIServer, limiter: RedisConcurrencyLimiter) -> LLMClient:
    retry = fast_retry()
    return LLMClient(base_url=server.base_url, api_key="sk_test", limiter=limiter, retry=retry)


def agent(llm: LLMClient, sink: RecordingSink | None = None) -> Agent:
    return Agent(llm=llm, sink=sink or RecordingSink(), system_prompt="You are a brief phone assistant.")


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    with anyio.move_on_after(PATIENCE):
        # Polling is the point: the state lives in Redis and in other processes, not in an Event.
        while not await check():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return
    pytest.fail(f"not within {PATIENCE}s: {what}")


def spawn(
    started: list[subprocess.Popen[bytes]],
    mode: str,
    url: str,
    account: str,
    limit: int,
    tag: str,
    *extra: str,
) -> subprocess.Popen[bytes]:
    # The tests keep workers queued while they hand out slots or wait for the fleet to start: on a
    # loaded machine that can pass the default 10 s slot deadline, which these tests are not about.
    args = [sys.executable, str(WORKER), mode, url, account, str(limit), tag, *extra]
    proc = subprocess.Popen([*args, "--acquire-timeout", str(PATIENCE)])
    started.append(proc)
    return proc


async def exit_code(proc: subprocess.Popen[bytes]) -> int:
    return await anyio.to_thread.run_sync(lambda: proc.wait(timeout=PATIENCE))


def free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the slot's shape: usable from any scope ----------------------------------------------------


@pytest.mark.anyio
async def test_a_slot_taken_in_one_scope_is_given_back_in_another(redis_url: str, account: str) -> None:
    # LLMStream enters the slot in _open_attempt and exits it in _close_attempt, inside a new shielded
    # scope. A task group kept open across the slot's yield raised RuntimeError there.
    async with make(redis_url, account) as limiter:
        stack = AsyncExitStack()
        await stack.enter_async_context(limiter.slot())
        assert limiter.held == 1 and await limiter.in_flight() == 1
        with anyio.CancelScope(shield=True):
            await stack.aclose()
        assert limiter.held == 0 and await limiter.in_flight() == 0
        with anyio.fail_after(PATIENCE):  # and nothing left behind cancels later work of this task
            await anyio.sleep(0.05)
            async with limiter.slot():
                pass


@pytest.mark.anyio
async def test_the_limiter_never_swallows_or_wraps_its_bodys_exception(redis_url: str, account: str) -> None:
    with pytest.raises(ValueError, match="the body's own"):
        async with make(redis_url, account) as limiter:
            async with limiter.slot():
                pass
            raise ValueError("the body's own error")


@pytest.mark.anyio
async def test_a_slot_outside_the_running_limiter_is_a_clear_error(redis_url: str, account: str) -> None:
    limiter = make(redis_url, account)
    with pytest.raises(RuntimeError, match=r"async with RedisConcurrencyLimiter"):
        async with limiter.slot():
            pytest.fail("no slot without the heartbeat")
    await limiter.aclose()


# ---- behind LLMClient: real turns ---------------------------------------------------------------


@pytest.mark.anyio
async def test_turns_behind_the_redis_limiter_answer_or_speak_the_fallback(
    redis_url: str, account: str, book: aioredis.Redis, llm_server: FakeOpenAIServer
) -> None:
    llm_server.enqueue(
        text_reply("Hello there."),
        error_reply(500, "boom"),
        error_reply(503, "busy"),
        text_reply("Back again."),
    )
    async with RedisConcurrencyLimiter.for_plan("standard", redis_url, account=account) as limiter:
        async with llm_client(llm_server, limiter) as llm:
            bot = agent(llm)
            with anyio.fail_after(PATIENCE):
                first = await bot.respond("hi")
                assert first.heard_text == "Hello there." and first.error is None
                assert limiter.held == 0 and await limiter.in_flight() == 0

                failed = await bot.respond("and now?")  # HTTP 500: the fallback line, not silence
                assert failed.fallback_spoken and failed.heard_text == bot.config.fallback
                assert failed.error is not None and "HTTP 500" in failed.error
                assert limiter.held == 0 and await limiter.in_flight() == 0

                retried = await bot.respond("again?")  # 503 retried; the backoff held no slot
                assert retried.heard_text == "Back again." and retried.rounds[0].attempts == 2
                assert limiter.held == 0 and await limiter.in_flight() == 0
    assert llm_server.max_in_flight == 1


@pytest.mark.anyio
async def test_the_readme_redis_block_runs(
    redis_url: str,
    account: str,
    llm_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's Redis wiring, with Electron swapped for the local server: it must stay runnable."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(
        r"## Sharing one plan limit across worker processes \(Redis\)\n.*?```python\n(.*?)```", readme, re.S
    )
    assert block is not None
    source = block.group(1)
    assert source.endswith("anyio.run(main)\n") and "LLMClient(api_key=KEY, limiter=limiter)" in source
    source = source.removesuffix("anyio.run(main)\n").replace(
        "LLMClient(api_key=KEY, limiter=limiter)",
        f'LLMClient(base_url="{llm_server.base_url}", api_key=KEY, limiter=limiter)',
    )
    monkeypatch.setenv("SMALLEST_API_KEY", account)
    monkeypatch.setenv("REDIS_URL", redis_url)
    llm_server.enqueue(text_reply("Hello! How can I help?"))
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with anyio.fail_after(PATIENCE):
        await namespace["main"]()
    assert capsys.readouterr().out == "Hello! How can I help?\n"
    assert len(llm_server.requests) == 1


@pytest.mark.anyio
async def test_worker_processes_running_turns_never_exceed_the_plan(
    redis_url: str,
    account: str,
    book: aioredis.Redis,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    workers, turns_each, limit, tag = 3, 3, 3, "turns"
    release = anyio.Event()

    async def responder(body: dict[str, Any]) -> Reply:
        await release.wait()  # hold the first requests so every turn contends for a slot
        question = body["messages"][-1]["content"]
        return text_reply(f"Answer to {question}.", pieces=3)

    # The server answers 429 past the plan, as Electron does: one over-grant costs a turn its answer.
    async with FakeOpenAIServer(concurrency_limit=limit) as server:
        server.responder = responder
        for _ in range(workers):
            extra = ("--tasks", str(turns_each), "--base-url", server.base_url)
            spawn(processes, "turns", redis_url, account, limit, tag, *extra)
        probe = RedisConcurrencyLimiter(limit, redis_url, account=account)

        async def contended() -> bool:
            assert server.in_flight <= limit
            return server.in_flight == limit and await probe.waiting() == workers * turns_each - limit

        await eventually(contended, "3 requests at the server and 6 turns waiting for a slot")
        release.set()
        assert [await exit_code(p) for p in processes] == [0] * workers
        records = [json.loads(r) for r in await book.lrange(f"test:{tag}:turns", 0, -1)]
        assert len(records) == workers * turns_each
        assert all(r["error"] is None and not r["fallback"] for r in records), records
        # A turn that waited over a second for its slot said the filler first.
        heard = sorted(r["heard"].removeprefix(TurnConfig().filler + " ") for r in records)
        assert heard == sorted(f"Answer to question {n}." for n in range(turns_each) for _ in range(workers))
        assert server.max_in_flight == limit and len(server.requests) == workers * turns_each
        assert await probe.in_flight() == 0
        await probe.aclose()


@pytest.mark.anyio
async def test_the_filler_is_spoken_while_a_turn_waits_for_a_slot(
    redis_url: str, account: str, book: aioredis.Redis, llm_server: FakeOpenAIServer
) -> None:
    llm_server.enqueue(text_reply("Here you are."))
    filler_queued = anyio.Event()
    taken, give_back = anyio.Event(), anyio.Event()

    def on_event(event: TurnEvent) -> None:
        if isinstance(event, SpeechQueued) and event.text == TurnConfig().filler:
            filler_queued.set()

    async def other_worker(limiter: RedisConcurrencyLimiter) -> None:
        async with limiter.slot():  # the one slot is taken elsewhere
            taken.set()
            await give_back.wait()

    async with make(redis_url, account) as elsewhere, make(redis_url, account) as limiter:
        async with llm_client(llm_server, limiter) as llm, anyio.create_task_group() as tg:
            with anyio.fail_after(PATIENCE):
                tg.start_soon(other_worker, elsewhere)
                await taken.wait()
                async with anyio.create_task_group() as turn:
                    results: list[TurnResult] = []

                    async def respond() -> None:
                        results.append(await agent(llm).respond("what now?", on_event=on_event))

                    turn.start_soon(respond)
                    await filler_queued.wait()  # spoken while no slot was free
                    assert not llm_server.requests
                    give_back.set()
    [result] = results
    assert result.spoken_text == "One moment. Here you are."
    assert result.heard_text == result.spoken_text and not result.fallback_spoken


@pytest.mark.anyio
async def test_a_slot_wait_past_its_deadline_is_an_llm_error_and_leaves_nothing(
    redis_url: str, account: str, book: aioredis.Redis
) -> None:
    async with (
        make(redis_url, account) as elsewhere,
        make(redis_url, account, acquire_timeout=0.5) as limiter,
    ):
        with anyio.fail_after(PATIENCE):
            async with elsewhere.slot():
                with pytest.raises(SlotTimeoutError, match=r"within 0\.5 s") as caught:
                    async with limiter.slot():
                        pytest.fail("the only slot is taken")
                assert isinstance(caught.value, LLMError)  # so a turn speaks its fallback line
                assert await limiter.waiting() == 0 and await book.zcard(limiter.keys.queue) == 0
                assert await limiter.in_flight() == 1
            async with limiter.slot():  # its local token came back too
                assert await limiter.in_flight() == 1


# ---- Redis down, hung or restarted --------------------------------------------------------------


@pytest.mark.anyio
async def test_redis_down_falls_back_to_the_in_process_limit_with_one_warning(
    own_redis: RedisServer, account: str, llm_server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    llm_server.enqueue(text_reply("Still here."), text_reply("And again."))
    await anyio.to_thread.run_sync(own_redis.stop)
    with caplog.at_level(logging.WARNING, logger=LOGGER), anyio.fail_after(PATIENCE):
        async with make(own_redis.url, account, limit=1) as limiter, llm_client(llm_server, limiter) as llm:
            bot = agent(llm)
            # The first slot gives Redis fallback_after (2 s) to come back, with the filler spoken;
            # then the outage is declared and the next slot comes from the in-process limit at once.
            assert (await bot.respond("hello?")).heard_text == "One moment. Still here."
            assert limiter.degraded
            assert (await bot.respond("hello again?")).heard_text == "And again."

            # The in-process limit still holds while degraded: a second slot waits for the first.
            entered = anyio.Event()

            async def second() -> None:
                async with limiter.slot():
                    entered.set()

            async with anyio.create_task_group() as tg:
                async with limiter.slot():
                    tg.start_soon(second)
                    await anyio.wait_all_tasks_blocked()
                    assert not entered.is_set() and limiter.held == 1

                    await anyio.to_thread.run_sync(
                        own_redis.start
                    )  # back: the held slot is registered by the next heartbeat

                    async def registered() -> bool:
                        return not limiter.degraded and await limiter.in_flight() == 1

                    await eventually(registered, "the degraded slot counted in Redis again")
            assert entered.is_set()
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("falling back to the in-process limit of 1" in m for m in warnings) == 1, warnings
    assert any("answers again" in m for m in warnings), warnings


@pytest.mark.anyio
async def test_with_fallback_fail_an_unreachable_redis_speaks_the_fallback_line(
    account: str, llm_server: FakeOpenAIServer
) -> None:
    port = free_port()
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    async with make(url, account, fallback="fail") as limiter, llm_client(llm_server, limiter) as llm:
        with pytest.raises(LimiterUnavailableError) as caught:
            async with limiter.slot():
                pytest.fail("no slot without Redis")
        assert isinstance(caught.value, LLMError)
        assert "s3cret-pw" not in str(caught.value)
        assert caught.value.url == f"redis://:***@127.0.0.1:{port}/0"
        with pytest.raises(LimiterUnavailableError, match=r"redis://:\*\*\*@"):
            await limiter.ping()

        with anyio.fail_after(PATIENCE):
            result = await agent(llm).respond("anyone there?")
        assert result.fallback_spoken and result.heard_text == TurnConfig().fallback
        assert result.error is not None and "cannot reach Redis" in result.error
        assert "s3cret-pw" not in result.error
        assert not llm_server.requests  # no slot, no request


@pytest.mark.anyio
async def test_a_hung_redis_degrades_instead_of_blocking_and_recovers(
    own_redis: RedisServer, account: str
) -> None:
    async with make(own_redis.url, account, limit=2, socket_timeout=0.5) as limiter:
        with anyio.fail_after(PATIENCE):
            async with limiter.slot():
                own_redis.pause()  # SIGSTOP: connects succeed, nothing is answered
                try:
                    async with limiter.slot():  # bounded by the socket timeout, not forever
                        assert limiter.degraded and limiter.held == 2
                finally:
                    own_redis.resume()

                async def recovered() -> bool:
                    return not limiter.degraded and await limiter.in_flight() == 1

                await eventually(recovered, "Redis answering again and the held slot counted")
            assert await limiter.in_flight() == 0


@pytest.mark.anyio
async def test_a_new_account_on_a_long_running_redis_pays_no_restart_grace(
    redis_url: str, account: str, book: aioredis.Redis
) -> None:
    async with make(redis_url, account) as limiter:
        async with limiter.slot():
            seconds, micros = await book.time()
            now_ms = seconds * 1000 + micros // 1000
            born = int(await book.get(limiter.keys.epoch))
            assert born + round(limiter.restart_grace * 1000) <= now_ms  # the grace is already over


@pytest.mark.anyio
@pytest.mark.parametrize("newcomer_arrives", ["after the restart", "while Redis is down"])
async def test_a_redis_restart_never_hands_out_the_plan_twice(
    own_redis: RedisServer, account: str, newcomer_arrives: str
) -> None:
    # Default restart grace (one lease TTL): the holders re-register before anyone new is let in. A
    # newcomer arriving while Redis is down keeps trying Redis instead of taking a local slot on top
    # (fallback_after; raised from its 2 s default, and the slot deadline with it, only because a loaded
    # machine may restart Redis slowly).
    async with (
        RedisConcurrencyLimiter(2, own_redis.url, account=account) as holder,
        RedisConcurrencyLimiter(
            2, own_redis.url, account=account, fallback_after=PATIENCE, acquire_timeout=PATIENCE
        ) as newcomer,
    ):
        release = anyio.Event()
        entered = anyio.Event()
        held = 0

        async def hold() -> None:
            nonlocal held
            async with holder.slot():
                held += 1
                await release.wait()

        async def enter() -> None:
            async with newcomer.slot():
                entered.set()

        with anyio.fail_after(PATIENCE * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold)
                tg.start_soon(hold)

                async def both_held() -> bool:
                    return held == 2

                await eventually(both_held, "both slots held")
                leases = set(await _leases(own_redis.url, holder))
                assert len(leases) == 2

                # Every lease is lost; both requests are still in flight.
                await anyio.to_thread.run_sync(own_redis.stop)
                if newcomer_arrives == "while Redis is down":
                    tg.start_soon(enter)
                    await anyio.sleep(0.3)  # let it find Redis down (arranging, not measuring)
                await anyio.to_thread.run_sync(own_redis.start)
                if newcomer_arrives == "after the restart":
                    tg.start_soon(enter)

                async def back() -> bool:
                    assert not entered.is_set(), "a third slot was handed out after the restart"
                    return (
                        set(await _leases(own_redis.url, holder)) == leases and await newcomer.waiting() == 1
                    )

                await eventually(back, "both holders re-registered, the newcomer queued")
                assert not newcomer.degraded
                release.set()
        assert entered.is_set()
        assert await newcomer.in_flight() == 0


async def _leases(url: str, limiter: RedisConcurrencyLimiter) -> list[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return list(await client.zrange(limiter.keys.leases, 0, -1))
    finally:
        await client.aclose()


# ---- the shared count --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_limit_holds_across_tasks_and_limiter_instances(redis_url: str, account: str) -> None:
    holding = 0
    peak = 0
    release = anyio.Event()
    async with make(redis_url, account, 3) as first, make(redis_url, account, 3) as second:
        limiters = [first, second]
        assert isinstance(first, Limiter)

        async def request(limiter: RedisConcurrencyLimiter) -> None:
            nonlocal holding, peak
            async with limiter.slot():
                holding += 1
                peak = max(peak, holding)
                await release.wait()
                holding -= 1

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(request, limiters[i % 2])

            async def saturated() -> bool:
                assert holding <= 3, f"{holding} requests inside the limiter at once"
                # Each instance lets at most 3 of its 4 requests into Redis (its local tokens), so 6
                # are in Redis: 3 holding, 3 queued; the other 2 wait in their own process.
                return await first.in_flight() == 3 and await second.waiting() == 3

            await eventually(saturated, "3 slots held and 3 requests queued in Redis")
            assert holding == 3
            release.set()
        assert peak == 3
        assert await first.in_flight() == 0
        assert await first.waiting() == 0


@pytest.mark.anyio
async def test_three_worker_processes_share_the_limit(
    redis_url: str, account: str, book: aioredis.Redis, processes: list[subprocess.Popen[bytes]]
) -> None:
    limit, demand, tag = 3, 9, "fleet"
    for _ in range(3):
        spawn(processes, "gated", redis_url, account, limit, tag, "--tasks", "3")
    probe = RedisConcurrencyLimiter(limit, redis_url, account=account)
    remaining = demand
    while remaining:
        holding = min(limit, remaining)

        async def settled(holding: int = holding, remaining: int = remaining) -> bool:
            holders = int(await book.get(f"test:{tag}:holders") or 0)
            assert holders <= limit, f"{holders} workers inside the limiter at once"
            # A finished holder leaves the count before it releases its lease: wait for both.
            leases, waiters = await probe.in_flight(), await probe.waiting()
            assert leases <= limit, f"{leases} live leases"
            return holders == holding and leases == holding and waiters == remaining - holding

        await eventually(settled, f"{holding} holders and {remaining - holding} waiting")
        observed = [int(n) for n in await book.lrange(f"test:{tag}:observed", 0, -1)]
        assert max(observed) <= limit
        await book.rpush(f"test:{tag}:go", "1")  # let exactly one holder finish
        remaining -= 1
    assert [await exit_code(p) for p in processes] == [0, 0, 0]
    observed = [int(n) for n in await book.lrange(f"test:{tag}:observed", 0, -1)]
    assert len(observed) == demand
    assert max(observed) == limit  # the demand really did contend for every slot
    assert await probe.in_flight() == 0
    await probe.aclose()


@pytest.mark.anyio
async def test_a_killed_workers_slot_comes_back_within_seconds(
    redis_url: str, account: str, book: aioredis.Redis, processes: list[subprocess.Popen[bytes]]
) -> None:
    tag = "crash"  # the default lease TTL: what a deployment gets
    probe = RedisConcurrencyLimiter(1, redis_url, account=account)
    holder = spawn(processes, "hold", redis_url, account, 1, tag)
    await book.blpop([f"test:{tag}:events"], timeout=PATIENCE)
    [dead_lease] = await book.zrange(probe.keys.leases, 0, -1)

    waiter = spawn(processes, "enter", redis_url, account, 1, tag)

    async def queued() -> bool:
        return await probe.waiting() == 1

    await eventually(queued, "the second worker queued behind the live lease")

    holder.send_signal(signal.SIGKILL)
    assert await exit_code(holder) == -signal.SIGKILL
    # The holder is dead, so nobody renews its lease any more: this is its final expiry (None if it
    # already lapsed, on a machine stalled for longer than the TTL).
    dead_expiry = await book.zscore(probe.keys.leases, dead_lease)
    with anyio.fail_after(DEAD_SLOT_BOUND):
        assert await anyio.to_thread.run_sync(lambda: waiter.wait(timeout=PATIENCE)) == 0
    entered = json.loads(await book.lpop(f"test:{tag}:entered"))
    if dead_expiry is not None:
        assert entered["server_ms"] >= dead_expiry  # granted only once the dead lease had expired
    assert dead_lease not in entered["leases"] and len(entered["leases"]) == 1  # within the limit
    assert await probe.in_flight() == 0
    await probe.aclose()


@pytest.mark.anyio
async def test_the_heartbeat_keeps_a_long_held_slot_past_its_ttl(
    redis_url: str, account: str, book: aioredis.Redis
) -> None:
    ttl_ms = round(DEFAULT_LEASE_TTL * 1000)
    async with make(redis_url, account) as limiter:
        async with limiter.slot():
            [lease] = await book.zrange(limiter.keys.leases, 0, -1)
            first_expiry = await book.zscore(limiter.keys.leases, lease)
            assert first_expiry is not None

            async def renewed_past_two_ttls() -> bool:
                # Robust to a stall: a lease that lapsed meanwhile is put back by the next beat, so
                # this only asks that the lease is live now with an expiry renewed 2 TTLs on.
                expiry = await book.zscore(limiter.keys.leases, lease)
                return expiry is not None and expiry > first_expiry + 2 * ttl_ms

            await eventually(renewed_past_two_ttls, "the lease renewed past two TTLs")
        assert await limiter.in_flight() == 0


@pytest.mark.anyio
async def test_a_lapsed_lease_is_registered_again_by_the_next_heartbeat(
    redis_url: str, account: str, book: aioredis.Redis
) -> None:
    # A worker that stalls past its TTL still has its request in flight, so it must count again.
    async with make(redis_url, account) as limiter:
        async with limiter.slot():
            [lease] = await book.zrange(limiter.keys.leases, 0, -1)
            await book.zrem(limiter.keys.leases, lease)  # what expiry during a stall would do

            async def back() -> bool:
                return await book.zscore(limiter.keys.leases, lease) is not None

            await eventually(back, "the heartbeat re-registered the lapsed lease")
        assert await limiter.in_flight() == 0


@pytest.mark.anyio
async def test_cancelled_wait_leaves_no_lease_or_waiter(
    redis_url: str, account: str, book: aioredis.Redis
) -> None:
    async with make(redis_url, account) as elsewhere, make(redis_url, account) as limiter:
        got_slot = False

        async def wait_for_slot() -> None:
            nonlocal got_slot
            async with limiter.slot():
                got_slot = True

        async with elsewhere.slot():
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_slot)

                async def queued() -> bool:
                    return await limiter.waiting() == 1

                await eventually(queued, "the second request queued")
                tg.cancel_scope.cancel()
            assert await limiter.waiting() == 0
            assert await book.zcard(limiter.keys.queue) == 0
            assert await limiter.in_flight() == 1
        assert not got_slot
        assert await limiter.in_flight() == 0
        assert await book.zcard(limiter.keys.leases) == 0


@pytest.mark.anyio
async def test_slot_is_released_when_the_body_raises(redis_url: str, account: str) -> None:
    async with make(redis_url, account) as limiter:
        with pytest.raises(RuntimeError, match="boom"):
            async with limiter.slot():
                assert await limiter.in_flight() == 1
                raise RuntimeError("boom")
        assert await limiter.in_flight() == 0
        with anyio.fail_after(PATIENCE):  # the one slot is free again, not leaked
            async with limiter.slot():
                pass


@pytest.mark.anyio
async def test_waiters_are_served_first_come_first_served(redis_url: str, account: str) -> None:
    # One limiter per request, as if each were its own worker: within one process the local tokens
    # queue them before Redis does.
    async with AsyncExitStack() as stack:
        limiters = [await stack.enter_async_context(make(redis_url, account)) for _ in range(4)]
        order: list[int] = []
        release = anyio.Event()

        async def request(n: int) -> None:
            async with limiters[n].slot():
                order.append(n)

        async def hold() -> None:
            async with limiters[0].slot():
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)

            async def held() -> bool:
                return await limiters[0].in_flight() == 1

            await eventually(held, "the first slot taken")
            for n in range(1, 4):
                tg.start_soon(request, n)

                async def queued(n: int = n) -> bool:
                    return await limiters[0].waiting() == n

                await eventually(queued, f"{n} requests queued")
            release.set()
        assert order == [1, 2, 3]


@pytest.mark.anyio
async def test_the_api_key_is_never_stored(redis_url: str, book: aioredis.Redis) -> None:
    api_key = "sk-live-do-not-store-me"
    async with RedisConcurrencyLimiter.for_plan("standard", redis_url, account=api_key) as limiter:
        assert limiter.limit == 3
        async with limiter.slot():
            keys = [key async for key in book.scan_iter()]
            assert keys and all(account_id(api_key) in key for key in keys)
            assert not any(api_key in key for key in keys)
            for key in keys:
                kind = await book.type(key)
                value = await book.zrange(key, 0, -1) if kind == "zset" else await book.get(key)
                assert kind in ("zset", "string") and api_key not in json.dumps(value)


def test_plans_and_bad_arguments() -> None:
    url = "redis://127.0.0.1:1/0"
    assert RedisConcurrencyLimiter.for_plan("enterprise", url, account="sk-x").limit == 20
    with pytest.raises(ValueError, match="unknown plan 'gold'"):
        RedisConcurrencyLimiter.for_plan("gold", url, account="sk-x")
    with pytest.raises(ValueError, match="limit must be at least 1"):
        RedisConcurrencyLimiter(0, url, account="sk-x")
    with pytest.raises(ValueError, match="account"):
        RedisConcurrencyLimiter(1, url, account="")
    with pytest.raises(ValueError, match="fallback"):
        RedisConcurrencyLimiter(1, url, account="sk-x", fallback="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="acquire_timeout"):
        RedisConcurrencyLimiter(1, url, account="sk-x", acquire_timeout=0)


def test_importing_without_redis_names_the_extra_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys

        class NoRedis:
            def find_spec(self, name, path=None, target=None):
                if name == "redis" or name.startswith("redis."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoRedis())
        import voiceagent.adapters.redis_limiter
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "pip install 'voiceagent[redis]'" in done.stderr
