"""``TwilioCodec``: Twilio Media Streams' wire messages (``messages.py``) as a ``MediaCodec``.

Twilio streams G.711 mu-law at 8 kHz both ways, echoes every mark (also those a ``clear`` flushes),
and accepts only media, mark and clear on a bidirectional stream: DTMF out is not a stream message
(error 31924), so ``build_dtmf`` returns ``None`` and sending digits needs call control.
"""

from __future__ import annotations

import sys

from voiceagent.telephony import (
    AudioFormat,
    DtmfReceived,
    Ignored,
    InboundAudio,
    MarkPlayed,
    Preamble,
    ProviderEvent,
    StreamStart,
    StreamStop,
)

from .errors import TwilioProtocolError
from .messages import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    UnknownEvent,
    build_clear,
    build_mark,
    build_media,
    parse_inbound,
)

TWILIO_RATE = 8000
TWILIO_FORMAT = AudioFormat("pcmu", TWILIO_RATE)
_ENCODINGS = {"audio/x-mulaw": "pcmu"}
_UNCAPPED = sys.maxsize  # the stream caps frame sizes before the codec sees them


def stream_start(start: Start) -> StreamStart:
    """Twilio's ``start`` in provider-neutral terms; an encoding other than mu-law is a protocol error."""
    fmt = start.media_format
    if _ENCODINGS.get(fmt.encoding) != "pcmu":
        raise TwilioProtocolError(f"start: unsupported media format {fmt}")
    audio = AudioFormat("pcmu", fmt.sample_rate, fmt.channels)
    return StreamStart(
        stream_id=start.stream_sid,
        call_id=start.call_sid,
        inbound_format=audio,
        outbound_format=audio,  # Twilio plays back what it sends
        account_id=start.account_sid,
        custom_parameters=start.custom_parameters,
    )


class TwilioCodec:
    """The ``MediaCodec`` for Twilio Media Streams (bidirectional, ``<Connect><Stream>``)."""

    @property
    def provider(self) -> str:
        return "twilio"

    @property
    def echoes_cleared_marks(self) -> bool:
        return True

    def parse(self, raw: str | bytes) -> ProviderEvent:
        event = parse_inbound(raw, max_bytes=_UNCAPPED)
        if isinstance(event, Media):
            # Twilio names the caller's track "inbound" in media and "inbound_track" in dtmf.
            track = "inbound" if event.track in ("inbound", "inbound_track") else event.track
            return InboundAudio(event.stream_sid, event.payload, track)
        if isinstance(event, Mark):
            return MarkPlayed(event.stream_sid, event.name)
        if isinstance(event, Dtmf):
            return DtmfReceived(event.stream_sid, event.digit)
        if isinstance(event, Stop):
            return StreamStop(event.stream_sid)
        if isinstance(event, Start):
            return stream_start(event)
        if isinstance(event, Connected):
            return Preamble("connected")
        assert isinstance(event, UnknownEvent)
        return Ignored(event.event)

    def check_start(self, start: StreamStart) -> None:
        for fmt in (start.inbound_format, start.outbound_format):
            if fmt != TWILIO_FORMAT:
                raise TwilioProtocolError(f"start: unsupported media format {fmt}")

    def build_media(self, start: StreamStart, payload: bytes) -> str:
        return build_media(start.stream_id, payload)

    def build_mark(self, start: StreamStart, name: str) -> str:
        return build_mark(start.stream_id, name)

    def build_clear(self, start: StreamStart) -> str:
        return build_clear(start.stream_id)

    def build_dtmf(self, start: StreamStart, digits: str) -> str | None:
        return None  # not a Media Streams message: Twilio answers it with error 31924
