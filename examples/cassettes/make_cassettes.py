"""Make the example cassettes: ``python examples/cassettes/make_cassettes.py [name ...]`` (from the
repository root; no name: all of them).

How they were made, honestly: there was no network and no API key where they were produced, so these are
NOT recordings of live Electron. Each one is a REAL session of ``examples/weather_bot.py``'s agent (its
SYSTEM_PROMPT, tools and PARAMS, the real LLMClient, Turn, chunker and tool runner, and a deterministic
ToneSink) recorded by ``voiceagent.replay.recorder`` against ``FakeOpenAIServer`` on 127.0.0.1, scripted with
Electron-shaped replies: filler ``content`` before ``tool_calls``, the finish chunk without ``delta``, an
include_usage chunk with ``prompt_tokens_details.cached_tokens``, ~250 ms to the first token, then ~30
tokens/s. The chunk times in the files are what the recorder measured. Request ids, chunk ids and tool
call ids are seeded, so a re-run gives the same requests, chunks and speech (only the timings move).

To refresh them from the real thing, record the same sessions against live Electron: build the agent with
``LLMClient.electron()`` (``SMALLEST_API_KEY`` set) instead of the fake server's base_url, keep the recorder
wrappers as below, and commit the new files; the replay tests then check the framework against it.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio

from voiceagent.examples.weather_bot import build_agent
from voiceagent.llm import LLMClient
from voiceagent.replay.cassette import CassetteWriter
from voiceagent.replay.recorder import Recorder
from voiceagent.stt import SpeechStarted, STTEvent, Transcript
from voiceagent.testing.openai_server import Chunk, FakeOpenAIServer, Reply
from voiceagent.testing.tone_sink import ToneSink
from voiceagent.tools import Tool

if TYPE_CHECKING:
    from voiceagent.session import Session

HERE = Path(__file__).resolve().parent
PHONE_QUESTION = "What's the weather in Paris right now?"
PHONE_GOODBYE = "That's all, thank you. Bye!"
AGENT = "voiceagent.examples.weather_bot:build_agent"  # importable wherever voiceagent is installed
FIRST_TOKEN = 0.25  # seconds to the first token
PER_TOKEN = 1 / 30  # ~30 tokens per second


class Script:
    """Electron-shaped replies with seeded ids; usage is estimated from the request like a tokenizer would."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.previous_prompt = 0

    def _hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def request_id(self) -> str:
        h = self._hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"

    def reply(
        self,
        body: dict[str, Any],
        text: str = "",
        calls: Sequence[tuple[str, dict[str, Any]]] = (),
        *,
        cut_after: int | None = None,
        cut_gate: HoldGate | None = None,
    ) -> Reply:
        chunk_id = f"chatcmpl-{self._hex(24)}"

        def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0}
            if delta is not None:
                choice["delta"] = delta
            choice["finish_reason"] = finish
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": 1795000000,
                "model": "electron",
                "choices": [choice],
                "usage": None,
            }

        chunks: list[dict[str, Any]] = []
        tokens = _tokens(text)
        for i, token in enumerate(tokens):
            chunks.append(chunk({"role": "assistant", "content": token} if i == 0 else {"content": token}))
        for index, (name, arguments) in enumerate(calls):
            first = {
                "index": index,
                "id": f"call_{self._hex(24)}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            delta: dict[str, Any] = {"tool_calls": [first]}
            chunks.append(chunk({"role": "assistant", **delta} if not chunks else delta))
            for piece in _tokens(json.dumps(arguments), split_json=True):
                chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        completion = len(chunks)
        # Electron's finish chunk for tool calls has no delta (as the provider corpus records it).
        chunks.append(chunk(None, "tool_calls") if calls else chunk({}, "stop"))
        prompt = len(json.dumps(body["messages"]) + json.dumps(body.get("tools", []))) // 4
        cached = min(self.previous_prompt, prompt) // 32 * 32  # the server caches whole blocks of the prefix
        self.previous_prompt = prompt
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        chunks.append(
            {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": 1795000000,
                "model": "electron",
                "choices": [],
                "usage": usage,
            }
        )
        events = []
        for i, c in enumerate(chunks):
            gate = cut_gate if cut_after is not None and i == cut_after else None
            events.append(Chunk(c, delay=FIRST_TOKEN if i == 0 else PER_TOKEN, gate=gate))  # type: ignore[arg-type]
        return Reply(events=tuple(events), request_id=self.request_id())


def _tokens(text: str, split_json: bool = False) -> list[str]:
    """Roughly how a BPE tokenizer splits: words with their leading space; JSON in short pieces."""
    if not text:
        return []
    if split_json:
        return [text[i : i + 6] for i in range(0, len(text), 6)]
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return out


class HoldGate:
    """A chunk gate that says the cut point was reached, then never opens (the caller hangs up first)."""

    def __init__(self) -> None:
        self.reached = anyio.Event()

    async def wait(self) -> None:
        self.reached.set()
        await anyio.sleep_forever()


class ScriptedSTT:
    """The caller's side: final transcripts (and a speech start for the barge-in), in order."""

    def __init__(self, events: Sequence[STTEvent]) -> None:
        self._events = list(events)

    async def send_audio(self, pcm: bytes) -> None:
        pass

    async def events(self) -> Any:
        for event in self._events:
            yield event

    async def aclose(self) -> None:
        pass


Responder = Callable[[dict[str, Any], int], Reply]


async def record(
    name: str,
    scenario: str,
    responder: Responder,
    stt_events: Sequence[STTEvent],
    barge_in_turn: int | None = None,
    cut: HoldGate | None = None,
    extra_tools: Sequence[Tool] = (),
) -> None:
    path = HERE / f"{name}.jsonl"
    path.parent.mkdir(exist_ok=True)
    async with FakeOpenAIServer() as server:
        server.responder = lambda body: responder(body, len(server.requests))
        writer = CassetteWriter(
            path,
            meta={
                "agent": AGENT,
                "scenario": scenario,
                "made_by": "examples/cassettes/make_cassettes.py (FakeOpenAIServer)",
            },
        )
        recorder = Recorder(writer)
        # The key is fake; the cassette never contains it (nor any Authorization header).
        llm = LLMClient(base_url=server.base_url, api_key="sk_fake_key_for_recording_only")
        sink = recorder.wrap_sink(ToneSink())
        agent = build_agent(recorder.wrap_llm(llm), sink)
        for extra in extra_tools:  # after the agent's own, as Session(call=...) adds its built-ins
            agent.runner.add(extra)
        stt = recorder.wrap_stt(ScriptedSTT(stt_events))
        turn_index = 0
        async for event in stt.events():
            if not isinstance(event, Transcript) or not event.is_final:
                continue
            turn_index += 1
            turn = agent.new_turn(recorder.on_event)
            if turn_index != barge_in_turn:
                await turn.run(event.text)
                continue
            async with anyio.create_task_group() as tg:
                tg.start_soon(turn.run, event.text)
                assert cut is not None
                await cut.reached.wait()  # the server reached the cut point: the caller starts talking here
                await _settle(sink)
                turn.cancel()
        writer.close()
        await llm.aclose()
    print(f"wrote {path} ({len(path.read_text().splitlines())} records)")


async def _settle(sink: Any) -> None:
    """Let the chunks already received reach the sink (a recording script, not a test: polling is fine)."""
    last = -1
    while len(sink.text) != last:
        last = len(sink.text)
        await anyio.sleep(0.15)


async def weather() -> None:
    script = Script(seed=1)

    def responder(body: dict[str, Any], n: int) -> Reply:
        if n == 1:
            return script.reply(
                body, "Let me check the weather for you.", [("get_weather", {"city": "Paris"})]
            )
        return script.reply(body, "It's 18 degrees and sunny in Paris right now, a lovely day to be outside.")

    await record(
        "weather",
        "weather tool with filler (the demo session)",
        responder,
        [Transcript("What's the weather in Paris right now?", True)],
    )


async def parallel_tools() -> None:
    script = Script(seed=2)

    def responder(body: dict[str, Any], n: int) -> Reply:
        if n == 1:
            return script.reply(
                body,
                "Let me check both cities for you.",
                [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})],
            )
        return script.reply(
            body, "Paris is sunny at 18 degrees, while London has light rain at 12 degrees. Paris wins today."
        )

    await record(
        "parallel_tools",
        "two parallel tool calls in one round",
        responder,
        [Transcript("Is it warmer in Paris or in London right now?", True)],
    )


