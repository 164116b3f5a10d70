"""TwilioCodec and the fake Twilio cross-checked against Pipecat's TwilioFrameSerializer, a reference client
nobody on this project wrote: what our fake Twilio sends, Pipecat reads as our codec does; what Pipecat's
bot side sends, our fake Twilio understands; and our stream's frames on a real socket are the ones
Pipecat would have sent for the same audio."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import anyio
import pipecat.frames.frames as frames
import pipecat.runner.utils as pipecat_runner
import pipecat.serializers.twilio as pipecat_twilio  # installed by ./dev.sh (--no-deps), as in CI
import pytest

from voiceagent.adapters.twilio import TwilioCodec, TwilioMediaStream, TwilioServer
from voiceagent.adapters.twilio.fake_call import FakeTwilioCall, TwilioWire
from voiceagent.audio import pcm16_to_ulaw, ulaw_to_pcm16
from voiceagent.telephony import DtmfReceived, InboundAudio, Preamble, StreamStart
from voiceagent.telephony.fake_call import BotFrame
from voiceagent.tts import AudioChunk

pytestmark = pytest.mark.anyio

TOKEN = "test-auth-token"
SID = "MZ00000000000000000000000000000042"


def tone(seconds: float, rate: int, freq: float = 440.0) -> bytes:
    n = int(seconds * rate)
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


async def serializer(stream_sid: str = SID) -> Any:
    """Pipecat's bot side for one call at 8 kHz (no auto hang-up: that is REST, not the stream)."""
    params = pipecat_twilio.TwilioFrameSerializer.InputParams(auto_hang_up=False, sample_rate=8000)
    reference = pipecat_twilio.TwilioFrameSerializer(stream_sid, params=params)
    # A pipeline passes a FrameProcessorSetup; the serializer reads only its input rate from it.
    await reference.setup(SimpleNamespace(audio_in_sample_rate=8000))
    return reference


def wire() -> TwilioWire:
    return TwilioWire(
        stream_sid=SID,
        call_sid="CA42",
        account_sid="AC42",
        custom_parameters={"lang": "en", "from_number": "+15550100"},
        auth_token=None,
        public_url="wss://bot.example.com/media",
    )


class _Handshake:
    """What ``parse_telephony_websocket`` reads: a websocket's text messages."""

    def __init__(self, messages: list[str]) -> None:
        self._messages = messages

    async def iter_text(self) -> AsyncIterator[str]:
        for message in self._messages:
            yield message


async def test_pipecat_detects_our_fake_twilios_handshake_as_our_codec_parses_it() -> None:
    handshake = wire().handshake()
    transport, call_data = await pipecat_runner.parse_telephony_websocket(_Handshake(handshake))
    codec = TwilioCodec()
    preamble, start = (codec.parse(m) for m in handshake)
    assert isinstance(preamble, Preamble) and isinstance(start, StreamStart)
    codec.check_start(start)
    assert transport == "twilio"
    assert (call_data["stream_id"], call_data["call_id"]) == (start.stream_id, start.call_id)
    assert dict(call_data["body"]) == dict(start.custom_parameters)
    assert call_data.from_number == "+15550100"


async def test_pipecat_decodes_our_fake_twilios_media_and_dtmf_as_our_codec_does() -> None:
    fake, codec, reference = wire(), TwilioCodec(), await serializer()
    mulaw = pcm16_to_ulaw(tone(0.02, 8000))
    media = fake.media(mulaw)
    ours = codec.parse(media)
    theirs = await reference.deserialize(media)
    assert isinstance(ours, InboundAudio) and ours.track == "inbound" and ours.stream_id == SID
    assert isinstance(theirs, frames.InputAudioRawFrame) and theirs.sample_rate == 8000
    assert ulaw_to_pcm16(ours.payload) == theirs.audio
    for digit in "0123456789*#":
        ours_digit = codec.parse(fake.dtmf(digit))
        theirs_digit = await reference.deserialize(fake.dtmf(digit))
        assert isinstance(ours_digit, DtmfReceived) and isinstance(theirs_digit, frames.InputDTMFFrame)
        assert ours_digit.digit == theirs_digit.button.value == digit


async def test_our_fake_twilio_understands_what_pipecat_sends_and_our_codec_builds_the_same() -> None:
    fake, reference = wire(), await serializer()
    codec = TwilioCodec()
    start = codec.parse(fake.handshake()[1])
    assert isinstance(start, StreamStart)
    pcm = tone(0.02, 8000)
    pipecat_media = await reference.serialize(frames.OutputAudioRawFrame(pcm, 8000, 1))
    pipecat_clear = await reference.serialize(frames.InterruptionFrame())
    assert fake.read(pipecat_media).frame == BotFrame("media", payload=pcm16_to_ulaw(pcm))
    assert fake.read(pipecat_clear).frame == BotFrame("clear")
    assert json.loads(codec.build_media(start, pcm16_to_ulaw(pcm))) == json.loads(pipecat_media)
    assert json.loads(codec.build_clear(start)) == json.loads(pipecat_clear)
    assert codec.build_dtmf(start, "1") is None  # Pipecat has no stream DTMF either: not a Twilio message


async def test_the_streams_frames_on_the_wire_are_the_ones_pipecat_would_send() -> None:
    pcm = tone(0.2, 8000)  # 8 kHz in: nothing resampled on either side, so the bytes must agree
    sent = anyio.Event()

    async def handler(stream: TwilioMediaStream) -> None:
        await stream.send_audio(AudioChunk(pcm, 8000, "hello"))
        await stream.clear()
        sent.set()

    async with TwilioServer(handler, auth_token=TOKEN) as server:
        async with FakeTwilioCall(server.url, auth_token=TOKEN, stream_sid=SID, start_paused=True) as call:
            await sent.wait()
            await call.wait_until(lambda: call.clears == 1)
            await call.wait_closed()

    reference = await serializer()
    expected = [
        json.loads(await reference.serialize(frames.OutputAudioRawFrame(pcm[i : i + 320], 8000, 1)))
        for i in range(0, len(pcm), 320)
    ]
    expected.append(json.loads(await reference.serialize(frames.InterruptionFrame())))
    assert call.received == expected and call.errors == []
