"""A scripted fake Twilio: plays the Media Streams protocol against a real server.

``TwilioWire`` is Twilio's side of the wire, written from Twilio's Media Streams docs (not from the
adapter's codec it tests); ``voiceagent.telephony.fake_call.FakeMediaCall`` does the rest. The fake
sends ``connected`` and ``start`` (with customParameters), streams caller audio as 20 ms mu-law media
frames, sends dtmf and stop, and "plays" the bot's audio: media is consumed in order at
``playback_speed`` times real time (``math.inf``: instantly), and each mark is echoed once the audio
before it has played. ``clear`` drops unplayed audio and echoes pending marks, as Twilio does.
Playback can be paused so tests can order events without timing.

With ``auth_token`` it signs the upgrade as Twilio does: ``X-Twilio-Signature`` is the HMAC-SHA1 of
``public_url`` (default: ``url`` with its scheme made ``wss``, the URL Twilio would have dialed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from voiceagent.telephony import AudioFormat
from voiceagent.telephony.fake_call import BotFrame, EchoedMark, FakeMediaCall, Received

FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz

__all__ = ["FRAME_BYTES", "EchoedMark", "FakeTwilioCall", "TwilioWire", "twilio_signature"]


def twilio_signature(auth_token: str, url: str) -> str:
    """What Twilio puts in ``X-Twilio-Signature`` for a request to ``url`` without parameters
    (written here from the documented algorithm, not taken from the adapter it tests)."""
    mac = hmac.new(auth_token.encode("utf-8"), url.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


class TwilioWire:
    """Twilio's side of one Media Stream: the frames it sends, and how it reads the app's."""

    inbound_format = outbound_format = AudioFormat("pcmu", 8000)
    echoes_cleared_marks = True

    def __init__(
        self,
        *,
        stream_sid: str,
        call_sid: str,
        account_sid: str,
        custom_parameters: Mapping[str, str],
        auth_token: str | None,
        public_url: str,
    ) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.custom_parameters = dict(custom_parameters)
        self.auth_token = auth_token
        self.public_url = public_url
        self._sequence = itertools.count(1)
        self._chunk = itertools.count(1)
        self._media_ms = 0

    def upgrade_headers(self) -> Sequence[tuple[str, str]]:
        if self.auth_token is None:
            return []
        return [("X-Twilio-Signature", twilio_signature(self.auth_token, self.public_url))]

    def handshake(self) -> list[str]:
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        return [json.dumps(connected), json.dumps(self.start_message())]

    def start_message(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": str(next(self._sequence)),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.custom_parameters,
            },
            "streamSid": self.stream_sid,
        }

    def media(self, payload: bytes) -> str:
        message = {
            "event": "media",
            "sequenceNumber": str(next(self._sequence)),
            "media": {
                "track": "inbound",
                "chunk": str(next(self._chunk)),
                "timestamp": str(self._media_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "streamSid": self.stream_sid,
        }
        self._media_ms += len(payload) // 8
        return json.dumps(message)

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": str(next(self._sequence)),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": str(next(self._sequence)),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

    def mark_played(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": str(next(self._sequence)),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def clear_done(self) -> str | None:
        return None  # Twilio confirms a clear only by echoing the flushed marks

    def read(self, raw: str | bytes) -> Received:
        if isinstance(raw, bytes):
            return Received(error="binary frame (Twilio expects JSON text)")
        try:
            message = json.loads(raw)
        except ValueError:
            return Received(error=f"invalid JSON: {raw[:60]!r}")
        event = message.get("event") if isinstance(message, dict) else None
        if not isinstance(message, dict) or message.get("streamSid") != self.stream_sid:
            return Received(message, error=f"missing or wrong streamSid: {raw[:80]!r}")
        if event == "media":
            try:
                payload = base64.b64decode(message["media"]["payload"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                return Received(message, error=f"bad media payload: {raw[:80]!r}")
            return Received(message, BotFrame("media", payload=payload))
        if event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                return Received(message, error=f"bad mark: {raw[:80]!r}")
            return Received(message, BotFrame("mark", name=name))
        if event == "clear":
            return Received(message, BotFrame("clear"))
        return Received(message, error=f"31924: unsupported event {event!r}")


class FakeTwilioCall(FakeMediaCall):
    def __init__(
        self,
        url: str,
        *,
        custom_parameters: Mapping[str, str] | None = None,
        stream_sid: str = "MZ00000000000000000000000000000001",
        call_sid: str = "CA00000000000000000000000000000001",
        account_sid: str = "AC00000000000000000000000000000001",
        playback_speed: float = math.inf,
        start_paused: bool = False,
        handshake: bool = True,
        auth_token: str | None = None,
        public_url: str | None = None,
    ) -> None:
        self.twilio = TwilioWire(
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=account_sid,
            custom_parameters=custom_parameters or {},
            auth_token=auth_token,
            public_url=public_url or "wss://" + url.split("://", 1)[1],
        )
        super().__init__(
            url, self.twilio, playback_speed=playback_speed, start_paused=start_paused, handshake=handshake
        )

    @property
    def stream_sid(self) -> str:
        return self.twilio.stream_sid

    @property
    def call_sid(self) -> str:
        return self.twilio.call_sid

    @property
    def account_sid(self) -> str:
        return self.twilio.account_sid

    @property
    def custom_parameters(self) -> dict[str, str]:
        return self.twilio.custom_parameters

    @property
    def auth_token(self) -> str | None:
        return self.twilio.auth_token

    @property
    def public_url(self) -> str:
        return self.twilio.public_url

    def start_message(self) -> dict[str, Any]:
        return self.twilio.start_message()

    async def send_mulaw(self, mulaw: bytes) -> None:
        """Caller audio as Twilio sends it: 20 ms media frames with chunk and timestamp counters."""
        await self.send_audio(mulaw)

    @property
    def played_mulaw(self) -> bytearray:
        return self.played_audio

    @property
    def received_mulaw(self) -> bytes:
        """All bot audio received (played or not)."""
        return self.received_audio
