"""Turn-taking latency: the caller's last word -> the first bot audio frame on the phone's socket.

    .venv/bin/python -m bench.turntaking            # ~3 minutes
    .venv/bin/python -m bench.turntaking --quick

Every part is real and on loopback: a fake Twilio caller streams 20 ms mu-law frames in real time to
``TwilioServer``; ``Session`` sends them through ``PulseSTT`` to the real-behaving fake Pulse (a final
every 4 words, ``speech_ended`` 0.3 s after the last word, an EOU final after 0.8 s, finalize on ask);
the LLM is ``FakeOpenAIServer`` with a first-token delay (``--ttft``, default 0.35 s, then a word every
20 ms); espeak-ng speaks into the call. "Last word" is when the phone sent the end of the caller's
last word; "first audio" is when the phone received the bot's first media frame.

Two callers: one who says a sentence and stops, and one who takes a 0.5 s breath mid-sentence (0.2 s
of it after Pulse's speech_ended). Per speculation mode and endpointing delay: the latency (median,
min-max over ``--reps``; "split" when the breath ended the turn) and the LLM requests per user turn
(more than 1 is what speculation costs).
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass

import anyio

from voiceagent import Agent, LLMClient
from voiceagent.adapters.espeak import EspeakSink
from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer
from voiceagent.endpointing import EndpointingDetector, Speculate
from voiceagent.session import Session
from voiceagent.testing.openai_server import Chunk, FakeOpenAIServer, Reply, text_reply
from voiceagent.testing.pulse_server import FakePulseServer, Speech
from voiceagent.testing.twilio_client import FakeTwilioCall
from voiceagent.transport_output import TransportOutput

ANSWER = "Booked: a table for two at eight tonight. Anything else?"
ONE_BREATH = [Speech("I would like to book a table for two people at eight tonight", 0.3, 3.0)]
WITH_PAUSE = [
    Speech("I would like to book a table", 0.3, 1.6),
    Speech("for two people at eight tonight", 2.1, 3.5),
]
FRAME = b"\x00\x00" * 160  # 20 ms at 8 kHz


def slow_reply(ttft: float) -> Reply:
    reply = text_reply(ANSWER)
    events = [e for e in reply.events if isinstance(e, Chunk)]
    paced = [Chunk(events[0].data, delay=ttft)] + [Chunk(e.data, delay=0.02) for e in events[1:]]
    return Reply(events=paced)


@dataclass
class Run:
    latency: float
    requests: int
    turns: int


async def one_call(script: list[Speech], speculate: Speculate, delay: float, ttft: float) -> Run:
    sessions: list[Session] = []
    last_word = max(s.end for s in script)
    async with FakeOpenAIServer() as llm:
        for _ in range(6):
            llm.enqueue(slow_reply(ttft))
        pulse = FakePulseServer(script, max_words=4)

        async def call(stream: TwilioMediaStream) -> None:
            async with PulseSTT("sk_test", PulseOptions.for_twilio("en"), url=pulse.url) as stt:
                output = TransportOutput(stream, 8000)
                agent = Agent(
                    llm=LLMClient(base_url=llm.base_url, api_key="sk_test"),
                    sink=EspeakSink(output, words_per_minute=220),
                    system_prompt="You take restaurant bookings.",
                )
                detector = EndpointingDetector(delay=delay, speculate=speculate)
                session = Session(agent=agent, transport=stream, stt=stt, output=output, endpointing=detector)
                sessions.append(session)
                await session.run()

        async with pulse, TwilioServer(call) as server:
            async with FakeTwilioCall(server.url, playback_speed=math.inf) as phone:
                sent_last_word = math.nan
                first_audio = math.nan

                async def stream_audio() -> None:
                    nonlocal sent_last_word
                    start = time.perf_counter()
                    for i in range(int((last_word + 2.0) / 0.02)):  # the words, then 2 s of quiet
                        due = start + i * 0.02
                        await anyio.sleep(max(0.0, due - time.perf_counter()))
                        await phone.send_pcm(FRAME, 8000)
                        if math.isnan(sent_last_word) and (i + 1) * 0.02 >= last_word:
                            sent_last_word = time.perf_counter()

                async def watch() -> None:
                    nonlocal first_audio
                    await phone.wait_until(lambda: bool(phone.received_mulaw))
                    first_audio = time.perf_counter()

                with anyio.fail_after(30):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(stream_audio)
                        tg.start_soon(watch)
                    while not sessions or sessions[0].bot_speaking:  # noqa: ASYNC110 - let the reply finish
                        await anyio.sleep(0.05)
                await phone.stop()
            with anyio.fail_after(20):
                while not sessions or sessions[0].bot_speaking:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        session = sessions[0]
        turns = sum(m["role"] == "user" for m in session.agent.conversation.history)
        return Run(first_audio - sent_last_word, len(llm.requests), turns)


def summary(runs: list[Run]) -> str:
    if any(r.turns != 1 or not r.latency > 0 for r in runs):
        split = sum(r.turns != 1 for r in runs)
        return f"split into 2 turns in {split}/{len(runs)} runs: the bot answered the first half"
    ms = [r.latency * 1000 for r in runs]
    return f"{statistics.median(ms):.0f} ms ({min(ms):.0f}-{max(ms):.0f})"


async def amain(reps: int, ttft: float, delays: list[float]) -> None:
    print(f"first-token delay {ttft * 1000:.0f} ms, {reps} reps per row; latency: median (min-max)\n")
    print(
        "| caller | speculation | endpointing delay | last word -> first bot audio | LLM requests per turn |"
    )
    print("|---|---|---|---|---|")
    for caller, script in (("one breath", ONE_BREATH), ("0.5 s pause mid-sentence", WITH_PAUSE)):
        for delay in delays:
            for speculate in ("off", "speech_ended", "final"):
                runs = [await one_call(script, speculate, delay, ttft) for _ in range(reps)]
                requests = statistics.mean(r.requests / max(1, r.turns) for r in runs)
                latency = summary(runs)
                print(f"| {caller} | {speculate} | {delay * 1000:.0f} ms | {latency} | {requests:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ttft", type=float, default=0.35)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is not installed")
        return 1
    reps = 2 if args.quick else args.reps
    delays = [0.4] if args.quick else [0.2, 0.4, 0.8]
    anyio.run(amain, reps, args.ttft, delays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
