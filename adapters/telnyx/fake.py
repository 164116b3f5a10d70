"""A scripted fake Telnyx call: plays Telnyx's media-streaming protocol against a real server.

``TelnyxWire`` is Telnyx's side of the wire, written from Telnyx's documentation
(https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming,
https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket), not from the
adapter it tests; ``voiceagent.telephony.fake_call.FakeMediaCall`` does the rest. It dials with the
``x-telnyx-streaming-auth-token`` header (when given a token), sends ``connected`` (repeating the
token) and ``start`` (``media_format``, ``call_control_id``, ``client_state``, ``custom_parameters``),
streams caller audio as 20 ms ``media`` frames in PCMU, PCMA or L16 (RTP payloads: L16 big-endian),
sends ``dtmf`` and ``stop``.

It "plays" what the app sends in the bidirectional codec: media in order at ``playback_speed`` times
real time (1.0 by default; ``math.inf``: instantly); a mark comes back once the media before it has
played (at once when nothing is queued); ``clear`` drops unplayed media and sends the queued marks
back, as Telnyx documents. What Telnyx would refuse (a frame that is not JSON, an unknown event, a
media chunk outside 20 ms to 30 s, an odd-length L16 payload) is recorded in ``errors``. Playback can
be paused so tests can order events without timing.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from voiceagent.audio import pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from voiceagent.telephony import AudioFormat, Encoding
from voiceagent.telephony.fake_call import BotFrame, EchoedMark, FakeMediaCall, Received

__all__ = [
    "EchoedMark",
    "FakeTelnyxCall",
    "TelnyxWire",
    "alaw_decode",
    "decode_to_pcm16",
    "encode_pcm16",
]

FRAME_MS = 20
MIN_PLAYBACK_MS = 20  # "RTP media chunks sent back to Telnyx can contain 20 milliseconds to 30 seconds"
MAX_PLAYBACK_MS = 30_000
AUTH_HEADER = "x-telnyx-streaming-auth-token"
_NEUTRAL: dict[str, Encoding] = {"PCMU": "pcmu", "PCMA": "pcma", "L16": "l16"}


def _alaw_sample(byte: int) -> int:
    # ITU-T G.711 A-law expansion.
    value = byte ^ 0x55
    exponent = (value & 0x70) >> 4
    magnitude = ((value & 0x0F) << 4) + 8
    if exponent:
        magnitude = (magnitude + 0x100) << (exponent - 1)
    return magnitude if value & 0x80 else -magnitude


_ALAW_TABLE = [_alaw_sample(b).to_bytes(2, "little", signed=True) for b in range(256)]


def alaw_decode(data: bytes) -> bytes:
    """A-law to little-endian PCM16 (written from G.711, independent of voiceagent.audio)."""
    return b"".join(_ALAW_TABLE[b] for b in data)


def _swap(data: bytes) -> bytes:
    out = bytearray(len(data) - len(data) % 2)
    out[0::2] = data[1 : len(out) : 2]
    out[1::2] = data[0 : len(out) : 2]
    return bytes(out)


def encode_pcm16(pcm16: bytes, encoding: str) -> bytes:
    """Little-endian PCM16 to a Telnyx RTP payload in ``encoding`` (at the same sample rate)."""
    if encoding == "PCMU":
        return pcm16_to_ulaw(pcm16)
    if encoding == "PCMA":
        return pcm16_to_alaw(pcm16)
    if encoding == "L16":
        return _swap(pcm16)  # RTP L16 is network byte order (RFC 3551, 4.5.11)
    raise ValueError(f"the fake carries PCMU, PCMA and L16, not {encoding!r}")


def decode_to_pcm16(payload: bytes, encoding: str) -> bytes:
    """A Telnyx RTP payload in ``encoding`` to little-endian PCM16."""
    if encoding == "PCMU":
        return ulaw_to_pcm16(payload)
    if encoding == "PCMA":
        return alaw_decode(payload)
    if encoding == "L16":
        return _swap(payload)
    raise ValueError(f"the fake carries PCMU, PCMA and L16, not {encoding!r}")


def _format(encoding: str, sample_rate: int) -> AudioFormat:
    # A codec the fake cannot encode (G722, OPUS) may still be announced in start; it carries no audio.
    return AudioFormat(_NEUTRAL.get(encoding, "pcmu"), sample_rate)


class TelnyxWire:
    """Telnyx's side of one media stream: the frames it sends, and how it reads the app's.

    Its formats are the neutral ones ``FakeMediaCall`` encodes (``l16``: little-endian); the byte
    swap to and from RTP's big-endian L16 happens here, on the wire."""

    echoes_cleared_marks = True  # "A clear frame also returns queued marks."

    def __init__(
        self,
        *,
        encoding: str,
        sample_rate: int,
        bidirectional_codec: str,
        bidirectional_sample_rate: int,
        stream_auth_token: str | None,
        custom_parameters: Mapping[str, str],
        client_state: str,
        stream_id: str,
        call_control_id: str,
        call_session_id: str,
        user_id: str,
        extra_headers: Mapping[str, str],
    ) -> None:
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.bidirectional_codec = bidirectional_codec
        self.bidirectional_sample_rate = bidirectional_sample_rate
        self.stream_auth_token = stream_auth_token
        self.custom_parameters = dict(custom_parameters)
        self.client_state = client_state
        self.stream_id = stream_id
        self.call_control_id = call_control_id
        self.call_session_id = call_session_id
        self.user_id = user_id
        self.extra_headers = dict(extra_headers)
        self.inbound_format = _format(encoding, sample_rate)
        self.outbound_format = _format(bidirectional_codec, bidirectional_sample_rate)
        self._sequence = itertools.count(1)
        self._chunk = itertools.count(1)
        self._media_ms = 0

    # ---- what Telnyx sends ------------------------------------------------------------------------

    def upgrade_headers(self) -> Sequence[tuple[str, str]]:
        headers = list(self.extra_headers.items())
        if self.stream_auth_token is not None:
            headers.append((AUTH_HEADER, self.stream_auth_token))
        return headers

    def handshake(self) -> list[str]:
        return [json.dumps(self.connected_message()), json.dumps(self.start_message())]

    def connected_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
        if self.stream_auth_token is not None:
            message["connected"] = {AUTH_HEADER: self.stream_auth_token}
        return message

    def start_message(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequence_number": str(next(self._sequence)),
            "stream_id": self.stream_id,
            "start": {
                "user_id": self.user_id,
                "call_control_id": self.call_control_id,
                "call_session_id": self.call_session_id,
                "from": "+13122010094",
                "to": "+13122123456",
                "tags": ["TAG1"],
                "client_state": self.client_state,
                "custom_parameters": self.custom_parameters,
                "media_format": {"encoding": self.encoding, "sample_rate": self.sample_rate, "channels": 1},
            },
        }

    def media_message(self, rtp_payload: bytes, *, track: str = "inbound") -> dict[str, Any]:
        """One media frame carrying ``rtp_payload`` as is (advances sequence, chunk and timestamp)."""
        message = {
            "event": "media",
            "sequence_number": str(next(self._sequence)),
            "media": {
                "track": track,
                "chunk": str(next(self._chunk)),
                "timestamp": str(self._media_ms),
                "payload": base64.b64encode(rtp_payload).decode("ascii"),
            },
            "stream_id": self.stream_id,
        }
        self._media_ms += FRAME_MS
        return message

    def media(self, payload: bytes) -> str:
        rtp = _swap(payload) if self.encoding == "L16" else payload
        return json.dumps(self.media_message(rtp))

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "stream_id": self.stream_id,
            "occurred_at": "2026-12-02T12:04:45.000000Z",
            "sequence_number": str(next(self._sequence)),
            "dtmf": {"digit": digit},
        }

    def dtmf(self, digit: str) -> str:
        return json.dumps(self.dtmf_message(digit))

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": str(next(self._sequence)),
                "stop": {"user_id": self.user_id, "call_control_id": self.call_control_id},
                "stream_id": self.stream_id,
            }
        )

    def mark_played(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequence_number": str(next(self._sequence)),
                "stream_id": self.stream_id,
                "mark": {"name": name},
            }
        )

    def clear_done(self) -> str | None:
        return None  # Telnyx confirms a clear only by sending the queued marks back

    # ---- how Telnyx reads the app's frames --------------------------------------------------------

    def read(self, raw: str | bytes) -> Received:
        try:
            message = json.loads(raw)
        except ValueError:
            return Received(error=f"100003 malformed frame: not JSON: {raw[:60]!r}")
        if not isinstance(message, dict):
            return Received(message, error=f"100003 malformed frame: not an object: {raw[:60]!r}")
        event = message.get("event")
        if event == "media":
            return self._read_media(message, raw)
        if event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str) or not name:
                return Received(message, error=f"100003 malformed frame: bad mark: {raw[:80]!r}")
            return Received(message, BotFrame("mark", name=name))
        if event == "clear":
            return Received(message, BotFrame("clear"))
        return Received(message, error=f"100003 malformed frame: unsupported event {event!r}")

    def _read_media(self, message: dict[str, Any], raw: str | bytes) -> Received:
        media = message.get("media")
        encoded = media.get("payload") if isinstance(media, dict) else None
        try:
            if not isinstance(encoded, str):
                raise ValueError("no payload")
            rtp = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            return Received(message, error=f"100004 invalid media: {raw[:80]!r}")
        per_ms = self.bidirectional_sample_rate / 1000 * (2 if self.bidirectional_codec == "L16" else 1)
        ms = len(rtp) / per_ms
        if not MIN_PLAYBACK_MS <= ms <= MAX_PLAYBACK_MS:
            return Received(message, error=f"100004 invalid media: a chunk of {ms:g} ms (20 ms to 30 s)")
        if self.bidirectional_codec == "L16":
            if len(rtp) % 2:
                return Received(message, error="100004 invalid media: L16 of odd length")
            rtp = _swap(rtp)
        return Received(message, BotFrame("media", payload=rtp))


