"""Cassettes: a recorded voice session as JSONL, one human-readable record per line.

The first line is the header, ``{"type": "header", "version": 2, ...}``. Every other line is one record:

- ``request``: one LLM request (``n`` numbers the exchange), its JSON body (model, messages, tools,
  params) and whether it is the body sent on the wire (``source: "wire"``) or was rebuilt from the
  call's arguments;
- ``response``: the HTTP status, the server's request id, attempts, and the error body for a non-200;
- ``chunk``: one streamed chunk (the parsed dict) with ``t``, seconds since the request started;
- ``end``: how the stream ended: ``done``, ``dropped`` (cut by the network), ``cancelled`` (we hung up:
  barge-in) or ``error`` (no stream at all);
- ``tool``: one tool call of a turn: the turn's ``ToolCall`` record (arguments, result, times since the
  turn started) and the turn's index;
- ``speech``: one text handed to the TTS sink, with the sha256 and duration of the audio its engine
  returned;
- ``sink``: a sink ``flush`` or ``cancel`` and how many characters had been played;
- ``stt``: a transcript or speech-activity event from the STT source;
- ``turn``: the per-turn summary (what was said and heard, usage per round, request ids, timings).

Times named ``at`` are seconds since the session (the writer) started; a tool call's and a turn's rounds'
times are seconds since their turn started (it started ``total`` before its ``turn`` record's ``at``).

Versions: 2 (written now) holds each tool call once, as a ``tool`` line. Version 1 wrote a call twice, a
``tool`` line (session times, with the result) and an entry in its turn's ``tool_calls`` (turn times,
without the result); a version-1 file is read into version-2 records (``Cassette.load``), so it replays
as before, and ``dumps`` writes it back as version 2. Secrets are never written: keys that
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
from voiceagent.results import ToolCall

log = get_logger(__name__)

CASSETTE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 is upgraded as it is read

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
    """A ``tool`` line: the turn's ``ToolCall`` (its fields are the line's, flat) and the turn's index."""

    TYPE: ClassVar[str] = "tool"
    call: ToolCall
    turn: int | None = None


