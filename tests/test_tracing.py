"""OpenTelemetry spans of a replayed call: call > turn > round / tool / utterance, with request ids."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voiceagent.examples.weather_bot import build_agent
from voiceagent.serving.observe import CallObserver
from voiceagent.serving.tracing import CallTracer
from voiceagent.testing.replay import ReplayServer, replay_session
from voiceagent.tts import TTSSink
from voiceagent.turn import ChatStreamer

from .test_cli import WEATHER

pytestmark = pytest.mark.anyio


async def test_a_call_traces_its_turn_rounds_tool_and_utterances() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = CallTracer("CA-trace", provider.get_tracer("test"))
    observer = CallObserver("CA-trace", on_event=tracer.on_event, on_turn=tracer.on_turn)

    def factory(llm: ChatStreamer, sink: TTSSink) -> Any:
        return observer.attach(build_agent(llm, sink))

    async with ReplayServer(WEATHER, speed=0) as server:
        run = await replay_session(server, factory)
    tracer.end()
    spans = {
        s.name: [x for x in exporter.get_finished_spans() if x.name == s.name]
        for s in exporter.get_finished_spans()
    }
    (call,) = spans["voiceagent.call"]
    (turn,) = spans["voiceagent.turn"]
    rounds = spans["voiceagent.round"]
    (tool,) = spans["voiceagent.tool"]
    utterances = spans["voiceagent.utterance"]
    assert turn.parent is not None and turn.parent.span_id == call.context.span_id
    assert all(
        s.parent is not None and s.parent.span_id == turn.context.span_id
        for s in [*rounds, tool, *utterances]
    )
    result = run.results[0]
    assert [r.attributes["voiceagent.request_id"] for r in rounds] == list(result.request_ids)  # type: ignore[index]
    assert tool.attributes["voiceagent.tool"] == "get_weather"  # type: ignore[index]
    assert "Paris" in str(tool.attributes["voiceagent.arguments"])  # type: ignore[index]
    assert tool.attributes["voiceagent.request_id"] == result.rounds[0].request_id  # type: ignore[index]
    assert "".join(str(u.attributes["voiceagent.text"]) for u in utterances) == result.spoken_text  # type: ignore[index]
    assert turn.start_time <= tool.start_time <= tool.end_time <= turn.end_time  # type: ignore[operator]
    assert call.attributes["voiceagent.turns"] == 1  # type: ignore[index]
