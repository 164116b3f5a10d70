"""A scripted fake Plivo call: plays Plivo's audio-stream protocol against a real server.

Written from Plivo's Stream Event Protocol (https://www.plivo.com/docs/voice/audio-streaming/audio-streaming)
and Plivo's stream SDKs, not from the codec it tests. It dials the server over a real WebSocket (signed
as Plivo signs requests, with ``auth_token``), sends ``start``, streams caller audio as 20 ms ``media``
frames in the stream's ``contentType``, sends ``dtmf``, and hangs up by closing the socket (the current
reference has no stop message; ``send_stop`` sends the one Plivo's Java SDK models).

It "plays" what the bot sends: ``playAudio`` is consumed in order at ``playback_speed`` times real
time (default 1.0; ``math.inf`` plays instantly), a ``checkpoint`` is answered with ``playedStream``
once the audio before it has played, and ``clearAudio`` drops the unplayed audio and the checkpoints
queued with it (never answered: Plivo sends ``playedStream`` "only if the preceding events were played
successfully") and is answered with ``clearedAudio``. ``sendDTMF`` is recorded. What real Plivo would
refuse lands in ``errors``. Playback can be paused so tests can order events without timing.

``PlivoWire`` is Plivo's side of the wire; ``voiceagent.telephony.fake_call.FakeMediaCall`` does the rest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from voiceagent.telephony.events import AudioFormat, Encoding
from voiceagent.telephony.fake_call import BotFrame, EchoedMark, FakeMediaCall, Received
from voiceagent.telephony.formats import decode, encode

__all__ = ["EchoedMark", "FakePlivoCall", "PlivoWire", "plivo_signature"]

FRAME_MS = 20
_FORMATS: dict[str, tuple[str, Encoding, int]] = {  # contentType -> (wire name, encoding, rate)
    "audio/x-mulaw;rate=8000": ("audio/x-mulaw", "pcmu", 8000),
    "audio/x-l16;rate=8000": ("audio/x-l16", "l16", 8000),
    "audio/x-l16;rate=16000": ("audio/x-l16", "l16", 16000),
}
_DTMF = frozenset("0123456789*#ABCD")


def plivo_signature(auth_token: str, url: str, nonce: str) -> str:
    """``X-Plivo-Signature-V3`` of a GET of ``url`` (no body): HMAC-SHA256 of the URL with its query
    sorted, ``.``, the nonce; base64. Written here from Plivo's docs, not taken from the adapter."""
    parts = urlsplit(url)
    query = "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    signed = urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")) + "." + nonce
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha256).digest()).decode()


