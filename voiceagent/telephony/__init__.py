"""Telephony as one generic media-stream layer plus a codec per provider (Twilio, Telnyx, Plivo).

A provider adapter writes a ``MediaCodec`` (wire messages), an ``UpgradeAuth`` (how its upgrades are
signed) and a ``CallControl`` (its REST API); the stream, the server, the mark ledger, barge-in and
every bound are shared.
"""

from .amd import AnsweringMachineResult, CallRegistry
from .auth import UpgradeAuth, UpgradeRequest
from .codec import MediaCodec
from .control import CallControl, CallControlError
from .dtmf import DtmfCollector, ReceivesDtmf
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
from .settings import CallSettings, DtmfSettings
from .stream import MAX_FRAME_BYTES, MediaStream, read_start
from .supervisor import CallSupervisor

__all__ = [
    "MAX_FRAME_BYTES",
    "SILENCE",
    "AnsweringMachineResult",
    "AudioFormat",
    "CallControl",
    "CallControlError",
    "CallRegistry",
    "CallSettings",
    "CallSupervisor",
    "ClearDone",
    "ControlFactory",
    "DtmfCollector",
    "DtmfReceived",
    "DtmfSettings",
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
    "ReceivesDtmf",
    "StreamStart",
    "StreamStop",
    "UpgradeAuth",
    "UpgradeRequest",
    "frame_bytes",
    "read_start",
]
