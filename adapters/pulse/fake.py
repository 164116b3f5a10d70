"""A fake Smallest AI Pulse streaming STT server on a real loopback WebSocket.

It checks the upgrade like the real service (401 without the Bearer key, 400 before the upgrade on a
missing/bad ``model``/``language`` or a bad option value), records every session (query, headers,
audio bytes, frame sizes, control messages), and plays a script: each ``Emit`` is sent once the
session has received ``after_bytes`` of audio, so tests order events by audio, not by time.
``finalize`` turns the pending partial into a final (``from_finalize``); ``close_stream`` sends the
final with ``is_last`` and closes. ``max_sessions`` simulates the plan's concurrency limit (close 1008).

A ``Speech`` script item is a caller saying words over a stretch of audio, and the fake "hears" it as
real Pulse does (as observed against the service; LiveKit's Smallest STT plugin): ``speech_started`` when it
begins, a growing partial per word, a segment final every ``max_words`` words (``finalize_on_words``,
the real default), ``speech_ended`` after ``vad_silence`` seconds of trailing audio, and a final of the
words still open after the end-of-utterance timeout (``eou_timeout_ms``) unless the client asked for
it sooner with ``{"type":"finalize"}``. ``finals="utterance"`` (or the query's
``finalize_on_words=false``) keeps one transcript open per utterance instead, as this fake did before;
``vad_events=false`` in the query (or ``vad_events=False`` here) sends no VAD events.
``{"type": "keepalive"}`` is answered with ``{"type": "pong"}``, as the public API does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from voiceagent.testing.fake_server import FakeWebSocketServer, query_of
from voiceagent.testing.stt_script import Emit, Speech, bytes_per_second

PATH = "/waves/v1/stt/live"
# Streaming models: "pulse", and the English-only "pulse-2" that Pipecat streams with. "pulse-pro" has
# no streaming worker (the SDK documents a 400 before the upgrade).
STREAMING_MODELS = {"pulse", "pulse-2"}
ENCODINGS = {"linear16", "linear32", "alaw", "mulaw", "opus", "ogg_opus"}
SAMPLE_RATES = {"8000", "16000", "22050", "24000", "44100", "48000"}
BOOLEAN_PARAMS = {
    "word_timestamps",
    "sentence_timestamps",
    "diarize",
    "itn_normalize",
    "finalize_on_words",
    "endpointing",
    "vad_events",
    "full_transcript",
    "redact_pii",
    "redact_pci",
}


ScriptItem = Emit | Speech
# Internal markers the hearing expands a Speech into; never sent as they are.
_WORD, _EOU = "_fake_word", "_fake_eou"


def transcript(text: str, *, is_final: bool = False, language: str = "en") -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "transcription",
        "status": "success",
        "session_id": "sess-fake",
        "transcript": text,
        "transcription": text,
        "is_final": is_final,
        "is_last": False,
        "from_finalize": False,
        "words": [],
    }
    if is_final:
        message.update(language=language, languages=[language])
    return message


def speech_started(timestamp: float) -> dict[str, Any]:
    return {"type": "speech_started", "session_id": "sess-fake", "timestamp": timestamp}


def speech_ended(timestamp: float) -> dict[str, Any]:
    return {"type": "speech_ended", "session_id": "sess-fake", "timestamp": timestamp}


def error_message(message: str) -> dict[str, Any]:
    return {"type": "error", "status": "error", "message": message}


@dataclass
class PulseSession:
    query: dict[str, str]
    headers: dict[str, str]
    audio: bytearray = field(default_factory=bytearray)
    frame_sizes: list[int] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed_by_close_stream: bool = False
    control_messages: list[Any] = field(default_factory=list)  # each text frame, decoded


class _Hearing:
    """The words of the segment still open, and how finals are cut (pure; one per session)."""

    def __init__(self, max_words: int | None, language: str) -> None:
        self.max_words = max_words  # None: one transcript per utterance
        self.language = language
        self.open: list[str] = []

    def word(self, word: str) -> dict[str, Any]:
        self.open.append(word)
        if self.max_words is not None and len(self.open) >= self.max_words:
            return self.final()
        return transcript(" ".join(self.open))

    def final(self, *, from_finalize: bool = False) -> dict[str, Any]:
        text, self.open = " ".join(self.open), []
        return transcript(text, is_final=True, language=self.language) | {"from_finalize": from_finalize}


class FakePulseServer(FakeWebSocketServer):
    max_message_size = 2**20  # the websockets default, as before the shared base

    def __init__(
        self,
        script: Sequence[ScriptItem] = (),
        *,
        api_key: str = "sk_test",
        legacy_shape: bool = False,
        max_sessions: int | None = None,
        finals: str = "segments",
        max_words: int = 4,
        vad_events: bool = True,
        vad_silence: float = 0.3,
        eou_timeout: float = 0.8,
    ) -> None:
        """``finals``: "segments" (real Pulse: a final every ``max_words`` words) or "utterance" (one per
        utterance). ``vad_silence``: trailing audio before ``speech_ended`` (the query's
        ``endpointing_timeout`` overrides it); ``eou_timeout``: before the open words are made final (the
        query's ``eou_timeout_ms`` overrides it). Both in seconds of received audio."""
        if finals not in ("segments", "utterance"):
            raise ValueError('finals must be "segments" or "utterance"')
        if max_words < 1:
            raise ValueError("max_words must be at least 1")
        super().__init__()
        self.script = list(script)
        self.finals = finals
        self.max_words = max_words
        self.vad_events = vad_events
        self.vad_silence = vad_silence
        self.eou_timeout = eou_timeout
        self.api_key = api_key
        self.legacy_shape = legacy_shape
        self.max_sessions = max_sessions
        self.sessions: list[PulseSession] = []
        self.rejected: list[tuple[int, str]] = []  # (status, reason) of refused upgrades
        self._active = 0

    @property
    def url(self) -> str:
        return f"{self.base_url}{PATH}"

    def _process_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != PATH:
            return self._reject(connection, HTTPStatus.NOT_FOUND, "not found")
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._reject(connection, HTTPStatus.UNAUTHORIZED, "invalid or missing API key")
        query = query_of(request.path)
        if query.get("model") not in STREAMING_MODELS:
            return self._reject(
                connection,
                HTTPStatus.BAD_REQUEST,
                f"model is required and must be one of {sorted(STREAMING_MODELS)}",
            )
        if not query.get("language"):
            return self._reject(connection, HTTPStatus.BAD_REQUEST, "language is required")
        if query.get("encoding", "linear16") not in ENCODINGS:
            return self._reject(connection, HTTPStatus.BAD_REQUEST, "unsupported encoding")
        if query.get("sample_rate", "16000") not in SAMPLE_RATES:
            return self._reject(connection, HTTPStatus.BAD_REQUEST, "unsupported sample_rate")
        for name in BOOLEAN_PARAMS & query.keys():
            if query[name] not in ("true", "false"):
                return self._reject(connection, HTTPStatus.BAD_REQUEST, f"{name} must be 'true' or 'false'")
        return None

    def _reject(self, connection: ServerConnection, status: HTTPStatus, reason: str) -> Response:
        self.rejected.append((int(status), reason))
        body = json.dumps({"status": "error", "message": reason})
        return connection.respond(status, body)

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        session = PulseSession(query_of(ws.request.path), dict(ws.request.headers.raw_items()))
        self.sessions.append(session)
        if self.max_sessions is not None and self._active >= self.max_sessions:
            await ws.close(1008, "concurrency limit reached")
            return
        self._active += 1
        try:
            await self._run(ws, session)
        finally:
            self._active -= 1

    def _expand(self, query: Mapping[str, str]) -> tuple[list[Emit], _Hearing]:
        """The script in audio order, each ``Speech`` as the events real Pulse would send for it."""
        rate = bytes_per_second(query)
        segments = self.finals == "segments" and query.get("finalize_on_words", "true") != "false"
        max_words = int(query["max_words"]) if query.get("max_words", "").isdigit() else self.max_words
        vad = self.vad_events and query.get("vad_events", "true") != "false"
        silence = _ms(query.get("endpointing_timeout"), self.vad_silence)
        eou = _ms(query.get("eou_timeout_ms"), self.eou_timeout)

        def at(seconds: float) -> int:
            return max(1, round(seconds * rate))

        steps: list[Emit] = []
        for item in self.script:
            if isinstance(item, Emit):
                steps.append(item)
                continue
            words = item.text.split()
            if vad:
                steps.append(Emit(at(item.start), speech_started(item.start)))
            for i, word in enumerate(words, 1):
                steps.append(Emit(at(item.start + (item.end - item.start) * i / len(words)), {_WORD: word}))
            if vad:
                steps.append(Emit(at(item.end + silence), speech_ended(item.end + silence)))
            steps.append(Emit(at(item.end + eou), {_EOU: True}))
        steps.sort(key=lambda step: step.after_bytes)  # stable: same-byte steps keep script order
        language = query.get("language", "en")
        return steps, _Hearing(max_words if segments else None, language)

    async def _run(self, ws: ServerConnection, session: PulseSession) -> None:
        script, hearing = self._expand(session.query)
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                session.audio += raw
                session.frame_sizes.append(len(raw))
                while script and script[0].after_bytes <= len(session.audio):
                    step = script.pop(0)
                    if step.close_code is not None:
                        await ws.close(step.close_code, step.close_reason)
                        return
                    assert step.message is not None
                    message = dict(step.message)
                    if _WORD in message:
                        message = hearing.word(str(message[_WORD]))
                    elif _EOU in message:
                        if not hearing.open:
                            continue  # the client finalized these words already
                        message = hearing.final()
                    elif "transcript" in message:
                        hearing.open = [] if message.get("is_final") else str(message["transcript"]).split()
                    await self._send(ws, session, message)
                continue
            try:
                control = json.loads(raw)
                kind = control.get("type") if isinstance(control, dict) else None
            except ValueError:
                control, kind = raw, None
            session.controls.append(str(kind))
            session.control_messages.append(control)
            if kind == "finalize":
                await self._send(ws, session, hearing.final(from_finalize=True))
            elif kind == "close_stream":
                last = hearing.final() | {"is_last": True}
                await self._send(ws, session, last)
                session.closed_by_close_stream = True
                await ws.close()
                return
            elif kind == "keepalive":
                await self._send(ws, session, {"type": "pong"})  # what the public API answers (LiveKit)
            else:
                await self._send(ws, session, error_message(f"unsupported message: {raw[:60]!r}"))

    async def _send(self, ws: ServerConnection, session: PulseSession, message: dict[str, Any]) -> None:
        if self.legacy_shape and "transcript" in message:
            message = {k: v for k, v in message.items() if k not in ("type", "status")}
        session.sent.append(message)
        await ws.send(json.dumps(message))


def _ms(value: str | None, default: float) -> float:
    return int(value) / 1000 if value is not None and value.isdigit() else default
