"""An answer in any script reaches the sink at its first sentence end, through a real Turn.

Real openai SDK -> loopback SSE server (voiceagent.testing) -> Turn -> chunker -> sink. The server
holds the rest of the stream until the sink has its first text: if the chunker waited for more (as it
did for a danda, which it did not know), the turn would deadlock and the bound fails it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
import pytest

from tests.test_turn import GATE_TIMEOUT, make_agent
from voiceagent.testing.openai_server import Chunk, FakeOpenAIServer, Reply, text_reply
from voiceagent.testing.sinks import RecordingSink


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as s:
        yield s


def hold_after(reply: Reply, ungated: int, gate: anyio.Event) -> Reply:
    """Hold every chunk after the first ``ungated`` ones until ``gate`` is set."""
    events = [e if i < ungated else dataclasses.replace(e, gate=gate) for i, e in enumerate(reply.events)]
    return dataclasses.replace(reply, events=tuple(events))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "first", "pieces"),
    [
        # Hindi, no comma before the first danda: one word per chunk, as a model streams it.
        ("आज पेरिस में धूप खिली है। तापमान इक्कीस डिग्री है। और कुछ?", "आज पेरिस में धूप खिली है। ", None),
        ("আজ প্যারিসে রোদ ঝলমলে। তাপমাত্রা একুশ ডিগ্রি।", "আজ প্যারিসে রোদ ঝলমলে। ", None),
        ("ਅੱਜ ਪੈਰਿਸ ਵਿੱਚ ਧੁੱਪ ਹੈ। ਤਾਪਮਾਨ ਇੱਕੀ ਡਿਗਰੀ ਹੈ।", "ਅੱਜ ਪੈਰਿਸ ਵਿੱਚ ਧੁੱਪ ਹੈ। ", None),
        # Chinese: no spaces; two characters per chunk.
        ("今天巴黎天气晴朗。气温二十一度。还有什么需要吗？", "今天巴黎天气晴朗。", 12),
        ("آج پیرس میں دھوپ ہے۔ درجہ حرارت اکیس ڈگری ہے۔", "آج پیرس میں دھوپ ہے۔ ", None),
        ("الطقس مشمس اليوم في باريس؟ نعم بالتأكيد", "الطقس مشمس اليوم في باريس؟ ", None),
    ],
)
async def test_first_sentence_reaches_the_sink_before_the_rest_is_streamed(
    server: FakeOpenAIServer, answer: str, first: str, pieces: int | None
) -> None:
    sink = RecordingSink()
    reply = text_reply(answer, pieces=pieces)
    payloads = [e.data for e in reply.events[:-2] if isinstance(e, Chunk) and isinstance(e.data, dict)]
    deltas = [payload["choices"][0]["delta"]["content"] for payload in payloads]
    # The first chunk is complete once the character after its sentence end has arrived.
    streamed, ungated = "", 0
    while len(streamed) <= len(first):
        streamed += deltas[ungated]
        ungated += 1
    assert streamed.startswith(first) and ungated < len(deltas)
    server.enqueue(hold_after(reply, ungated, sink.first_text))
    agent = make_agent(server, sink)
    with anyio.fail_after(GATE_TIMEOUT):
        result = await agent.respond("Weather in Paris?")
    assert sink.spoken[0] == first
    assert sink.text == answer
    assert result.error is None
