"""Per-client set-up cost: CPU to build (and close) one LLM client, and to serve one short call with a
client built for that call vs one client shared by every call.

``python -m bench.client_setup [--quick]`` prints a Markdown table. The README's phone example used to
build one ``LLMClient`` per call; each built an SSL context (~20 ms of CPU, even for ``http://``), which
under load cost a third of the sessions a worker could hold. Contenders:

- **bare SDK client**: ``openai.AsyncOpenAI(...)`` with its default HTTP client (what ``LLMClient`` built
  before it shared one SSL context per process);
- **ours, built per call**: ``LLMClient(...)``, ``http://`` and ``https://`` base URLs;
- **ours, one shared client**: no set-up per call at all (the connection pool is shared too).

The call rows stream a 20-token answer from the bench server (its own process, so its CPU is not counted).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Awaitable, Callable

import anyio
import openai

from bench.scenarios import scenario
from bench.server import ServerProcess
from bench.stats import Summary, summarize
from voiceagent.llm import LLMClient

MESSAGES = [{"role": "user", "content": "Hi"}]


async def _build_bare(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk_bench", max_retries=0)
    await client.close()


async def _build_ours(base_url: str) -> None:
    await LLMClient(base_url=base_url, api_key="sk_bench").aclose()


async def _stream(client: LLMClient, model: str) -> None:
    client.model = model
    async with client.stream(MESSAGES) as stream:
        async for _ in stream:
            pass


def _cpu_ms(samples_per_rep: int, reps: int, action: Callable[[], Awaitable[None]]) -> Summary:
    async def run() -> list[float]:
        await action()  # warm: imports, the process's shared SSL context, code paths
        out: list[float] = []
        for _ in range(reps):
            gc.collect()
            start = time.process_time()
            for _ in range(samples_per_rep):
                await action()
            out.append((time.process_time() - start) * 1000 / samples_per_rep)
        return out

    return summarize(anyio.run(run))


def measure(*, quick: bool = False) -> dict[str, Summary]:
    builds, calls, reps = (10, 10, 3) if quick else (40, 40, 7)
    results = {
        "build: bare SDK client (an SSL context each)": _cpu_ms(
            builds, reps, lambda: _build_bare("http://127.0.0.1:9/v1")
        ),
        "build: ours, http://": _cpu_ms(builds, reps, lambda: _build_ours("http://127.0.0.1:9/v1")),
        "build: ours, https://": _cpu_ms(builds, reps, lambda: _build_ours("https://api.example.com/v1")),
    }
    with ServerProcess() as server:
        model = scenario("setup", "text", tokens=20, delay=0).model

        async def per_call() -> None:
            async with LLMClient(base_url=server.base_url, api_key="sk_bench") as client:
                await _stream(client, model)

        shared = LLMClient(base_url=server.base_url, api_key="sk_bench")
        results["call (20 tokens): ours, client built per call"] = _cpu_ms(calls, reps, per_call)
        results["call (20 tokens): ours, one shared client"] = _cpu_ms(
            calls, reps, lambda: _stream(shared, model)
        )
    return results


def render(results: dict[str, Summary]) -> str:
    lines = ["| Measure | CPU ms (median, min–max) |", "|---|---|"]
    lines += [f"| {name} | {summary.fmt(' ms')} |" for name, summary in results.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    print(render(measure(quick=parser.parse_args().quick)))


if __name__ == "__main__":
    main()
