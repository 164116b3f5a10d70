"""Per-turn cost from a TurnResult: fresh vs cached tokens, speculative rounds paid for, characters
synthesized vs heard, STT seconds; and the metrics a turn adds."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from voiceagent.cost import Rates, turn_cost
from voiceagent.events import Usage
from voiceagent.results import RoundRecord, ToolCallRecord, TurnResult
from voiceagent.serving.metrics import Metrics


def _round(n: int, usage: Usage, *, attempts: int = 1, bust: str | None = None) -> RoundRecord:
    return RoundRecord(
        round=n, request_id=f"req-{n}", attempts=attempts, usage=usage, finish_reason="stop", content="",
        tool_call_ids=(), started_at=0.1, first_chunk_at=0.4, first_text_at=0.5, finished_at=1.0,
        cache_bust=bust,
    )  # fmt: skip


RESULT = TurnResult(
    user_text="weather?",
    spoken_text="Let me check. It is sunny in Paris.",
    heard_text="Let me check.",
    rounds=(
        _round(1, Usage(1000, 20, 800), attempts=3),
        _round(2, Usage(1100, 30, 1000), bust="system prompt changed"),
    ),
    tool_calls=(ToolCallRecord(1, "c1", "get_weather", "{}", "sunny", False, 0.6, 0.6, 0.85),),
    time_to_first_text=0.5,
    llm_done_at=1.0,
    total=2.0,
    interrupted=True,
    speculative_rounds=(_round(1, Usage(500, 5, 0)),),
)


def test_turn_cost_counts_fresh_cached_speculative_and_unheard_characters() -> None:
    rates = Rates(
        llm_fresh_per_mtok=1.0, llm_cached_per_mtok=0.1, llm_output_per_mtok=2.0,
        tts_per_kchar=10.0, stt_per_minute=0.6,
    )  # fmt: skip
    cost = turn_cost(RESULT, rates, stt_seconds=30.0)
    assert (cost.fresh_tokens, cost.cached_tokens, cost.completion_tokens) == (200 + 100 + 500, 1800, 55)
    assert cost.cache_hit_ratio == 1800 / 2600
    assert (cost.tts_chars_synthesized, cost.tts_chars_heard) == (35, 13)
    assert abs(cost.llm - (800 * 1.0 + 1800 * 0.1 + 55 * 2.0) / 1e6) < 1e-12
    assert abs(cost.tts - 0.35) < 1e-12 and abs(cost.stt - 0.3) < 1e-12
    assert abs(cost.total - (cost.llm + 0.65)) < 1e-12
    assert turn_cost(RESULT).total == 0.0  # no rates given: nothing is priced


def test_a_turn_adds_to_the_metrics() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.observe_turn(RESULT, turn_cost(RESULT, stt_seconds=2.0))

    def value(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    assert value("voiceagent_turns_total", outcome="interrupted") == 1
    assert value("voiceagent_llm_retries_total") == 2
    assert value("voiceagent_cache_busts_total") == 1
    assert value("voiceagent_llm_tokens_total", kind="cached") == 1800
    assert value("voiceagent_tool_seconds_count", tool="get_weather") == 1
    assert abs(value("voiceagent_tool_seconds_sum", tool="get_weather") - 0.25) < 1e-9
    assert abs(value("voiceagent_ttft_seconds_sum") - 0.3) < 1e-9
    assert value("voiceagent_tts_chars_total", kind="heard") == 13
    assert value("voiceagent_stt_seconds_total") == 2.0


def test_retried_429s_are_counted_from_the_llm_clients_records() -> None:
    import logging

    from voiceagent.serving.metrics import RateLimitCounter

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    logger = logging.getLogger("voiceagent.llm")
    counter = RateLimitCounter(metrics)
    logger.addHandler(counter)
    try:
        for status in (429, 503, 429):
            logger.warning("HTTP %s from the LLM server (request_id %s); retrying", status, "req-1")
    finally:
        logger.removeHandler(counter)
    assert registry.get_sample_value("voiceagent_llm_rate_limited_total") == 2


def test_the_observers_wrappers_show_the_protocols_statically() -> None:
    # Python 3.12+ checks runtime protocols with getattr_static: __getattr__ forwarding is not seen.
    import inspect

    from voiceagent.serving.observe import CallObserver
    from voiceagent.stt import Finalizes, ReportsSpeech
    from voiceagent.transport import TextDisplay

    class Display:
        input_sample_rate = 16000

        async def send_transcript(self, text: str, *, is_final: bool) -> None: ...

        async def send_agent_text(self, text: str, *, final: bool = True) -> None: ...

        async def send_audio(self, chunk: object) -> None: ...

    class Pulse:
        @property
        def vad_events(self) -> bool:
            return True

        async def finalize(self) -> None: ...

        async def send_audio(self, pcm: bytes) -> None: ...

        async def events(self) -> object: ...

        async def aclose(self) -> None: ...

    observer = CallObserver("c")
    transport = observer.wrap_transport(Display())
    stt = observer.wrap_stt(Pulse())  # type: ignore[arg-type]
    for thing, name in ((transport, "send_transcript"), (stt, "finalize"), (stt, "vad_events")):
        inspect.getattr_static(thing, name)  # raises AttributeError when only __getattr__ forwards it
    assert isinstance(transport, TextDisplay) and transport.input_sample_rate == 16000
    assert isinstance(stt, ReportsSpeech) and stt.vad_events and isinstance(stt, Finalizes)
    plain = observer.wrap_transport(object())
    assert not isinstance(plain, TextDisplay)


def test_a_turn_result_reports_its_own_cost() -> None:
    counts = RESULT.cost()  # zero rates: the counts alone
    assert (counts.fresh_tokens, counts.cached_tokens, counts.completion_tokens) == (800, 1800, 55)
    assert (counts.tts_chars_synthesized, counts.tts_chars_heard, counts.total) == (35, 13, 0.0)
    priced = RESULT.cost(Rates(tts_per_kchar=1000.0), stt_seconds=3.0)
    assert priced == turn_cost(RESULT, Rates(tts_per_kchar=1000.0), stt_seconds=3.0)
    assert priced.tts == 35.0 and priced.stt_seconds == 3.0
