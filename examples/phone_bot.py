"""The weather bot on the phone, one module for Twilio, Telnyx and Plivo: Pulse + Electron + Lightning.

    python -m voiceagent.examples.phone_bot --provider twilio --port 8080 --public-url wss://your.host/media
    python -m voiceagent.examples.phone_bot --selftest                    # one offline call per provider
    python -m voiceagent.examples.phone_bot --selftest --provider twilio  # ... or one provider's

The bot (agent, STT, TTS, session) is the same code whichever provider carries the call; what differs
is one row of ``PROVIDERS``: the server class and the secret it checks upgrades with, what connects a
call to the stream (TwiML, Telnyx's Call Control fields, Plivo XML; printed at start), the provider's
fake call for the self-test, and its call control (REST) when its credentials are in the environment.
Put a TLS proxy in front of the port: providers dial ``wss://`` on 443.

Each server refuses to start without its provider's secret (``allow_unsigned`` is not offered here):

- twilio: ``TWILIO_AUTH_TOKEN`` (every upgrade's X-Twilio-Signature is checked against it and
  --public-url); with ``TWILIO_ACCOUNT_SID`` too, hang-ups are REST call updates. Answer: the
  printed TwiML (your number's voice webhook).
- telnyx: ``TELNYX_STREAM_AUTH_TOKEN`` (the stream_auth_token you give Telnyx; it comes back as the
  x-telnyx-streaming-auth-token header on every upgrade); with ``TELNYX_API_KEY`` hang-ups go through
  Call Control v2. Answer: start the stream with the printed Call Control fields.
- plivo: ``PLIVO_AUTH_TOKEN`` (X-Plivo-Signature-V3 over --public-url and its nonce); it also
  authorizes the Call API, so hang-ups go through it (Auth ID: ``PLIVO_AUTH_ID`` or the stream's
  accountId). Answer: the printed Plivo XML (your application's answer URL returns it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio

from voiceagent.adapters.plivo import PlivoCallControl, PlivoServer, stream_xml
from voiceagent.adapters.plivo.fake import FakePlivoCall
from voiceagent.adapters.pulse import PulseOptions, PulseSTT
from voiceagent.adapters.telnyx import TelnyxServer, stream_parameters, telnyx_control_factory
from voiceagent.adapters.telnyx.fake import FakeTelnyxCall
from voiceagent.adapters.twilio import TwilioServer, connect_stream_twiml
from voiceagent.adapters.twilio.fake_call import FakeTwilioCall
from voiceagent.adapters.twilio.rest import twilio_control_factory
from voiceagent.llm import LLMClient
from voiceagent.session import Session
from voiceagent.telephony import CallSettings, ControlFactory, MediaStream, MediaStreamServer
from voiceagent.telephony.fake_call import FakeMediaCall
from voiceagent.turn import ChatStreamer

from .calls import (
    QUESTION,
    SinkFactory,
    api_key,
    bot_main,
    espeak_sink,
    lightning_sink,
    run_call,
    wait_for_first_answer,
)

SELFTEST_SECRET = "selftest-auth-token"
PHONE_CASSETTE = Path(__file__).parent / "cassettes" / "phone" / "end_call.jsonl"
GOODBYE = "That's all, thank you. Bye!"  # the caller's last words in PHONE_CASSETTE

# Call control for every call: the model may end the call (the end_call tool; the caller hears the
# goodbye to its end first); a silent caller is asked twice, then hung up on; no call runs past 15 min.
CALL = CallSettings(end_call=True, idle_after=10.0, idle_prompts=2, max_duration=900.0)
# The self-test's: only end_call (idle prompts count wall-clock silence, which a fast replay has none of).
SELFTEST_CALL = CallSettings(end_call=True)

Handler = Callable[[MediaStream], Any]


class ServerFactory(Protocol):
    def __call__(
        self,
        handler: Handler,
        *,
        secret: str | None,
        host: str,
        port: int,
        path: str,
        public_url: str | None,
        control_factory: ControlFactory | None,
    ) -> MediaStreamServer[Any]: ...


@dataclass(frozen=True)
class Provider:
    """Everything that differs between providers; the bot and its self-test are the same code."""

    name: str
    secret_env: str  # the secret the server checks each upgrade with
    server: ServerFactory
    answer_name: str  # what the provider calls the document that connects a call to the stream
    answer: Callable[[str], str]  # the wss:// URL -> that document
    fake_call: Callable[[str, str], FakeMediaCall]  # (server URL, secret) -> a signed fake call
    control: Callable[[], ControlFactory | None]  # call control from the environment, None without it


def _twilio_server(
    handler: Handler,
    *,
    secret: str | None,
    host: str,
    port: int,
    path: str,
    public_url: str | None,
    control_factory: ControlFactory | None,
) -> MediaStreamServer[Any]:
    return TwilioServer(
        handler,
        auth_token=secret,
        host=host,
        port=port,
        path=path,
        public_url=public_url,
        control_factory=control_factory,
    )


def _twilio_fake(url: str, secret: str) -> FakeMediaCall:
    return FakeTwilioCall(url, auth_token=secret, playback_speed=20)


def _twilio_control() -> ControlFactory | None:
    # The Account SID with the Auth Token that signs the upgrades: hang-ups are REST call updates.
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    if not (sid and token):
        return None  # the stream hangs up by closing itself (the <Connect><Stream> ends)
    return twilio_control_factory(sid, token)


def _plivo_server(
    handler: Handler,
    *,
    secret: str | None,
    host: str,
    port: int,
    path: str,
    public_url: str | None,
    control_factory: ControlFactory | None,
) -> MediaStreamServer[Any]:
    return PlivoServer(
        handler,
        auth_token=secret,
        host=host,
        port=port,
        path=path,
        public_url=public_url,
        control_factory=control_factory,
    )


def _plivo_fake(url: str, secret: str) -> FakeMediaCall:
    return FakePlivoCall(url, auth_token=secret, playback_speed=20)


def _plivo_control() -> ControlFactory | None:
    # The Auth Token that signs the upgrades also authorizes the Call API (Auth ID: $PLIVO_AUTH_ID, else
    # the stream's accountId): hang-ups go through it.
    if not os.environ.get("PLIVO_AUTH_TOKEN"):
        return None
    return PlivoCallControl.factory()


def _telnyx_server(
    handler: Handler,
    *,
    secret: str | None,
    host: str,
    port: int,
    path: str,
    public_url: str | None,
    control_factory: ControlFactory | None,
) -> MediaStreamServer[Any]:
    return TelnyxServer(
        handler,
        stream_auth_token=secret,
        api_key=None,  # call control comes from the table's row, as for the other providers
        host=host,
        port=port,
        path=path,
        public_url=public_url,
        control_factory=control_factory,
    )


def _telnyx_answer(url: str) -> str:
    # Telnyx starts a bidirectional stream from Call Control (answer, dial or streaming_start); the
    # token placeholder is yours to fill in (never printed).
    fields = stream_parameters(url, stream_auth_token="<your $TELNYX_STREAM_AUTH_TOKEN>")
    return json.dumps(fields, indent=2)


def _telnyx_fake(url: str, secret: str) -> FakeMediaCall:
    return FakeTelnyxCall(url, stream_auth_token=secret, playback_speed=20)


def _telnyx_control() -> ControlFactory | None:
    key = os.environ.get("TELNYX_API_KEY")
    if not key:
        return None
    return telnyx_control_factory(api_key=key)


PROVIDERS: dict[str, Provider] = {
    "twilio": Provider(
        name="twilio",
        secret_env="TWILIO_AUTH_TOKEN",
        server=_twilio_server,
        answer_name="TwiML",
        answer=connect_stream_twiml,
        fake_call=_twilio_fake,
        control=_twilio_control,
    ),
    "telnyx": Provider(
        name="telnyx",
        secret_env="TELNYX_STREAM_AUTH_TOKEN",
        server=_telnyx_server,
        answer_name="Call Control fields (answer / dial / streaming_start)",
        answer=_telnyx_answer,
        fake_call=_telnyx_fake,
        control=_telnyx_control,
    ),
    "plivo": Provider(
        name="plivo",
        secret_env="PLIVO_AUTH_TOKEN",
        server=_plivo_server,
        answer_name="Plivo XML",
        answer=stream_xml,
        fake_call=_plivo_fake,
        control=_plivo_control,
    ),
}


def stt_options(sample_rate: int) -> PulseOptions:
    """Pulse hears the call at its own rate: telephone audio as mu-law, anything wider as linear16."""
    if sample_rate == 8000:
        return PulseOptions.for_twilio("en")
    return PulseOptions(language="en", sample_rate=sample_rate)


def call_handler(
    llm: ChatStreamer,
    tts: SinkFactory,
    *,
    pulse_key: str,
    pulse_url: str | None = None,
    call: CallSettings | None = CALL,
    sessions: list[Session] | None = None,
) -> Callable[[MediaStream], Any]:
    """One call on any provider's stream: the weather agent, Pulse at the call's rate, ``tts``, and
    ``call``'s call control (the ``end_call`` tool, idle prompts, a time limit)."""

    async def handler(stream: MediaStream) -> None:
        rate = stream.input_sample_rate
        options = stt_options(rate)

        def stt() -> PulseSTT:
            return (
                PulseSTT(pulse_key, options)
                if pulse_url is None
                else PulseSTT(pulse_key, options, url=pulse_url)
            )

        await run_call(stream, rate, llm=llm, stt=stt, tts=tts, call=call, sessions=sessions)

    return handler


