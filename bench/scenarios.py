"""What the bench server replies, chosen by the request alone so every contender gets the same stream.

The scenario rides in the ``model`` field (every client under test lets you set it, Pipecat included):
``bench|<tag>|<kind>|<key>=<value>,...``. ``tag`` names the request so its server-side send times can be
matched to the client-side events afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voiceagent.testing.openai_server import Chunk, Reply, split_text, text_reply, tool_reply

FILLER = "Sure, let me check the weather in Paris for you. "
ANSWER = "It is 21 degrees and sunny in Paris right now."
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"city": "Paris", "unit": "celsius"}
TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city", "unit"],
        },
    },
}
# The first content delta holds a clause boundary and the next word start, so it alone completes the
# first speakable chunk ("Hello there, "): its send time is where "first content byte -> sink" starts.
LATENCY_TEXT = ["Hello there, how", " are", " you", " today?", " Fine."]


@dataclass(frozen=True)
class Scenario:
    tag: str
    kind: str
    params: dict[str, str]

    def number(self, key: str, default: float) -> float:
        return float(self.params.get(key, default))

    @property
    def model(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"bench|{self.tag}|{self.kind}|{params}"


def scenario(tag: str, kind: str, **params: float | int | str) -> Scenario:
    return Scenario(tag, kind, {k: str(v) for k, v in params.items()})


def parse_model(model: str) -> Scenario:
    parts = model.split("|")
    if len(parts) != 4 or parts[0] != "bench":
        raise ValueError(f"not a bench model name: {model!r}")
    params = dict(p.split("=", 1) for p in parts[3].split(",") if p)
    return Scenario(parts[1], parts[2], params)


def token_words(count: int, sentence_words: int = 8) -> list[str]:
    """``count`` one-word tokens with a full stop every ``sentence_words`` words (unique words, so a
    spoken chunk can be traced back to the tokens in it)."""
    words = []
    for i in range(count):
        end = "." if (i + 1) % sentence_words == 0 else ""
        words.append(f"w{i}{end} ")
    return words


def reply_for(body: dict[str, Any]) -> Reply:
    """The scripted reply for one request body."""
    spec = parse_model(str(body.get("model", "")))
    delay = spec.number("delay", 0.0)
    messages = body.get("messages") or []
    answered = bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
    if spec.kind == "text":
        words = token_words(int(spec.number("tokens", 100)), int(spec.number("sentence", 8)))
        return text_reply("".join(words), chunk_delay=delay)
    if spec.kind == "weather":  # filler + tool call, then the answer once the tool result is in
        if answered:
            return text_reply(ANSWER, chunk_delay=delay)
        # finish_delta=1: the finish chunk carries an empty ``delta`` (OpenAI's shape); by default it has
        # none (Electron's), which LiveKit Agents 1.8 drops along with the tool call it completes.
        return tool_reply(
            [(TOOL_NAME, TOOL_ARGUMENTS)],
            filler=FILLER,
            arg_pieces=3,
            chunk_delay=delay,
            omit_delta_on_finish=spec.params.get("finish_delta") != "1",
        )
    if spec.kind == "latency-text":
        reply = _replace_contents(
            text_reply("".join(LATENCY_TEXT), pieces=len(LATENCY_TEXT), chunk_delay=delay), LATENCY_TEXT
        )
        if "ttft" in spec.params:  # the first chunk ``ttft`` after the headers, as a model thinks first
            first, *rest = reply.events
            assert isinstance(first, Chunk)
            return Reply(events=(Chunk(first.data, delay=spec.number("ttft", 0.0), gate=first.gate), *rest))
        return reply
    if spec.kind == "latency-tool":  # no filler: chunk 0 opens the call, chunks 1..3 carry its arguments
        if answered:
            return text_reply("Done.", chunk_delay=delay)
        return tool_reply([(TOOL_NAME, TOOL_ARGUMENTS)], arg_pieces=3, chunk_delay=delay)
    raise ValueError(f"unknown bench scenario kind {spec.kind!r}")


LATENCY_TOOL_LAST_ARGUMENT_CHUNK = 3


def _replace_contents(reply: Reply, pieces: list[str]) -> Reply:
    """Exact content pieces (split_text slices evenly; the latency scenario needs its own split)."""
    events = list(reply.events)
    for i, piece in enumerate(pieces):
        chunk = events[i]
        assert isinstance(chunk, Chunk) and isinstance(chunk.data, dict)
        data = dict(chunk.data)
        choice = dict(data["choices"][0])
        choice["delta"] = {**choice["delta"], "content": piece}
        data["choices"] = [choice]
        events[i] = Chunk(data, delay=chunk.delay, gate=chunk.gate)
    return Reply(events=tuple(events))


def split_words(text: str) -> list[str]:
    """The word tokens the server streams ``text`` as."""
    return split_text(text, None)
