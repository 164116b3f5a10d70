"""One ``voiceagent serve`` worker process: its own event loop, its transports on loopback ports.

Started by the supervisor as ``python -m voiceagent.serving.worker CONFIG_JSON``. It prints one JSON
line ``{"ready": true, "twilio_port": ..., "web_port": ...}`` on stdout once it listens, serves calls,
and on SIGTERM drains: new calls are refused, live calls go on until ``drain_seconds``, then each still
live hears ``goodbye`` and is ended (its turn records are logged first: nothing is lost).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from voiceagent.cost import Rates
from voiceagent.logs import get_logger, log_context
from voiceagent.session import Session
from voiceagent.stt import STTEvent, STTSource
from voiceagent.transport_output import TransportOutput
from voiceagent.tts import AudioOutput, TTSSink
from voiceagent.turn import ChatStreamer

from .jsonlog import configure_json
from .metrics import Metrics, RateLimitCounter
from .observe import CallObserver

log = get_logger("voiceagent.serve")

GOODBYE = "Sorry, I have to hang up now. Goodbye!"


@dataclass
class WorkerConfig:
    factory: str
    index: int = 0
    twilio: bool = True
    web: bool = False
    replay: str | None = None
    replay_speed: float = 0.0
    redis: str | None = None
    plan: str = "standard"
    base_url: str | None = None
    model: str = "electron"
    tts: str = "espeak"  # espeak | lightning
    voice: str | None = None
    auth_token: str | None = None  # None: $TWILIO_AUTH_TOKEN
    public_url: str | None = None
    allow_unsigned: bool = False
    drain_seconds: float = 30.0
    goodbye: str = GOODBYE
    rates: dict[str, float] = field(default_factory=dict)
    log_level: str = "INFO"
    allowed_hosts: list[str] = field(default_factory=list)  # the web page's public host names
    otel: str | None = None  # "otlp" ($OTEL_EXPORTER_OTLP_ENDPOINT) or "console" (stderr)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        return cls(**json.loads(text))


@dataclass(eq=False)  # a set member by identity
class _LiveCall:
    scope: anyio.CancelScope
    observer: CallObserver
    agent: Any = None
    output: TransportOutput | None = None


class _HeldSTT:
    """An STT whose events end only when the caller hangs up (``aclose``), not when ``inner`` runs
    dry: a replayed cassette's transcripts are over long before the call is."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._closed = anyio.Event()
        self.vad_events = False

    async def send_audio(self, pcm: bytes) -> None:
        await self._inner.send_audio(pcm)

    async def events(self) -> AsyncIterator[STTEvent]:
        async for event in self._inner.events():
            yield event
        await self._closed.wait()

    async def aclose(self) -> None:
        await self._inner.aclose()
        self._closed.set()


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        from voiceagent.commands.replay import load_factory

        self.config = config
        self.factory = load_factory(config.factory)
        self.metrics = Metrics()
        self.rates = Rates(**config.rates)
        self.draining = False
        self.live: set[_LiveCall] = set()
        self._cassette: Any = None
        self._limiter: Any = None
        self._llm: Any = None
        if config.replay:
            from voiceagent.commands import cassettes

            self._cassette = cassettes.load(config.replay)

    # ---- the parts of a call -----------------------------------------------------------------------

    @asynccontextmanager
    async def _llm_for_call(self) -> AsyncIterator[ChatStreamer]:
        if self._cassette is None:
            yield self._llm
            return
        from voiceagent.testing.replay import ReplayServer

        # A replay server answers one recorded session in order: one per call.
        async with ReplayServer(self._cassette, speed=self.config.replay_speed, strict=False) as server:
            yield server.client(limiter=self._limiter)  # --redis: the replayed fleet shares a limit too

    def _stt(self, sample_rate: int) -> AbstractAsyncContextManager[STTSource]:
        if self._cassette is not None:
            from voiceagent.testing.replay import ReplaySTTSource

            return _closing(_HeldSTT(ReplaySTTSource(self._cassette, speed=self.config.replay_speed)))
        from voiceagent.adapters.pulse import PulseOptions, PulseSTT

        key = os.environ.get("SMALLEST_API_KEY", "")
        options = (
            PulseOptions.for_twilio("en")
            if sample_rate == 8000
            else PulseOptions(language="en", sample_rate=sample_rate)
        )
        stt: AbstractAsyncContextManager[STTSource] = PulseSTT(key, options)
        return stt

    def _tts(self, output: AudioOutput) -> AbstractAsyncContextManager[TTSSink]:
        if self.config.tts == "lightning" and self._cassette is None:
            from voiceagent.adapters.lightning import LightningSink

            sink: AbstractAsyncContextManager[TTSSink] = LightningSink(
                output, api_key=os.environ.get("SMALLEST_API_KEY", ""), voice_id=self.config.voice
            )
            return sink
        from voiceagent.adapters.espeak import EspeakSink

        return _closing(EspeakSink(output, words_per_minute=185))

    # ---- one call ------------------------------------------------------------------------------------

    async def run_call(self, transport: Any, sample_rate: int, kind: str) -> None:
        if self.draining:
            log.info("refused a %s call: draining", kind)
            return
        call_id = str(getattr(transport, "call_sid", "") or f"{kind}-{uuid.uuid4().hex[:10]}")
        tracer = None
        if self.config.otel:
            from .tracing import CallTracer

            tracer = CallTracer(call_id)
        observer = CallObserver(
            call_id,
            metrics=self.metrics,
            rates=self.rates,
            stt_sample_rate=sample_rate,
            on_event=tracer.on_event if tracer else None,
            on_turn=tracer.on_turn if tracer else None,
        )
        self.metrics.calls.labels(kind).inc()
        self.metrics.active_calls.inc()
        session: Session | None = None
        with anyio.CancelScope() as scope, log_context(session=call_id):
            live = _LiveCall(scope, observer)
            self.live.add(live)
            try:
                watched = observer.wrap_transport(transport)
                output = TransportOutput(watched, sample_rate)
                async with (
                    self._llm_for_call() as llm,
                    self._stt(sample_rate) as stt,
                    self._tts(output) as sink,
                ):
                    agent = self.factory(llm, sink)
                    agent.session_id = call_id
                    observer.attach(agent)
                    live.agent, live.output = agent, output
                    session = Session(
                        agent=agent,
                        transport=watched,
                        stt=observer.wrap_stt(stt),
                        output=output,
                        vad=None if self._cassette is not None else "auto",
                    )
                    await session.run()
            finally:
                self.live.discard(live)
                self.metrics.active_calls.dec()
                if tracer is not None:
                    tracer.end()
                if session is not None:
                    self.metrics.barge_ins.inc(session.barge_ins)
                log.info(
                    "call over",
                    extra={"event": "call", "call": call_id, "turns": len(observer.results)},
                )

    async def _say_goodbye(self, live: _LiveCall) -> None:
        """The drain deadline: cut the turn in flight (its record is kept), say goodbye, hang up."""
        with log_context(session=live.observer.call_id), anyio.move_on_after(10):
            turn = live.observer.turn
            if turn is not None and not live.observer.turn_idle.is_set():
                turn.cancel()
                await live.observer.turn_idle.wait()
            if live.agent is not None:
                log.info("drain deadline: saying goodbye", extra={"event": "goodbye"})
                await live.agent.sink.speak(self.config.goodbye)
                await live.agent.sink.flush()
                if live.output is not None:
                    await live.output.wait_played()
        live.scope.cancel()

    # ---- the process -----------------------------------------------------------------------------

    async def serve(self) -> None:
        config = self.config
        async with AsyncExitStack() as stack:
            if config.otel:
                stack.callback(_tracing(config.otel))
            self._limiter = await self._shared_limiter(stack)
            if self._cassette is None:
                self._llm = await self._live_llm(stack)
            ports: dict[str, Any] = {"ready": True, "pid": os.getpid()}
            if config.twilio:
                from voiceagent.adapters.twilio import TwilioServer

                kwargs: dict[str, Any] = {}
                if config.auth_token is not None:
                    kwargs["auth_token"] = config.auth_token
                twilio = TwilioServer(
                    lambda stream: self.run_call(stream, 8000, "twilio"),
                    public_url=config.public_url,
                    allow_unsigned=config.allow_unsigned,
                    **kwargs,
                )
                await stack.enter_async_context(twilio)
                ports["twilio_port"] = twilio.port
            if config.web:
                from voiceagent.adapters.web import WebServer

                web = WebServer(
                    lambda session: self.run_call(session, session.input_sample_rate, "web"),
                    allowed_hosts=config.allowed_hosts,
                )
                await stack.enter_async_context(web)
                ports["web_port"] = web.port
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                print(json.dumps(ports), flush=True)
                log.info("worker %d ready", config.index, extra={"event": "ready", **ports})
                async for _ in signals:
                    break
                await self.drain()  # inside the receiver: a second SIGTERM does not cut the drain short

    async def drain(self) -> None:
        self.draining = True
        log.info("draining: %d live call(s)", len(self.live), extra={"event": "drain"})
        with anyio.move_on_after(self.config.drain_seconds):
            while self.live:  # noqa: ASYNC110 (calls end on their own; a short poll bounds the wait)
                await anyio.sleep(0.05)
        if self.live:
            async with anyio.create_task_group() as tg:
                for live in list(self.live):
                    tg.start_soon(self._say_goodbye, live)
            with anyio.move_on_after(5):
                while self.live:  # noqa: ASYNC110 (each call's handler is ending: let it close its socket)
                    await anyio.sleep(0.05)
        log.info("drained", extra={"event": "drained"})

    async def _shared_limiter(self, stack: AsyncExitStack) -> Any:
        """``--redis``: the plan's limit, shared by every worker (and machine) on this account."""
        if not self.config.redis:
            return None
        from voiceagent.adapters.redis_limiter import RedisConcurrencyLimiter
        from voiceagent.limiter import PLAN_CONCURRENCY

        key = os.environ.get("SMALLEST_API_KEY") or f"{self.config.base_url or 'replay'}"
        return await stack.enter_async_context(
            RedisConcurrencyLimiter(PLAN_CONCURRENCY[self.config.plan], self.config.redis, account=key)
        )

    async def _live_llm(self, stack: AsyncExitStack) -> Any:
        from voiceagent.llm import LLMClient

        if self.config.base_url:
            llm = LLMClient(
                base_url=self.config.base_url,
                api_key=os.environ.get("SMALLEST_API_KEY") or "none",
                model=self.config.model,
                limiter=self._limiter,
            )
        elif self._limiter is not None:
            llm = LLMClient(model=self.config.model, limiter=self._limiter)
        else:
            llm = LLMClient.electron(plan=self.config.plan, model=self.config.model)
        stack.push_async_callback(llm.aclose)
        return llm


def _tracing(kind: str) -> Callable[[], Any]:
    """Install the process's tracer provider; returns its shutdown (which flushes the last spans)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if kind == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)  # stdout is the supervisor's pipe
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "voiceagent"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider.shutdown


@asynccontextmanager
async def _closing(thing: Any) -> AsyncIterator[Any]:
    try:
        yield thing
    finally:
        close: Callable[[], Any] | None = getattr(thing, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()


def _die_with_parent() -> None:
    """Linux: if the supervisor dies (even by SIGKILL), this worker gets SIGTERM and drains."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = WorkerConfig.from_json(argv[0])
    _die_with_parent()
    configure_json(getattr(logging, config.log_level.upper(), logging.INFO), worker=config.index)
    worker = Worker(config)
    logging.getLogger("voiceagent.llm").addHandler(RateLimitCounter(worker.metrics))
    anyio.run(worker.serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
