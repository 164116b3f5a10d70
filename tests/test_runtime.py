"""The server loop choice: uvloop when installed, the standard loop when switched off; a server really runs
on the chosen loop (a real LLM stream through the lean read path on it)."""

from __future__ import annotations

import asyncio
import importlib.util

import anyio
import pytest

from voiceagent.llm import LLMClient
from voiceagent.runtime import server_loop_options, uvloop_available
from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_switched_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEAGENT_UVLOOP", "0")
    assert not uvloop_available()
    assert server_loop_options() == {}


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed")
def test_uvloop_runs_a_stream_on_the_lean_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICEAGENT_UVLOOP", raising=False)
    assert server_loop_options() == {"use_uvloop": True}

    async def stream() -> tuple[str, str | None, str]:
        with anyio.fail_after(30):
            return await _stream()

    async def _stream() -> tuple[str, str | None, str]:
        async with FakeOpenAIServer() as server:
            server.enqueue(text_reply("Hello from uvloop."))
            async with LLMClient(base_url=server.base_url, api_key="sk_test") as client:
                async with client.stream([{"role": "user", "content": "hi"}]) as s:
                    parts = [
                        c["choices"][0]["delta"].get("content") or "" async for c in s if c.get("choices")
                    ]
        return type(asyncio.get_running_loop()).__module__, s.read_path, "".join(parts)

    module, path, text = anyio.run(stream, backend_options=server_loop_options())
    assert module.startswith("uvloop")
    assert path == "h1"
    assert text == "Hello from uvloop."


def test_settle_gc_freezes_the_startup_heap_and_sets_the_young_threshold_only_when_asked() -> None:
    import gc

    from voiceagent.runtime import settle_gc

    kept = [object() for _ in range(10)]  # start-up state that must survive, out of the collector's view
    before = gc.get_threshold()
    try:
        assert settle_gc() == before
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() >= len(kept)
        assert settle_gc(gen0=7_000) == before
        assert gc.get_threshold() == (7_000, before[1], before[2])
        with pytest.raises(ValueError, match="positive"):
            settle_gc(gen0=0)
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
