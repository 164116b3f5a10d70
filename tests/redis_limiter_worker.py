"""A worker process for tests/test_redis_limiter.py: takes slots from a shared RedisConcurrencyLimiter.

Usage: python redis_limiter_worker.py MODE REDIS_URL ACCOUNT LIMIT LEASE_TTL TAG [TASKS]
Bookkeeping keys live under ``test:{TAG}:``.
- gated: TASKS tasks each take a slot, INCR ``holders`` and push the new count onto ``observed``, then
  wait for one token on ``go`` before DECR and leaving. The test hands out tokens one at a time.
- hold: take one slot, push "held" onto ``events``, then sleep until killed.
- enter: take one slot and push, as JSON, the Redis server time (ms) and the live leases at that moment.
"""

from __future__ import annotations

import json
import sys

import anyio
import redis.asyncio as aioredis

from voiceagent.adapters.redis_limiter import RedisConcurrencyLimiter


async def main(mode: str, url: str, account: str, limit: int, ttl: float, tag: str, tasks: int) -> None:
    prefix = f"test:{tag}"
    async with RedisConcurrencyLimiter(limit, url, account=account, lease_ttl=ttl) as limiter:
        # No socket timeout: BLPOP below legitimately blocks for as long as the test holds its token.
        book = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=None)
        try:
            if mode == "gated":

                async def gated() -> None:
                    async with limiter.slot():
                        holders = await book.incr(f"{prefix}:holders")
                        try:
                            await book.rpush(f"{prefix}:observed", holders)
                            await book.blpop([f"{prefix}:go"], timeout=0)
                        finally:
                            await book.decr(f"{prefix}:holders")

                async with anyio.create_task_group() as tg:
                    for _ in range(tasks):
                        tg.start_soon(gated)
            elif mode == "hold":
                async with limiter.slot():
                    await book.rpush(f"{prefix}:events", "held")
                    await anyio.sleep_forever()
            elif mode == "enter":
                async with limiter.slot():
                    seconds, micros = await book.time()
                    leases = await book.zrange(limiter.keys.leases, 0, -1)
                    record = {"server_ms": seconds * 1000 + micros // 1000, "leases": leases}
                    await book.rpush(f"{prefix}:entered", json.dumps(record))
            else:
                raise SystemExit(f"unknown mode {mode!r}")
        finally:
            await book.aclose()


if __name__ == "__main__":
    mode, url, account, limit, ttl, tag, *rest = sys.argv[1:]
    anyio.run(main, mode, url, account, int(limit), float(ttl), tag, int(rest[0]) if rest else 1)
