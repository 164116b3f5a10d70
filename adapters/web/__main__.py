"""Try the page by hand: ``python -m voiceagent.adapters.web [--port 8080]`` runs an echo bot that
plays each thing you say back to you once you pause."""

from __future__ import annotations

import argparse
import array
import logging
import math

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
    async with WebServer(echo_bot, host=host, port=port) as server:
        print(f"open {server.url} and press Start", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    configure(logging.INFO)
    anyio.run(main, args.host, args.port)
