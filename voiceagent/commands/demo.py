"""Run one turn of the example weather bot and write what it said to a WAV file.

Offline (the default when SMALLEST_API_KEY is unset): the LLM side is the shipped recorded session
``examples/cassettes/weather.jsonl`` served by a local OpenAI-compatible server at its recorded pace,
and espeak-ng speaks. With SMALLEST_API_KEY set: live Electron and Lightning (``--record`` writes a
fresh cassette of the live session). Either way the real pipeline runs and the turn timeline is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from voiceagent.audio_output import WavFileOutput
from voiceagent.cassette import Cassette, CassetteError, CassetteWriter
from voiceagent.errors import VoiceAgentError
from voiceagent.events import TurnEvent
from voiceagent.llm import API_KEY_ENV, LLMClient
from voiceagent.results import TurnResult
from voiceagent.timeline import Timeline
from voiceagent.tts import AudioOutput, TTSSink

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CASSETTE = REPO / "examples" / "cassettes" / "weather.jsonl"
DEFAULT_QUESTION = "What's the weather in Paris right now?"
SAMPLE_RATE = 16000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo.wav"), help="the WAV to write")
    parser.add_argument(
        "--cassette", type=Path, default=DEFAULT_CASSETTE, help="offline: the recorded session"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="offline: 1 = recorded pace, 0 = no waiting")
    parser.add_argument("--offline", action="store_true", help="stay offline even if SMALLEST_API_KEY is set")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="live: what the caller asks")
    parser.add_argument(
        "--voice", default=os.environ.get("SMALLEST_VOICE_ID"), help="live: voice id (default: the model's)"
    )
    parser.add_argument("--record", type=Path, help="live: also record the session to this cassette")


def run(args: argparse.Namespace) -> int:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    live = bool(os.environ.get(API_KEY_ENV)) and not args.offline
    try:
        if live:
            result, events = anyio.run(_live, args)
            source = "live Electron + Lightning"
        else:
            cassette = Cassette.load(args.cassette)
            result, events = anyio.run(_offline, cassette, args)
            source = f"recorded session {args.cassette.name} at speed {args.speed:g}, espeak-ng"
    except (CassetteError, VoiceAgentError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"voiceagent demo: weather bot, {source}\n")
    print(f"caller: {result.user_text}")
    print(f"bot:    {result.heard_text}\n")
    print(Timeline.from_result(result, events).format_text(), end="")
    print(f"\nwrote {args.out}")
    return 1 if result.error else 0


def _weather_agent_factory() -> Any:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # examples/ lives beside the package in a checkout
    from examples.weather_bot import build_agent

    return build_agent


async def _offline(cassette: Cassette, args: argparse.Namespace) -> tuple[TurnResult, list[TurnEvent]]:
    from voiceagent.adapters.espeak import EspeakSink
    from voiceagent.testing.replay import ReplayServer, replay_session

    async with (
        ReplayServer(cassette, speed=args.speed) as server,
        WavFileOutput(args.out, SAMPLE_RATE) as output,
    ):
        run = await replay_session(server, _weather_agent_factory(), sink=EspeakSink(output))
        server.check()  # a request that differs from the recording fails loudly, with a diff
    return run.results[0], run.events[0]


async def _live(args: argparse.Namespace) -> tuple[TurnResult, list[TurnEvent]]:
    from voiceagent.adapters.lightning import LightningSink
    from voiceagent.recorder import Recorder

    llm = LLMClient.electron(plan="standard")
    async with WavFileOutput(args.out, SAMPLE_RATE) as output:
        output_: AudioOutput = output
        async with LightningSink(output_, api_key=os.environ[API_KEY_ENV], voice_id=args.voice) as sink:
            tts: TTSSink = sink
            agent = _weather_agent_factory()(llm, tts)
            events: list[TurnEvent] = []
            if args.record:
                recorder = Recorder(
                    CassetteWriter(args.record, meta={"agent": "examples.weather_bot:build_agent"})
                )
                recorder.attach(agent)

                def on_event(event: TurnEvent) -> None:
                    events.append(event)
                    recorder.on_event(event)

                result = await agent.respond(args.question, on_event=on_event)
                recorder.record_turn(result)
            else:
                result = await agent.respond(args.question, on_event=events.append)
    return result, events
