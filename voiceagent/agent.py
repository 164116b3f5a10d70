"""Agent: a conversation with an LLM, tools and a TTS sink; each user utterance runs one Turn.

One turn at a time: ``respond()`` (and ``events()``) while another turn of the same agent is still running
raises ``TurnInProgressError`` at once, before touching the conversation. Queueing was rejected on purpose:
a voice app that starts a second turn while the first is speaking almost always meant to interrupt it
(``turn.cancel()``, as ``Session`` does on barge-in) or to join the texts into one turn; a silent queue
would answer a stale question after a long delay. ``new_turn()`` hands the ordering to its caller.

Each agent is one call: its ``ToolRunner`` has the call's own thread budget for sync tools
(``tool_threads``) and caps each tool result (``max_tool_result_chars``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from voiceagent.cache_guard import CacheGuard
from voiceagent.conversation import Conversation
from voiceagent.errors import TurnInProgressError
from voiceagent.events import TurnEvent, TurnFinished
from voiceagent.logs import log_context
from voiceagent.results import TurnResult
from voiceagent.tool_runner import ToolRunner
from voiceagent.tools import Tool
from voiceagent.tts import TTSSink
from voiceagent.turn import ChatStreamer, Turn, TurnConfig


class Agent:
    def __init__(
        self,
        *,
        llm: ChatStreamer,
        sink: TTSSink,
        system_prompt: str,
        tools: Sequence[Tool] = (),
        context: Sequence[str] = (),
        config: TurnConfig | None = None,
        session_id: str | None = None,
        tool_timeout: float = 10.0,
        tool_threads: int = 8,
        max_tool_result_chars: int = 16_000,
    ) -> None:
        self.llm = llm
        self.sink = sink
        self.conversation = Conversation(system_prompt, context)
        self.runner = ToolRunner(
            tools,
            default_timeout=tool_timeout,
            max_threads=tool_threads,
            max_result_chars=max_tool_result_chars,
        )
        self.config = config or TurnConfig()
        self.guard = CacheGuard()
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.turns = 0
        self.results: list[TurnResult] = []
        self._responding = False

    def new_turn(self, on_event: Any = None, *, held: bool = False, runner: ToolRunner | None = None) -> Turn:
        """A turn you can ``cancel()`` (barge-in) while ``run()`` is in progress in another task.
        ``held``: speculative, silent until ``release()`` (see ``Turn``). ``runner``: this turn's tools
        instead of ``self.runner`` (``Session``: the agent's tools plus its call's built-ins)."""
        self.turns += 1
        return Turn(
            llm=self.llm,
            conversation=self.conversation,
            sink=self.sink,
            runner=runner if runner is not None else self.runner,
            config=self.config,
            guard=self.guard,
            index=self.turns,
            on_event=on_event,
            held=held,
        )

    @property
    def responding(self) -> bool:
        """A ``respond()`` (or ``events()``) turn is running."""
        return self._responding

    async def respond(self, user_text: str, *, on_event: Any = None) -> TurnResult:
        """Run one turn. Raises ``TurnInProgressError`` if this agent's previous turn is still running."""
        self._refuse_if_responding()
        self._responding = True
        try:
            with log_context(session=self.session_id):
                result = await self.new_turn(on_event).run(user_text)
        finally:
            self._responding = False
        self.results.append(result)
        return result

    def _refuse_if_responding(self) -> None:
        if self._responding:
            raise TurnInProgressError(
                f"agent {self.session_id} is already running a turn: await it, or cancel it, before the "
                "next respond() (two turns at once would interleave one conversation)"
            )

    @asynccontextmanager
    async def events(self, user_text: str) -> AsyncIterator[AsyncIterator[TurnEvent]]:
        """Run a turn and observe it: ``async with agent.events(text) as events: async for e in events``.

        The last event is ``TurnFinished`` carrying the ``TurnResult``. Raises ``TurnInProgressError`` on
        entry if this agent's previous turn is still running.
        """
        self._refuse_if_responding()
        send, receive = anyio.create_memory_object_stream[TurnEvent](float("inf"))

        async def run() -> None:
            async with send:
                await self.respond(user_text, on_event=send.send_nowait)

        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(run)
            yield _until_finished(receive)


async def _until_finished(receive: AsyncIterator[TurnEvent]) -> AsyncIterator[TurnEvent]:
    async for event in receive:
        yield event
        if isinstance(event, TurnFinished):
            return
