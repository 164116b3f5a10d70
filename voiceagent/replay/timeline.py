"""Turn timelines: what happened when, per turn, as text, HTML or a PNG picture.

One source: a timeline is built from cassette records only (``Timeline.from_records``). A recording
(``from_cassette``) has every request, chunk with its offset, tool call, text spoken and the audio it
produced; a finished turn (``from_result(result, events)``) is first written as the records a recorder
would have written for it (its summary, its tool calls, the speech its events queued), so both read alike.
All times are seconds since the turn started.

Two speech lanes: *queued* (when a chunk left the chunker) and *played* (what the caller heard, when):
from a recording, each text's audio laid end to end on a real-time playhead from when it was spoken, cut
where a barge-in cancelled the sink; from a live result, the ``played`` spans its caller passes (e.g. from
an output's marks). A barge-in is a marker, and each tool's bar sits right under the played lane, so the
tool running under the filler can be seen.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voiceagent.cost import token_counts
from voiceagent.events import SpeechQueued, TurnEvent, Usage
from voiceagent.replay.cassette import Cassette, Exchange, Record, SinkRecord, SpeechRecord, TurnRecord
from voiceagent.replay.recorder import tool_record, turn_record
from voiceagent.results import ToolCall, TurnResult


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
class SpeechMark:
    at: float
    text: str
    filler: bool = False  # ours (filler, fallback), not the model's words; known from turn events only


@dataclass(frozen=True, slots=True)
class PlayedSpan:
    """Audio the caller heard: ``text``'s audio from ``start`` to ``end`` (cut short by a barge-in)."""

    start: float
    end: float
    text: str
    cut: bool = False


@dataclass(frozen=True, slots=True)
class TurnTimeline:
    turn: int
    user_text: str
    rounds: tuple[RoundSpan, ...]
    tools: tuple[ToolCall, ...]  # the turn's own record of each call
    speech: tuple[SpeechMark, ...]
    time_to_first_text: float | None
    total: float
    interrupted: bool = False
    heard_text: str = ""
    played: tuple[PlayedSpan, ...] = ()
    barge_in: float | None = None  # when the caller's barge-in stopped the speech

    @property
    def time_to_first_token(self) -> float | None:
        """Turn start to the first chunk of the first round (the LLM's TTFT as the agent saw it)."""
        return self.rounds[0].first_chunk if self.rounds else None


@dataclass(frozen=True)
class Timeline:
    turns: tuple[TurnTimeline, ...]

    # -- building --

    @classmethod
    def from_result(
        cls,
        result: TurnResult,
        events: Iterable[TurnEvent] = (),
        *,
        turn: int = 1,
        played: Sequence[PlayedSpan] = (),
    ) -> Timeline:
        """A finished turn's timeline, built from its records (``result_records``). ``played``: the audio
        the caller heard, when the caller knows it (e.g. from an output's marks)."""
        timeline = cls.from_records(result_records(result, events, turn=turn))
        if not played:
            return timeline
        return cls(tuple(replace(t, played=tuple(played)) for t in timeline.turns))

    @classmethod
    def from_results(
        cls, results: Sequence[TurnResult], events: Sequence[Iterable[TurnEvent]] = ()
    ) -> Timeline:
        records: list[Record] = []
        for i, r in enumerate(results):
            records += result_records(r, events[i] if i < len(events) else (), turn=i + 1)
        return cls.from_records(records)

    @classmethod
    def from_records(cls, records: Sequence[Record]) -> Timeline:
        return cls.from_cassette(Cassette.from_records(records))

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
            out.append(f"  cost  {_cost(t)}")
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
        from matplotlib.patches import Patch

        rows: list[tuple[str, list[tuple[float, float]], str]] = []
        marks: list[tuple[int, int, float]] = []  # (first row, last row, at) of each turn's barge-in
        for t in self.turns:
            first = len(rows)
            rows += _rows(t)
            marks += [(first, len(rows) - 1, at) for at in _marks(t)]
        fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.8))
        for y, (_, bars, color) in enumerate(rows):
            ax.broken_barh(
                [(start, max(end - start, 0.004)) for start, end in bars], (y - 0.35, 0.7), color=color
            )
        for first, last, at in marks:
            ax.vlines(at, first - 0.5, last + 0.5, colors=BARGE_IN, linestyles="dashed", linewidth=1.5)
        ax.set_yticks(range(len(rows)), [label for label, _, _ in rows])
        ax.invert_yaxis()
        ax.legend(
            handles=[Patch(color=color, label=name) for color, name in LEGEND],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12 if len(rows) > 4 else -0.25),
            ncol=4,
            fontsize="small",
            frameon=False,
        )
        ax.set_xlabel("seconds since the turn started")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(str(path), dpi=120)
        plt.close(fig)


