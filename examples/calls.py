"""What the phone and web example bots share: one call = STT + the weather agent + TTS, in a Session.

Live parts need SMALLEST_API_KEY (Electron, Pulse, Lightning). The offline parts used by the bots'
``--selftest`` are the project's own loopback fakes and the shipped recorded LLM session.
"""

from __future__ import annotations

import argparse
import gc
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio

from voiceagent.commands.errors import run_cleanly
from voiceagent.runtime import server_loop_options
from voiceagent.session import Session
from voiceagent.stt import STTSource
from voiceagent.telephony import CallSettings
from voiceagent.transport import OwnsOutput, Transport
from voiceagent.transport_output import TransportOutput
from voiceagent.tts import AudioOutput, TTSSink
from voiceagent.turn import ChatStreamer

from .weather_bot import build_agent

QUESTION = "What's the weather in Paris right now?"
WEATHER_CASSETTE = Path(__file__).parent / "cassettes" / "weather.jsonl"

SinkFactory = Callable[[AudioOutput], AbstractAsyncContextManager[TTSSink]]
STTFactory = Callable[[], AbstractAsyncContextManager[STTSource]]


def api_key() -> str:
    key = os.environ.get("SMALLEST_API_KEY")
    if not key:
        raise SystemExit("SMALLEST_API_KEY is not set: export it, or run with --selftest (offline)")
    return key


@asynccontextmanager
async def espeak_sink(output: AudioOutput) -> AsyncIterator[TTSSink]:
    from voiceagent.adapters.espeak import EspeakSink

    yield EspeakSink(output, words_per_minute=185)


def lightning_sink(voice_id: str | None) -> SinkFactory:
    from voiceagent.adapters.lightning import LightningSink

    def make(output: AudioOutput) -> AbstractAsyncContextManager[TTSSink]:
        sink: AbstractAsyncContextManager[TTSSink] = LightningSink(
            output, api_key=api_key(), voice_id=voice_id
        )
        return sink

    return make


async def run_call(
    transport: Transport,
    sample_rate: int,
    *,
    llm: ChatStreamer,
    stt: STTFactory,
    tts: SinkFactory,
    call: CallSettings | None = None,
    sessions: list[Session] | None = None,
) -> None:
    """Serve one call until the caller hangs up (or, with ``call``'s call control, the bot does)."""
    # Twilio and the web page own their output; a bare Transport gets one at ``sample_rate``.
    own = None if isinstance(transport, OwnsOutput) else TransportOutput(transport, sample_rate)
    output = own or transport.output  # type: ignore[attr-defined]
    async with stt() as source, tts(output) as sink:
        session = Session(
            agent=build_agent(llm, sink), transport=transport, stt=source, output=own, call=call
        )
        if sessions is not None:
            sessions.append(session)
        await session.run()


async def wait_for_first_answer(sessions: list[Session], limit: float = 60.0) -> Session:
    """Self-tests: return the call's session once its first turn is over and the bot is quiet."""
    with anyio.fail_after(limit):
        # Polled: the state lives in the session the server's handler builds, after this call starts.
        while not (sessions and sessions[0].results and not sessions[0].bot_speaking):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return sessions[0]


def bot_main(
    description: str,
    argv: Sequence[str] | None,
    *,
    serve: Callable[[argparse.Namespace], Awaitable[None]],
    selftest: Callable[[argparse.Namespace], Awaitable[int]],
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The example bots' command line: serve live calls, or ``--selftest`` one offline call.
    ``options`` adds a bot's own arguments (the phone bot's ``--provider`` and ``--public-url``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--selftest", action="store_true", help="run one offline call and exit")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    if options is not None:
        options(parser)
    parser.add_argument(
        "--base-url", help="an OpenAI-compatible server instead of Electron (e.g. http://host:8000/v1)"
    )
    parser.add_argument("--plan", default="standard", choices=["standard", "enterprise"])
    parser.add_argument("--tts", default="lightning", choices=["lightning", "espeak"])
    parser.add_argument("--voice", default=os.environ.get("SMALLEST_VOICE_ID"))  # None: the model's default
    args = parser.parse_args(argv)
    if args.selftest:
        return run_cleanly(lambda: anyio.run(selftest, args))

    def serve_until_stopped() -> int:
        # A server lives long: take start-up's objects (the imported modules, ~100k with the openai SDK)
        # out of the collector's view, or each full collection pauses every call for tens of ms.
        gc.collect()
        gc.freeze()
        anyio.run(serve, args, backend_options=server_loop_options())
        return 0

    # Ctrl-C ends it quietly; a port already taken is one line.
    return run_cleanly(serve_until_stopped, address=lambda: f"{args.host}:{args.port}")
