"""Run one turn of the example weather bot and write what it said to a WAV file.

Offline (the default when SMALLEST_API_KEY is unset): the LLM side is the recorded session shipped with
the package (``voiceagent/examples/cassettes/weather.jsonl``) served by a local OpenAI-compatible server
at its recorded pace, and espeak-ng speaks. With SMALLEST_API_KEY set: live Electron and Lightning
(``--record`` writes a fresh cassette of the live session). ``--base-url``: any OpenAI-compatible server
instead of Electron (speech: Lightning with SMALLEST_API_KEY, else espeak-ng). Either way the real
pipeline runs and the turn timeline is printed. Runs in any folder; writes ``demo.wav`` there.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy imports wait for run(): `voiceagent --help` stays instant
    from voiceagent.events import TurnEvent
    from voiceagent.replay.cassette import Cassette
    from voiceagent.results import TurnResult
    from voiceagent.tts import AudioOutput

API_KEY_ENV = "SMALLEST_API_KEY"  # voiceagent.llm.API_KEY_ENV, without importing the SDK
AGENT = "voiceagent.examples.weather_bot:build_agent"
DEFAULT_QUESTION = "What's the weather in Paris right now?"
SAMPLE_RATE = 16000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo.wav"), help="the WAV to write")
    parser.add_argument(
        "--cassette", help="offline: the recorded session, a .jsonl path or a shipped name (default: weather)"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="offline: 1 = recorded pace, 0 = no waiting")
    parser.add_argument("--offline", action="store_true", help="stay offline even if SMALLEST_API_KEY is set")
    parser.add_argument(
        "--base-url", help="live: an OpenAI-compatible server instead of Electron (e.g. http://host:8000/v1)"
    )
    parser.add_argument("--model", default="electron", help="live: the model name to ask for")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="live: what the caller asks")
    parser.add_argument(
        "--voice", default=os.environ.get("SMALLEST_VOICE_ID"), help="live: voice id (default: the model's)"
    )
    parser.add_argument("--record", type=Path, help="live: also record the session to this cassette")


def run(args: argparse.Namespace) -> int:
    import anyio

    from voiceagent.commands import cassettes
    from voiceagent.commands.errors import expected
    from voiceagent.errors import VoiceAgentError
    from voiceagent.replay.cassette import CassetteError
    from voiceagent.replay.timeline import Timeline

    if args.speed < 0:
        print("error: --speed must be 0 or more", file=sys.stderr)
        return 2
    live = (bool(os.environ.get(API_KEY_ENV)) or args.base_url is not None) and not args.offline
    existed = args.out.exists()
    try:
        if live:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            result, events = anyio.run(_live, args)
            where = args.base_url or "Electron"
            speech = "Lightning" if os.environ.get(API_KEY_ENV) else "espeak-ng"
            source = f"live {where} + {speech}"
        else:
            cassette = cassettes.load(args.cassette or "weather")
            args.out.parent.mkdir(parents=True, exist_ok=True)  # only once there is something to write
            result, events = anyio.run(_offline, cassette, args)
            source = f"recorded session {Path(cassette.name).name} at speed {args.speed:g}, espeak-ng"
    except Exception as exc:  # the pipeline's task groups wrap what went wrong in exception groups
        errors = expected(exc, (CassetteError, VoiceAgentError, OSError, ValueError))
        if errors is None:
            raise
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        if not existed:
            args.out.unlink(missing_ok=True)  # no half-written WAV left behind
        return 1
    print(f"voiceagent demo: weather bot, {source}\n")
    print(f"caller: {result.user_text}")
    print(f"bot:    {result.heard_text}\n")
    print(Timeline.from_result(result, events).format_text(), end="")
    print(f"\nwrote {args.out}")
    return 1 if result.error else 0


def _weather_agent_factory() -> Any:
    from voiceagent.examples.weather_bot import build_agent

    return build_agent


async def _offline(cassette: Cassette, args: argparse.Namespace) -> tuple[TurnResult, list[TurnEvent]]:
    from voiceagent.adapters.espeak import EspeakSink
    from voiceagent.audio_output import WavFileOutput
    from voiceagent.replay import ReplayServer, replay_session

    async with (
        ReplayServer(cassette, speed=args.speed) as server,
        WavFileOutput(args.out, SAMPLE_RATE) as output,
    ):
        run = await replay_session(server, _weather_agent_factory(), sink=EspeakSink(output))
        server.check()  # a request that differs from the recording fails loudly, with a diff
    return run.results[0], run.events[0]


async def _live(args: argparse.Namespace) -> tuple[TurnResult, list[TurnEvent]]:
    from voiceagent.audio_output import WavFileOutput
    from voiceagent.llm import LLMClient

    key = os.environ.get(API_KEY_ENV)
    if args.base_url:
        # Any OpenAI-compatible server; a key only if it wants one.
        llm = LLMClient(base_url=args.base_url, api_key=key or "none", model=args.model)
    else:
        llm = LLMClient.electron(plan="standard", model=args.model)
    async with llm, WavFileOutput(args.out, SAMPLE_RATE) as output:
        if key:
            from voiceagent.adapters.lightning import LightningSink

            async with LightningSink(output, api_key=key, voice_id=args.voice) as sink:
                return await _live_turn(llm, sink, args)
        return await _live_turn(llm, _espeak(output), args)


def _espeak(output: AudioOutput) -> Any:
    from voiceagent.adapters.espeak import EspeakSink

    return EspeakSink(output)


async def _live_turn(llm: Any, tts: Any, args: argparse.Namespace) -> tuple[TurnResult, list[TurnEvent]]:
    from voiceagent.replay.cassette import CassetteWriter
    from voiceagent.replay.recorder import Recorder

    agent = _weather_agent_factory()(llm, tts)
    events: list[TurnEvent] = []
    if not args.record:
        return await agent.respond(args.question, on_event=events.append), events
    recorder = Recorder(CassetteWriter(args.record, meta={"agent": AGENT}))
    recorder.attach(agent)

    def on_event(event: TurnEvent) -> None:
        events.append(event)
        recorder.on_event(event)

    result = await agent.respond(args.question, on_event=on_event)  # on_event records the turn
    return result, events
