"""A sink that takes text as it is written (``streams_text``: the Lightning WebSocket's ``continue``) gets
a turn's first words before the first clause is complete; engines that need whole text keep getting
whole chunks. End to end: FakeOpenAIServer -> LLMClient -> Turn -> LightningSink -> FakeLightningServer."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from voiceagent.adapters.lightning import LightningSink
from voiceagent.adapters.lightning.fake import FakeLightningServer
from voiceagent.agent import Agent
from voiceagent.audio_output import CollectingOutput
from voiceagent.llm import LLMClient
from voiceagent.replay.recorder import RecordingTTSSink
from voiceagent.retry import RetryPolicy
from voiceagent.speaker import Speaker, TextStreamingEngine
from voiceagent.speech_lane import streams_text
from voiceagent.testing.openai_server import FakeOpenAIServer, Reply, text_reply
from voiceagent.testing.sinks import RecordingSink

pytestmark = pytest.mark.anyio

# One word a chunk (each keeps its trailing space), as a model streams them.
TEXT = "Hello there my friend, how are you doing today?"


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4().hex}"  # the per-account limiter is process-wide


@pytest.fixture
async def tts(key: str) -> AsyncIterator[FakeLightningServer]:
    async with FakeLightningServer(api_key=key, seconds_per_char=0.01, chunk_seconds=0.05) as server:
        yield server


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as server:
        yield server


def sink_for(tts: FakeLightningServer, key: str, output: Any) -> LightningSink:
    return LightningSink(output, api_key=key, voice_id="magnus", url=tts.ws_url, keepalive_interval=None)


def llm_for(server: FakeOpenAIServer) -> LLMClient:
    return LLMClient(base_url=server.base_url, api_key="sk_test", retry=RetryPolicy(max_attempts=1))


def gated_from(reply: Reply, index: int, gate: anyio.Event) -> Reply:
    """The reply with its chunk ``index`` (and so everything after it) held until ``gate`` is set."""
    events = list(reply.events)
    events[index] = dataclasses.replace(events[index], gate=gate)
    return dataclasses.replace(reply, events=events)


def text_frames(tts: FakeLightningServer) -> list[str]:
    return [m["text"] for m in tts.messages if m.get("continue") and m.get("text")]


def test_the_capability_is_declared_by_the_engine() -> None:
    output = CollectingOutput(16000)
    lightning = LightningSink(
        output, api_key="k", voice_id="magnus", url="ws://127.0.0.1:9", check_voice=False
    )
    assert isinstance(lightning.engine, TextStreamingEngine)
    assert lightning.streams_text and streams_text(lightning)
    assert not streams_text(RecordingSink())  # no speak_stream: whole chunks, as before


async def test_first_words_reach_lightning_before_the_first_clause_ends(
    tts: FakeLightningServer, llm_server: FakeOpenAIServer, key: str
) -> None:
    # The clause "Hello there my friend, " is complete only when " how" arrives: hold " friend," back.
    clause_gate = anyio.Event()
    llm_server.enqueue(gated_from(text_reply(TEXT), 3, clause_gate))
    output = CollectingOutput(16000)
    async with sink_for(tts, key, output) as sink, llm_for(llm_server) as llm:
        agent = Agent(llm=llm, sink=sink, system_prompt="Be brief.")
        async with anyio.create_task_group() as tg:
            results: list[Any] = []

            async def respond() -> None:
                results.append(await agent.respond("Hi"))

            tg.start_soon(respond)
            with anyio.fail_after(10):
                # The words of the unfinished clause are at the TTS server while the LLM still holds it.
                await tts.wait_until(lambda: "".join(text_frames(tts)) == "Hello there my ")
            assert not tts.utterances and not any(m.get("flush") for m in tts.messages[1:])
            clause_gate.set()
        [result] = results
    spoken = TEXT
    assert result.spoken_text == spoken and result.heard_text == spoken
    # One request per chunk, each flushed when the chunker ended it; the audio is all of it, in order.
    assert [u.text for u in tts.utterances] == ["Hello there my friend, ", "how are you doing today?"]
    assert "".join(text_frames(tts)) == spoken
    assert output.pcm16 == b"".join(u.pcm16 for u in tts.utterances)
    assert sink.played_chars == len(spoken)
    assert agent.conversation.messages()[-1] == {"role": "assistant", "content": spoken}


async def test_barge_in_while_a_clause_is_streaming_keeps_only_what_was_heard(
    tts: FakeLightningServer, llm_server: FakeOpenAIServer, key: str
) -> None:
    # The first clause was synthesized and is half played; the second is streaming (its words are at
    # the TTS server, not yet flushed: the LLM holds the rest) when the caller speaks.
    stall = anyio.Event()
    llm_server.enqueue(gated_from(text_reply(TEXT), 7, stall))
    output = CollectingOutput(16000, auto_play=False)
    async with sink_for(tts, key, output) as sink, llm_for(llm_server) as llm:
        agent = Agent(llm=llm, sink=sink, system_prompt="Be brief.")
        turn = agent.new_turn()
        results: list[Any] = []

        async def run() -> None:
            results.append(await turn.run("Hi"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(10):
                await tts.wait_until(lambda: "".join(text_frames(tts)).endswith("how are you "))
            assert [u.text for u in tts.utterances] == ["Hello there my friend, "]
            output.play(output.written_seconds / 2)
            turn.cancel()
        stall.set()
        [result] = results
        # The socket holding the unflushed request was retired; the next turn speaks on a new one.
        llm_server.enqueue(text_reply("Go on."))
        output.auto_play = True  # the listener hears the next turn as it is delivered
        with anyio.fail_after(10):
            after = await agent.respond("Sorry")
    assert result.interrupted
    first = "Hello there my friend, "
    heard = result.heard_text
    assert heard and first.startswith(heard) and len(heard) < len(first)  # half of it, cut at a word
    assert first[len(heard)] == " " or heard.endswith(" ")
    assert next(m for m in agent.conversation.messages() if m["role"] == "assistant") == {
        "role": "assistant",
        "content": heard.strip(),
    }
    assert tts.closed_by_client >= 1 and tts.connections_opened == 2
    assert after.heard_text == "Go on." and tts.utterances[-1].text == "Go on."


class _WholeTextEngine:
    """An engine that needs whole text (no ``streams_text``): it records what it was given."""

    sample_rate = 16000

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        yield b"\x00\x00" * 160

    async def interrupt(self) -> None:
        return None


async def test_engines_that_need_whole_text_keep_getting_whole_chunks(llm_server: FakeOpenAIServer) -> None:
    llm_server.enqueue(text_reply(TEXT))
    engine = _WholeTextEngine()
    sink = Speaker(engine, CollectingOutput(16000))
    assert not sink.streams_text
    async with llm_for(llm_server) as llm:
        result = await Agent(llm=llm, sink=sink, system_prompt="Be brief.").respond("Hi")
    assert engine.texts == ["Hello there my friend, ", "how are you doing today?"]
    assert result.spoken_text == TEXT


async def test_a_recorded_streaming_sink_still_streams_and_records_each_utterance(
    tts: FakeLightningServer, llm_server: FakeOpenAIServer, key: str
) -> None:
    # Recording must not change how text reaches the engine: the recorder passes the pieces through and
    # writes one speech record per utterance, with the digest of the audio the engine returned for it.
    clause_gate = anyio.Event()
    llm_server.enqueue(gated_from(text_reply(TEXT), 3, clause_gate))
    output = CollectingOutput(16000)
    async with sink_for(tts, key, output) as lightning, llm_for(llm_server) as llm:
        sink = RecordingTTSSink(lightning)
        assert streams_text(sink)
        agent = Agent(llm=llm, sink=sink, system_prompt="Be brief.")
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.respond, "Hi")
            with anyio.fail_after(10):
                await tts.wait_until(lambda: "".join(text_frames(tts)) == "Hello there my ")
            clause_gate.set()
    assert [r.text for r in sink.records] == ["Hello there my friend, ", "how are you doing today?"]
    for record, utterance in zip(sink.records, tts.utterances, strict=True):
        assert record.audio_sha256 == hashlib.sha256(utterance.pcm16).hexdigest()
