"""Read-path candidates for the chat stream, side by side: per-token CPU at a read per token, and request
set-up CPU, on asyncio's loop and on uvloop.

``python -m bench.read_paths [--quick]`` (standalone, ~1 minute; ~15 s quick). Every candidate returns the
streamed text, checked against what the server sent. Candidates:

- **floor**: a raw asyncio ``Protocol``, the request written by hand, ``json.loads`` in the read callback;
- **h1** (``LLMClient``'s default read path, ``voiceagent.h1``): a small asyncio ``Protocol`` HTTP/1.1
  client, our SSE parse, chunk dicts;
- **h1 + orjson** / **+ msgspec**: the same with the JSON decoder swapped (``voiceagent.llm``'s
  ``json.loads``), to see whether a faster decoder pays off end to end;
- **aiohttp** (``read_path="aiohttp"``): aiohttp's C parser under the same SSE parse;
- **SDK** (``LLMClient(read_path="sdk")``): the openai SDK's httpx/httpcore/h11 stack;
- **full turn**, both paths: ``Agent.respond()`` on top (accumulator, chunker, speaker task, sink).

Set-up: CPU per call of a 1-token stream (the bench server closes each connection, so a connect is in it
for every candidate; a keep-alive server saves that). The server runs in its own process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from bench.contenders import Consumer, our_client, ours_stream, ours_turn, protocol_floor
from bench.scenarios import scenario, token_words
from bench.server import ServerProcess
from bench.stats import Summary, summarize
from voiceagent import llm as llm_module

PACED_DELAY = 0.004


def _decoders() -> dict[str, Callable[[Any], Any]]:
    found: dict[str, Callable[[Any], Any]] = {}
    try:
        import orjson

        found["orjson"] = orjson.loads
    except ImportError:
        pass
    try:
        import msgspec

        found["msgspec"] = msgspec.json.decode
    except ImportError:
        pass
    return found


class _Json:
    """A stand-in for the ``json`` module inside ``voiceagent.llm``: only ``loads`` is swapped."""

    def __init__(self, loads: Callable[[Any], Any]) -> None:
        self.loads = loads

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


@contextmanager
def _decoder(loads: Callable[[Any], Any] | None) -> Iterator[None]:
    if loads is None:
        yield
        return
    # Both: a data line goes through llm._decode_json (its own fast path), other events through json.loads.
    saved, saved_line = llm_module.json, llm_module._decode_json
    llm_module.json = _Json(loads)  # type: ignore[assignment]
    llm_module._decode_json = loads
    try:
        yield
    finally:
        llm_module.json, llm_module._decode_json = saved, saved_line


def _candidates(base_url: str) -> dict[str, tuple[Consumer, Callable[[Any], Any] | None, Any]]:
    h1 = our_client(base_url, read_path="h1")
    aio = our_client(base_url, read_path="aiohttp")
    sdk = our_client(base_url, read_path="sdk")
    out: dict[str, tuple[Consumer, Callable[[Any], Any] | None, Any]] = {
        "floor: asyncio Protocol + json.loads": (protocol_floor(base_url), None, None),
        "h1 (voiceagent.h1, the default)": (ours_stream(h1), None, h1),
    }
    for name, loads in _decoders().items():
        out[f"h1 + {name}"] = (ours_stream(h1), loads, h1)
    out["aiohttp (C parser)"] = (ours_stream(aio), None, aio)
    out["SDK (httpx, httpcore, h11)"] = (ours_stream(sdk), None, sdk)
    out["full turn, h1"] = (ours_turn(h1), None, h1)
    out["full turn, aiohttp"] = (ours_turn(aio), None, aio)
    out["full turn, SDK"] = (ours_turn(sdk), None, sdk)
    return out


async def _run(base_url: str, tokens: int, reps: int, calls: int) -> dict[str, dict[str, list[float]]]:
    candidates = _candidates(base_url)
    paced = scenario("rp", "text", tokens=tokens, delay=PACED_DELAY).model
    one = scenario("rp1", "text", tokens=1, delay=0).model
    expected = "".join(token_words(tokens)).strip()
    out: dict[str, dict[str, list[float]]] = {n: {"token_us": [], "setup_ms": []} for n in candidates}
    try:
        for consume, loads, _ in candidates.values():
            with _decoder(loads):
                await consume(one)
        names = list(candidates)
        for rep in range(reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                consume, loads, _ = candidates[name]
                with _decoder(loads):
                    gc.collect()
                    start = time.process_time()
                    text = await consume(paced)
                    out[name]["token_us"].append((time.process_time() - start) * 1e6 / tokens)
                    if text.strip() != expected:
                        raise RuntimeError(f"{name} received the wrong text")
                    gc.collect()
                    start = time.process_time()
                    for _ in range(calls):
                        await consume(one)
                    out[name]["setup_ms"].append((time.process_time() - start) * 1000 / calls)
    finally:
        for _, _, client in candidates.values():
            if client is not None:
                await client.aclose()
    return out


def measure(
    base_url: str, *, tokens: int = 300, reps: int = 5, calls: int = 30
) -> dict[str, dict[str, dict[str, Summary]]]:
    """``{loop: {candidate: {"token_us": ..., "setup_ms": ...}}}``; uvloop's rows only if it is installed."""
    loops: dict[str, dict[str, Any]] = {"asyncio": {}}
    try:
        import uvloop  # noqa: F401

        loops["uvloop"] = {"use_uvloop": True}
    except ImportError:
        pass
    results: dict[str, dict[str, dict[str, Summary]]] = {}
    for loop, options in loops.items():
        raw: Callable[[], Awaitable[Any]] = lambda: _run(base_url, tokens, reps, calls)  # noqa: E731
        samples = anyio.run(raw, backend_options=options)
        results[loop] = {
            name: {k: summarize(v) for k, v in measures.items()} for name, measures in samples.items()
        }
    return results


def render(results: dict[str, dict[str, dict[str, Summary]]], tokens: int) -> str:
    lines = [
        f"load average {os.getloadavg()[0]:.1f}; {tokens}-token streams {PACED_DELAY * 1000:.0f} ms apart "
        "(a read per token); set-up = CPU per 1-token call",
        "",
        "| loop | candidate | CPU µs per token | × floor | set-up CPU ms per call |",
        "|---|---|---|---|---|",
    ]
    floor = results["asyncio"]["floor: asyncio Protocol + json.loads"]["token_us"].median
    for loop, rows in results.items():
        for name, m in rows.items():
            ratio = m["token_us"].median / floor
            lines.append(
                f"| {loop} | {name} | {m['token_us'].fmt('', 0)} | {ratio:.2f}x | {m['setup_ms'].fmt('')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    args = parser.parse_args()
    tokens, reps, calls = (80, 2, 10) if args.quick else (300, 5, 30)
    with ServerProcess() as server:
        results = measure(server.base_url, tokens=tokens, reps=reps, calls=calls)
    print(render(results, tokens))


if __name__ == "__main__":
    main()
