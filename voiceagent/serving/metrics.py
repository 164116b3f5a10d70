"""Prometheus metrics of a fleet of calls (``prometheus-client``, the ``[serve]`` extra).

Under ``voiceagent serve`` every worker process writes to ``$PROMETHEUS_MULTIPROC_DIR`` and the
supervisor serves the sum on ``/metrics``. Cache-hit ratio, in PromQL:
``rate(voiceagent_llm_tokens_total{kind="cached"}[5m]) / ignoring(kind) sum without(kind)
(rate(voiceagent_llm_tokens_total{kind=~"fresh|cached"}[5m]))``.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from voiceagent.cost import TurnCost
from voiceagent.results import TurnResult

_LATENCY = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    """The metric objects. ``registry=None`` registers nowhere (multiprocess mode: the values go to the
    shared files whatever the registry); give a ``CollectorRegistry`` in a single process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry
        self.calls = Counter("voiceagent_calls", "Calls taken", ["transport"], registry=r)
        self.active_calls = Gauge(
            "voiceagent_active_calls", "Calls in progress", registry=r, multiprocess_mode="livesum"
        )
        self.turns = Counter("voiceagent_turns", "Turns answered, by outcome", ["outcome"], registry=r)
        self.ttft = Histogram(
            "voiceagent_ttft_seconds",
            "First round: request sent -> first chunk",
            buckets=_LATENCY,
            registry=r,
        )
        self.first_audio = Histogram(
            "voiceagent_time_to_first_audio_seconds",
            "Turn start -> first bot audio sent to the caller",
            buckets=_LATENCY,
            registry=r,
        )
        self.response = Histogram(
            "voiceagent_caller_stop_to_bot_audio_seconds",
            "Caller's last speech event -> first bot audio sent",
            buckets=_LATENCY,
            registry=r,
        )
        self.tool = Histogram(
            "voiceagent_tool_seconds", "Tool call run time", ["tool"], buckets=_LATENCY, registry=r
        )
        self.tokens = Counter(
            "voiceagent_llm_tokens", "LLM tokens: fresh / cached prompt, completion", ["kind"], registry=r
        )
        self.retries = Counter("voiceagent_llm_retries", "LLM request attempts retried", registry=r)
        self.rate_limited = Counter(
            "voiceagent_llm_rate_limited", "HTTP 429 answers from the LLM server", registry=r
        )
        self.barge_ins = Counter("voiceagent_barge_ins", "Caller barge-ins", registry=r)
        self.fallbacks = Counter("voiceagent_fallbacks", "Turns that spoke the fallback line", registry=r)
        self.cache_busts = Counter(
            "voiceagent_cache_busts", "Requests that changed an already-sent message", registry=r
        )
        self.tts_chars = Counter(
            "voiceagent_tts_chars", "TTS characters: synthesized / heard", ["kind"], registry=r
        )
        self.stt_seconds = Counter("voiceagent_stt_seconds", "Caller audio streamed to STT", registry=r)
        self.cost = Counter("voiceagent_cost", "Cost at the configured rates", registry=r)

    def observe_turn(self, result: TurnResult, cost: TurnCost) -> None:
        outcome = "error" if result.error else "interrupted" if result.interrupted else "completed"
        self.turns.labels(outcome).inc()
        if result.rounds and result.rounds[0].first_chunk_at is not None:
            first = result.rounds[0]
            assert first.first_chunk_at is not None
            self.ttft.observe(max(0.0, first.first_chunk_at - first.started_at))
        for call in result.tool_calls:
            self.tool.labels(call.name).observe(max(0.0, call.finished_at - call.started_at))
        self.tokens.labels("fresh").inc(cost.fresh_tokens)
        self.tokens.labels("cached").inc(cost.cached_tokens)
        self.tokens.labels("completion").inc(cost.completion_tokens)
        self.retries.inc(sum(max(0, r.attempts - 1) for r in result.rounds))
        self.cache_busts.inc(sum(1 for r in result.rounds if r.cache_bust))
        if result.fallback_spoken:
            self.fallbacks.inc()
        self.tts_chars.labels("synthesized").inc(cost.tts_chars_synthesized)
        self.tts_chars.labels("heard").inc(cost.tts_chars_heard)
        self.stt_seconds.inc(cost.stt_seconds)
        self.cost.inc(cost.total)


class RateLimitCounter(logging.Handler):
    """Counts the LLM client's "HTTP 429 ...; retrying" records: a retried 429 never reaches a
    ``TurnResult`` (only its attempt count does)."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.WARNING)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("HTTP %s from the LLM server") and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            if args and args[0] == 429:
                self.metrics.rate_limited.inc()
