"""Fleet benchmark: 4 worker processes x 100 calls sharing one enterprise limit (20) through a real
redis-server. Each call makes one streamed LLM request through ``LLMClient`` and the Redis limiter
(what every ``voiceagent serve --redis`` worker does); the local server answers 429 above 20 in flight.

    .venv/bin/python -m bench.fleet_serve [--workers 4] [--calls 100] [--limit 20] [--seconds 0.25]

Prints the queueing delay for a slot (p50/p99, overall and per worker), the fairness across workers
(Jain's index over the per-worker mean delays, and each worker's share of the first half of grants),
the most requests the server saw in flight, and the 429s it served.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio

from bench.stats import percentile

ACCOUNT = "bench-fleet-serve"


class _TimedLimiter:
    """Measures how long each ``slot()`` waited for its grant (a Limiter, wrapping the Redis one)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.waits: list[tuple[float, float]] = []  # (granted at, seconds waited)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        asked = time.time()
        async with self.inner.slot():
            granted = time.time()
            self.waits.append((granted, granted - asked))
            yield


async def _worker(index: int, redis_url: str, base_url: str, calls: int, limit: int, start_at: float) -> None:
    import logging

    from prometheus_client import CollectorRegistry

    from voiceagent.adapters.redis_limiter import RedisConcurrencyLimiter
    from voiceagent.llm import LLMClient
    from voiceagent.serving.metrics import Metrics, RateLimitCounter

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    logging.getLogger("voiceagent.llm").addHandler(RateLimitCounter(metrics))
    errors: list[str] = []
    async with RedisConcurrencyLimiter(limit, redis_url, account=ACCOUNT, acquire_timeout=120) as redis:
        limiter = _TimedLimiter(redis)
        llm = LLMClient(base_url=base_url, api_key="bench-needs-no-key", limiter=limiter)
        rng = random.Random(index)

        async def call() -> None:
            await anyio.sleep(rng.uniform(0, 2.0))  # calls arrive over 2 s
            try:
                async with llm.stream([{"role": "user", "content": "hi"}]) as stream:
                    async for _ in stream:
                        pass
            except Exception as exc:
                errors.append(repr(exc))

        await anyio.sleep(max(0.0, start_at - time.time()))
        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(call)
        await llm.aclose()
    rate_limited = registry.get_sample_value("voiceagent_llm_rate_limited_total") or 0.0
    print(json.dumps({"waits": limiter.waits, "errors": errors, "retried_429": rate_limited}), flush=True)


@contextmanager
def _redis() -> Iterator[str]:
    try:  # the launcher may move (tests/support); redis-server itself is all this needs
        from voiceagent.testing.redis_server import RedisServer
    except ImportError:
        RedisServer = None  # type: ignore[assignment,misc]
    if RedisServer is not None:
        with RedisServer() as server:
            yield server.url
        return
    path = shutil.which("redis-server")
    if path is None:
        raise SystemExit("redis-server is not installed")
    port = 6390 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([path, "--port", str(port), "--save", "", "--dir", tmp])
        try:
            time.sleep(1.0)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


async def _main(args: argparse.Namespace) -> None:
    from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply

    with _redis() as redis_url:
        server = FakeOpenAIServer(concurrency_limit=args.limit)
        pieces = 10
        server.responder = lambda body: text_reply(
            "Sure, the weather in Paris is sunny today.", pieces=pieces, chunk_delay=args.seconds / pieces
        )
        async with server:
            start_at = time.time() + 4.0  # every worker up, and a fresh Redis's restart grace over
            outputs: list[bytes] = [b""] * args.workers
            async with anyio.create_task_group() as tg:
                for i in range(args.workers):
                    command = [
                        sys.executable, "-m", "bench.fleet_serve", "--worker", str(i), redis_url,
                        server.base_url, str(args.calls), str(args.limit), str(start_at),
                    ]  # fmt: skip

                    async def run(i: int = i, command: list[str] = command) -> None:
                        done = await anyio.run_process(command, check=True)
                        outputs[i] = done.stdout

                    tg.start_soon(run)
            results = [json.loads(out.decode().strip().splitlines()[-1]) for out in outputs]
            _report(args, results, server.max_in_flight)


def _report(args: argparse.Namespace, results: list[dict[str, Any]], max_in_flight: int) -> None:
    all_waits = [w for r in results for _, w in r["waits"]]
    grants = sorted((g, i) for i, r in enumerate(results) for g, _ in r["waits"])
    first_half = [i for _, i in grants[: len(grants) // 2]]
    means = [sum(w for _, w in r["waits"]) / max(1, len(r["waits"])) for r in results]
    jain = sum(means) ** 2 / (len(means) * sum(m * m for m in means)) if any(means) else 1.0
    print(f"## Fleet: {args.workers} workers x {args.calls} calls, one limit of {args.limit} in Redis\n")
    print(f"requests: {len(all_waits)}, each holding its slot ~{args.seconds:.2f} s\n")
    print("| worker | requests | slot wait p50 (s) | p99 (s) | mean (s) | share of first half of grants |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(results):
        waits = [w for _, w in r["waits"]]
        share = first_half.count(i) / max(1, len(first_half))
        print(
            f"| {i} | {len(waits)} | {percentile(waits, 50):.3f} | {percentile(waits, 99):.3f} "
            f"| {means[i]:.3f} | {share:.0%} |"
        )
    print(
        f"| all | {len(all_waits)} | {percentile(all_waits, 50):.3f} | {percentile(all_waits, 99):.3f} "
        f"| {sum(all_waits) / len(all_waits):.3f} | |"
    )
    errors = [e for r in results for e in r["errors"]]
    retried = sum(r["retried_429"] for r in results)
    print(f"\nJain's fairness index over the workers' mean waits: {jain:.3f} (1 = equal)")
    print(f"most requests in flight at the server: {max_in_flight} (limit {args.limit})")
    print(f"429s served: {int(retried)} (retried by the client), failed requests: {len(errors)}")
    for error in errors[:5]:
        print(f"  {error}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        index, redis_url, base_url, calls, limit, start_at = sys.argv[2:8]
        anyio.run(_worker, int(index), redis_url, base_url, int(calls), int(limit), float(start_at))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.25, help="how long each request streams")
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