class FakeTelnyxCall(FakeMediaCall):
    """One fake Telnyx call (``TelnyxWire`` on ``FakeMediaCall``); ``async with`` dials ``url``."""

    def __init__(
        self,
        url: str,
        *,
        encoding: str = "PCMU",
        sample_rate: int = 8000,
        bidirectional_codec: str = "PCMU",
        bidirectional_sample_rate: int = 8000,
        stream_auth_token: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        client_state: str = "",
        stream_id: str = "32de0dea-53cb-4b21-89a4-9e1819c043bc",
        call_control_id: str = "v3:fake-telnyx-call-control-id-0001",
        call_session_id: str = "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        user_id: str = "3e6f995f-85f7-4705-9741-53b116d28237",
        playback_speed: float = 1.0,
        start_paused: bool = False,
        handshake: bool = True,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.telnyx = TelnyxWire(
            encoding=encoding,
            sample_rate=sample_rate,
            bidirectional_codec=bidirectional_codec,
            bidirectional_sample_rate=bidirectional_sample_rate,
            stream_auth_token=stream_auth_token,
            custom_parameters=custom_parameters or {},
            client_state=client_state,
            stream_id=stream_id,
            call_control_id=call_control_id,
            call_session_id=call_session_id,
            user_id=user_id,
            extra_headers=extra_headers or {},
        )
        super().__init__(
            url, self.telnyx, playback_speed=playback_speed, start_paused=start_paused, handshake=handshake
        )

    @property
    def stream_id(self) -> str:
        return self.telnyx.stream_id

    @property
    def call_control_id(self) -> str:
        return self.telnyx.call_control_id

    @property
    def user_id(self) -> str:
        return self.telnyx.user_id

    def connected_message(self) -> dict[str, Any]:
        return self.telnyx.connected_message()

    def start_message(self) -> dict[str, Any]:
        return self.telnyx.start_message()

    def media_message(self, rtp_payload: bytes, *, track: str = "inbound") -> dict[str, Any]:
        return self.telnyx.media_message(rtp_payload, track=track)

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return self.telnyx.dtmf_message(digit)

    async def send_payload(self, rtp_payload: bytes) -> None:
        """Caller audio already as Telnyx's RTP payload (L16: big-endian), sent as is in 20 ms frames."""
        wire = self.telnyx
        step = int(wire.sample_rate / 1000 * FRAME_MS * (2 if wire.encoding == "L16" else 1))
        for offset in range(0, len(rtp_payload), step):
            await self.send_json(self.media_message(rtp_payload[offset : offset + step]))

    @property
    def played_payload(self) -> bytes:
        """What the caller heard as the RTP payloads Telnyx got (L16: big-endian)."""
        played = bytes(self.played_audio)
        return _swap(played) if self.telnyx.bidirectional_codec == "L16" else played

    @property
    def played_pcm16(self) -> bytes:
        """What the caller heard, as little-endian PCM16 at ``bidirectional_sample_rate`` (decoded
        here, with the fake's own G.711 A-law table, not with the adapter's)."""
        return decode_to_pcm16(self.played_payload, self.telnyx.bidirectional_codec)

    @property
    def received_payload(self) -> bytes:
        """All bot audio received (played or not), as RTP payloads."""
        audio = self.received_audio
        return _swap(audio) if self.telnyx.bidirectional_codec == "L16" else audio
