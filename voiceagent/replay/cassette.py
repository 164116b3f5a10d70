"""Cassettes: a recorded voice session as JSONL, one human-readable record per line.

The first line is the header, ``{"type": "header", "version": 1, ...}``. Every other line is one record:

- ``request``: one LLM request (``n`` numbers the exchange), its JSON body (model, messages, tools,
  params) and whether it is the body sent on the wire (``source: "wire"``) or was rebuilt from the
  call's arguments;
- ``response``: the HTTP status, the server's request id, attempts, and the error body for a non-200;
- ``chunk``: one streamed chunk (the parsed dict) with ``t``, seconds since the request started;
- ``end``: how the stream ended: ``done``, ``dropped`` (cut by the network), ``cancelled`` (we hung up:
  barge-in) or ``error`` (no stream at all);
- ``tool``: one tool call with its arguments, result and times;
- ``speech``: one text handed to the TTS sink, with the sha256 and duration of the audio it produced;
- ``sink``: a sink ``flush`` or ``cancel`` and how many characters had been played;
- ``stt``: a transcript or speech-activity event from the STT source;
- ``turn``: the per-turn summary (what was said and heard, usage per round, request ids, timings).

Times named ``at`` are seconds since the session (the writer) started. Secrets are never written: keys that
name credentials are dropped, and every string is redacted with ``voiceagent.logs.redact``: each value given
to ``register_secret()`` (a Twilio auth token, an API key of any shape) and every known token shape (``sk_``
keys, Bearer/Basic credentials, credentials in URLs, Twilio SIDs, AWS key ids, ``token=``/``password=``
fields...) becomes ``[REDACTED]``, wherever it appears.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Literal, TypeVar

from voiceagent.errors import VoiceAgentError
from voiceagent.logs import REDACTED as REDACTED
from voiceagent.logs import get_logger
from voiceagent.logs import redact as redact_text

log = get_logger(__name__)

CASSETTE_VERSION = 1

_R = TypeVar("_R")

EndHow = Literal["done", "dropped", "cancelled", "error"]
END_HOWS: tuple[str, ...] = ("done", "dropped", "cancelled", "error")

_SECRET_KEYS = frozenset(
    {
        "authorization",
        "api_key",
        "apikey",
        "api-key",
        "x-api-key",
        "password",
        "secret",
        "auth_token",
        "authtoken",
        "access_token",
        "client_secret",
    }
)


class CassetteError(VoiceAgentError):
    """A cassette file that cannot be read: names the file and line."""


# ---- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    TYPE: ClassVar[str] = "header"
    version: int = CASSETTE_VERSION
    created: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # free-form: agent factory, scenario, notes


@dataclass(frozen=True, slots=True)
class RequestRecord:
    TYPE: ClassVar[str] = "request"
    n: int  # exchange number, 1-based, in the order requests were made
    body: dict[str, Any]
    at: float = 0.0
    source: Literal["wire", "arguments"] = "wire"
    turn: int | None = None
    round: int | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages", [])
        return messages if isinstance(messages, list) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        tools = self.body.get("tools") or []
        return tools if isinstance(tools, list) else []


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    TYPE: ClassVar[str] = "response"
    n: int
    status: int
    request_id: str | None = None
    t: float = 0.0  # headers (or the error) arrived, seconds since the request started
    attempts: int = 1
    error: dict[str, Any] | None = None  # the error envelope of a non-200 answer


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    TYPE: ClassVar[str] = "chunk"
    n: int
    t: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EndRecord:
    TYPE: ClassVar[str] = "end"
    n: int
    how: EndHow
    t: float = 0.0
    chunks: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ToolRecord:
    TYPE: ClassVar[str] = "tool"
    call_id: str
    name: str
    arguments: str
    result: str
    is_error: bool = False
    started: float = 0.0
    finished: float = 0.0
    turn: int | None = None
    round: int | None = None


@dataclass(frozen=True, slots=True)
class SpeechRecord:
    TYPE: ClassVar[str] = "speech"
    text: str
    at: float = 0.0
    audio_sha256: str | None = None  # of the PCM16 the sink produced for this text; None if unknown
    audio_seconds: float | None = None
    sample_rate: int | None = None
    turn: int | None = None


@dataclass(frozen=True, slots=True)
class SinkRecord:
    TYPE: ClassVar[str] = "sink"
    kind: Literal["flush", "cancel"]
    at: float = 0.0
    played_chars: int = 0
    turn: int | None = None


@dataclass(frozen=True, slots=True)
class STTRecord:
    TYPE: ClassVar[str] = "stt"
    kind: Literal["transcript", "speech_started", "speech_ended"]
    at: float = 0.0
    text: str = ""
    is_final: bool = True


@dataclass(frozen=True, slots=True)
class TurnRecord:
    TYPE: ClassVar[str] = "turn"
    turn: int
    user_text: str
    spoken_text: str
    heard_text: str
    interrupted: bool = False
    rounds: tuple[dict[str, Any], ...] = ()  # per round: request_id, usage, finish_reason, times
    tool_calls: tuple[dict[str, Any], ...] = ()
    time_to_first_text: float | None = None
    total: float = 0.0
    error: str | None = None
    at: float = 0.0  # when the turn ended

    @property
    def request_ids(self) -> tuple[str | None, ...]:
        return tuple(r.get("request_id") for r in self.rounds)


Record = (
    Header
    | RequestRecord
    | ResponseRecord
    | ChunkRecord
    | EndRecord
    | ToolRecord
    | SpeechRecord
    | SinkRecord
    | STTRecord
    | TurnRecord
)

RECORD_TYPES: dict[str, type[Any]] = {
    cls.TYPE: cls
    for cls in (
        Header,
        RequestRecord,
        ResponseRecord,
        ChunkRecord,
        EndRecord,
        ToolRecord,
        SpeechRecord,
        SinkRecord,
        STTRecord,
        TurnRecord,
    )
}


# ---- encoding ---------------------------------------------------------------------------------


def redact(value: Any) -> Any:
    """A copy of ``value`` with credential-named keys dropped and every string redacted (``logs.redact``)."""
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def encode(record: Record) -> str:
    """One JSONL line (no newline). ``type`` comes first so the file reads well."""
    out: dict[str, Any] = {"type": record.TYPE}
    for f in fields(record):
        value = getattr(record, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return json.dumps(redact(out), ensure_ascii=False)


def decode(obj: Any, *, where: str) -> Record:
    """A record from one parsed line; ``where`` (``file line N``) prefixes every error."""
    if not isinstance(obj, dict):
        raise CassetteError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(RECORD_TYPES)
        raise CassetteError(f"{where}: unknown record type {kind!r} (known: {known})")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(obj) - set(names) - {"type"})
    if unknown:
        raise CassetteError(f"{where}: {kind} record has unknown field(s) {', '.join(unknown)}")
    kwargs = {
        k: (tuple(v) if isinstance(v, list) and k in ("rounds", "tool_calls") else v) for k, v in obj.items()
    }
    kwargs.pop("type")
    try:
        record: Record = cls(**kwargs)
    except TypeError as exc:
        raise CassetteError(f"{where}: bad {kind} record: {exc}") from exc
    if isinstance(record, EndRecord) and record.how not in END_HOWS:
        raise CassetteError(
            f"{where}: end record has how={record.how!r} (expected one of {', '.join(END_HOWS)})"
        )
    return record


# ---- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """One LLM request and everything its response was."""

    request: RequestRecord
    response: ResponseRecord | None
    chunks: tuple[ChunkRecord, ...]
    end: EndRecord | None

    @property
    def n(self) -> int:
        return self.request.n

    @property
    def request_id(self) -> str | None:
        return self.response.request_id if self.response else None


@dataclass(frozen=True)
class Cassette:
    header: Header
    records: tuple[Record, ...]
    name: str = "<cassette>"

    @classmethod
    def load(cls, path: str | Path) -> Cassette:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CassetteError(f"cannot read cassette {path}: {exc.strerror or exc}") from exc
        return cls.loads(text, name=str(path))

    @classmethod
    def loads(cls, text: str, *, name: str = "<cassette>") -> Cassette:
        return cls.from_lines(text.splitlines(), name=name)

    @classmethod
    def from_lines(cls, lines: Iterable[str], *, name: str = "<cassette>") -> Cassette:
        header: Header | None = None
        records: list[Record] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{name} line {number}"
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise CassetteError(f"{where}: not valid JSON ({exc})") from exc
            if header is None:
                header = _read_header(obj, where)
                continue
            record = decode(obj, where=where)
            if isinstance(record, Header):
                raise CassetteError(f"{where}: a second header (only the first line may be one)")
            records.append(record)
        if header is None:
            raise CassetteError(f"{name}: empty cassette (no header line)")
        return cls(header, tuple(records), name)

    @classmethod
    def from_records(cls, records: Sequence[Record], *, name: str = "<memory>") -> Cassette:
        header = records[0] if records and isinstance(records[0], Header) else Header()
        rest = tuple(r for r in records if not isinstance(r, Header))
        return cls(header, rest, name)  # type: ignore[arg-type]

    def dumps(self) -> str:
        return "".join(encode(r) + "\n" for r in (self.header, *self.records))

    @property
    def meta(self) -> dict[str, Any]:
        return self.header.meta

    def of_type(self, cls: type[_R]) -> list[_R]:
        return [r for r in self.records if isinstance(r, cls)]

    @property
    def exchanges(self) -> list[Exchange]:
        requests: dict[int, RequestRecord] = {}
        responses: dict[int, ResponseRecord] = {}
        chunks: dict[int, list[ChunkRecord]] = {}
        ends: dict[int, EndRecord] = {}
        for r in self.records:
            if isinstance(r, RequestRecord):
                requests[r.n] = r
            elif isinstance(r, ResponseRecord):
                responses[r.n] = r
            elif isinstance(r, ChunkRecord):
                chunks.setdefault(r.n, []).append(r)
            elif isinstance(r, EndRecord):
                ends[r.n] = r
        return [
            Exchange(requests[n], responses.get(n), tuple(chunks.get(n, ())), ends.get(n))
            for n in sorted(requests)
        ]

    @property
    def tools(self) -> list[ToolRecord]:
        return self.of_type(ToolRecord)

    @property
    def speech(self) -> list[SpeechRecord]:
        return self.of_type(SpeechRecord)

    @property
    def turns(self) -> list[TurnRecord]:
        return self.of_type(TurnRecord)

    @property
    def transcripts(self) -> list[STTRecord]:
        return self.of_type(STTRecord)

    @property
    def system_prompt(self) -> str | None:
        """The first request's system message: what the agent was told."""
        for exchange in self.exchanges[:1]:
            for m in exchange.request.messages:
                if m.get("role") == "system" and isinstance(m.get("content"), str):
                    return str(m["content"])
        return None


