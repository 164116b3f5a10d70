"""Telephony as one generic media-stream layer plus a codec per provider (Twilio, Telnyx, Plivo).

A provider adapter writes a ``MediaCodec`` (wire messages), an ``UpgradeAuth`` (how its upgrades are
signed) and a ``CallControl`` (its REST API); the stream, the server, the mark ledger, barge-in and
every bound are shared.
"""

from .auth import UpgradeAuth, UpgradeRequest
from .codec import MediaCodec
from .control import CallControl, CallControlError
from .errors import MediaStreamClosed, MediaStreamProtocolError
from .events import (
    AudioFormat,
    ClearDone,
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
from .formats import SILENCE, frame_bytes
from .server import ControlFactory, MediaStreamServer
from .stream import MAX_FRAME_BYTES, MediaStream, read_start

__all__ = [
    "MAX_FRAME_BYTES",
    "SILENCE",
    "AudioFormat",
    "CallControl",
    "CallControlError",
    "ClearDone",
    "ControlFactory",
    "DtmfReceived",
    "Encoding",
    "Ignored",
    "InboundAudio",
    "MarkPlayed",
    "MediaCodec",
    "MediaStream",
    "MediaStreamClosed",
    "MediaStreamProtocolError",
    "MediaStreamServer",
    "Preamble",
    "ProviderEvent",
    "StreamStart",
    "StreamStop",
    "UpgradeAuth",
    "UpgradeRequest",
    "frame_bytes",
    "read_start",
]
