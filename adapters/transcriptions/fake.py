"""A fake OpenAI-compatible ``POST /v1/audio/transcriptions`` server on loopback.

It parses the multipart/form-data request as the real endpoint does (``file`` and ``model`` required;
``language``, ``prompt``, ``response_format``, ``temperature`` optional), answers 401 without the Bearer
key, 400 on a missing field, an unreadable WAV or an unknown ``response_format``, 413 over 25 MB, and
"transcribes" by a script keyed on the audio: each ``Clip`` is the PCM of an utterance and its text,
and a request's text is that of every clip whose audio (its loud part) the WAV contains, in order.
So the source must send the caller's own samples, uncut. ``drop`` requests are dropped unanswered
first (a crash, from the client's side).
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from voiceagent.audio import rms
from voiceagent.testing.loopback_http import HTTPRequest, LoopbackHTTPServer, Responder

PATH = "/v1/audio/transcriptions"
MAX_BYTES = 25 * 1024 * 1024
FORMATS = {"json", "text", "verbose_json"}


@dataclass(frozen=True, slots=True)
class Clip:
    text: str
    pcm: bytes  # PCM16 mono at the rate the source sends


@dataclass(frozen=True, slots=True)
class FormFile:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class TranscriptionRequest:
    headers: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    file: FormFile | None = None
    sample_rate: int | None = None
    text: str | None = None


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, FormFile]]:
    """RFC 7578 form data: text fields, and file fields; raises ValueError on a malformed body."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data" or "boundary=" not in params:
        raise ValueError("Content-Type must be multipart/form-data with a boundary")
    boundary = params.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
    parts = body.split(b"--" + boundary)
    if len(parts) < 2 or not parts[-1].startswith(b"--"):
        raise ValueError("multipart body has no closing boundary")
    fields: dict[str, str] = {}
    files: dict[str, FormFile] = {}
    for part in parts[1:-1]:
        if not (part.startswith(b"\r\n") and part.endswith(b"\r\n")):
            raise ValueError("multipart part is not framed by CRLF")
        head, sep, data = part[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part has no header end")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = dict(_params(headers.get("content-disposition", "")))
        field_name = disposition.get("name")
        if field_name is None:
            raise ValueError("multipart part without a name")
        if "filename" in disposition:
            files[field_name] = FormFile(disposition["filename"], headers.get("content-type"), data)
        else:
            fields[field_name] = data.decode("utf-8")
    return fields, files


def _params(header: str) -> list[tuple[str, str]]:
    out = []
    for piece in header.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        out.append((key.lower(), value.strip('"')))
    return out


def read_wav(data: bytes) -> tuple[bytes, int]:
    with wave.open(io.BytesIO(data)) as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError("the fake reads 16-bit mono WAV only")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def loud_part(pcm: bytes, threshold: int = 200) -> bytes:
    """The clip without its quiet edges (10 ms frames under ``threshold`` RMS)."""
    frame = 160
    frames = [pcm[i : i + frame] for i in range(0, len(pcm), frame)]
    loud = [i for i, f in enumerate(frames) if rms(f) >= threshold]
    return b"".join(frames[loud[0] : loud[-1] + 1]) if loud else b""


class FakeTranscriptionServer:
    def __init__(self, clips: Sequence[Clip] = (), *, api_key: str = "sk_test", drop: int = 0) -> None:
        self.clips = list(clips)
        self.api_key = api_key
        self.drop = drop
        self.requests: list[TranscriptionRequest] = []
        self._http = LoopbackHTTPServer(self._handle)

    @property
    def base_url(self) -> str:
        """What the ``openai`` client takes as ``base_url``."""
        return f"{self._http.url}/v1"

    async def __aenter__(self) -> FakeTranscriptionServer:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    def hear(self, pcm: bytes) -> str:
        found = []
        for clip in self.clips:
            core = loud_part(clip.pcm)
            at = _aligned_find(pcm, core) if core else -1
            if at >= 0:
                found.append((at, clip.text))
        return " ".join(text for _, text in sorted(found))

    async def _handle(self, request: HTTPRequest, respond: Responder) -> None:
        record = TranscriptionRequest(headers=dict(request.headers))
        self.requests.append(record)
        if self.drop > 0:
            self.drop -= 1
            await respond.abort()
            return
        if request.method != "POST" or request.path != PATH:
            await respond.send_json(404, _error("not found", "invalid_request_error"))
            return
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            await respond.send_json(
                401, _error("Incorrect API key provided", "invalid_request_error", "invalid_api_key")
            )
            return
        if len(request.body) > MAX_BYTES:
            await respond.send_json(
                413, _error("Maximum content size limit exceeded", "invalid_request_error")
            )
            return
        try:
            record.fields, files = parse_multipart(request.body, request.headers.get("content-type", ""))
            record.file = files.get("file")
            for name in ("file", "model"):
                if name not in record.fields and name not in files:
                    raise ValueError(f"you must provide a {name} parameter")
            assert record.file is not None
            pcm, record.sample_rate = read_wav(record.file.data)
        except (ValueError, EOFError, wave.Error) as exc:
            await respond.send_json(400, _error(str(exc), "invalid_request_error"))
            return
        response_format = record.fields.get("response_format", "json")
        if response_format not in FORMATS:
            await respond.send_json(
                400, _error(f"response_format {response_format!r} is not supported", "invalid_request_error")
            )
            return
        record.text = self.hear(pcm)
        if response_format == "text":
            await respond.send(200, record.text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
            return
        body: dict[str, Any] = {"text": record.text}
        if response_format == "verbose_json":
            duration = len(pcm) / 2 / record.sample_rate
            segment = {"id": 0, "start": 0.0, "end": duration, "text": record.text}
            body = {
                "task": "transcribe",
                "language": record.fields.get("language", "english"),
                "duration": duration,
                "text": record.text,
                "segments": [segment],
            }
        await respond.send(
            200, json.dumps(body, ensure_ascii=False).encode(), {"Content-Type": "application/json"}
        )


def _aligned_find(haystack: bytes, needle: bytes) -> int:
    start = haystack.find(needle)
    while start >= 0 and start % 2:
        start = haystack.find(needle, start + 1)
    return start


def _error(message: str, type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}
