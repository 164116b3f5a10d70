"""OpenTelemetry spans for a call (the ``[otel]`` extra): ``voiceagent.call`` > ``voiceagent.turn`` >
``voiceagent.round`` / ``voiceagent.tool`` / ``voiceagent.utterance`` (each spoken chunk, from its
queue time to the next), with the request ids, usage and tool arguments as attributes.

Spans are built from the turn's events and its ``TurnResult`` (the times in it are seconds since the
turn started), so nothing in the turn pipeline waits on tracing.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace

from voiceagent.events import RoundStarted, SpeechQueued, TurnEvent
from voiceagent.results import TurnResult


class CallTracer:
    def __init__(self, call_id: str, tracer: trace.Tracer | None = None) -> None:
        self.tracer = tracer or trace.get_tracer("voiceagent")
        self.call_id = call_id
        self.call = self.tracer.start_span("voiceagent.call", attributes={"voiceagent.call_id": call_id})
        self._turn_start_ns: int | None = None
        self._speech: list[tuple[float, str, bool]] = []
        self.turns = 0

    def on_event(self, event: TurnEvent) -> None:
        if isinstance(event, RoundStarted) and event.round == 1 and self._turn_start_ns is None:
            self._turn_start_ns = time.time_ns() - int(event.at * 1e9)
        elif isinstance(event, SpeechQueued):
            self._speech.append((event.at, event.text, event.filler))

    def on_turn(self, result: TurnResult) -> None:
        self.turns += 1
        t0 = (
            self._turn_start_ns
            if self._turn_start_ns is not None
            else time.time_ns() - int(result.total * 1e9)
        )

        def at(seconds: float) -> int:
            return t0 + int(max(0.0, seconds) * 1e9)

        ids = [r for r in result.request_ids if r]
        turn = self.tracer.start_span(
            "voiceagent.turn",
            context=trace.set_span_in_context(self.call),
            start_time=t0,
            attributes=_clean(
                {
                    "voiceagent.call_id": self.call_id,
                    "voiceagent.turn": self.turns,
                    "voiceagent.user_text": result.user_text,
                    "voiceagent.heard_text": result.heard_text,
                    "voiceagent.interrupted": result.interrupted,
                    "voiceagent.request_ids": ids,
                    "voiceagent.error": result.error,
                }
            ),
        )
        inside = trace.set_span_in_context(turn)
        for r in (*result.speculative_rounds, *result.rounds):
            span = self.tracer.start_span(
                "voiceagent.round",
                context=inside,
                start_time=at(r.started_at),
                attributes=_clean(
                    {
                        "voiceagent.round": r.round,
                        "voiceagent.request_id": r.request_id,
                        "voiceagent.attempts": r.attempts,
                        "voiceagent.finish_reason": r.finish_reason,
                        "voiceagent.speculative": r.speculative,
                        "gen_ai.usage.input_tokens": r.usage.prompt_tokens,
                        "gen_ai.usage.output_tokens": r.usage.completion_tokens,
                        "voiceagent.cached_tokens": r.usage.cached_tokens,
                        "voiceagent.cache_bust": r.cache_bust,
                        "voiceagent.error": r.error,
                    }
                ),
            )
            span.end(end_time=at(r.finished_at))
        for c in result.tool_calls:
            request = next((r.request_id for r in result.rounds if r.round == c.round), None)
            span = self.tracer.start_span(
                "voiceagent.tool",
                context=inside,
                start_time=at(c.started_at),
                attributes=_clean(
                    {
                        "voiceagent.tool": c.name,
                        "voiceagent.call_id": c.call_id,
                        "voiceagent.arguments": c.arguments,
                        "voiceagent.is_error": c.is_error,
                        "voiceagent.round": c.round,
                        "voiceagent.request_id": request,
                    }
                ),
            )
            span.end(end_time=at(c.finished_at))
        ends = [s[0] for s in self._speech[1:]] + [result.total]
        for (queued, text, filler), end in zip(self._speech, ends, strict=True):
            span = self.tracer.start_span(
                "voiceagent.utterance",
                context=inside,
                start_time=at(queued),
                attributes={"voiceagent.text": text, "voiceagent.filler": filler},
            )
            span.end(end_time=at(max(queued, end)))
        turn.end(end_time=at(result.total))
        self._turn_start_ns = None
        self._speech = []

    def end(self) -> None:
        self.call.set_attribute("voiceagent.turns", self.turns)
        self.call.end()


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attributes take no None."""
    return {k: v for k, v in attributes.items() if v is not None}
