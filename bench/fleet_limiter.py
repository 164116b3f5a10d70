"""Fleet limiter (Redis) figures: how fast a dead worker's slot comes back, and what a slot costs when
Redis is up, down, hung or just restarted. Real redis-server, real worker processes, default settings.

    .venv/bin/python -m bench.fleet_limiter [--trials 5]

Prints a Markdown table. Needs ``redis-server`` and the ``redis`` extra.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

import anyio

from voiceagent.adapters.redis_limiter import DEFAULT_LEASE_TTL, RedisConcurrencyLimiter
from voiceagent.testing.redis_server import RedisServer


async def _hold(url: str, account: str) -> None:
    """The worker that gets killed: take the one slot, say so, wait to be SIGKILLed."""
    async with RedisConcurrencyLimiter(1, url, account=account, restart_grace=0) as limiter:
        async with limiter.slot():
            print("held", flush=True)
            await anyio.sleep_forever()


def _spawn_holder(url: str, account: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fleet_limiter", "--hold", url, account],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "held":
        proc.kill()
        raise RuntimeError("the holder worker did not take its slot")
    return proc


async def kill_to_free(url: str) -> float:
    """Seconds from SIGKILL of the slot's holder to a queued waiter in another process getting it."""
    account = f"bench-{uuid.uuid4().hex}"
    holder = await anyio.to_thread.run_sync(_spawn_holder, url, account)
    try:
        async with RedisConcurrencyLimiter(
            1, url, account=account, restart_grace=0, acquire_timeout=60
        ) as waiter:
            granted_at = 0.0

            async def wait_for_slot() -> None:
                nonlocal granted_at
                async with waiter.slot():
                    granted_at = time.perf_counter()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_slot)
                while await waiter.waiting() < 1:  # noqa: ASYNC110 - the state is in Redis
                    await anyio.sleep(0.01)
                killed_at = time.perf_counter()
                holder.send_signal(signal.SIGKILL)
            return granted_at - killed_at
    finally:
        holder.kill()
        holder.wait()


async def until_recovered(limiter: RedisConcurrencyLimiter) -> None:
    # Polled: recovery is noticed by the limiter's heartbeat, which offers no event.
    while limiter.degraded:  # noqa: ASYNC110
        await anyio.sleep(0.01)


async def slot_seconds(limiter: RedisConcurrencyLimiter) -> float:
    started = time.perf_counter()
    async with limiter.slot():
        return time.perf_counter() - started


async def faults(server: RedisServer) -> dict[str, float]:
    """One slot's acquire time under each condition, on one long-lived limiter (as a worker has)."""
    out: dict[str, float] = {}
    account = f"bench-{uuid.uuid4().hex}"
    async with RedisConcurrencyLimiter(3, server.url, account=account) as limiter:
        await anyio.sleep(limiter.restart_grace + 0.1)  # a fresh Redis opens a grace at start-up
        up = [await slot_seconds(limiter) for _ in range(50)]
        out["Redis up, free slot (median of 50)"] = statistics.median(up)

        await anyio.to_thread.run_sync(server.stop)
        out["Redis down: first slot (tries Redis for fallback_after, then falls back)"] = await slot_seconds(
            limiter
        )
        out["Redis down: next slot (in-process limit)"] = await slot_seconds(limiter)
        await anyio.to_thread.run_sync(server.start)
        await until_recovered(limiter)

        server.pause()
        try:
            await anyio.sleep(limiter.lease_ttl / 3 + 0.1)  # past the fast path's retry point
            out[
                "Redis hung (SIGSTOP): first slot (1 s socket timeouts for fallback_after, then falls back)"
            ] = await slot_seconds(limiter)
            out["Redis hung: next slot"] = await slot_seconds(limiter)
        finally:
            server.resume()
        await until_recovered(limiter)

        # A restart loses every lease; the grace holds new grants until the holders re-registered.
        async with limiter.slot():
            await anyio.to_thread.run_sync(server.restart)
            async with RedisConcurrencyLimiter(3, server.url, account=account) as newcomer:
                out["first slot right after a restart (restart grace)"] = await slot_seconds(newcomer)
    return out


async def main(trials: int) -> None:
    with RedisServer() as server:
        frees = [await kill_to_free(server.url) for _ in range(trials)]
        fault_figures = await faults(server)
    load = os.getloadavg()[0]
    print(f"Fleet limiter, default settings (lease TTL {DEFAULT_LEASE_TTL:g} s, heartbeat every")
    print(f"{DEFAULT_LEASE_TTL / 3:g} s, socket timeout 1 s); load {load:.2f} on {os.cpu_count()} cores\n")
    print("| measure | time |")
    print("|---|---|")
    print(
        f"| SIGKILLed worker's slot to the next waiter, {trials} trials: median (min-max) "
        f"| {statistics.median(frees):.2f} s ({min(frees):.2f}-{max(frees):.2f}) |"
    )
    for name, seconds in fault_figures.items():
        print(f"| {name} | {seconds * 1000:.1f} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--hold", nargs=2, metavar=("URL", "ACCOUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        anyio.run(_hold, *args.hold)
    else:
        anyio.run(main, args.trials)
