"""First text at a streaming TTS engine: the turn's first words reach Lightning before the first clause ends.

``python -m bench.first_text [--reps N]`` (standalone; also row 5 of ``python -m bench``). A real turn:
``FakeOpenAIServer`` streams one word a chunk ``CHUNK_DELAY`` apart (the first clause is 6 words) ->
``LLMClient`` -> ``Turn`` -> ``LightningSink`` -> ``FakeLightningServer`` (in process; the figure is a
time, not a CPU share). Measured from the server writing the first content chunk to the Lightning fake
receiving the first text message (``continue``), two ways:

- **streaming** (``LightningEngine.streams_text``, the default): the words go out as they are written;
- **clause chunks** (the same engine with ``streams_text = False``, as every engine got before): the
  first text leaves when the chunker has the whole first clause.

Also: when the chunk that completes the first speakable chunk was sent, on the same clock, for reference.
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass

import anyio

from bench.stats import Summary, summarize
from voiceagent.adapters.lightning import LightningSink
from voiceagent.adapters.lightning.fake import FakeLightningServer
from voiceagent.agent import Agent
from voiceagent.audio_output import CollectingOutput
from voiceagent.chunker import SpeechChunker
from voiceagent.llm import LLMClient
from voiceagent.testing.openai_server import FakeOpenAIServer, split_text, text_reply

CHUNK_DELAY = 0.02
TEXT = "I think the weather in Paris is lovely today, so you should go out for a walk."
STREAMING = "streaming (continue)"
CLAUSES = "clause chunks"


def first_chunk_index() -> int:
    """The content chunk whose arrival completes the turn's first speakable chunk."""
    chunker = SpeechChunker()
    for index, word in enumerate(split_text(TEXT, None)):
        if chunker.push(word):
            return index
    raise AssertionError("the text never completes a chunk before its end")


@dataclass(frozen=True)
class FirstTextResult:
    reps: int
    first_text_ms: dict[str, Summary]  # first content chunk sent -> first text message at Lightning
    clause_end_ms: Summary  # first content chunk sent -> the chunk that completes the first clause sent


async def _one(streaming: bool) -> tuple[float, float]:
    key = f"bench-{uuid.uuid4().hex}"
    async with (
        FakeLightningServer(api_key=key, seconds_per_char=0.001, chunk_seconds=0.05) as tts,
        FakeOpenAIServer() as llm_server,
    ):
        llm_server.enqueue(text_reply(TEXT, chunk_delay=CHUNK_DELAY))
        sink = LightningSink(
            CollectingOutput(16000), api_key=key, voice_id="magnus", url=tts.ws_url, keepalive_interval=None
        )
        if not streaming:
            sink.engine.streams_text = False  # the same engine, taken as needing whole text
        first_text: list[float] = []

        async def watch() -> None:
            await tts.wait_until(lambda: any(m.get("continue") and m.get("text") for m in tts.messages))
            first_text.append(time.perf_counter())

        async with sink, LLMClient(base_url=llm_server.base_url, api_key="sk-bench") as llm:
            agent = Agent(llm=llm, sink=sink, system_prompt="Be brief.")
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                with anyio.fail_after(30):
                    result = await agent.respond("Weather?")
            if result.error:
                raise RuntimeError(result.error)
        sent = {chunk: at for _, chunk, at in llm_server.send_started_log}
        start = sent[0]
        return (first_text[0] - start) * 1000, (sent[first_chunk_index()] - start) * 1000


async def _measure(reps: int) -> FirstTextResult:
    samples: dict[str, list[float]] = {STREAMING: [], CLAUSES: []}
    clause: list[float] = []
    await _one(True)  # warm
    for rep in range(reps):
        for streaming in (True, False) if rep % 2 == 0 else (False, True):
            first, clause_end = await _one(streaming)
            samples[STREAMING if streaming else CLAUSES].append(first)
            clause.append(clause_end)
    return FirstTextResult(reps, {k: summarize(v) for k, v in samples.items()}, summarize(clause))


def measure_first_text(*, reps: int = 5) -> FirstTextResult:
    return anyio.run(_measure, reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5)
    result = measure_first_text(reps=parser.parse_args().reps)
    print(f"first content chunk sent -> first text at Lightning, {result.reps} repetitions, ms")
    for name, summary in result.first_text_ms.items():
        print(f"- {name}: {summary.fmt(' ms', 1)}")
    print(f"- (the first clause's last chunk sent: {result.clause_end_ms.fmt(' ms', 1)})")


if __name__ == "__main__":
    main()