def _read_header(obj: Any, where: str) -> Header:
    if not isinstance(obj, dict) or obj.get("type") != "header":
        raise CassetteError(
            f'{where}: the first line must be the header {{"type": "header", "version": 1, ...}}'
        )
    version = obj.get("version")
    if version != CASSETTE_VERSION:
        raise CassetteError(
            f"{where}: unsupported cassette version {version!r} "
            f"(this voiceagent reads version {CASSETTE_VERSION})"
        )
    record = decode(obj, where=where)
    assert isinstance(record, Header)
    return record


# ---- writing ----------------------------------------------------------------------------------


class CassetteWriter:
    """Appends records to a cassette, flushing each line, so a crash keeps everything recorded so far.

    ``CassetteWriter(path)`` writes a file (truncating it); ``CassetteWriter.memory()`` keeps the records in
    memory only (``cassette()`` returns them), which replay uses to time a run.
    """

    def __init__(self, path: str | Path | None, *, meta: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.started = time.perf_counter()
        self.records: list[Record] = []
        self._next_exchange = 0
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        created = datetime.now(UTC).isoformat(timespec="seconds")
        self.write(Header(CASSETTE_VERSION, created, dict(meta or {})))

    @classmethod
    def memory(cls, *, meta: Mapping[str, Any] | None = None) -> CassetteWriter:
        return cls(None, meta=meta)

    def now(self) -> float:
        """Seconds since the session started."""
        return round(time.perf_counter() - self.started, 6)

    def next_exchange(self) -> int:
        self._next_exchange += 1
        return self._next_exchange

    def write(self, record: Record) -> None:
        line = encode(record)
        # Keep what the file holds (redacted), so a memory cassette and a file cassette read the same.
        self.records.append(decode(json.loads(line), where="record"))
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def cassette(self) -> Cassette:
        return Cassette.from_records(self.records, name=str(self.path) if self.path else "<memory>")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> CassetteWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
