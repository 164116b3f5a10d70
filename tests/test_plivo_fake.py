"""The fake Plivo call against a bare WebSocket server that speaks through PlivoCodec: the upgrade is
signed as our auth expects, checkpoints are answered only for audio that played, a clear drops the
rest and is confirmed, and Pipecat's PlivoFrameSerializer reads what the fake sends."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from plivo.utils import validate_v3_signature as sdk_validate
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from voiceagent.adapters.plivo import PlivoCodec, PlivoSignatureAuth, compute_signature_v3
from voiceagent.adapters.plivo.fake import FakePlivoCall, plivo_signature
from voiceagent.audio import pcm16_to_ulaw, sine_pcm16
from voiceagent.telephony import (
    AudioFormat,
    ClearDone,
    DtmfReceived,
    InboundAudio,
    MarkPlayed,
    StreamStart,
    UpgradeRequest,
)

TOKEN = "fake-test-token"
pytestmark = pytest.mark.anyio

Bot = Callable[[ServerConnection, StreamStart, list[Any]], Awaitable[None]]


@asynccontextmanager
async def bot_server(bot: Bot, events: list[Any], refusals: list[str]) -> AsyncIterator[str]:
    codec = PlivoCodec()
    auth = PlivoSignatureAuth(TOKEN)

    def check(connection: ServerConnection, request: Request) -> Response | None:
        why = auth.check(UpgradeRequest(request.path, tuple(request.headers.raw_items())))
        if why is not None:
            refusals.append(why)
            return connection.respond(403, "Forbidden\n")
        return None

    async def handle(ws: ServerConnection) -> None:
        start = codec.parse(await ws.recv())
        assert isinstance(start, StreamStart)
        codec.check_start(start)
        events.append(start)
        await bot(ws, start, events)

    async with serve(handle, "127.0.0.1", 0, process_request=check) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/plivo"


async def read_into(ws: ServerConnection, events: list[Any], until: Callable[[list[Any]], bool]) -> None:
    codec = PlivoCodec()
    while not until(events):
        events.append(codec.parse(await ws.recv()))


def test_the_fakes_signature_is_plivos() -> None:
    for url in ("wss://bot.example.com/plivo", "https://bot.example.com/plivo?b=2&a=1"):
        signature = plivo_signature(TOKEN, url, "nonce1")
        assert signature == compute_signature_v3(TOKEN, url, "nonce1")
        if url.startswith("https"):
            assert sdk_validate("GET", url, "nonce1", TOKEN, signature)


async def test_checkpoints_are_answered_after_their_audio_and_a_clear_drops_the_rest() -> None:
    events: list[Any] = []
    refusals: list[str] = []
    tone = pcm16_to_ulaw(sine_pcm16(440, 0.2, 8000))

    async def bot(ws: ServerConnection, start: StreamStart, seen: list[Any]) -> None:
        codec = PlivoCodec()
        await ws.send(codec.build_media(start, tone))
        await ws.send(codec.build_mark(start, "first"))
        await read_into(ws, seen, lambda e: MarkPlayed(start.stream_id, "first") in e)
        await ws.send(codec.build_media(start, tone))
        await ws.send(codec.build_mark(start, "second"))
        await ws.send(codec.build_clear(start))
        await read_into(ws, seen, lambda e: ClearDone(start.stream_id) in e)
        await ws.send(codec.build_dtmf(start, "42#") or "")
        await read_into(ws, seen, lambda e: any(isinstance(x, DtmfReceived) for x in e))

    with anyio.fail_after(20):
        async with (
            bot_server(bot, events, refusals) as url,
            FakePlivoCall(
                url,
                auth_token=TOKEN,
                extra_headers={"lang": "en"},
                playback_speed=math.inf,
                start_paused=True,
            ) as phone,
        ):
            phone.play_until_checkpoint("first")  # then hold: the clear finds the second tone unplayed
            await phone.wait_until(lambda: phone.played_checkpoints == ["first"])
            await phone.wait_until(lambda: phone.clears == 1)
            await phone.wait_until(lambda: phone.dtmf_sent == ["42#"])
            await phone.send_dtmf("7")
            await phone.wait_closed()
    assert refusals == []
    start = events[0]
    assert isinstance(start, StreamStart) and dict(start.custom_parameters) == {"lang": "en"}
    assert start.inbound_format == AudioFormat("pcmu", 8000) and start.call_id == phone.call_id
    assert phone.played == bytearray(tone)  # the first tone whole, nothing of the cleared one
    assert phone.played_checkpoints == ["first"] and phone.dropped_checkpoints == ["second"]
    assert MarkPlayed(start.stream_id, "second") not in events  # Plivo never answers a dropped checkpoint
    assert DtmfReceived(start.stream_id, "7") in events
    assert phone.errors == []


async def test_an_unsigned_or_missigned_fake_is_refused() -> None:
    async def bot(ws: ServerConnection, start: StreamStart, seen: list[Any]) -> None:
        raise AssertionError("no call should start")

    refusals: list[str] = []
    async with bot_server(bot, [], refusals) as url:
        for token in (None, "someone-elses-token"):
            with anyio.fail_after(10), pytest.raises(Exception, match="403"):
                async with FakePlivoCall(url, auth_token=token):
                    pass
    assert len(refusals) == 2


@pytest.mark.parametrize("content_type", ["audio/x-mulaw;rate=8000", "audio/x-l16;rate=16000"])
async def test_pipecat_reads_the_fakes_frames(content_type: str) -> None:
    """What the fake sends, server side, through Pipecat's deserializer and through our codec."""
    from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame
    from pipecat.processors.frame_processor import FrameProcessorSetup
    from pipecat.serializers.plivo import PlivoFrameSerializer

    rate = 16000 if "16000" in content_type else 8000
    raw: list[str] = []

    async def bot(ws: ServerConnection, start: StreamStart, seen: list[Any]) -> None:
        while len(raw) < 3:
            raw.append(str(await ws.recv()))

    pcm = sine_pcm16(300, 0.04, rate)
    with anyio.fail_after(20):
        async with (
            bot_server(bot, [], []) as url,
            FakePlivoCall(url, auth_token=TOKEN, content_type=content_type) as phone,
        ):
            await phone.send_pcm(pcm, rate)
            await phone.send_dtmf("9")
            await phone.wait_closed()
    params = PlivoFrameSerializer.InputParams(auto_hang_up=False, plivo_sample_rate=rate)
    serializer = PlivoFrameSerializer(phone.stream_id, params=params)
    await serializer.setup(
        FrameProcessorSetup(clock=None, task_manager=None, pipeline_worker=None, audio_in_sample_rate=rate)
    )  # type: ignore[arg-type]
    codec = PlivoCodec()
    first = json.loads(raw[0])
    assert first["media"]["track"] == "inbound" and first["streamId"] == phone.stream_id
    ours = codec.parse(raw[0])
    assert isinstance(ours, InboundAudio) and ours.payload == base64.b64decode(first["media"]["payload"])
    if rate == 8000:  # Pipecat's Plivo serializer decodes mu-law only; its L16 frames it would misread
        frames = [await serializer.deserialize(r) for r in raw[:2]]
        assert all(isinstance(f, InputAudioRawFrame) for f in frames)
        assert b"".join(f.audio for f in frames) == phone.decode(phone.encode(pcm))
    dtmf = await serializer.deserialize(raw[2])
    assert isinstance(dtmf, InputDTMFFrame) and dtmf.button.value == "9"
    assert codec.parse(raw[2]) == DtmfReceived(phone.stream_id, "9")


