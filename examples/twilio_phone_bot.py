"""The weather bot on the phone: Twilio Media Streams + Pulse STT + Electron + Lightning (or espeak-ng).

    python -m examples.twilio_phone_bot --port 8080 --public-url wss://your.host/media
    python -m examples.twilio_phone_bot --selftest      # one offline call, every part on loopback

Point your Twilio number's voice webhook at TwiML like the one this prints (a TLS proxy in front of the
port: Twilio only dials wss on 443). Set TWILIO_AUTH_TOKEN: every upgrade's X-Twilio-Signature is
checked against it and --public-url, and the server refuses to start without it.
"""

from __future__ import annotations

import argparse
import functools
import sys

from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.twilio import TwilioServer, connect_stream_twiml
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

SELFTEST_TOKEN = "selftest-auth-token"


async def serve(args: argparse.Namespace) -> None:
    key = api_key()
    handler = functools.partial(
        run_call,
        sample_rate=8000,
        llm=LLMClient.electron(plan=args.plan, base_url=args.base_url),
        stt=lambda: PulseSTT(key, PulseOptions.for_twilio("en")),
        tts=espeak_sink if args.tts == "espeak" else lightning_sink(args.voice),
    )
    # The Auth Token comes from TWILIO_AUTH_TOKEN; Twilio signed exactly the URL in the TwiML.
    server = TwilioServer(handler, host=args.host, port=args.port, public_url=args.public_url)
    async with server:
        print(f"listening on {server.url}\nTwiML for your number:\n{connect_stream_twiml(args.public_url)}")
        await server.serve_forever()


async def selftest() -> int:
    """One call: a fake Twilio caller asks the question; fake Pulse transcribes it; the LLM side is the
    recorded session on a local server; espeak-ng answers into the call."""
    from voiceagent.cassette import Cassette
    from voiceagent.testing.pulse_server import FakePulseServer, Speech
    from voiceagent.testing.replay import ReplayServer
    from voiceagent.testing.twilio_client import FakeTwilioCall

    sessions: list[Session] = []
    # Heard as real Pulse does: VAD events, a final every few words, finalize at speech_ended.
    pulse = FakePulseServer([Speech(QUESTION, 0.1, 0.8)])
    async with ReplayServer(Cassette.load(WEATHER_CASSETTE), speed=0) as replay, pulse:
        handler = functools.partial(
            run_call,
            sample_rate=8000,
            llm=replay.client(),
            stt=lambda: PulseSTT("sk_test", PulseOptions.for_twilio("en"), url=pulse.url),
            tts=espeak_sink,
            sessions=sessions,
        )
        # Signed like a live call: the fake Twilio signs the upgrade with a test Auth Token.
        async with TwilioServer(handler, auth_token=SELFTEST_TOKEN) as server:
            async with FakeTwilioCall(server.url, auth_token=SELFTEST_TOKEN, playback_speed=20) as phone:
                await phone.send_pcm(b"\x00\x00" * 12000, 8000)  # 1.5 s of caller audio
                await wait_for_first_answer(sessions)
                await phone.stop()
        replay.check()
    result = sessions[0].results[0]
    print(f"caller asked: {result.user_text}")
    print(f"caller heard: {result.heard_text}")
    seconds = len(phone.played_mulaw) / 8000
    print(f"audio played to the caller: {seconds:.2f} s, marks echoed: {len(phone.echoed_marks)}")
    return 0 if result.heard_text and not result.error else 1


def main(argv: list[str] | None = None) -> int:
    return bot_main(
        __doc__.splitlines()[0] if __doc__ else "", argv, serve=serve, selftest=selftest, public_url=True
    )


if __name__ == "__main__":
    sys.exit(main())
