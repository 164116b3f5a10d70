"""What a telephony provider's media-stream WebSocket says, in provider-neutral terms.

Each provider's codec (``adapters/twilio``, ``adapters/telnyx``, ``adapters/plivo``) parses its own wire
messages into these frozen events; the generic ``MediaStream`` acts on them. Audio stays encoded here
(``InboundAudio.payload`` is in ``StreamStart.inbound_format``): decoding is the stream's job, so a
codec keeps no per-stream state.

Each event after ``StreamStart`` names its stream (``stream_id``); an empty ``stream_id`` means "this
connection's stream" (each WebSocket carries exactly one), for providers whose frames may omit it. A
non-empty id other than the start's is a protocol error that ends the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Encoding = Literal["pcmu", "pcma", "l16", "l16be"]
"""G.711 mu-law, G.711 A-law, 16-bit linear PCM little-endian (Plivo's ``audio/x-l16``), and 16-bit
linear PCM big-endian as RTP's L16 carries it (RFC 3551, 4.5.11; Telnyx): network byte order, and each
payload is whole samples, so an odd-length one is a protocol error (``l16`` payloads may split a sample)."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: Encoding
    sample_rate: int
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Preamble:
    """A message before ``start`` that carries nothing a call needs (Twilio's and Telnyx's ``connected``)."""

    event: str


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The stream began. ``call_id`` is the id call control acts on (Twilio CallSid, Telnyx
    call_control_id, Plivo callId); ``stream_id`` the one every outbound message carries."""

    stream_id: str
    call_id: str
    inbound_format: AudioFormat
    outbound_format: AudioFormat  # what the provider plays back; usually the inbound format
    account_id: str = ""
    custom_parameters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class InboundAudio:
    stream_id: str  # "" for this connection's stream, as on every event below
    payload: bytes  # encoded in StreamStart.inbound_format, no file header
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The provider played everything sent before mark ``name`` (or, for providers that echo cleared
    marks, dropped it on a clear: ``MediaCodec.echoes_cleared_marks``)."""

    stream_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ClearDone:
    """The provider confirms a clear (Plivo's ``clearedAudio``); providers without one never send it."""

    stream_id: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    stream_id: str
    digit: str  # one of 0-9 * # A-D


@dataclass(frozen=True, slots=True)
class StreamStop:
    stream_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event type the codec does not know: providers add events, so it is logged, never a hang-up."""

    event: str


ProviderEvent = (
    Preamble | StreamStart | InboundAudio | MarkPlayed | ClearDone | DtmfReceived | StreamStop | Ignored
)
