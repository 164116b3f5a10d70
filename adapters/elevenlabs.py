"""ElevenLabs TTS over its streaming-input WebSocket (``wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/stream-input``).

Each ``synthesize(text)`` is one connection: the BOS message ``{"text": " ", "voice_settings", ...}``, the
text with ``flush: true`` (so generation starts at once), then EOS ``{"text": ""}``; base64 PCM ``audio``
frames are yielded as they arrive until ``isFinal`` (the server then closes). One connection per text
keeps barge-in and reconnects simple: a cancel closes the socket, and the next text opens a fresh one.
The key goes in the ``xi-api-key`` header (the documented alternative to ``xi_api_key`` in the BOS).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.limiter import Limiter
from voiceagent.logs import get_logger, register_secret
from voiceagent.speaker import Speaker
from voiceagent.tts import AudioOutput

__all__ = ["DEFAULT_BASE_URL", "PCM_RATES", "ElevenLabsEngine", "ElevenLabsSink"]

logger = get_logger(__name__)

DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
CLOSE_TIMEOUT = 2.0
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


class ElevenLabsEngine:
    """``TTSEngine`` on ElevenLabs' stream-input WebSocket, asking for raw PCM at ``sample_rate``."""

    def __init__(
        self,
        *,
        api_key: str,
        voice_id: str,
        model_id: str = "eleven_flash_v2_5",
        sample_rate: int = 16000,
        voice_settings: dict[str, Any] | None = None,
        generation_config: dict[str, Any] | None = None,
        base_url: str = DEFAULT_BASE_URL,
        open_timeout: float = 10.0,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        if not voice_id:
            raise ValueError("voice_id is required")
        if sample_rate not in PCM_RATES:
            raise ValueError(f"ElevenLabs PCM sample_rate must be one of {PCM_RATES}, got {sample_rate}")
        register_secret(api_key)
        self.api_key = api_key
        self.voice_id = voice_id
        self.model_id = model_id
        self.sample_rate = sample_rate
        self.voice_settings = voice_settings
        self.generation_config = generation_config
        self.base_url = base_url.rstrip("/")
        self.open_timeout = open_timeout
        self._ws: ClientConnection | None = None

    @property
    def url(self) -> str:
        query = urlencode({"model_id": self.model_id, "output_format": f"pcm_{self.sample_rate}"})
        return f"{self.base_url}/v1/text-to-speech/{quote(self.voice_id, safe='')}/stream-input?{query}"

    def bos_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"text": " "}
        if self.voice_settings is not None:
            message["voice_settings"] = self.voice_settings
        if self.generation_config is not None:
            message["generation_config"] = self.generation_config
        return message

    async def interrupt(self) -> None:
        # The Speaker has stopped reading (which already closed the socket); close any left over.
        ws, self._ws = self._ws, None
        if ws is not None:
            await _close(ws)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        try:
            ws = await connect(
                self.url,
                additional_headers={"xi-api-key": self.api_key},
                open_timeout=self.open_timeout,
                max_size=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise TTSError(
                f"ElevenLabs refused the connection (HTTP {status}): {_body(exc.response.body)}",
                status_code=status,
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise TTSError(f"cannot connect to ElevenLabs at {self.base_url}: {exc!r}") from exc
        self._ws = ws
        yielded = 0
        try:
            try:
                await ws.send(json.dumps(self.bos_message()))
                await ws.send(json.dumps({"text": _with_space(text), "flush": True}))
                await ws.send(json.dumps({"text": ""}))
                async for raw in ws:
                    message = _parse(raw)
                    if "error" in message or ("message" in message and "audio" not in message):
                        raise _error(message, yielded)
                    audio = message.get("audio")
                    if audio:
                        try:
                            data = base64.b64decode(audio, validate=True)
                        except (binascii.Error, ValueError) as exc:
                            raise TTSError(f"ElevenLabs sent audio that is not base64: {exc}") from exc
                        yielded += len(data)
                        yield data
                    if message.get("isFinal"):
                        return
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                detail = f"code {rcvd.code} {rcvd.reason!r}" if rcvd is not None else "no close frame"
                if yielded:
                    raise TTSInterruptedError(f"ElevenLabs stream broke mid-utterance ({detail})") from exc
                raise TTSError(f"ElevenLabs closed the connection before any audio ({detail})") from exc
            # The server closed cleanly without isFinal: the text may be cut short.
            if not yielded:
                raise TTSError("ElevenLabs closed the connection without audio")
            raise TTSInterruptedError("ElevenLabs closed the connection before isFinal")
        finally:
            if self._ws is ws:
                self._ws = None
            await _close(ws)


class ElevenLabsSink(Speaker):
    """The turn's sink on ElevenLabs: ``ElevenLabsSink(output, api_key=..., voice_id=...)``."""

    def __init__(self, output: AudioOutput, *, limiter: Limiter | None = None, **options: Any) -> None:
        super().__init__(ElevenLabsEngine(**options), output, limiter=limiter)


async def _close(ws: ClientConnection) -> None:
    # Runs while a barge-in cancels us too: shielded, so the close frame goes out and the server stops
    # generating; bounded, so a server that never answers it cannot hold the cancel (then: abort).
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
        await ws.close()
    if ws.state is not State.CLOSED:
        ws.transport.abort()


def _with_space(text: str) -> str:
    # ElevenLabs' docs: every text chunk should end with a space (the buffer joins chunks as words).
    return text if text.endswith(" ") else text + " "


def _parse(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise TTSError(f"ElevenLabs sent a message that is not JSON: {raw[:200]!r}") from exc
    if not isinstance(message, dict):
        raise TTSError(f"ElevenLabs sent a message that is not an object: {raw[:200]!r}")
    return message


def _error(message: dict[str, Any], yielded: int) -> TTSError:
    code = message.get("error")
    text = f"ElevenLabs: {message.get('message') or code}"
    if yielded:
        return TTSInterruptedError(text, code=str(code) if code is not None else None)
    return TTSError(text, code=str(code) if code is not None else None)


def _body(body: bytes | bytearray | None) -> str:
    return (body or b"").decode(errors="replace")[:300]
