"""Twilio Media Streams: a websockets server, the per-call stream (a voiceagent Transport), TwiML and
webhook signature validation, on the generic ``voiceagent.telephony`` layer (``TwilioCodec``,
``TwilioSignatureAuth``)."""

from .auth import TwilioSignatureAuth
from .codec import TwilioCodec
from .errors import TwilioProtocolError, TwilioStreamClosed
from .messages import (
    Connected,
    Dtmf,
    InboundEvent,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    UnknownEvent,
    build_clear,
    build_mark,
    build_media,
    parse_inbound,
)
from .server import CallHandler, TwilioServer
from .signature import (
    SIGNATURE_HEADER,
    compute_signature,
    validate_json_signature,
    validate_signature,
)
from .stream import TwilioMediaStream
from .twiml import connect_stream_twiml

__all__ = [
    "SIGNATURE_HEADER",
    "CallHandler",
    "Connected",
    "Dtmf",
    "InboundEvent",
    "Mark",
    "Media",
    "MediaFormat",
    "Start",
    "Stop",
    "TwilioCodec",
    "TwilioMediaStream",
    "TwilioProtocolError",
    "TwilioServer",
    "TwilioSignatureAuth",
    "TwilioStreamClosed",
    "UnknownEvent",
    "build_clear",
    "build_mark",
    "build_media",
    "compute_signature",
    "connect_stream_twiml",
    "parse_inbound",
    "validate_json_signature",
    "validate_signature",
]
