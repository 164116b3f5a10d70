"""``TelnyxCodec``: Telnyx media streaming as a ``MediaCodec`` (PCMU, PCMA and L16).

Telnyx streams the call's audio in ``stream_codec`` (what ``start.media_format`` reports) and plays
back what the app sends in ``stream_bidirectional_codec`` at ``stream_bidirectional_sampling_rate``
(``stream_bidirectional_mode: rtp``; defaults PCMU at 8000 Hz), set on the Call Control command
(https://developers.telnyx.com/api-reference/call-commands/streaming-start) or TeXML's ``<Stream
bidirectionalCodec=... bidirectionalSamplingRate=...>``
(https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream). The start frame does
not say the playback codec, so give this codec the values you gave Telnyx (``None``: the same as the
inbound ``media_format``).

Payloads are RTP payloads without headers. L16 in RTP is big-endian (network byte order, RFC 3551
section 4.5.11): the start reports it as the neutral ``"l16be"`` encoding, and the generic stream
decodes and encodes it (payloads pass through here as they are). The codec keeps no per-stream state,
so one codec serves any number of concurrent calls. Telnyx documents that "a clear frame also returns
queued marks", so ``echoes_cleared_marks`` is True. The stream carries no outbound DTMF: use
``TelnyxCallControl``'s ``send_dtmf``.
"""

from __future__ import annotations

from types import MappingProxyType

from voiceagent.logs import get_logger
from voiceagent.telephony.events import (
    AudioFormat,
    DtmfReceived,
    Encoding,
    Ignored,
    InboundAudio,
    MarkPlayed,
    Preamble,
    ProviderEvent,
    StreamStart,
    StreamStop,
)

from . import messages as m
from .errors import TelnyxProtocolError

__all__ = ["ENCODINGS", "L16_SAMPLE_RATES", "TelnyxCodec"]

logger = get_logger(__name__)

# Telnyx codec name -> neutral encoding, for the codecs this adapter carries (G722, OPUS and AMR-WB
# are documented too, but need a decoder voiceagent does not ship).
ENCODINGS: dict[str, Encoding] = {"PCMU": "pcmu", "PCMA": "pcma", "L16": "l16be"}
_NAMES = {encoding: name for name, encoding in ENCODINGS.items()}
L16_SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 48000})  # stream_bidirectional_sampling_rate
G711_SAMPLE_RATE = 8000


def _format(name: str, sample_rate: int, channels: int = 1) -> AudioFormat:
    encoding = ENCODINGS.get(name.upper())
    if encoding is None:
        raise TelnyxProtocolError(
            f"stream codec {name[:16]!r} is not supported: ask Telnyx for stream_codec PCMU, PCMA or L16"
        )
    return AudioFormat(encoding, sample_rate, channels)


def _check_format(fmt: AudioFormat, which: str) -> None:
    if fmt.encoding not in _NAMES:  # little-endian "l16" is not Telnyx's: its L16 is RTP's, big-endian
        raise TelnyxProtocolError(f"{which} encoding {fmt.encoding!r}: Telnyx carries {sorted(_NAMES)}")
    if fmt.channels != 1:
        raise TelnyxProtocolError(f"{which} audio has {fmt.channels} channels; only mono is supported")
    if fmt.encoding in ("pcmu", "pcma") and fmt.sample_rate != G711_SAMPLE_RATE:
        raise TelnyxProtocolError(
            f"{which} {_NAMES[fmt.encoding]} at {fmt.sample_rate} Hz (G.711 is 8000 Hz)"
        )
    if fmt.encoding == "l16be" and fmt.sample_rate not in L16_SAMPLE_RATES:
        raise TelnyxProtocolError(
            f"{which} L16 at {fmt.sample_rate} Hz (Telnyx streams {sorted(L16_SAMPLE_RATES)} Hz)"
        )


class TelnyxCodec:
    provider = "telnyx"
    echoes_cleared_marks = True

    def __init__(
        self,
        *,
        bidirectional_codec: str | None = "PCMU",
        bidirectional_sample_rate: int | None = None,
        max_frame_bytes: int = m.MAX_FRAME_BYTES,
    ) -> None:
        if bidirectional_codec is not None and bidirectional_codec.upper() not in ENCODINGS:
            raise ValueError(f"bidirectional_codec must be one of {sorted(ENCODINGS)} or None")
        if bidirectional_codec is None and bidirectional_sample_rate is not None:
            raise ValueError("bidirectional_sample_rate needs a bidirectional_codec")
        self._outbound: AudioFormat | None = None
        if bidirectional_codec is not None:
            rate = bidirectional_sample_rate or G711_SAMPLE_RATE
            self._outbound = _format(bidirectional_codec, rate)
            try:
                _check_format(self._outbound, "bidirectional")
            except TelnyxProtocolError as exc:
                raise ValueError(exc.reason) from None
        self._max_frame_bytes = max_frame_bytes

    def parse(self, raw: str | bytes) -> ProviderEvent:
        event = m.parse_inbound(raw, max_bytes=self._max_frame_bytes)
        if isinstance(event, m.Media):
            return InboundAudio(event.stream_id, event.payload, event.track)
        if isinstance(event, m.Start):
            return self._start(event)
        if isinstance(event, m.Mark):
            return MarkPlayed(event.stream_id, event.name)
        if isinstance(event, m.Dtmf):
            return DtmfReceived(event.stream_id, event.digit)
        if isinstance(event, m.Stop):
            return StreamStop(event.stream_id, event.reason)
        if isinstance(event, m.Connected):
            return Preamble("connected")
        if isinstance(event, m.Error):
            # About a frame we sent (malformed, invalid media, rate limit): the stream goes on, but an
            # operator should see it (the generic stream logs ignored events at debug level only).
            described = f"error {event.code}: {event.title} {event.detail}".strip()[:160]
            logger.warning("telnyx stream %s reports %s", event.stream_id[:40], described)
            return Ignored(described)
        return Ignored(event.event)

    def _start(self, start: m.Start) -> StreamStart:
        fmt = start.media_format
        inbound = _format(fmt.encoding, fmt.sample_rate, fmt.channels)
        params = dict(start.custom_parameters)
        if start.client_state:
            params.setdefault("client_state", start.client_state)
        return StreamStart(
            stream_id=start.stream_id,
            call_id=start.call_control_id,
            inbound_format=inbound,
            outbound_format=self._outbound or inbound,
            account_id=start.user_id,
            custom_parameters=MappingProxyType(params),
        )

    def check_start(self, start: StreamStart) -> None:
        _check_format(start.inbound_format, "inbound")
        _check_format(start.outbound_format, "outbound")

    def build_media(self, start: StreamStart, payload: bytes) -> str:
        return m.build_media(payload)

    def build_mark(self, start: StreamStart, name: str) -> str:
        return m.build_mark(name)

    def build_clear(self, start: StreamStart) -> str:
        return m.build_clear()

    def build_dtmf(self, start: StreamStart, digits: str) -> str | None:
        return None  # not on the stream: TelnyxCallControl.send_dtmf
