"""The weather bot in the browser: the voiceagent web page + Pulse STT + Electron + Lightning.

    python -m examples.web_bot --port 8080          # then open the printed URL and press Start
    python -m examples.web_bot --selftest           # one offline call in headless Chromium

Browsers allow the microphone only on http://localhost / 127.0.0.1 or over HTTPS.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import anyio

from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.web import WebServer
from voiceagent.llm import LLMClient
from voiceagent.session import Session

from .calls import (
    QUESTION,
    WEATHER_CASSETTE,
    api_key,
    bot_main,
    espeak_sink,
    lightning_sink,
    run_call,
    wait_for_first_answer,
)

SAMPLE_RATE = 16000  # the page sends and plays PCM16 mono at 16 kHz


async def serve(args: argparse.Namespace) -> None:
    key = api_key()
    handler = functools.partial(
        run_call,
        sample_rate=SAMPLE_RATE,
        llm=LLMClient.electron(plan=args.plan, base_url=args.base_url),
        stt=lambda: PulseSTT(key, PulseOptions(language="en", sample_rate=SAMPLE_RATE)),
        tts=espeak_sink if args.tts == "espeak" else lightning_sink(args.voice),
    )
    async with WebServer(handler, host=args.host, port=args.port) as server:
        print(f"open {server.url} and press Start")
        await server.serve_forever()


async def selftest(_args: argparse.Namespace) -> int:
    """Headless Chromium opens the page with espeak-ng's recording of the question as its microphone;
    fake Pulse transcribes it; the LLM side is the recorded session; espeak-ng answers in the page."""
    from voiceagent.cassette import Cassette
    from voiceagent.testing.chromium import Chromium
    from voiceagent.testing.pulse_server import FakePulseServer, Speech
    from voiceagent.testing.replay import ReplayServer

    sessions: list[Session] = []
    with tempfile.TemporaryDirectory() as tmp:
        mic = Path(tmp) / "question.wav"
        await anyio.run_process(["espeak-ng", "-w", str(mic), QUESTION])
        # The mic's audio heard as real Pulse does: VAD events, a final every few words, finalize at
        # speech_ended (1.8 s into the mic's audio).
        pulse = FakePulseServer([Speech(QUESTION, 0.1, 1.5)])
        async with ReplayServer(Cassette.load(WEATHER_CASSETTE), speed=0) as replay, pulse:
            handler = functools.partial(
                run_call,
                sample_rate=SAMPLE_RATE,
                llm=replay.client(),
                stt=lambda: PulseSTT("sk_test", PulseOptions(language="en"), url=pulse.url),
                tts=espeak_sink,
                sessions=sessions,
            )
            async with WebServer(handler) as server, Chromium(fake_microphone=mic) as browser:
                page = await browser.new_page(server.url)
                await page.click("#start")
                await page.wait_for("window.voiceagent.connected")
                session = await wait_for_first_answer(sessions)
                output = session.output
                played = output.played_seconds if output is not None else 0.0
                # The page shows the conversation: the caller's words, then the agent's.
                answer_end = " ".join(session.results[0].spoken_text.split()[-3:])
                wanted = json.dumps([QUESTION, answer_end])
                shown = await page.wait_for(
                    f"(t => {wanted}.every(w => t.includes(w)) && t)"
                    "(document.getElementById('transcript').textContent)",
                    wait_seconds=10,
                )
                await page.click("#start")  # Stop: the page hangs up
            replay.check()
    result = sessions[0].results[0]
    print(f"browser asked: {result.user_text}")
    print(f"browser heard: {result.heard_text}")
    print(f"audio played in the page (confirmed by its mark echoes): {played:.2f} s")
    print(f"the page shows: {shown}")
    return 0 if result.heard_text and not result.error and played > 0 else 1


def main(argv: list[str] | None = None) -> int:
    return bot_main(__doc__.splitlines()[0] if __doc__ else "", argv, serve=serve, selftest=selftest)


if __name__ == "__main__":
    sys.exit(main())
