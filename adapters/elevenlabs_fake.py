"""A real fake of ElevenLabs' streaming-input TTS WebSocket on 127.0.0.1.

``/v1/text-to-speech/{voice_id}/stream-input?model_id=...&output_format=pcm_16000``, as ElevenLabs
documents it: the first message (BOS) is ``{"text": " ", "voice_settings": ..., "generation_config": ...,
"xi_api_key": ...}`` (or the key in the ``xi-api-key`` header); then text messages, each optionally
with ``try_trigger_generation`` or ``flush``; ``{"text": ""}`` (EOS) ends the input. The server answers
``{"audio": base64, "isFinal": null, "normalizedAlignment": ..., "alignment": {"chars", "charStartTimesMs",
"charDurationsMs"}}`` and, after EOS, ``{"isFinal": true}``, then closes. Errors are a JSON message
``{"message", "error", "code"}`` followed by a close (1008 for policy errors such as a bad key).

The "speech" is a deterministic 440 Hz tone, ``seconds_per_char`` per character, at the requested rate.
Misbehaviour on command: ``fail_next(error, message)`` (answer the next text with an error message),
``drop_next(after_chunks)`` (drop the connection abruptly mid-audio), ``reject_status`` (refuse the
upgrade with that HTTP status), ``first_byte_gate`` (hold the first audio until the event is set).
Everything seen is recorded (``messages``, ``upgrades``, ``utterances``).
"""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any
from urllib.parse import urlsplit

import anyio
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from voiceagent.audio import SAMPLE_WIDTH
from voiceagent.testing.fake_server import FakeWebSocketServer, headers_of, json_response, query_of
from voiceagent.testing.tone import tone

__all__ = ["PCM_FORMATS", "FakeElevenLabsServer", "Utterance"]

# The raw PCM output formats ElevenLabs lists (pcm_44100 needs a Pro tier on the real service).
PCM_FORMATS = {f"pcm_{rate}": rate for rate in (8000, 16000, 22050, 24000, 44100, 48000)}


@dataclass
class Upgrade:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Utterance:
    """The text of one connection and the PCM sent for it."""

    text: str
    sample_rate: int
    pcm16: bytes = b""
    messages: list[dict[str, Any]] = field(default_factory=list)


class FakeElevenLabsServer(FakeWebSocketServer):
    def __init__(
        self,
        *,
        api_key: str = "test-key",
        seconds_per_char: float = 0.03,
        chunk_seconds: float = 0.1,
        ssl: SSLContext | None = None,
    ) -> None:
        super().__init__(ssl=ssl)
        self.api_key = api_key
        self.seconds_per_char = seconds_per_char
        self.chunk_seconds = chunk_seconds
        self.first_byte_gate: anyio.Event | None = None
        self._fail_next: deque[tuple[str, str]] = deque()
        self.upgrades: list[Upgrade] = []
        self.utterances: list[Utterance] = []

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [m for u in self.utterances for m in u.messages]

    def fail_next(self, error: str, message: str) -> None:
        self._fail_next.append((error, message))

    def _process_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        query = query_of(request.path)
        self.upgrades.append(Upgrade(split.path, query, headers_of(request)))
        parts = split.path.split("/")
        problem: tuple[int, str] | None = None
        if self.reject_status is not None:
            problem = (self.reject_status, "rejected by the fake")
        elif len(parts) != 5 or parts[1:3] != ["v1", "text-to-speech"] or parts[4] != "stream-input":
            problem = (404, "not found")
        elif query.get("output_format", "mp3_44100_128") not in PCM_FORMATS:
            problem = (400, "this fake streams pcm_* output formats only")
        if problem is None:
            return None
        return json_response(problem[0], {"detail": {"status": "error", "message": problem[1]}})

    async def _handle(self, ws: ServerConnection) -> None:
        upgrade = self.upgrades[-1]
        rate = PCM_FORMATS[upgrade.query.get("output_format", "pcm_16000")]
        utterance = Utterance("", rate)
        self.utterances.append(utterance)
        await self._serve(ws, upgrade, utterance)

    async def _error(self, ws: ServerConnection, error: str, message: str, code: int = 1008) -> None:
        await ws.send(json.dumps({"message": message, "error": error, "code": code}))
        await ws.close(code, error)

    async def _serve(self, ws: ServerConnection, upgrade: Upgrade, utterance: Utterance) -> None:
        first = True
        pending = ""
        async for raw in ws:
            try:
                message = json.loads(raw)
            except ValueError:
                await self._error(ws, "invalid_message", "message is not JSON", 1003)
                return
            utterance.messages.append(message)
            if not isinstance(message, dict) or not isinstance(message.get("text"), str):
                await self._error(ws, "invalid_message", "text (a string) is required", 1003)
                return
            if first:
                first = False
                key = message.get("xi_api_key") or upgrade.headers.get("xi-api-key")
                if key != self.api_key:
                    await self._error(ws, "invalid_api_key", "Invalid API key")
                    return
                if message["text"] != " ":
                    await self._error(ws, "invalid_message", 'the first message must be {"text": " "}', 1003)
                    return
                continue
            text = message["text"]
            if self._fail_next and text:
                await self._error(ws, *self._fail_next.popleft())
                return
            pending += text
            utterance.text += text
            if text == "" or message.get("flush") or message.get("try_trigger_generation"):
                if pending.strip() and not await self._speak(ws, pending, utterance):
                    return
                pending = ""
            if text == "":
                await ws.send(json.dumps({"isFinal": True}))
                await ws.close()
                return

    async def _speak(self, ws: ServerConnection, text: str, utterance: Utterance) -> bool:
        """Audio for ``text``; False when the connection was dropped on command."""
        rate = utterance.sample_rate
        pcm = tone(self.seconds_per_char * len(text.strip()), rate)
        size = max(int(self.chunk_seconds * rate), 1) * SAMPLE_WIDTH
        drop = self._take_drop()
        if self.first_byte_gate is not None:
            await self.first_byte_gate.wait()
        ms_per_char = 1000 * self.seconds_per_char
        for n, start in enumerate(range(0, len(pcm), size)):
            if drop is not None and n == drop:
                ws.transport.abort()  # abrupt: no close frame
                return False
            piece = pcm[start : start + size]
            chars = list(text) if n == 0 else []
            alignment = {
                "chars": chars,
                "charStartTimesMs": [round(i * ms_per_char) for i in range(len(chars))],
                "charDurationsMs": [round(ms_per_char)] * len(chars),
            }
            await ws.send(
                json.dumps(
                    {
                        "audio": base64.b64encode(piece).decode(),
                        "isFinal": None,
                        "normalizedAlignment": alignment,
                        "alignment": alignment,
                    }
                )
            )
            utterance.pcm16 += piece
        return True
