"""Try the page by hand: ``python -m voiceagent.adapters.web [--port 8080]`` runs an echo bot that
plays each thing you say back to you once you pause. Ctrl-C (or SIGTERM) stops it cleanly (exit 0); a
port already in use is a one-line error (exit 2)."""

from __future__ import annotations

import argparse
import array
import errno
import logging
import math
import signal
import sys
from collections.abc import Sequence

import anyio

from voiceagent.logs import configure
from voiceagent.tts import AudioChunk

from .server import WebServer
from .session import WebSession

SPEECH_RMS = 700  # PCM16 RMS above which a frame counts as speech
PAUSE_SECONDS = 0.7


def frame_rms(pcm: bytes) -> float:
    samples = array.array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


async def echo_bot(session: WebSession) -> None:
    rate = session.input_sample_rate
    utterance = bytearray()
    silence = 0.0
    turns = 0
    await session.send_agent_text("Say something, then pause: I will repeat it.")
    async for pcm in session.audio_in():
        if session.playback.playing:
            continue  # don't record our own echo
        if frame_rms(pcm) > SPEECH_RMS:
            utterance += pcm
            silence = 0.0
        elif utterance:
            utterance += pcm
            silence += len(pcm) / 2 / rate
            if silence >= PAUSE_SECONDS:
                turns += 1
                seconds = len(utterance) / 2 / rate
                await session.send_transcript(f"({seconds:.1f} s of speech)", is_final=True)
                await session.send_agent_text("You said:")
                await session.send_audio(AudioChunk(bytes(utterance), rate))
                await session.mark(f"echo-{turns}")
                utterance.clear()
                silence = 0.0


async def main(host: str, port: int) -> None:
    # The handlers go in before the server starts, so a signal at any time after this stops it cleanly.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with WebServer(echo_bot, host=host, port=port) as server, anyio.create_task_group() as tg:
            tg.start_soon(server.serve_forever)
            print(f"open {server.url} and press Start", flush=True)
            async for signum in signals:
                print(f"stopping ({signal.Signals(signum).name})", flush=True)
                break
            tg.cancel_scope.cancel()


def _address_in_use(exc: BaseException) -> bool:
    """The bind failed because the port is taken (the server's task group wraps it in a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_address_in_use(inner) for inner in exc.exceptions)
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voiceagent.adapters.web", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    configure(logging.INFO)
    try:
        anyio.run(main, args.host, args.port)
    except KeyboardInterrupt:  # where signal handlers cannot be installed (Windows): Ctrl-C still exits 0
        pass
    except Exception as exc:
        if not _address_in_use(exc):
            raise
        print(
            f"{parser.prog}: {args.host}:{args.port} is already in use; pick another --port", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
