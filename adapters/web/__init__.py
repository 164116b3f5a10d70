"""Browser transport: a page with mic capture and playback, its WebSocket server, and token auth.

The page (index.html, client.js, capture-worklet.js) lives beside these modules so it ships as
package data.
"""

from .messages import PlaybackState, ProtocolViolationError
from .server import SessionHandler, WebServer
from .session import CloseReason, SessionClosedError, WebSession
from .tokens import InvalidTokenError, TokenSigner

__all__ = [
    "CloseReason",
    "InvalidTokenError",
    "PlaybackState",
    "ProtocolViolationError",
    "SessionClosedError",
    "SessionHandler",
    "TokenSigner",
    "WebServer",
    "WebSession",
]
