"""A worker process for tests/test_redis_limiter.py: takes slots from a shared RedisConcurrencyLimiter.

Usage: python redis_limiter_worker.py MODE REDIS_URL ACCOUNT LIMIT TAG [--ttl S] [--grace S] [--tasks N]
       [--acquire-timeout S] [--base-url URL]
Bookkeeping keys live under ``test:{TAG}:``.
- gated: TASKS tasks each take a slot, INCR ``holders`` and push the new count onto ``observed``, then
  wait for one token on ``go`` before DECR and leaving. The test hands out tokens one at a time.
- hold: take one slot, push "held" onto ``events``, then sleep until killed.
- enter: take one slot and push, as JSON, the Redis server time (ms) and the live leases at that moment.
- turns: TASKS concurrent turns (one Agent each) through an LLMClient on BASE_URL whose limiter is the
  shared one; each turn's result is pushed as JSON onto ``turns``.
"""

from __future__ import annotations

import argparse
import json

import anyio
import redis.asyncio as aioredis

from voiceagent.adapters.redis_limiter import RedisConcurrencyLimiter
from voiceagent.agent import Agent
from voiceagent.llm import LLMClient
from voiceagent.retry import RetryPolicy
from voiceagent.testing.sinks import RecordingSink


async def run_turns(
    limiter: RedisConcurrencyLimiter, book: aioredis.Redis, prefix: str, base_url: str, tasks: int
) -> None:
    async with LLMClient(
        base_url=base_url, api_key="sk_test", limiter=limiter, retry=RetryPolicy(max_attempts=1)
    ) as llm:

        async def turn(n: int) -> None:
            agent = Agent(llm=llm, sink=RecordingSink(), system_prompt="You are brief.")
            result = await agent.respond(f"question {n}")
            record = {"heard": result.heard_text, "fallback": result.fallback_spoken, "error": result.error}
            await book.rpush(f"{prefix}:turns", json.dumps(record))

        async with anyio.create_task_group() as tg:
            for n in range(tasks):
                tg.start_soon(turn, n)


async def main(args: argparse.Namespace) -> None:
    prefix = f"test:{args.tag}"
    limiter = RedisConcurrencyLimiter(
        args.limit,
        args.url,
        account=args.account,
        lease_ttl=args.ttl,
        restart_grace=args.grace,
        acquire_timeout=args.acquire_timeout,
    )
    async with limiter:
        # No socket timeout: BLPOP below legitimately blocks for as long as the test holds its token.
        book = aioredis.Redis.from_url(args.url, decode_responses=True, socket_timeout=None)
        try:
            if args.mode == "gated":

                async def gated() -> None:
                    async with limiter.slot():
                        holders = await book.incr(f"{prefix}:holders")
                        try:
                            await book.rpush(f"{prefix}:observed", holders)
                            await book.blpop([f"{prefix}:go"], timeout=0)
                        finally:
                            await book.decr(f"{prefix}:holders")

                async with anyio.create_task_group() as tg:
                    for _ in range(args.tasks):
                        tg.start_soon(gated)
            elif args.mode == "hold":
                async with limiter.slot():
                    await book.rpush(f"{prefix}:events", "held")
                    await anyio.sleep_forever()
            elif args.mode == "enter":
                async with limiter.slot():
                    seconds, micros = await book.time()
                    leases = await book.zrange(limiter.keys.leases, 0, -1)
                    record = {"server_ms": seconds * 1000 + micros // 1000, "leases": leases}
                    await book.rpush(f"{prefix}:entered", json.dumps(record))
            elif args.mode == "turns":
                await run_turns(limiter, book, prefix, args.base_url, args.tasks)
            else:
                raise SystemExit(f"unknown mode {args.mode!r}")
        finally:
            await book.aclose()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for name in ("mode", "url", "account"):
        parser.add_argument(name)
    parser.add_argument("limit", type=int)
    parser.add_argument("tag")
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--grace", type=float, default=None)
    parser.add_argument("--acquire-timeout", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--base-url", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse())