async def test_the_fake_reads_what_pipecat_sends_as_it_reads_our_codec() -> None:
    from pipecat.frames.frames import InterruptionFrame, OutputAudioRawFrame
    from pipecat.processors.frame_processor import FrameProcessorSetup
    from pipecat.serializers.plivo import PlivoFrameSerializer

    phone = FakePlivoCall("ws://127.0.0.1:1/plivo")  # never dialed: only its wire is used
    serializer = PlivoFrameSerializer(
        phone.stream_id, params=PlivoFrameSerializer.InputParams(auto_hang_up=False)
    )
    await serializer.setup(
        FrameProcessorSetup(clock=None, task_manager=None, pipeline_worker=None, audio_in_sample_rate=8000)
    )  # type: ignore[arg-type]
    pcm = sine_pcm16(350, 0.02, 8000)
    theirs = phone.plivo.read(
        await serializer.serialize(OutputAudioRawFrame(audio=pcm, sample_rate=8000, num_channels=1))
    )
    start = StreamStart(phone.stream_id, phone.call_id, AudioFormat("pcmu", 8000), AudioFormat("pcmu", 8000))
    ours = phone.plivo.read(PlivoCodec().build_media(start, pcm16_to_ulaw(pcm)))
    assert theirs.error is None and ours.error is None
    assert theirs.frame == ours.frame and ours.frame is not None and ours.frame.payload == pcm16_to_ulaw(pcm)
    clear_theirs = phone.plivo.read(await serializer.serialize(InterruptionFrame()))
    assert clear_theirs.frame == phone.plivo.read(PlivoCodec().build_clear(start)).frame
    assert clear_theirs.frame is not None and clear_theirs.frame.kind == "clear"