# ---- building helpers ---------------------------------------------------------------------------


def result_records(result: TurnResult, events: Iterable[TurnEvent] = (), *, turn: int = 1) -> list[Record]:
    """The records a recorder writes for a finished turn, from the result alone: the speech its
    ``SpeechQueued`` events queued (no audio: none was recorded), each tool call, a barge-in's sink
    cancel, and the summary. The turn starts at 0 (its summary is written at ``total``)."""
    records: list[Record] = [
        SpeechRecord(e.text, e.at, turn=turn, filler=e.filler) for e in events if isinstance(e, SpeechQueued)
    ]
    records += [tool_record(call, turn) for call in result.tool_calls]
    if result.interrupted:
        # A barge-in ends the round it cut ("interrupted"); without one, at the end of the LLM's part.
        cut = next((r.finished_at for r in result.rounds if r.error == "interrupted"), result.llm_done_at)
        records.append(SinkRecord("cancel", cut, len(result.heard_text), turn))
    records.append(turn_record(result, turn, result.total))
    return records


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
        summary = summaries.pop(n, {})
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
    for summary in summaries.values():  # rounds whose requests were not recorded (a result's records)
        first = summary.get("first_chunk_at")
        rounds.append(
            RoundSpan(
                int(summary.get("round") or 0),
                summary.get("request_id"),
                float(summary.get("started_at", 0.0)),
                None if first is None else float(first),
                float(summary.get("finished_at", 0.0)),
                summary.get("finish_reason"),
                _usage_from(summary.get("usage")),
                error=summary.get("error"),
            )
        )
    rounds.sort(key=lambda r: r.started)
    tools = tuple(t.call for t in cassette.tools if t.turn == index)
    speech = tuple(SpeechMark(s.at - origin, s.text, s.filler) for s in cassette.speech if s.turn == index)
    cancels = [
        r.at - origin
        for r in cassette.records
        if isinstance(r, SinkRecord) and r.turn == index and r.kind == "cancel"
    ]
    barge_in = cancels[0] if cancels and record is not None and record.interrupted else None
    played = _playhead(
        [(s.at - origin, s.audio_seconds, s.text) for s in cassette.speech if s.turn == index], barge_in
    )
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
        played,
        barge_in,
    )


def _playhead(
    spoken: Sequence[tuple[float, float | None, str]], cut_at: float | None
) -> tuple[PlayedSpan, ...]:
    """Each text's audio plays from when it was spoken or when the one before it ended, whichever is later
    (a real-time playhead); a barge-in at ``cut_at`` ends it. Texts without audio are left out."""
    spans: list[PlayedSpan] = []
    head = 0.0
    for at, seconds, text in spoken:
        if seconds is None:
            continue
        start = max(at, head)
        end = start + seconds
        if cut_at is not None and start >= cut_at:
            break
        if cut_at is not None and end > cut_at:
            spans.append(PlayedSpan(start, cut_at, text, cut=True))
            break
        spans.append(PlayedSpan(start, end, text))
        head = end
    return tuple(spans)


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


