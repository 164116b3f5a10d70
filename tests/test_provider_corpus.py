"""Stream shapes of real OpenAI-compatible servers, through the real LLMClient and Turn, checked against
the SDK.

Each file in ``tests/provider_corpus/`` is one response body as a provider sends it (its sources are cited
in its ``:`` comment lines, which SSE clients ignore). The loopback server sends the bytes verbatim; our
``Agent`` runs a turn on them, and the openai SDK's own ``ChatCompletionStreamState`` assembles the same
bytes (fed the way the SDK's ``chat.completions.stream()`` helper feeds it, with its filter for Azure's
annotation chunks). The assistant message (content; each tool call's id, name, arguments and unknown
fields), the usage and the reasoning text must agree. Where the SDK is wrong the case says why and gives
the correct result; the test then also checks that the SDK still gets it wrong, so an SDK fix shows up.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.chat._completions import _is_valid_chat_completion_chunk_weak

from tests.conftest import fast_retry
from voiceagent.agent import Agent
from voiceagent.llm import LLMClient, ReadPath
from voiceagent.testing.openai_server import Chunk, Drop, FakeOpenAIServer, Reply, text_reply
from voiceagent.testing.sinks import RecordingSink
from voiceagent.turn import TurnConfig

CORPUS = Path(__file__).parent / "provider_corpus"
MESSAGES = [{"role": "user", "content": "hi"}]
TIMEOUT = 20.0  # per case; only reached when something is broken
_CALL_KEYS = {"id", "type", "function", "index"}


@dataclass(frozen=True)
class Assembled:
    """What a consumer makes of one streamed round."""

    content: str | None
    tool_calls: tuple[tuple[str, str, str], ...] = ()  # (id, name, arguments)
    call_extras: tuple[dict[str, Any], ...] = ()  # each call's fields beyond id/type/function
    usage: tuple[int, int, int] | None = None  # (prompt, completion, cached); None: not reported
    reasoning: str = ""


@dataclass(frozen=True)
class Case:
    name: str
    sdk_wrong: str | None = None  # why the SDK's result is not the truth
    expected: Assembled | None = None  # the truth, where the SDK is wrong
    cut: bool = False  # the server drops the connection after the bytes
    error: str | None = None  # a stream error: ours speaks the fallback line with this in TurnResult.error
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("openai-text"),
    Case("openai-parallel-tools"),
    Case("azure-openai-content-filter"),
    Case("vllm-tools-reasoning"),
    Case("llamacpp-server-reasoning"),
    Case("llama-cpp-python-crlf"),
    Case(
        "ollama-v1-same-index",
        sdk_wrong=(
            "every call comes at index 0, so the SDK merges the second call into the first (ids, "
            "names and arguments concatenated); a new id at an index whose call has another id is a "
            "new call"
        ),
        expected=Assembled(
            None,
            (
                ("call_w1pzh8a3", "file_write", '{"filePath":"hello.py","content":"print(\\"hello\\")"}'),
                ("call_k2mf9x0c", "file_write", '{"filePath":"world.py","content":"print(\\"world\\")"}'),
            ),
            ({}, {}),
            (182, 58, 0),
        ),
    ),
    Case(
        "gemini-openai-thought-signature",
        sdk_wrong=(
            "the call has no index: the SDK's stream state raises (openai-python#2806); and Gemini 3 "
            "needs extra_content.google.thought_signature back on the call, kept here as received"
        ),
        expected=Assembled(
            "Let me look that up.",
            (
                (
                    "call_297140",
                    "read",
                    '{"offset":1,"limit":100,"path":"/app/skills/stage-design/SKILL.md"}',
                ),
            ),
            (
                {
                    "extra_content": {
                        "google": {
                            "thought_signature": "CiQB0e2Kb8Xy4d0aR2jv+8hQmVq2nY1c6bJ9Zr0tT3uW5xY7aB=="
                        }
                    }
                },
            ),
            (412, 31, 0),
        ),
    ),
    Case(
        "gemini-openai-name-in-pieces",
        sdk_wrong=(
            "no index on the fragments: the SDK's stream state raises; the name's pieces are concatenated"
        ),
        expected=Assembled(
            None,
            (("call_5113", "edit_existing_file", '{"path":"notes.md","text":"hi"}'),),
            ({},),
            (95, 12, 0),
        ),
    ),
    Case(
        "groq-x-groq-usage",
        sdk_wrong=(
            "Groq puts the usage only in x_groq.usage; the SDK reads only the top-level usage and "
            "reports none"
        ),
        expected=Assembled("Hello World!", usage=(38, 4, 0)),
    ),
    Case(
        "deepseek-reasoner",
        sdk_wrong=("DeepSeek reports cache hits as prompt_cache_hit_tokens, which the SDK does not read"),
        expected=Assembled(
            "9.8 is greater.", usage=(1040, 95, 1024), reasoning="Okay, the user asks 9.11 vs 9.8."
        ),
    ),
    Case("dashscope-deepseek-r1-no-space"),
    Case("mistral-whole-call"),
    Case("openrouter-reasoning"),
    Case(
        "openrouter-midstream-error",
        sdk_wrong=(
            "both stop: the SDK raises APIError; a turn keeps what was said and speaks the fallback line"
        ),
        error="Provider disconnected unexpectedly",
    ),
    Case(
        "xai-usage-before-last",
        sdk_wrong=(
            "the SDK takes the last chunk's usage, and xAI's last chunk has none: the usage on the "
            "finish chunk is lost"
        ),
        expected=Assembled("Hi!", usage=(13, 2, 6), reasoning="Say hi."),
    ),
    Case("together-token-ids"),
    Case("fireworks-reasoning-tools"),
    Case(
        "litellm-proxy-id-every-chunk",
        sdk_wrong=(
            "LiteLLM repeats the id on every fragment and the SDK concatenates strings, id included "
            "(call_abccall_abccall_abc); a repeated id is the same call"
        ),
        expected=Assembled(None, (("call_abc", "search", '{"query":"hello"}'),), ({},), (60, 15, 0)),
    ),
    Case(
        "nvidia-nim-repeated-name",
        sdk_wrong=(
            "the whole name is resent on every fragment and the SDK concatenates it "
            "(read_fileread_file...); a piece equal to the name so far is a repeat"
        ),
        expected=Assembled(
            None, (("call_m2_01", "read_file", '{"path": "README.md"}'),), ({},), (120, 18, 0)
        ),
    ),
    Case(
        "openai-cut-after-finish",
        cut=True,
        sdk_wrong=(
            "the finish arrived, so the answer is complete; the SDK raises on the cut body (only the "
            "usage chunk and [DONE] were lost, the usage is then an estimate)"
        ),
        expected=Assembled("Paris is sunny."),
    ),
]


def _reply(case: Case) -> Reply:
    body = (CORPUS / f"{case.name}.sse").read_bytes()
    events: list[Chunk | Drop] = [Chunk(body)]
    if case.cut:
        events.append(Drop())
    return Reply(events=events, done=False)


def _usage(prompt: int, completion: int, cached: int | None) -> tuple[int, int, int]:
    return (prompt, completion, cached or 0)


async def _sdk(server: FakeOpenAIServer) -> Assembled:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk_test", max_retries=0)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    try:
        stream: Any = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        async for chunk in stream:
            if _is_valid_chat_completion_chunk_weak(chunk):  # as the SDK's stream() helper does
                state.handle_chunk(chunk)
    finally:
        await client.close()
    snapshot = state.current_completion_snapshot
    message = snapshot.choices[0].message
    calls = message.tool_calls or []
    extra = message.model_extra or {}
    usage = snapshot.usage
    cached = usage.prompt_tokens_details.cached_tokens if usage and usage.prompt_tokens_details else 0
    return Assembled(
        content=message.content or None,
        tool_calls=tuple((c.id, c.function.name, c.function.arguments) for c in calls),
        call_extras=tuple({k: v for k, v in c.model_dump().items() if k not in _CALL_KEYS} for c in calls),
        usage=_usage(usage.prompt_tokens, usage.completion_tokens, cached) if usage else None,
        reasoning=extra.get("reasoning_content") or extra.get("reasoning") or "",
    )


@dataclass
class Ours:
    assembled: Assembled
    spoken: str
    fallback_spoken: bool
    error: str | None
    sent_back: dict[str, Any] | None  # the assistant message as the next round's request carried it


async def _ours(server: FakeOpenAIServer, read_path: ReadPath) -> Ours:
    llm = LLMClient(
        base_url=server.base_url,
        api_key="sk_test",
        retry=fast_retry(),
        read_path=read_path,
    )
    sink = RecordingSink()
    agent = Agent(llm=llm, sink=sink, system_prompt="Be brief.", config=TurnConfig(filler=None))
    async with llm:
        result = await agent.respond("hi")
    first = result.rounds[0]
    assistant = next((m for m in agent.conversation.history if m["role"] == "assistant"), {"content": None})
    calls: list[dict[str, Any]] = assistant.get("tool_calls") or []
    sent_back = None
    if len(server.requests) > 2:  # the SDK's request, our first round, our second round
        sent_back = next(m for m in server.requests[2].body["messages"] if m["role"] == "assistant")
    usage = first.usage
    return Ours(
        Assembled(
            content=assistant["content"],
            tool_calls=tuple((c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls),
            call_extras=tuple({k: v for k, v in c.items() if k not in _CALL_KEYS} for c in calls),
            usage=None
            if usage.estimated
            else (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens),
            reasoning=first.reasoning,
        ),
        sink.text,
        result.fallback_spoken,
        result.error,
        sent_back,
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as s:
        yield s


def test_every_corpus_file_has_a_case_and_cites_a_source() -> None:
    files = {p.stem for p in CORPUS.glob("*.sse")}
    assert files == {c.name for c in CASES}
    for name in files:
        head = (CORPUS / f"{name}.sse").read_text().splitlines()
        assert head[0].startswith(": provider: ") and any(line.startswith(": source: ") for line in head)
        assert any(line.startswith("data:") for line in head)


@pytest.mark.anyio
@pytest.mark.parametrize("read_path", ["auto", "aiohttp", "sdk"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_provider_stream_through_llmclient_and_turn_matches_the_sdk(
    server: FakeOpenAIServer, case: Case, read_path: ReadPath
) -> None:
    with anyio.fail_after(TIMEOUT):
        server.enqueue(_reply(case))
        sdk: Assembled | None
        sdk_error: Exception | None = None
        try:
            sdk = await _sdk(server)
        except Exception as exc:  # the SDK's failure is part of what is compared
            sdk, sdk_error = None, exc
        # A round with tool calls is answered by a second round.
        server.enqueue(_reply(case), text_reply("Done."))
        ours = await _ours(server, read_path)

    if case.error is not None:
        assert ours.fallback_spoken and case.error in (ours.error or "")
        assert isinstance(sdk_error, openai.APIError) and case.error in str(sdk_error)
        return
    assert ours.error is None and not ours.fallback_spoken, ours.error
    # The reasoning is never spoken; the content is, whole.
    assert ours.spoken.startswith(ours.assembled.content or "")
    if ours.assembled.reasoning:
        assert ours.assembled.reasoning not in ours.spoken
    if ours.assembled.tool_calls:
        # The next round carried the calls back exactly as assembled, unknown fields included.
        assert ours.sent_back is not None
        assert json.dumps(ours.sent_back["tool_calls"], sort_keys=True) == json.dumps(
            [
                {**extra, "id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for (i, n, a), extra in zip(
                    ours.assembled.tool_calls, ours.assembled.call_extras, strict=True
                )
            ],
            sort_keys=True,
        )
    if case.sdk_wrong is None:
        assert sdk_error is None, f"the SDK failed on {case.name}: {sdk_error!r}"
        assert ours.assembled == sdk
    else:
        assert ours.assembled == case.expected, case.sdk_wrong
        # Still wrong in the installed SDK? If this fails the SDK was fixed: let the case compare again.
        assert sdk_error is not None or sdk != case.expected
