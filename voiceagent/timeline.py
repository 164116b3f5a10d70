"""Turn timelines: what happened when, per turn, as text, HTML or a PNG picture.

``Timeline.from_result(result, events)`` builds one from a finished turn (rounds, tool spans, speech);
``Timeline.from_cassette(cassette)`` from a recording, which also has every chunk with its offset.
All times are seconds since the turn started.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voiceagent.cassette import Cassette, Exchange, TurnRecord
from voiceagent.events import SpeechQueued, TurnEvent, Usage
from voiceagent.results import TurnResult


@dataclass(frozen=True, slots=True)
class ChunkMark:
    at: float
    label: str  # e.g. content 'Let', tool_calls[0] get_weather, args '{"ci', finish tool_calls, usage


@dataclass(frozen=True, slots=True)
class RoundSpan:
    round: int
    request_id: str | None
    started: float
    first_chunk: float | None
    finished: float
    finish_reason: str | None
    usage: Usage | None
    ended: str | None = None  # done / dropped / cancelled / error, when recorded
    chunks: tuple[ChunkMark, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpan:
    round: int
    call_id: str
    name: str
    arguments: str
    ready: float
    started: float
    finished: float
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class SpeechMark:
    at: float
    text: str


@dataclass(frozen=True, slots=True)
class TurnTimeline:
    turn: int
    user_text: str
    rounds: tuple[RoundSpan, ...]
    tools: tuple[ToolSpan, ...]
    speech: tuple[SpeechMark, ...]
    time_to_first_text: float | None
    total: float
    interrupted: bool = False
    heard_text: str = ""

    @property
    def time_to_first_token(self) -> float | None:
        """Turn start to the first chunk of the first round (the LLM's TTFT as the agent saw it)."""
        return self.rounds[0].first_chunk if self.rounds else None


@dataclass(frozen=True)
class Timeline:
    turns: tuple[TurnTimeline, ...]

    # -- building --

    @classmethod
    def from_result(cls, result: TurnResult, events: Iterable[TurnEvent] = (), *, turn: int = 1) -> Timeline:
        return cls((_turn_from_result(result, events, turn),))

    @classmethod
    def from_results(
        cls, results: Sequence[TurnResult], events: Sequence[Iterable[TurnEvent]] = ()
    ) -> Timeline:
        return cls(
            tuple(
                _turn_from_result(r, events[i] if i < len(events) else (), i + 1)
                for i, r in enumerate(results)
            )
        )

    @classmethod
    def from_cassette(cls, cassette: Cassette) -> Timeline:
        records = {t.turn: t for t in cassette.turns}
        by_turn: dict[int, list[Exchange]] = {}
        for exchange in cassette.exchanges:
            by_turn.setdefault(exchange.request.turn or 0, []).append(exchange)
        turns = []
        for index in sorted(set(records) | set(by_turn)):
            turns.append(_turn_from_cassette(cassette, index, records.get(index), by_turn.get(index, [])))
        return cls(tuple(turns))

    # -- rendering --

    def format_text(self, *, chunks: bool = True) -> str:
        """A readable timeline: per turn, a summary, each round's request, then every event in time order."""
        out: list[str] = []
        for t in self.turns:
            out.append(f"Turn {t.turn}: {t.user_text!r}")
            out.append(
                f"  first token {_s(t.time_to_first_token)}   first speech {_s(t.time_to_first_text)}   "
                f"total {_s(t.total)}" + ("   INTERRUPTED (barge-in)" if t.interrupted else "")
            )
            for r in t.rounds:
                out.append(
                    f"  round {r.round}: request {r.request_id or '-'}  {_s(r.started)} -> {_s(r.finished)}  "
                    f"TTFT {_s(None if r.first_chunk is None else r.first_chunk - r.started)}  "
                    f"finish {r.finish_reason or '-'}" + (f"  ended {r.ended}" if r.ended else "")
                )
                out.append(f"           usage {_usage(r.usage)}" + (f"  error: {r.error}" if r.error else ""))
            for at, line in _events(t, chunks=chunks):
                out.append(f"  {at:8.3f}s  {line}")
            if t.interrupted:
                out.append(f"  heard: {t.heard_text!r}")
            out.append("")
        return "\n".join(out).rstrip() + "\n"

    def to_html(self, *, title: str = "voiceagent timeline") -> str:
        """A self-contained HTML page: a bar chart per turn (rounds, tools, speech) and the text timeline."""
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}"
            "svg text{font-size:11px;font-family:monospace}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
        ]
        for t in self.turns:
            parts.append(f"<h2>Turn {t.turn}: {html.escape(t.user_text)}</h2>")
            parts.append(_svg(t))
        parts.append(f"<pre>{html.escape(self.format_text())}</pre></body></html>")
        return "\n".join(parts)

    def to_png(self, path: str | Path) -> None:
        """Draw the timeline with matplotlib (``pip install 'voiceagent[timeline]'``)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise RuntimeError(
                "writing a PNG needs matplotlib: pip install 'voiceagent[timeline]' (or use --html)"
            ) from exc
        rows = [(label, bars, color) for t in self.turns for label, bars, color in _rows(t)]
        fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.2))
        for y, (_, bars, color) in enumerate(rows):
            ax.broken_barh(
                [(start, max(end - start, 0.004)) for start, end in bars], (y - 0.35, 0.7), color=color
            )
        ax.set_yticks(range(len(rows)), [label for label, _, _ in rows])
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the turn started")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(str(path), dpi=120)
        plt.close(fig)


# ---- building helpers ---------------------------------------------------------------------------


def _turn_from_result(result: TurnResult, events: Iterable[TurnEvent], turn: int) -> TurnTimeline:
    rounds = tuple(
        RoundSpan(
            r.round,
            r.request_id,
            r.started_at,
            r.first_chunk_at,
            r.finished_at,
            r.finish_reason,
            r.usage,
            error=r.error,
        )
        for r in result.rounds
    )
    tools = tuple(
        ToolSpan(c.round, c.call_id, c.name, c.arguments, c.ready_at, c.started_at, c.finished_at, c.is_error)
        for c in result.tool_calls
    )
    speech = tuple(SpeechMark(e.at, e.text) for e in events if isinstance(e, SpeechQueued))
    return TurnTimeline(
        turn,
        result.user_text,
        rounds,
        tools,
        speech,
        result.time_to_first_text,
        result.total,
        result.interrupted,
        result.heard_text,
    )


def _usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(
        int(data.get("prompt_tokens") or 0),
        int(data.get("completion_tokens") or 0),
        int(data.get("cached_tokens") or 0),
        bool(data.get("estimated")),
    )


def _turn_from_cassette(
    cassette: Cassette, index: int, record: TurnRecord | None, exchanges: list[Exchange]
) -> TurnTimeline:
    # Times in the file are session offsets; the turn started `total` before its record was written.
    origin = (record.at - record.total) if record else (exchanges[0].request.at if exchanges else 0.0)
    summaries = {r.get("round"): r for r in (record.rounds if record else ())}
    rounds = []
    for number, exchange in enumerate(exchanges, start=1):
        n = exchange.request.round or number
        summary = summaries.get(n, {})
        started = float(summary.get("started_at", exchange.request.at - origin))
        marks = tuple(ChunkMark(started + c.t, _chunk_label(c.data)) for c in exchange.chunks)
        last = exchange.end.t if exchange.end else (exchange.chunks[-1].t if exchange.chunks else 0.0)
        first = summary.get("first_chunk_at")
        rounds.append(
            RoundSpan(
                n,
                exchange.request_id,
                started,
                float(first) if first is not None else (marks[0].at if marks else None),
                float(summary.get("finished_at", started + last)),
                summary.get("finish_reason") or _finish_reason(exchange),
                _usage_from(summary.get("usage")) or _usage_from_chunks(exchange),
                exchange.end.how if exchange.end else None,
                marks,
                summary.get("error") or (exchange.end.error if exchange.end else None),
            )
        )
    tools = tuple(
        ToolSpan(
            int(c.get("round", 0)),
            str(c.get("call_id", "")),
            str(c.get("name", "")),
            str(c.get("arguments", "")),
            float(c.get("ready_at", c.get("started_at", 0.0))),
            float(c.get("started_at", 0.0)),
            float(c.get("finished_at", 0.0)),
            bool(c.get("is_error")),
        )
        for c in (record.tool_calls if record else ())
    )
    if record and not tools:  # an older summary without times: take them from the tool records
        tools = tuple(
            ToolSpan(
                t.round or 0,
                t.call_id,
                t.name,
                t.arguments,
                t.started - origin,
                t.started - origin,
                t.finished - origin,
                t.is_error,
            )
            for t in cassette.tools
            if t.turn == index
        )
    speech = tuple(SpeechMark(s.at - origin, s.text) for s in cassette.speech if s.turn == index)
    return TurnTimeline(
        index,
        record.user_text if record else _last_user_text(exchanges),
        tuple(rounds),
        tools,
        speech,
        record.time_to_first_text if record else None,
        record.total if record else (rounds[-1].finished if rounds else 0.0),
        record.interrupted if record else False,
        record.heard_text if record else "",
    )


def _last_user_text(exchanges: list[Exchange]) -> str:
    for exchange in exchanges[:1]:
        for m in reversed(exchange.request.messages):
            if m.get("role") == "user":
                return str(m.get("content"))
    return ""


def _finish_reason(exchange: Exchange) -> str | None:
    for c in exchange.chunks:
        for choice in c.data.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                return str(choice["finish_reason"])
    return None


def _usage_from_chunks(exchange: Exchange) -> Usage | None:
    for c in exchange.chunks:
        if isinstance(c.data.get("usage"), dict):
            return Usage.from_dict(c.data["usage"])
    return None


def _chunk_label(data: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        if isinstance(delta, dict):
            if delta.get("content"):
                parts.append(f"content {delta['content']!r}")
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                if call.get("id"):
                    parts.append(f"tool_calls[{call.get('index')}] {function.get('name')} id={call['id']}")
                elif function.get("arguments"):
                    parts.append(f"args[{call.get('index')}] {function['arguments']!r}")
        if choice.get("finish_reason"):
            parts.append(f"finish {choice['finish_reason']}")
    usage = data.get("usage")
    if isinstance(usage, dict):
        parts.append(f"usage {_usage(Usage.from_dict(usage))}")
    return "; ".join(parts) or json.dumps(data)[:80]


# ---- rendering helpers --------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _usage(usage: Usage | None) -> str:
    if usage is None:
        return "-"
    estimated = " (estimated: stream cut)" if usage.estimated else ""
    return (
        f"prompt {usage.prompt_tokens} (cached {usage.cached_tokens}) + completion {usage.completion_tokens}"
        + estimated
    )


def _events(t: TurnTimeline, *, chunks: bool) -> list[tuple[float, str]]:
    rows: list[tuple[float, int, str]] = []
    for r in t.rounds:
        rows.append((r.started, 0, f"r{r.round} request sent ({r.request_id or '-'})"))
        if chunks and r.chunks:
            rows += [(c.at, 1, f"r{r.round} chunk  {c.label}") for c in r.chunks]
        elif r.first_chunk is not None:
            rows.append((r.first_chunk, 1, f"r{r.round} first chunk"))
        rows.append((r.finished, 3, f"r{r.round} stream over ({r.ended or r.finish_reason or '-'})"))
    for tool in t.tools:
        call = f"{tool.name}({tool.arguments}) {tool.call_id}"
        rows.append((tool.ready, 2, f"r{tool.round} tool ready  {call}"))
        rows.append((tool.started, 2, f"r{tool.round} tool start  {tool.name}"))
        took = (tool.finished - tool.started) * 1000
        rows.append(
            (
                tool.finished,
                2,
                f"r{tool.round} tool finish {tool.name} ({took:.0f} ms){' ERROR' if tool.is_error else ''}",
            )
        )
    rows += [(s.at, 2, f"speak  {s.text!r}") for s in t.speech]
    rows.sort(key=lambda row: (row[0], row[1]))
    return [(at, line) for at, _, line in rows]


def _rows(t: TurnTimeline) -> list[tuple[str, list[tuple[float, float]], str]]:
    rows: list[tuple[str, list[tuple[float, float]], str]] = []
    for r in t.rounds:
        rows.append((f"T{t.turn} round {r.round}", [(r.started, r.finished)], "#4c78a8"))
        if r.first_chunk is not None:
            rows.append((f"T{t.turn} r{r.round} streaming", [(r.first_chunk, r.finished)], "#72b7b2"))
    for tool in t.tools:
        rows.append(
            (
                f"T{t.turn} {tool.name}",
                [(tool.started, tool.finished)],
                "#e45756" if tool.is_error else "#f58518",
            )
        )
    if t.speech:
        rows.append((f"T{t.turn} speech", [(s.at, s.at + 0.02) for s in t.speech], "#54a24b"))
    return rows


def _svg(t: TurnTimeline) -> str:
    rows = _rows(t)
    width, label_w, row_h = 900, 170, 22
    span = max([t.total] + [end for _, bars, _ in rows for _, end in bars] + [0.001])
    scale = (width - label_w - 20) / span
    height = row_h * len(rows) + 30
    out = [f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"]
    for y, (label, bars, color) in enumerate(rows):
        top = y * row_h + 4
        out.append(f"<text x='0' y='{top + 13}'>{html.escape(label)}</text>")
        for start, end in bars:
            x = label_w + start * scale
            w = max((end - start) * scale, 2)
            out.append(
                f"<rect x='{x:.1f}' y='{top}' width='{w:.1f}' height='{row_h - 6}' fill='{color}'>"
                f"<title>{html.escape(label)}: {start:.3f}s - {end:.3f}s</title></rect>"
            )
    axis_y = row_h * len(rows) + 20
    out.append(f"<text x='{label_w}' y='{axis_y}'>0 s</text>")
    out.append(f"<text x='{width - 80}' y='{axis_y}'>{span:.2f} s</text>")
    out.append("</svg>")
    return "\n".join(out)
