"""``PlivoCodec``: Plivo's audio-stream messages as the provider-neutral ``MediaCodec``.

Marks are Plivo checkpoints (``checkpoint`` -> ``playedStream``), a clear is ``clearAudio`` (Plivo
confirms with ``clearedAudio``). Plivo answers a checkpoint only "if the preceding events were played
successfully" (https://www.plivo.com/docs/voice/xml/the-stream-element/checkpoint-event), so
checkpoints dropped by a clear are never echoed: ``echoes_cleared_marks`` is False.

Formats: the stream's ``contentType`` (https://www.plivo.com/docs/voice/xml/audiostream):
``audio/x-mulaw;rate=8000``, ``audio/x-l16;rate=8000`` or ``audio/x-l16;rate=16000``. L16 is
little-endian, as Plivo's own agent-transport decodes it. The bot plays back in the stream's format.
"""

from __future__ import annotations

from types import MappingProxyType

from voiceagent.telephony.events import (
    AudioFormat,
    ClearDone,
    DtmfReceived,
    Ignored,
    InboundAudio,
    MarkPlayed,
    ProviderEvent,
    StreamStart,
    StreamStop,
)

from .errors import PlivoProtocolError
from .messages import (
    CONTENT_TYPES,
    L16,
    MAX_FRAME_BYTES,
    MULAW,
    ClearedAudio,
    Dtmf,
    Media,
    PlayedStream,
    Start,
    Stop,
    build_checkpoint,
    build_clear_audio,
    build_play_audio,
    build_send_dtmf,
    parse_inbound,
)

_ENCODINGS = {MULAW: "pcmu", L16: "l16"}
_CONTENT_TYPES = {"pcmu": MULAW, "l16": L16}


class PlivoCodec:
    """Pure: frames in, ``ProviderEvent``s out, and the frames the bot sends. No I/O."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max_frame_bytes = max_frame_bytes

    @property
    def provider(self) -> str:
        return "plivo"

    @property
    def echoes_cleared_marks(self) -> bool:
        return False

    def parse(self, raw: str | bytes) -> ProviderEvent:
        event = parse_inbound(raw, max_bytes=self._max_frame_bytes)
        if isinstance(event, Media):
            return InboundAudio(event.stream_id, event.payload, event.track)
        if isinstance(event, Start):
            return _stream_start(event)
        if isinstance(event, PlayedStream):
            return MarkPlayed(event.stream_id, event.name)
        if isinstance(event, ClearedAudio):
            return ClearDone(event.stream_id)
        if isinstance(event, Dtmf):
            return DtmfReceived(event.stream_id, event.digit)
        if isinstance(event, Stop):
            return StreamStop(event.stream_id, event.reason)
        return Ignored(event.event)

    def check_start(self, start: StreamStart) -> None:
        for direction, fmt in (("inbound", start.inbound_format), ("outbound", start.outbound_format)):
            content_type = _CONTENT_TYPES.get(fmt.encoding)
            if (
                content_type is None
                or (content_type, fmt.sample_rate) not in CONTENT_TYPES
                or fmt.channels != 1
            ):
                raise PlivoProtocolError(
                    f"{direction} audio {fmt.encoding} at {fmt.sample_rate} Hz x{fmt.channels} is not a "
                    "Plivo stream format (audio/x-mulaw 8 kHz, audio/x-l16 8 or 16 kHz, mono)"
                )

    def build_media(self, start: StreamStart, payload: bytes) -> str:
        fmt = start.outbound_format
        return build_play_audio(
            payload, content_type=_CONTENT_TYPES[fmt.encoding], sample_rate=fmt.sample_rate
        )

    def build_mark(self, start: StreamStart, name: str) -> str:
        return build_checkpoint(start.stream_id, name)

    def build_clear(self, start: StreamStart) -> str:
        return build_clear_audio(start.stream_id)

    def build_dtmf(self, start: StreamStart, digits: str) -> str | None:
        return build_send_dtmf(digits)


def _stream_start(start: Start) -> StreamStart:
    encoding = _ENCODINGS.get(start.media_format.encoding)
    if encoding is None:
        raise PlivoProtocolError(
            f"start: unsupported mediaFormat encoding {start.media_format.encoding[:40]!r}"
        )
    fmt = AudioFormat(encoding, start.media_format.sample_rate)  # type: ignore[arg-type]  # checked above
    return StreamStart(
        stream_id=start.stream_id,
        call_id=start.call_id,
        inbound_format=fmt,
        outbound_format=fmt,
        account_id=start.account_id,
        custom_parameters=MappingProxyType(dict(start.headers)),
    )
