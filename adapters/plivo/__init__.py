"""Plivo audio streams: the wire messages, the ``MediaCodec``, upgrade signature checks (V3), call
control over Plivo's Call API, Plivo XML helpers, and fakes of Plivo's side for tests."""

from .auth import PlivoSignatureAuth, plivo_upgrade_auth
from .codec import PlivoCodec
from .control import PlivoCallControl
from .errors import PlivoProtocolError
from .messages import (
    Checkpoint,
    ClearAudio,
    ClearedAudio,
    Dtmf,
    InboundEvent,
    Media,
    MediaFormat,
    OutboundEvent,
    PlayAudio,
    PlayedStream,
    SendDtmf,
    Start,
    Stop,
    UnknownEvent,
    build_checkpoint,
    build_clear_audio,
    build_play_audio,
    build_send_dtmf,
    parse_extra_headers,
    parse_inbound,
    parse_outbound,
)
from .plivo_xml import dial_xml, stream_xml
from .server import CallHandler, PlivoServer
from .signature import (
    MAIN_ACCOUNT_SIGNATURE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    compute_signature_v3,
    validate_signature_v3,
)

__all__ = [
    "MAIN_ACCOUNT_SIGNATURE_HEADER",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "CallHandler",
    "Checkpoint",
    "ClearAudio",
    "ClearedAudio",
    "Dtmf",
    "InboundEvent",
    "Media",
    "MediaFormat",
    "OutboundEvent",
    "PlayAudio",
    "PlayedStream",
    "PlivoCallControl",
    "PlivoCodec",
    "PlivoProtocolError",
    "PlivoServer",
    "PlivoSignatureAuth",
    "SendDtmf",
    "Start",
    "Stop",
    "UnknownEvent",
    "build_checkpoint",
    "build_clear_audio",
    "build_play_audio",
    "build_send_dtmf",
    "compute_signature_v3",
    "dial_xml",
    "parse_extra_headers",
    "parse_inbound",
    "parse_outbound",
    "plivo_upgrade_auth",
    "stream_xml",
    "validate_signature_v3",
]