@dataclass(frozen=True, slots=True)
class SpeechRecord:
    TYPE: ClassVar[str] = "speech"
    text: str
    at: float = 0.0
    audio_sha256: str | None = None  # of the PCM16 the sink produced for this text; None if unknown
    audio_seconds: float | None = None
    sample_rate: int | None = None
    turn: int | None = None
    filler: bool = False  # ours (filler, fallback), not the model's words; known from turn events only


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
    if isinstance(record, ToolRecord):  # the call's own fields, flat, then its turn
        out.update({f.name: getattr(record.call, f.name) for f in fields(ToolCall)})
        out["turn"] = record.turn
        return json.dumps(redact(out), ensure_ascii=False)
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
    if cls is ToolRecord:
        return _decode_tool(obj, where)
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(obj) - set(names) - {"type"})
    if unknown:
        raise CassetteError(f"{where}: {kind} record has unknown field(s) {', '.join(unknown)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) and k == "rounds" else v) for k, v in obj.items()}
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


_CALL_FIELDS = tuple(f.name for f in fields(ToolCall))


def _decode_tool(obj: dict[str, Any], where: str) -> ToolRecord:
    unknown = sorted(set(obj) - set(_CALL_FIELDS) - {"type", "turn"})
    if unknown:
        raise CassetteError(f"{where}: tool record has unknown field(s) {', '.join(unknown)}")
    missing = [name for name in _CALL_FIELDS if name not in obj]
    if missing:
        raise CassetteError(f"{where}: tool record lacks field(s) {', '.join(missing)}")
    turn = obj.get("turn")
    if turn is not None and (not isinstance(turn, int) or isinstance(turn, bool)):
        raise CassetteError(f"{where}: tool record has turn={turn!r} (expected an integer or null)")
    return ToolRecord(ToolCall(**{name: obj[name] for name in _CALL_FIELDS}), turn)


def upgrade_v1(objects: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Version-1 records (parsed lines after the header) as version 2: each call once, as a ``tool`` line
    placed before its turn's record, times since its turn started, its result from the version-1 ``tool``
    line (or, for a call that never finished, the ``tool`` message a later request sent).

    A call no turn record lists (its turn never finished: the call hung up) keeps its own ``tool`` line,
    its times made relative to its turn's first request."""
    lines = [o for o in objects if isinstance(o, dict)]
    ran = {str(o.get("call_id")): o for o in lines if o.get("type") == "tool"}
    answered: dict[str, str] = {}
    first_request: dict[Any, float] = {}
    for o in lines:
        if o.get("type") != "request":
            continue
        first_request.setdefault(o.get("turn"), _number(o.get("at")))
        body = o.get("body")
        messages = body.get("messages") if isinstance(body, dict) else None
        for m in messages if isinstance(messages, list) else ():
            if isinstance(m, dict) and m.get("role") == "tool":
                answered.setdefault(str(m.get("tool_call_id")), str(m.get("content") or ""))
    listed = {
        str(c.get("call_id"))
        for o in lines
        if o.get("type") == "turn"
        for c in o.get("tool_calls") or ()
        if isinstance(c, dict)
    }
    out: list[dict[str, Any]] = []
    for o in objects:
        kind = o.get("type") if isinstance(o, dict) else None
        if kind == "tool" and str(o.get("call_id")) not in listed:
            origin = first_request.get(o.get("turn"), 0.0)
            out.append(_v1_tool(o, o, origin, o.get("turn"), answered))
        elif kind == "turn":
            turn = dict(o)
            calls = turn.pop("tool_calls", None) or ()
            origin = _number(turn.get("at")) - _number(turn.get("total"))
            for c in calls:
                if isinstance(c, dict):
                    out.append(
                        _v1_tool(c, ran.get(str(c.get("call_id")), {}), origin, turn.get("turn"), answered)
                    )
            out.append(turn)
        elif kind != "tool":
            out.append(o)
    return out


def _v1_tool(
    summary: dict[str, Any], line: dict[str, Any], origin: float, turn: Any, answered: dict[str, str]
) -> dict[str, Any]:
    """One version-2 ``tool`` line from a version-1 turn summary's entry and ``tool`` line (either may be
    the other, when only one was written)."""
    call_id = str(summary.get("call_id", line.get("call_id", "")))
    # The summary's turn times when there is one; else the line's session times made turn-relative.
    line_started = _number(line.get("started")) - origin if "started" in line else 0.0
    line_finished = _number(line.get("finished")) - origin if "finished" in line else line_started
    started = _number(summary.get("started_at", line_started))
    finished = _number(summary.get("finished_at", line_finished))
    result = line.get("result", answered.get(call_id, ""))
    return {
        "type": "tool",
        "round": int(_number(summary.get("round", line.get("round")))),
        "call_id": call_id,
        "name": str(summary.get("name", line.get("name", ""))),
        "arguments": str(summary.get("arguments", line.get("arguments", ""))),
        "result": str(result),
        "is_error": bool(summary.get("is_error", line.get("is_error", False))),
        "ready_at": round(_number(summary.get("ready_at", started)), 6),
        "started_at": round(started, 6),
        "finished_at": round(finished, 6),
        "turn": turn,
    }


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


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
    source_version: int = CASSETTE_VERSION  # the version the file was written in (records are version 2)

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
        read_version = CASSETTE_VERSION
        parsed: list[tuple[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{name} line {number}"
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise CassetteError(f"{where}: not valid JSON ({exc})") from exc
            if header is None:
                header, read_version = _read_header(obj, where)
                continue
            parsed.append((where, obj))
        if header is None:
            raise CassetteError(f"{name}: empty cassette (no header line)")
        if read_version == 1:
            # Checked as version 1 first, so a bad line is named by its own line number.
            for where, obj in parsed:
                if not (isinstance(obj, dict) and obj.get("type") in ("tool", "turn")):
                    decode(obj, where=where)
            upgraded = upgrade_v1([obj for _, obj in parsed])
            parsed = [(f"{name} (version 1, upgraded)", obj) for obj in upgraded]
        records: list[Record] = []
        for where, obj in parsed:
            record = decode(obj, where=where)
            if isinstance(record, Header):
                raise CassetteError(f"{where}: a second header (only the first line may be one)")
            records.append(record)
        return cls(header, tuple(records), name, read_version)

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


def _read_header(obj: Any, where: str) -> tuple[Header, int]:
    """The header, as this version writes it, and the version the file was written in."""
    if not isinstance(obj, dict) or obj.get("type") != "header":
        raise CassetteError(
            f'{where}: the first line must be the header {{"type": "header", "version": 2, ...}}'
        )
    version = obj.get("version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise CassetteError(
            f"{where}: unsupported cassette version {version!r} (this voiceagent reads versions {readable})"
        )
    record = decode({**obj, "version": CASSETTE_VERSION}, where=where)
    assert isinstance(record, Header)
    return record, int(version)


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