def _cost(t: TurnTimeline) -> str:
    """The turn's bill in units: tokens fresh, cached and generated; TTS characters synthesized vs. heard
    (a barge-in's cut words were paid for and never heard)."""
    fresh, cached, completion = token_counts(r.usage for r in t.rounds if r.usage is not None)
    synthesized = sum(len(s.text) for s in t.speech)
    heard = len(t.heard_text) if t.interrupted else synthesized
    return (
        f"tokens fresh {fresh}, cached {cached}, completion {completion}; "
        f"TTS chars synthesized {synthesized}, heard {heard}"
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
        rows.append((tool.ready_at, 2, f"r{tool.round} tool ready  {call}"))
        rows.append((tool.started_at, 2, f"r{tool.round} tool start  {tool.name}"))
        took = (tool.finished_at - tool.started_at) * 1000
        rows.append(
            (
                tool.finished_at,
                2,
                f"r{tool.round} tool finish {tool.name} ({took:.0f} ms){' ERROR' if tool.is_error else ''}",
            )
        )
    rows += [(s.at, 2, f"speak  {s.text!r}" + ("  (filler)" if s.filler else "")) for s in t.speech]
    for p in t.played:
        rows.append((p.start, 2, f"played {p.text!r} until {p.end:.3f}s" + ("  (cut)" if p.cut else "")))
    if t.barge_in is not None:
        rows.append((t.barge_in, 4, "BARGE-IN: the caller spoke; speech stopped"))
    rows.sort(key=lambda row: (row[0], row[1]))
    return [(at, line) for at, _, line in rows]


# Lane colours and their legend, in the order the lanes are drawn.
ROUND, STREAMING, QUEUED, PLAYED, TOOL, TOOL_ERROR = (
    "#4c78a8",
    "#72b7b2",
    "#54a24b",
    "#b279a2",
    "#f58518",
    "#e45756",
)
BARGE_IN = "#000000"
LEGEND = (
    (ROUND, "LLM request (round)"),
    (STREAMING, "streaming"),
    (QUEUED, "speech queued"),
    (PLAYED, "audio played (heard)"),
    (TOOL, "tool"),
    (TOOL_ERROR, "tool error"),
    (BARGE_IN, "barge-in"),
)


def _rows(t: TurnTimeline) -> list[tuple[str, list[tuple[float, float]], str]]:
    """Per turn: the rounds, the speech queued, the audio played and, right under it, the tools."""
    rows: list[tuple[str, list[tuple[float, float]], str]] = []
    for r in t.rounds:
        rows.append((f"T{t.turn} round {r.round}", [(r.started, r.finished)], ROUND))
        if r.first_chunk is not None:
            rows.append((f"T{t.turn} r{r.round} streaming", [(r.first_chunk, r.finished)], STREAMING))
    if t.speech:
        rows.append((f"T{t.turn} speech queued", [(s.at, s.at + 0.02) for s in t.speech], QUEUED))
    if t.played:
        rows.append((f"T{t.turn} audio played", [(p.start, p.end) for p in t.played], PLAYED))
    for tool in t.tools:
        rows.append(
            (
                f"T{t.turn} {tool.name}",
                [(tool.started_at, tool.finished_at)],
                TOOL_ERROR if tool.is_error else TOOL,
            )
        )
    return rows


def _marks(t: TurnTimeline) -> list[float]:
    return [] if t.barge_in is None else [t.barge_in]


def _svg(t: TurnTimeline) -> str:
    rows = _rows(t)
    width, label_w, row_h = 900, 170, 22
    span = max([t.total] + [end for _, bars, _ in rows for _, end in bars] + [0.001])
    scale = (width - label_w - 20) / span
    height = row_h * len(rows) + 50
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
    for at in _marks(t):
        x = label_w + at * scale
        out.append(
            f"<line x1='{x:.1f}' y1='0' x2='{x:.1f}' y2='{row_h * len(rows)}' stroke='{BARGE_IN}' "
            f"stroke-width='2' stroke-dasharray='4 2'><title>barge-in at {at:.3f}s</title></line>"
        )
    axis_y = row_h * len(rows) + 20
    out.append(f"<text x='{label_w}' y='{axis_y}'>0 s</text>")
    out.append(f"<text x='{width - 80}' y='{axis_y}'>{span:.2f} s</text>")
    x = 0
    for color, name in LEGEND:  # the legend, one swatch per lane
        out.append(f"<rect x='{x}' y='{axis_y + 8}' width='10' height='10' fill='{color}'/>")
        out.append(f"<text x='{x + 14}' y='{axis_y + 17}'>{html.escape(name)}</text>")
        x += 14 + 7 * len(name) + 12
    out.append("</svg>")
    return "\n".join(out)
