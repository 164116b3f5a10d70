"""The lifecycle every streaming ``STTSource`` shares, so that a vendor's client writes only its wire parts.

``STTSession`` owns the task group the source's background tasks run in (opened by ``async with``), the
unbounded channel of events they produce, and the way a failure ends it: the failure is logged, kept
(``send_audio`` raises it from then on) and raised once from ``events()``, which then ends.
``voiceagent.stt_websocket.WebSocketSTT`` builds the WebSocket vendors on it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from types import TracebackType
from typing import ClassVar, Self

import anyio
from anyio.abc import TaskGroup

from .errors import VoiceAgentError
from .logs import get_logger
from .stt import STTEvent

logger = get_logger(__name__)


class STTSession:
    """Subclasses set ``vendor`` (for messages) and implement ``_open`` (connect; before the task group),
    ``_start`` (start the background tasks), ``aclose`` (the graceful end) and ``_abort`` (the end when
    the ``async with`` body raised). A background task ends the stream with ``_finish``."""

    vendor: ClassVar[str] = "STT"

    def __init__(self) -> None:
        self._tg: TaskGroup | None = None
        self._events_tx, self._events_rx = anyio.create_memory_object_stream[STTEvent | VoiceAgentError](
            math.inf
        )
        self._finished = anyio.Event()
        self._closing = False
        self._failure: VoiceAgentError | None = None

    async def _open(self) -> None:
        """Connect (errors raise from ``async with``); the task group is not open yet."""

    def _start(self, tg: TaskGroup) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def _abort(self) -> None:
        """Stop without the graceful close (the body of ``async with`` failed)."""

    async def __aenter__(self) -> Self:
        await self._open()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._start(self._tg)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        try:
            if exc_type is None:
                await self.aclose()
            else:
                await self._abort()
        finally:
            self._tg.cancel_scope.cancel()
            result = await self._tg.__aexit__(exc_type, exc, tb)
        return result

    async def events(self) -> AsyncIterator[STTEvent]:
        """Transcripts and speech events until the stream ends; its failure, if any, raises here."""
        async for item in self._events_rx:
            if isinstance(item, VoiceAgentError):
                raise item
            yield item

    def _emit(self, event: STTEvent) -> None:
        self._events_tx.send_nowait(event)

    def _finish(self, failure: VoiceAgentError | None) -> None:
        """End the stream (once, from the task that produces events), with ``failure`` if it failed."""
        if failure is not None:
            logger.warning("%s stream failed: %s", self.vendor, failure)
            self._failure = failure
            self._events_tx.send_nowait(failure)
        self._events_tx.close()
        self._finished.set()