async def serve(args: argparse.Namespace) -> None:
    if args.provider is None:
        raise SystemExit(f"--provider is required to serve: one of {', '.join(sorted(PROVIDERS))}")
    provider = PROVIDERS[args.provider]
    key = api_key()
    handler = call_handler(
        LLMClient.electron(plan=args.plan, base_url=args.base_url),
        espeak_sink if args.tts == "espeak" else lightning_sink(args.voice),
        pulse_key=key,
    )
    server = provider.server(
        handler,
        secret=os.environ.get(provider.secret_env) or None,  # None: the server says what to set
        host=args.host,
        port=args.port,
        path=urlsplit(args.public_url).path or "/",  # the provider dials exactly the URL it was given
        public_url=args.public_url,  # ... and signs that URL
        control_factory=provider.control(),
    )
    async with server:
        print(f"listening on {server.url} ({provider.name})")
        print(f"{provider.answer_name}, to connect a call to it:\n{provider.answer(args.public_url)}")
        await server.serve_forever()


async def selftest_call(provider: Provider) -> bool:
    """One call: the provider's fake caller asks the question over a signed upgrade; fake Pulse
    transcribes it; the LLM side is the recorded session on a local server; espeak-ng answers. Then the
    caller says goodbye, the model calls ``end_call``, and the bot hangs up once its goodbye was heard."""
    from voiceagent.cassette import Cassette
    from voiceagent.testing.pulse_server import FakePulseServer, Speech
    from voiceagent.testing.replay import ReplayServer

    name = provider.name
    sessions: list[Session] = []
    # Heard as real Pulse does: VAD events, a final every few words, finalize at speech_ended. Its
    # clock is the caller's audio: the goodbye is in the second 1.5 s the caller sends.
    pulse = FakePulseServer([Speech(QUESTION, 0.1, 0.8), Speech(GOODBYE, 2.0, 2.6)])
    async with ReplayServer(Cassette.load(PHONE_CASSETTE), speed=0) as replay, pulse:
        handler = call_handler(
            replay.client(),
            espeak_sink,
            pulse_key="sk_test",
            pulse_url=pulse.url,
            call=SELFTEST_CALL,
            sessions=sessions,
        )
        server = provider.server(
            handler,
            secret=SELFTEST_SECRET,
            host="127.0.0.1",
            port=0,
            path="/media",
            public_url=None,
            control_factory=None,  # without the provider's REST API the bot hangs up by closing the stream
        )
        async with server, provider.fake_call(server.url, SELFTEST_SECRET) as phone:
            await phone.send_pcm(b"\x00\x00" * 12000, 8000)  # 1.5 s of caller audio: the question
            await wait_for_first_answer(sessions)
            await phone.send_pcm(b"\x00\x00" * 12000, 8000)  # ... and 1.5 s more: the goodbye
            with anyio.fail_after(60):
                await phone.closed.wait()  # the bot hung up
                # ... and let its handler finish (Pulse's last words) before the server cancels it.
                await server.wait_idle()
        replay.assert_complete()
    session = sessions[0]
    first, *rest = session.results
    print(f"[{name}] caller asked: {first.user_text}")
    print(f"[{name}] caller heard: {first.heard_text}")
    seconds = len(phone.played_pcm16) / 2 / phone.wire.outbound_format.sample_rate
    print(f"[{name}] audio played to the caller: {seconds:.2f} s, marks echoed: {len(phone.echoed_marks)}")
    last = rest[-1] if rest else first
    print(f"[{name}] caller said: {last.user_text}")
    print(f"[{name}] bot answered: {last.heard_text}")
    stream = session.transport
    heard = stream.heard_text if isinstance(stream, MediaStream) else ""  # the whole call, as played
    goodbye = SELFTEST_CALL.goodbye or ""
    ended_by = session.call.ended_by if session.call is not None else None
    print(
        f"[{name}] the bot hung up ({ended_by}, close code {phone.close_code}) once the caller "
        f"had heard: {heard[-len(goodbye) :]}"
    )
    return (
        len(rest) == 1
        and bool(first.heard_text)
        and not any(r.error for r in session.results)
        and not phone.errors
        and ended_by == "end_call"
        and heard.endswith(goodbye)
    )


def add_options(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default=default,
        help="who carries the call (serving: required; --selftest: all of them unless given)",
    )
    parser.add_argument(
        "--public-url", default="wss://example.com/media", help="the wss URL the provider dials"
    )


async def selftest(args: argparse.Namespace) -> int:
    names = [args.provider] if args.provider else sorted(PROVIDERS)
    failed = [name for name in names if not await selftest_call(PROVIDERS[name])]
    if failed:
        print(f"self-test failed for: {', '.join(failed)}")
    return 1 if failed else 0


def main(
    argv: list[str] | None = None, *, provider: str | None = None, description: str | None = None
) -> int:
    """``provider``: a default for ``--provider`` (``twilio_phone_bot`` is this module with twilio)."""
    return bot_main(
        description or (__doc__.splitlines()[0] if __doc__ else ""),
        argv,
        serve=serve,
        selftest=selftest,
        options=lambda parser: add_options(parser, provider),
    )


if __name__ == "__main__":
    sys.exit(main())