class PlivoWire:
    """Plivo's side of one audio stream: the frames it sends, and how it reads the bot's."""

    echoes_cleared_marks = False  # playedStream only for audio that played

    def __init__(
        self,
        *,
        content_type: str,
        call_id: str,
        stream_id: str,
        account_id: str,
        extra_headers: str,
        auth_token: str | None,
        public_url: str,
    ) -> None:
        if content_type not in _FORMATS:
            raise ValueError(f"not a Plivo stream contentType: {content_type!r} (one of {sorted(_FORMATS)})")
        self.content_type, encoding, rate = _FORMATS[content_type]
        # Plivo plays back in the stream's contentType (the codec sends it so).
        self.audio_format = self.inbound_format = self.outbound_format = AudioFormat(encoding, rate)
        self.call_id = call_id
        self.stream_id = stream_id
        self.account_id = account_id
        self.extra_headers = extra_headers
        self.auth_token = auth_token
        self.public_url = public_url
        self._sequence = itertools.count(1)
        self._chunk = itertools.count(1)
        self._media_ms = 0

    def upgrade_headers(self) -> Sequence[tuple[str, str]]:
        if self.auth_token is None:
            return []
        nonce = uuid.uuid4().hex[:20]
        return [
            ("X-Plivo-Signature-V3", plivo_signature(self.auth_token, self.public_url, nonce)),
            ("X-Plivo-Signature-V3-Nonce", nonce),
        ]

    def handshake(self) -> list[str]:
        return [json.dumps(self.start_message())]  # no "connected" first: Plivo's stream opens with start

    def start_message(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": next(self._sequence),
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": self.account_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": self.content_type, "sampleRate": self.audio_format.sample_rate},
            },
            "extra_headers": self.extra_headers,
        }

    def media(self, payload: bytes) -> str:
        message = {
            "event": "media",
            "sequenceNumber": next(self._sequence),
            "streamId": self.stream_id,
            "media": {
                "track": "inbound",
                "timestamp": str(self._media_ms),  # a decimal string, as Plivo's SDKs read it
                "chunk": next(self._chunk),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "extra_headers": self.extra_headers,
        }
        self._media_ms += FRAME_MS
        return json.dumps(message)

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": next(self._sequence),
                "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(self._media_ms)},
                "extra_headers": self.extra_headers,
            }
        )

    def stop(self) -> str:
        # Not in the current reference (a closed socket ends the stream); as Plivo's Java SDK models it.
        return json.dumps(
            {"event": "stop", "sequenceNumber": next(self._sequence), "streamId": self.stream_id}
        )

    def mark_played(self, name: str) -> str:
        return json.dumps(
            {
                "event": "playedStream",
                "sequenceNumber": next(self._sequence),
                "streamId": self.stream_id,
                "name": name,
            }
        )

    def clear_done(self) -> str | None:
        return json.dumps(
            {"sequenceNumber": next(self._sequence), "event": "clearedAudio", "streamId": self.stream_id}
        )

    def read(self, raw: str | bytes) -> Received:
        if isinstance(raw, bytes):
            return Received(error="binary frame (Plivo expects JSON text)")
        try:
            message = json.loads(raw)
        except ValueError:
            return Received(error=f"invalid JSON: {raw[:60]!r}")
        if not isinstance(message, dict):
            return Received(message, error=f"not a JSON object: {raw[:60]!r}")
        event = message.get("event")
        if event == "playAudio":
            return self._play_audio(message, raw)
        if event in ("checkpoint", "clearAudio") and message.get("streamId") != self.stream_id:
            return Received(message, error=f"missing or wrong streamId: {raw[:80]!r}")
        if event == "checkpoint":
            name = message.get("name")
            if not isinstance(name, str) or not name:
                return Received(message, error=f"bad checkpoint: {raw[:80]!r}")
            return Received(message, BotFrame("mark", name=name))
        if event == "clearAudio":
            return Received(message, BotFrame("clear"))
        if event == "sendDTMF":
            digits = message.get("dtmf")
            if not isinstance(digits, str) or not digits or not set(digits) <= _DTMF:
                return Received(message, error=f"bad sendDTMF: {raw[:80]!r}")
            return Received(message, BotFrame("dtmf", name=digits))
        return Received(message, error=f"unsupported event {str(event)[:40]!r}")

    def _play_audio(self, message: Mapping[str, Any], raw: str) -> Received:
        media = message.get("media")
        if not isinstance(media, dict):
            return Received(message, error=f"playAudio without media: {raw[:80]!r}")
        if "streamId" in message and message["streamId"] != self.stream_id:  # optional (Pipecat adds it)
            return Received(message, error=f"playAudio for another stream: {raw[:80]!r}")
        played_as = (media.get("contentType"), media.get("sampleRate"))
        if played_as != (self.content_type, self.audio_format.sample_rate):
            return Received(message, error=f"playAudio in {played_as!r}, the stream is {self.content_type}")
        try:
            payload = base64.b64decode(media["payload"], validate=True)
        except (KeyError, TypeError, binascii.Error, ValueError):
            return Received(message, error=f"bad playAudio payload: {raw[:80]!r}")
        return Received(message, BotFrame("media", payload=payload))


class FakePlivoCall(FakeMediaCall):
    """One fake Plivo call to ``url``; ``async with`` dials and sends ``start``."""

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        public_url: str | None = None,
        content_type: str = "audio/x-mulaw;rate=8000",
        extra_headers: Mapping[str, str] | None = None,
        call_id: str | None = None,
        stream_id: str | None = None,
        account_id: str = "MAFAKEAUTHID00000001",
        playback_speed: float = 1.0,
        start_paused: bool = False,
        handshake: bool = True,
    ) -> None:
        self.plivo = PlivoWire(
            content_type=content_type,
            call_id=call_id or str(uuid.uuid4()),
            stream_id=stream_id or str(uuid.uuid4()),
            account_id=account_id,
            extra_headers=";".join(f"{k}={v}" for k, v in (extra_headers or {}).items()),
            auth_token=auth_token,
            public_url=public_url or "wss://" + url.split("://", 1)[1],
        )
        super().__init__(
            url, self.plivo, playback_speed=playback_speed, start_paused=start_paused, handshake=handshake
        )

    @property
    def call_id(self) -> str:
        return self.plivo.call_id

    @property
    def stream_id(self) -> str:
        return self.plivo.stream_id

    @property
    def played_checkpoints(self) -> list[str]:
        """Checkpoints answered with playedStream, in order."""
        return [mark.name for mark in self.echoed_marks]

    @property
    def dropped_checkpoints(self) -> list[str]:
        """Checkpoints the bot sent that were never answered (dropped by a clear, or still queued)."""
        answered = set(self.played_checkpoints)
        return [f.name for f in self.frames if f.kind == "mark" and f.name not in answered]

    def play_until_checkpoint(self, name: str) -> None:
        """Resume playback and pause again right after answering checkpoint ``name``."""
        self.play_until_mark(name)

    async def send_stop(self) -> None:
        await self.stop()

    async def hang_up(self) -> None:
        """The caller hangs up: Plivo closes the stream's socket."""
        assert self._ws is not None
        await self._ws.close()

    def encode(self, pcm16: bytes) -> bytes:
        return encode(self.plivo.audio_format, pcm16)

    def decode(self, encoded: bytes) -> bytes:
        return decode(self.plivo.audio_format, encoded)

    @property
    def played(self) -> bytes:
        """The bot audio played out, in the stream's encoding."""
        return bytes(self.played_audio)
