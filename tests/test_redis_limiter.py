"""RedisConcurrencyLimiter against a real redis-server, with real worker processes.

No wall-clock assertions: every "wait until" polls Redis state under a generous bound, and ordering
claims (the dead lease expired before the next grant) are checked with the Redis server's own clock.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from voiceagent.adapters.redis_limiter import (
    LimiterUnavailableError,
    RedisConcurrencyLimiter,
    account_id,
)
from voiceagent.limiter import Limiter
from voiceagent.testing.redis_server import redis_server_path, running_redis_server

WORKER = Path(__file__).with_name("redis_limiter_worker.py")
PATIENCE = 30.0  # generous bound for "eventually"; never a measured claim


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with running_redis_server() as url:
        yield url


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
    ttl: float,
    tag: str,
) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(WORKER), mode, url, account, str(limit), str(ttl), tag, "3"]
    proc = subprocess.Popen(args)
    started.append(proc)
    return proc


async def exit_code(proc: subprocess.Popen[bytes]) -> int:
    return await anyio.to_thread.run_sync(lambda: proc.wait(timeout=PATIENCE))


@pytest.mark.anyio
async def test_limit_holds_across_tasks_and_limiter_instances(redis_url: str, account: str) -> None:
    limiters = [RedisConcurrencyLimiter(3, redis_url, account=account) for _ in range(2)]
    assert isinstance(limiters[0], Limiter)
    holding = 0
    peak = 0
    release = anyio.Event()

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
            return await limiters[0].in_flight() == 3 and await limiters[1].waiting() == 5

        await eventually(saturated, "3 slots held and 5 requests waiting")
        assert holding == 3
        release.set()
    assert peak == 3
    assert await limiters[0].in_flight() == 0
    assert await limiters[0].waiting() == 0
    for limiter in limiters:
        await limiter.aclose()


@pytest.mark.anyio
async def test_three_worker_processes_share_the_limit(
    redis_url: str, account: str, book: aioredis.Redis, processes: list[subprocess.Popen[bytes]]
) -> None:
    limit, demand, tag = 3, 9, "fleet"
    for _ in range(3):
        spawn(processes, "gated", redis_url, account, limit, 30.0, tag)
    async with RedisConcurrencyLimiter(limit, redis_url, account=account) as probe:
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


@pytest.mark.anyio
async def test_a_killed_workers_slot_frees_after_its_lease_ttl(
    redis_url: str, account: str, book: aioredis.Redis, processes: list[subprocess.Popen[bytes]]
) -> None:
    ttl, tag = 1.5, "crash"  # short, yet a live holder would need a 1 s stall to miss its renewal
    leases_key = RedisConcurrencyLimiter(1, redis_url, account=account).keys.leases
    holder = spawn(processes, "hold", redis_url, account, 1, ttl, tag)
    await book.blpop([f"test:{tag}:events"], timeout=PATIENCE)
    [dead_lease] = await book.zrange(leases_key, 0, -1)

    async with RedisConcurrencyLimiter(1, redis_url, account=account, lease_ttl=ttl) as probe:
        waiter = spawn(processes, "enter", redis_url, account, 1, ttl, tag)

        async def queued() -> bool:
            return await probe.waiting() == 1

        await eventually(queued, "the second worker queued behind the live lease")

        holder.send_signal(signal.SIGKILL)
        assert await exit_code(holder) == -signal.SIGKILL
        # The holder is dead, so nobody renews its lease any more: this is its final expiry.
        dead_expiry = await book.zscore(leases_key, dead_lease)
        assert dead_expiry is not None, "the dead lease was already gone (test machine stalled for > TTL)"

        assert await exit_code(waiter) == 0
        entered = json.loads(await book.lpop(f"test:{tag}:entered"))
        assert entered["server_ms"] >= dead_expiry  # granted only once the dead lease had expired
        assert entered["leases"] != [dead_lease] and len(entered["leases"]) == 1  # within the limit
        assert await probe.in_flight() == 0


@pytest.mark.anyio
async def test_heartbeat_keeps_a_long_held_slot_past_its_ttl(
    redis_url: str, account: str, book: aioredis.Redis
) -> None:
    ttl_ms = 1000  # heartbeat every 1/3 TTL: a lapse would need a 0.67 s stall of the event loop
    async with RedisConcurrencyLimiter(1, redis_url, account=account, lease_ttl=ttl_ms / 1000) as limiter:
        async with limiter.slot():
            [lease] = await book.zrange(limiter.keys.leases, 0, -1)
            first_expiry = await book.zscore(limiter.keys.leases, lease)
            assert first_expiry is not None

            async def three_ttls_later() -> bool:
                seconds, micros = await book.time()
                return seconds * 1000 + micros // 1000 > first_expiry + 2 * ttl_ms

            await eventually(three_ttls_later, "Redis server time passed the first expiry by 2 TTLs")
            assert await limiter.in_flight() == 1  # in_flight prunes expired leases first
            renewed = await book.zscore(limiter.keys.leases, lease)
            assert renewed is not None and renewed > first_expiry + ttl_ms
        assert await limiter.in_flight() == 0


@pytest.mark.anyio
async def test_a_lapsed_lease_is_registered_again_by_the_next_heartbeat(
    redis_url: str, account: str, book: aioredis.Redis
) -> None:
    # A worker that stalls past its TTL still has its request in flight, so it must count again.
    async with RedisConcurrencyLimiter(1, redis_url, account=account, lease_ttl=1.0) as limiter:
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
    async with RedisConcurrencyLimiter(1, redis_url, account=account) as limiter:
        got_slot = False

        async def wait_for_slot() -> None:
            nonlocal got_slot
            async with limiter.slot():
                got_slot = True

        async with limiter.slot():
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
    async with RedisConcurrencyLimiter(1, redis_url, account=account) as limiter:
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
    async with RedisConcurrencyLimiter(1, redis_url, account=account) as limiter:
        order: list[int] = []
        release = anyio.Event()

        async def request(n: int) -> None:
            async with limiter.slot():
                order.append(n)

        async def hold() -> None:
            async with limiter.slot():
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)

            async def held() -> bool:
                return await limiter.in_flight() == 1

            await eventually(held, "the first slot taken")
            for n in range(1, 4):
                tg.start_soon(request, n)

                async def queued(n: int = n) -> bool:
                    return await limiter.waiting() == n

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


@pytest.mark.anyio
async def test_unreachable_redis_is_a_typed_error_without_the_password() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    async with RedisConcurrencyLimiter(3, url, account="sk-x") as limiter:
        with pytest.raises(LimiterUnavailableError) as caught:
            async with limiter.slot():
                pytest.fail("no slot without Redis")
        assert "s3cret-pw" not in str(caught.value)
        assert f"redis://:***@127.0.0.1:{port}/0" in str(caught.value)
        assert caught.value.url == f"redis://:***@127.0.0.1:{port}/0"
        with pytest.raises(LimiterUnavailableError, match=r"redis://:\*\*\*@"):
            await limiter.ping()


def test_plans_and_bad_arguments() -> None:
    url = "redis://127.0.0.1:1/0"
    assert RedisConcurrencyLimiter.for_plan("enterprise", url, account="sk-x").limit == 20
    with pytest.raises(ValueError, match="unknown plan 'gold'"):
        RedisConcurrencyLimiter.for_plan("gold", url, account="sk-x")
    with pytest.raises(ValueError, match="limit must be at least 1"):
        RedisConcurrencyLimiter(0, url, account="sk-x")
    with pytest.raises(ValueError, match="account"):
        RedisConcurrencyLimiter(1, url, account="")
