"""``MediaCodec``: the one thing a telephony provider's adapter writes for its media stream.

A codec is pure: it turns the provider's WebSocket frames into ``ProviderEvent``s and builds the frames
the bot sends, with no I/O. The generic ``MediaStream`` and ``MediaStreamServer`` do the rest (framing,
resampling, the mark ledger, barge-in, deadlines, caps), the same for every provider.
"""

from __future__ import annotations

from typing import Protocol

from .events import ProviderEvent, StreamStart


class MediaCodec(Protocol):
    @property
    def provider(self) -> str:
        """A short lowercase name for logs and errors: ``"twilio"``, ``"telnyx"``, ``"plivo"``."""
        ...

    @property
    def echoes_cleared_marks(self) -> bool:
        """Whether a clear makes the provider echo the marks it dropped (Twilio does). The mark ledger
        then waits for those echoes instead of forgetting the marks."""
        ...

    def parse(self, raw: str | bytes) -> ProviderEvent:
        """Parse one inbound frame (already size-capped by the server). Raises
        ``MediaStreamProtocolError`` and nothing else on bad input."""
        ...

    def check_start(self, start: StreamStart) -> None:
        """Raise ``MediaStreamProtocolError`` if this stream's formats are not ones the codec can carry."""
        ...

    def build_media(self, start: StreamStart, payload: bytes) -> str:
        """One frame of outbound audio, ``payload`` already encoded in ``start.outbound_format``."""
        ...

    def build_mark(self, start: StreamStart, name: str) -> str:
        """Ask the provider to report when everything sent before this has played."""
        ...

    def build_clear(self, start: StreamStart) -> str:
        """Drop the provider's buffered, unplayed audio (barge-in)."""
        ...

    def build_dtmf(self, start: StreamStart, digits: str) -> str | None:
        """Send DTMF tones on the stream, or ``None`` when the provider's stream cannot (then call
        control's ``send_dtmf`` is the way, if any)."""
        ...
