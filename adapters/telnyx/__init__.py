"""Telnyx media streaming (PCMU, PCMA, L16) on the generic media-stream layer, its stream-token
authentication and Call Control v2 (hang up, transfer, DTMF)."""

from .auth import STREAM_AUTH_HEADER, TOKEN_ENV, TelnyxStreamAuth
from .codec import TelnyxCodec
from .control import API_KEY_ENV, DEFAULT_BASE_URL, TelnyxCallControl, telnyx_control_factory
from .errors import TelnyxProtocolError
from .server import TelnyxServer, stream_parameters
from .stream import TelnyxMediaStream

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "STREAM_AUTH_HEADER",
    "TOKEN_ENV",
    "TelnyxCallControl",
    "TelnyxCodec",
    "TelnyxMediaStream",
    "TelnyxProtocolError",
    "TelnyxServer",
    "TelnyxStreamAuth",
    "stream_parameters",
    "telnyx_control_factory",
]