async def barge_in() -> None:
    script = Script(seed=3)
    cut = HoldGate()

    def responder(body: dict[str, Any], n: int) -> Reply:
        if n == 1:
            return script.reply(
                body, "Let me check the weather for you.", [("get_weather", {"city": "Tokyo"})]
            )
        if n == 2:
            text = (
                "It's 16 degrees and clear in Tokyo right now. The evening should stay clear and mild, "
                "with a light breeze from the bay, and tomorrow looks much the same, so it's a good day "
                "for a long walk."
            )
            # The caller talks over the answer after its first sentence and a bit: nothing more is sent.
            return script.reply(body, text, cut_after=14, cut_gate=cut)
        if n == 3:
            return script.reply(body, "Let me check London for you.", [("get_weather", {"city": "London"})])
        return script.reply(body, "London has light rain at 12 degrees right now.")

    await record(
        "barge_in",
        "the caller barges in mid-answer, then asks about another city",
        responder,
        [
            Transcript("What's the weather like in Tokyo?", True),
            SpeechStarted(),
            Transcript("Actually, what about London?", True),
        ],
        barge_in_turn=1,
        cut=cut,
    )


async def phone_end_call() -> None:
    """The phone bot's call (examples/phone_bot.py --selftest): the weather, then the caller is done and
    the model ends the call with CallSettings(end_call=True)'s built-in tool."""
    from voiceagent.telephony.settings import CallSettings
    from voiceagent.telephony.supervisor import CallSupervisor

    script = Script(seed=4)

    def responder(body: dict[str, Any], n: int) -> Reply:
        if n == 1:
            return script.reply(
                body, "Let me check the weather for you.", [("get_weather", {"city": "Paris"})]
            )
        if n == 2:
            return script.reply(
                body, "It's 18 degrees and sunny in Paris right now, a lovely day to be outside."
            )
        if n == 3:
            return script.reply(body, "You're welcome!", [("end_call", {})])
        return script.reply(body, "Enjoy the sunshine.")

    # The real built-in tool (its schema and result are what a Session(call=...) sends). It only asks
    # the supervisor to end the call; nothing runs that request while recording, so no session is needed.
    supervisor = CallSupervisor(CallSettings(end_call=True), cast("Session", None))
    await record(
        "phone/end_call",
        "the phone bot: the weather, then the caller says goodbye and the model calls end_call",
        responder,
        [Transcript(PHONE_QUESTION, True), Transcript(PHONE_GOODBYE, True)],
        extra_tools=supervisor.tools(),
    )


RECORDINGS = {
    "weather": weather,
    "parallel_tools": parallel_tools,
    "barge_in": barge_in,
    "phone/end_call": phone_end_call,
}


async def main(names: Sequence[str]) -> None:
    for name in names or RECORDINGS:
        await RECORDINGS[name]()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
