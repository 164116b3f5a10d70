"""Watch one call from outside the session: its turns' events and results, the caller's audio and
speech events going to the STT, and the bot's audio going to the transport.

Nothing inside ``Session`` or ``Turn`` changes: the agent's ``new_turn`` gets a tee on its ``on_event``,
and the STT source and the transport are wrapped (every other attribute passes through, so the
session's protocol checks still see what the real ones offer).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from voiceagent.agent import Agent
from voiceagent.cost import Rates, turn_cost
from voiceagent.events import CacheBusted, RoundStarted, TurnEvent, TurnFinished
from voiceagent.logs import get_logger, log_context
from voiceagent.results import TurnResult
from voiceagent.stt import SpeechEnded, STTEvent, STTSource, Transcript
from voiceagent.tool_runner import ToolRunner
from voiceagent.turn import Turn

from .metrics import Metrics

log = get_logger("voiceagent.serve")


class CallObserver:
    def __init__(
        self,
        call_id: str,
        *,
        metrics: Metrics | None = None,
        rates: Rates | None = None,
        stt_sample_rate: int = 16000,
        on_event: Callable[[TurnEvent], None] | None = None,
        on_turn: Callable[[TurnResult], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.metrics = metrics
        self.rates = rates or Rates()
        self.stt_sample_rate = stt_sample_rate
        self.on_event = on_event
        self.on_turn = on_turn
        self.results: list[TurnResult] = []
        self.turn: Turn | None = None  # the latest turn started
        self.turn_idle = anyio.Event()
        self.turn_idle.set()
        self._stt_bytes = 0
        self._stt_bytes_counted = 0
        self._caller_stopped_at: float | None = None
        self._turn_started_at: float | None = None
        self._awaiting_audio = False
        self.first_audio: list[float] = []
        self.responses: list[float] = []

    # ---- the agent -----------------------------------------------------------------------------

    def attach(self, agent: Agent) -> Agent:
        new_turn = agent.new_turn

        def observed_new_turn(
            on_event: Any = None, *, held: bool = False, runner: ToolRunner | None = None
        ) -> Turn:
            def tee(event: TurnEvent) -> None:
                # A speculative turn the caller talked over is dropped: its rounds are counted with
                # the turn that replaced it (TurnResult.speculative_rounds).
                if not (isinstance(event, TurnFinished) and turn.discarded):
                    self._on_turn_event(event)
                if on_event is not None:
                    on_event(event)

            turn = new_turn(tee, held=held, runner=runner)
            self.turn = turn
            return turn

        agent.new_turn = observed_new_turn  # type: ignore[method-assign]
        return agent

    def _on_turn_event(self, event: TurnEvent) -> None:
        if isinstance(event, RoundStarted) and event.round == 1:
            self._turn_started_at = time.monotonic()
            self._awaiting_audio = True
            self.turn_idle = anyio.Event()
        elif isinstance(event, TurnFinished):
            self._turn_finished(event.result)
            self.turn_idle.set()
        elif isinstance(event, CacheBusted):
            log.info("cache bust in round %d: %s", event.round, event.reason)
        if self.on_event is not None:
            self.on_event(event)

    def _turn_finished(self, result: TurnResult) -> None:
        self.results.append(result)
        audio = self._stt_bytes - self._stt_bytes_counted
        self._stt_bytes_counted = self._stt_bytes
        cost = turn_cost(result, self.rates, stt_seconds=audio / (2 * self.stt_sample_rate))
        if self.metrics is not None:
            self.metrics.observe_turn(result, cost)
        if self.on_turn is not None:
            self.on_turn(result)
        with log_context(turn=len(self.results)):
            log.info(
                "turn over",
                extra={
                    "event": "turn",
                    "call": self.call_id,
                    "user_text": result.user_text,
                    "heard_text": result.heard_text,
                    "interrupted": result.interrupted,
                    "error": result.error,
                    "request_ids": [r for r in result.request_ids if r],
                    "tools": [
                        {"name": c.name, "seconds": round(c.finished_at - c.started_at, 3)}
                        for c in result.tool_calls
                    ],
                    "time_to_first_text": result.time_to_first_text,
                    **cost.as_dict(),
                },
            )

    # ---- audio in and out ------------------------------------------------------------------------

    def wrap_stt(self, stt: STTSource) -> STTSource:
        wrapped: STTSource = _forwarding(_ObservedSTT, stt)(stt, self)
        return wrapped

    def wrap_transport(self, transport: Any) -> Any:
        return _forwarding(_ObservedTransport, transport)(transport, self)

    def _bot_audio_sent(self) -> None:
        if not self._awaiting_audio or self._turn_started_at is None:
            return
        self._awaiting_audio = False
        now = time.monotonic()
        self.first_audio.append(now - self._turn_started_at)
        if self.metrics is not None:
            self.metrics.first_audio.observe(now - self._turn_started_at)
        if self._caller_stopped_at is not None:
            self.responses.append(now - self._caller_stopped_at)
            if self.metrics is not None:
                self.metrics.response.observe(now - self._caller_stopped_at)
            self._caller_stopped_at = None


def _forwarding(base: type, inner: Any) -> type:
    """``base`` plus a forwarder for every public attribute of ``inner`` that ``base`` lacks. Real
    class attributes, not ``__getattr__``: since Python 3.12 ``isinstance`` against a runtime protocol
    (``TextDisplay``, ``ReportsSpeech``, ``Finalizes``) looks attributes up statically."""
    attrs: dict[str, Any] = {}
    for name in dir(inner):
        if name.startswith("_") or hasattr(base, name):
            continue
        static = inspect.getattr_static(inner, name, None)
        if isinstance(static, property) or not callable(getattr(inner, name, None)):
            attrs[name] = property(_reader(name))
        else:
            attrs[name] = _caller(name)
    return type(base.__name__, (base,), attrs)


def _reader(name: str) -> Callable[[Any], Any]:
    def read(self: Any) -> Any:
        return getattr(self._inner, name)

    return read


def _caller(name: str) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    call.__name__ = name
    return call


class _ObservedSTT:
    def __init__(self, inner: STTSource, observer: CallObserver) -> None:
        self._inner = inner
        self._observer = observer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send_audio(self, pcm: bytes) -> None:
        self._observer._stt_bytes += len(pcm)
        await self._inner.send_audio(pcm)

    async def events(self) -> AsyncIterator[STTEvent]:
        async for event in self._inner.events():
            if isinstance(event, SpeechEnded) or (isinstance(event, Transcript) and event.is_final):
                self._observer._caller_stopped_at = time.monotonic()
            yield event

    async def aclose(self) -> None:
        await self._inner.aclose()


class _ObservedTransport:
    def __init__(self, inner: Any, observer: CallObserver) -> None:
        self._inner = inner
        self._observer = observer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send_audio(self, chunk: Any) -> None:
        self._observer._bot_audio_sent()
        await self._inner.send_audio(chunk)
