"""A fake Deepgram live-listen server (``/v1/listen``) on a real loopback WebSocket, from Deepgram's docs.

It checks the upgrade as the service does (401 without ``Authorization: Token KEY`` or the
``token``/KEY subprotocol; 400 on a bad encoding, sample rate or boolean), records every session, and
"hears" a script of ``Speech`` items timed by the audio it receives, as the service would:
``SpeechStarted`` at the start (``vad_events=true``), an interim ``Results`` per word
(``interim_results=true``), an ``is_final`` segment every ``max_words`` words, ``speech_final`` once
``endpointing`` ms of audio follow the last word (default 10 ms, as the service), ``UtteranceEnd``
``utterance_end_ms`` after it (only with interim results). ``Finalize`` makes the open words final
(``from_finalize``); ``CloseStream`` finalizes, sends ``Metadata`` and closes (1000); ``KeepAlive`` gets
no answer; ``idle_timeout`` seconds without a frame close the stream with 1011 NET-0001. ``Emit`` sends a
raw message or closes with a code once ``after_bytes`` of audio have arrived.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import anyio
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from voiceagent.testing.fake_server import FakeWebSocketServer, query_of
from voiceagent.testing.stt_script import Emit, Speech, bytes_per_second

PATH = "/v1/listen"
ENCODINGS = {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus", "speex"}
BOOLEANS = {
    "interim_results",
    "vad_events",
    "punctuate",
    "smart_format",
    "diarize",
    "numerals",
    "multichannel",
}
NET_0001 = "NET-0001: Deepgram did not receive audio data or a text message within the timeout window"


@dataclass
class DeepgramSession:
    query: dict[str, str]
    headers: dict[str, str]
    audio: bytearray = field(default_factory=bytearray)
    frame_sizes: list[int] = field(default_factory=list)
    controls: list[Any] = field(default_factory=list)  # each text frame, decoded
    sent: list[dict[str, Any]] = field(default_factory=list)


def results(
    words: Sequence[tuple[str, float, float]], start: float, end: float, *, is_final: bool, **flags: bool
) -> dict[str, Any]:
    """A ``Results`` message for ``words`` (each with its start and end) over ``start``..``end``."""
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round(end - start, 3),
        "start": round(start, 3),
        "is_final": is_final,
        "speech_final": flags.get("speech_final", False),
        "from_finalize": flags.get("from_finalize", False),
        "channel": {
            "alternatives": [
                {
                    "transcript": " ".join(w for w, _, _ in words),
                    "confidence": 0.99,
                    "words": [
                        {
                            "word": w.lower(),
                            "punctuated_word": w,
                            "confidence": 0.99,
                            "start": round(a, 3),
                            "end": round(b, 3),
                        }
                        for w, a, b in words
                    ],
                }
            ]
        },
        "metadata": {
            "request_id": "fake-request",
            "model_info": {"name": "general-nova-3", "version": "2024-12-20.0", "arch": "nova-3"},
            "model_uuid": "00000000-0000-0000-0000-000000000003",
        },
    }


class _Hearing:
    """Words heard and not yet final, with their times (one per session)."""

    def __init__(self, max_words: int) -> None:
        self.max_words = max_words
        self.open: list[tuple[str, float, float]] = []
        self.cursor = 0.0  # end of the audio already finalized

    def final(self, now: float, **flags: bool) -> dict[str, Any]:
        words, start, self.open = self.open, self.cursor, []
        self.cursor = max(self.cursor, now)
        return results(words, start, self.cursor, is_final=True, **flags)


class FakeDeepgramServer(FakeWebSocketServer):
    max_message_size = 2**20  # the websockets default, as before the shared base

    def __init__(
        self,
        script: Sequence[Speech | Emit] = (),
        *,
        api_key: str = "dg_test",
        max_words: int = 5,
        idle_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.script = list(script)
        self.api_key = api_key
        self.max_words = max_words
        self.idle_timeout = idle_timeout
        self.sessions: list[DeepgramSession] = []
        self.rejected: list[tuple[int, str]] = []

    @property
    def url(self) -> str:
        return f"{self.base_url}{PATH}"

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        return Subprotocol("token") if list(offered[:1]) == ["token"] else None

    def _process_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != PATH:
            return self._reject(connection, HTTPStatus.NOT_FOUND, "not found")
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        authorized = request.headers.get("Authorization") in (
            f"Token {self.api_key}",
            f"token {self.api_key}",
        )
        if not authorized and protocols[:2] != ["token", self.api_key]:
            return self._reject(connection, HTTPStatus.UNAUTHORIZED, "INVALID_AUTH: Invalid credentials.")
        query = query_of(request.path)
        if "encoding" in query and query["encoding"] not in ENCODINGS:
            return self._reject(connection, HTTPStatus.BAD_REQUEST, "Bad Request: unsupported encoding")
        if "encoding" in query and not query.get("sample_rate", "").isdigit():
            return self._reject(
                connection, HTTPStatus.BAD_REQUEST, "Bad Request: sample_rate is required with encoding"
            )
        for name in BOOLEANS & query.keys():
            if query[name] not in ("true", "false"):
                return self._reject(
                    connection, HTTPStatus.BAD_REQUEST, f"Bad Request: {name} must be true or false"
                )
        for name in ("endpointing", "utterance_end_ms"):
            if name in query and not (
                query[name].isdigit() or (name == "endpointing" and query[name] == "false")
            ):
                return self._reject(connection, HTTPStatus.BAD_REQUEST, f"Bad Request: invalid {name}")
        return None

    def _reject(self, connection: ServerConnection, status: HTTPStatus, reason: str) -> Response:
        self.rejected.append((int(status), reason))
        response = connection.respond(status, json.dumps({"err_code": status.phrase, "err_msg": reason}))
        response.headers["dg-error"] = reason
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        session = DeepgramSession(query_of(ws.request.path), dict(ws.request.headers.raw_items()))
        self.sessions.append(session)
        await self._run(ws, session)

    def _expand(self, query: Mapping[str, str]) -> list[tuple[float, dict[str, Any]]]:
        """The script as (seconds of audio, step) in audio order; steps are internal markers."""
        interim = query.get("interim_results") == "true"
        endpointing = query.get("endpointing", "10")
        utterance_end = query.get("utterance_end_ms") if interim else None
        steps: list[tuple[float, dict[str, Any]]] = []
        for item in self.script:
            if isinstance(item, Emit):
                steps.append((0.0, {"emit": item}))  # due by its after_bytes, not by time
                continue
            words = item.text.split()
            if query.get("vad_events") == "true":
                steps.append((item.start, {"vad": item.start}))
            for i, word in enumerate(words):
                w_start = item.start + (item.end - item.start) * i / len(words)
                w_end = item.start + (item.end - item.start) * (i + 1) / len(words)
                steps.append((w_end, {"word": (word, w_start, w_end), "interim": interim}))
            if endpointing != "false":
                steps.append((item.end + int(endpointing) / 1000, {"endpoint": True}))
            if utterance_end is not None and words:
                steps.append((item.end + int(utterance_end) / 1000, {"utterance_end": item.end}))
        return steps

    async def _run(self, ws: ServerConnection, session: DeepgramSession) -> None:
        query = session.query
        rate = bytes_per_second(query)
        hearing = _Hearing(self.max_words)
        pending = self._expand(query)

        def due(step: tuple[float, dict[str, Any]], received: int) -> tuple[bool, int]:
            at, body = step
            emit = body.get("emit")
            need = emit.after_bytes if isinstance(emit, Emit) else max(1, round(at * rate))
            return need <= received, need

        while True:
            raw: str | bytes | None = None
            with anyio.move_on_after(self.idle_timeout):
                raw = await ws.recv()
            if raw is None:
                await ws.close(1011, NET_0001)
                return
            if isinstance(raw, str):
                try:
                    control = json.loads(raw)
                except ValueError:
                    control = raw
                session.controls.append(control)
                kind = control.get("type") if isinstance(control, dict) else None
                now = len(session.audio) / rate
                if kind == "KeepAlive":
                    continue
                if kind == "Finalize":
                    await self._send(ws, session, hearing.final(now, from_finalize=True))
                elif kind == "CloseStream":
                    if hearing.open:
                        await self._send(ws, session, hearing.final(now))
                    await self._send(ws, session, metadata(session, rate))
                    await ws.close()
                    return
                else:
                    error = {
                        "type": "Error",
                        "variant": "SchemaError",
                        "description": "Unknown message type",
                        "message": raw[:200],
                    }
                    await self._send(ws, session, error)
                continue
            session.audio += raw
            session.frame_sizes.append(len(raw))
            ready = sorted(
                (
                    (due(s, len(session.audio))[1], i, s)
                    for i, s in enumerate(pending)
                    if due(s, len(session.audio))[0]
                ),
                key=lambda t: (t[0], t[1]),
            )
            for _, _, step in ready:
                pending.remove(step)
                if await self._play(ws, session, hearing, step[1], len(session.audio) / rate):
                    return

    async def _play(
        self,
        ws: ServerConnection,
        session: DeepgramSession,
        hearing: _Hearing,
        body: dict[str, Any],
        now: float,
    ) -> bool:
        """Send what one step makes the service say; True when the step closed the stream."""
        if "emit" in body:
            emit: Emit = body["emit"]
            if emit.close_code is not None:
                await ws.close(emit.close_code, emit.close_reason)
                return True
            assert emit.message is not None
            await self._send(ws, session, dict(emit.message))
        elif "vad" in body:
            await self._send(
                ws, session, {"type": "SpeechStarted", "channel": [0, 1], "timestamp": body["vad"]}
            )
        elif "word" in body:
            hearing.open.append(body["word"])
            if len(hearing.open) >= hearing.max_words:
                await self._send(ws, session, hearing.final(body["word"][2]))
            elif body["interim"]:
                interim = results(hearing.open, hearing.cursor, body["word"][2], is_final=False)
                await self._send(ws, session, interim)
        elif "endpoint" in body:
            await self._send(ws, session, hearing.final(now, speech_final=True))
        elif "utterance_end" in body:
            message = {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": body["utterance_end"]}
            await self._send(ws, session, message)
        return False

    async def _send(self, ws: ServerConnection, session: DeepgramSession, message: dict[str, Any]) -> None:
        session.sent.append(message)
        await ws.send(json.dumps(message))


def metadata(session: DeepgramSession, rate: int) -> dict[str, Any]:
    return {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": str(uuid.uuid4()),
        "sha256": hashlib.sha256(bytes(session.audio)).hexdigest(),
        "created": "2026-01-01T00:00:00.000Z",
        "duration": round(len(session.audio) / rate, 3),
        "channels": 1,
    }
