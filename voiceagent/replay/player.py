"""Replay a cassette: a local OpenAI-compatible server that serves the recorded stream, and checks every
request the agent sends against the recording.

``ReplayServer`` is a real HTTP/SSE server on 127.0.0.1 (``FakeOpenAIServer`` driven through its
``responder`` hook). The k-th request the agent sends is compared with the k-th recorded request
(messages, tools, params); when it differs the server answers HTTP 400 with a unified diff of the JSON
and records a ``ReplayMismatch`` (the pytest plugin turns it into a test failure). Otherwise it serves
the recorded chunks, with the recorded request id and timing divided by ``speed`` (``speed=0``: no
sleeps), and ends the stream as the recording did: ``[DONE]``, a dropped connection, or, for a stream
the agent hung up on (barge-in), a stream that stays open until the agent hangs up again.

Tools run for real by default; ``substitute_tools`` serves recorded results instead, per tool name.
``ReplaySTTSource`` replays the transcripts, ``replay_session`` drives a whole call through an agent.

``with server.in_thread():`` runs the server on its own event loop in its own thread instead: the pytest
fixture does that, so no task group of the server ever lives in the test's loop (pytest-asyncio runs a
fixture's setup and teardown in different tasks, which a task group held across the test cannot survive).
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
import anyio.to_thread

from voiceagent.logs import get_logger
from voiceagent.replay.cassette import (
    Cassette,
    Exchange,
    RequestRecord,
    redact,
)
from voiceagent.replay.mismatch import ReplayMismatch
from voiceagent.replay.tools import ReplayToolRunner
from voiceagent.testing.openai_server import Chunk, Drop, FakeOpenAIServer, Reply, error_envelope
from voiceagent.tool_runner import ToolRunner

if TYPE_CHECKING:
    from voiceagent.agent import Agent
    from voiceagent.llm import LLMClient

log = get_logger(__name__)

__all__ = ["ReplayMismatch", "ReplayServer", "request_diff", "request_view"]

_RETRIED_STATUSES = (502, 503)


# ---- comparing requests ------------------------------------------------------------------------


def request_view(body: Mapping[str, Any], params_keys: Collection[str] | None = None) -> dict[str, Any]:
    """What is compared: messages, tools and every other field (params), optionally only ``params_keys``."""
    params = {k: v for k, v in body.items() if k not in ("messages", "tools")}
    if params_keys is not None:
        params = {k: v for k, v in params.items() if k in params_keys}
    return {"messages": body.get("messages", []), "tools": body.get("tools") or [], "params": params}


def _lines(view: Mapping[str, Any]) -> list[str]:
    return json.dumps(view, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def request_diff(recorded: Mapping[str, Any], sent: Mapping[str, Any], *, label: str = "recorded") -> str:
    """A unified diff of two request views (empty when they are equal)."""
    return "\n".join(
        difflib.unified_diff(_lines(recorded), _lines(sent), f"{label}", "sent by the agent", lineterm="")
    )


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# ---- the server ----------------------------------------------------------------------------------


class _CutGate:
    """Stands in for a chunk gate after the last recorded chunk of a stream the agent hung up on: it says
    the cut point was reached, then holds the stream open (what came next was never recorded)."""

    def __init__(self, reached: anyio.Event) -> None:
        self._reached = reached

    async def wait(self) -> None:
        self._reached.set()
        await anyio.sleep_forever()


class ReplayServer:
    """``async with ReplayServer(cassette, speed=0) as server:``, then point an LLMClient at ``base_url``.

    ``strict`` (default True) makes leaving the block raise the first unreported mismatch.
    """

    def __init__(
        self,
        cassette: Cassette | str | Path,
        *,
        speed: float = 1.0,
        allow_changed_tail: bool = False,
        substitute_tools: Collection[str] | bool = (),
        strict: bool = True,
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be 0 (no sleeps) or positive, got {speed}")
        self.cassette = cassette if isinstance(cassette, Cassette) else Cassette.load(cassette)
        self.speed = speed
        self.allow_changed_tail = allow_changed_tail
        self.substitute_tools = substitute_tools
        self.strict = strict
        self.exchanges = self.cassette.exchanges
        self.mismatches: list[ReplayMismatch] = []
        self.served = 0  # recorded exchanges served so far
        self.tail_changes = 0
        self._fake = FakeOpenAIServer()
        self._accepted: dict[str, Any] = {}  # sent message (json) -> the recorded message it stands for
        self._last: tuple[str, Exchange] | None = None
        self._cuts: dict[int, anyio.Event] = {}
        self._loop_thread: int | None = None  # the thread whose event loop serves
        self._portal: anyio.from_thread.BlockingPortal | None = None  # set while running in_thread()

    # -- lifecycle --

    async def __aenter__(self) -> ReplayServer:
        await self._fake.__aenter__()
        self._fake.responder = self._respond
        self._loop_thread = threading.get_ident()
        return self

    @contextmanager
    def in_thread(self) -> Iterator[ReplayServer]:
        """Serve from a new thread with its own event loop until the block ends (blocks while it starts).

        Any event loop (or none) can then talk to ``base_url``; ``wait_for_cut`` works from any loop."""
        with ExitStack() as stack:
            portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
            stack.enter_context(portal.wrap_async_context_manager(self))
            self._portal = portal
            stack.callback(setattr, self, "_portal", None)
            yield self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        result = await self._fake.__aexit__(exc_type, exc, tb)
        if self.strict and exc is None:
            self.check()
        return result

    @property
    def base_url(self) -> str:
        return self._fake.base_url

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self._fake.requests]

    def client(self, **kwargs: Any) -> LLMClient:
        """An ``LLMClient`` pointed at this server (no key needed: nothing leaves the machine)."""
        from voiceagent.llm import LLMClient
        from voiceagent.retry import RetryPolicy

        kwargs.setdefault("retry", RetryPolicy(base_delay=0.001, max_delay=0.002))
        return LLMClient(base_url=self.base_url, api_key="replay-needs-no-key", **kwargs)

    # -- reporting --

    def check(self) -> None:
        """Raise the first mismatch (with how many there were), if any."""
        __tracebackhide__ = True
        if self.mismatches:
            first = self.mismatches[0]
            more = (
                f"\n({len(self.mismatches) - 1} more mismatch(es) after this one)"
                if len(self.mismatches) > 1
                else ""
            )
            raise ReplayMismatch(str(first) + more, exchange=first.exchange, diff=first.diff)

    def take_mismatches(self) -> list[ReplayMismatch]:
        """The mismatches so far, marking them handled (a test that expects one takes it)."""
        taken, self.mismatches = self.mismatches, []
        return taken

    def assert_complete(self) -> None:
        """No mismatch, and the agent made every recorded request."""
        self.check()
        if self.served < len(self.exchanges):
            missing = self.exchanges[self.served]
            raise ReplayMismatch(
                f"{self.cassette.name}: the agent made {self.served} request(s); the recording has "
                f"{len(self.exchanges)} (next expected: request {missing.n}, turn {missing.request.turn})",
                exchange=missing.n,
            )

    async def wait_for_cut(self, n: int) -> None:
        """Return once every recorded chunk of exchange ``n`` (one the agent hung up on) was sent."""
        portal = self._portal
        if portal is None or threading.get_ident() == self._loop_thread:
            await self._cut_event(n).wait()
            return
        # From another loop: wait in the server's loop. If this side is cancelled, the worker thread is
        # left blocked until the portal closes, which cancels the wait and frees it.
        await anyio.to_thread.run_sync(portal.call, self.wait_for_cut, n, abandon_on_cancel=True)

    def _cut_event(self, n: int) -> anyio.Event:
        if n not in self._cuts:
            self._cuts[n] = anyio.Event()
        return self._cuts[n]

    # -- tools --

    def tool_runner(self, inner: ToolRunner) -> ToolRunner:
        """``inner``, or a runner serving recorded results for the tools named in ``substitute_tools``."""
        if not self.substitute_tools:
            return inner
        names = None if self.substitute_tools is True else set(self.substitute_tools)
        return ReplayToolRunner(
            inner, self.cassette, names, on_missing=self.mismatches.append, speed=self.speed
        )

    def attach(self, agent: Agent) -> Agent:
        """Apply ``substitute_tools`` to ``agent`` (its runner is wrapped in place)."""
        agent.runner = self.tool_runner(agent.runner)
        return agent

    # -- serving --

    async def _respond(self, body: dict[str, Any]) -> Reply:
        sent_key = _key(body)
        if self._last is not None and self._last[0] == sent_key and self._is_retried_failure(self._last[1]):
            return await self._reply(self._last[1])  # the client retries a recorded 502/503: same answer
        if self.served >= len(self.exchanges):
            return self._mismatch(
                None,
                f"{self.cassette.name}: the agent sent request {self.served + 1}, but the recording has only "
                f"{len(self.exchanges)}. The extra request:\n" + "\n".join(_lines(request_view(body))),
                "",
            )
        exchange = self.exchanges[self.served]
        diff = self._compare(exchange.request, body)
        if diff:
            return self._mismatch(
                exchange.n,
                f"{self.cassette.name}: request {exchange.n} (turn {exchange.request.turn}, round "
                f"{exchange.request.round}) differs from the recording:\n{diff}",
                diff,
            )
        self.served += 1
        self._last = (sent_key, exchange)
        return await self._reply(exchange)

    @staticmethod
    def _is_retried_failure(exchange: Exchange) -> bool:
        status = exchange.response.status if exchange.response else None
        return (status in _RETRIED_STATUSES) or (exchange.response is None and exchange.end is not None)

    def _mismatch(self, n: int | None, message: str, diff: str) -> Reply:
        mismatch = ReplayMismatch(message, exchange=n, diff=diff)
        self.mismatches.append(mismatch)
        log.error("%s", message)
        return Reply(status=400, body=error_envelope(message, "invalid_request_error"))

    def _compare(self, recorded: RequestRecord, body: dict[str, Any]) -> str:
        keys = None if recorded.source == "wire" else set(recorded.body) - {"messages", "tools"}
        want = request_view(recorded.body)
        messages = [self._accepted.get(_key(m), m) for m in body.get("messages", [])]
        # The recording was redacted when written; compare the live body redacted the same way.
        got = request_view(redact({**body, "messages": messages}), keys)
        if _key(want) == _key(got):
            return ""
        if self.allow_changed_tail and self._only_tail_changed(want, got):
            self._accepted[_key(got["messages"][-1])] = want["messages"][-1]
            self.tail_changes += 1
            log.info("replay: request %d has a changed last message (allowed)", recorded.n)
            return ""
        return request_diff(want, got, label=f"{self.cassette.name} request {recorded.n} (recorded)")

    @staticmethod
    def _only_tail_changed(want: dict[str, Any], got: dict[str, Any]) -> bool:
        w, g = want["messages"], got["messages"]
        return (
            _key(want["params"]) == _key(got["params"])
            and _key(want["tools"]) == _key(got["tools"])
            and len(w) == len(g) > 0
            and _key(w[:-1]) == _key(g[:-1])
        )

    def _scaled(self, seconds: float) -> float:
        return 0.0 if self.speed == 0 else max(0.0, seconds) / self.speed

    async def _reply(self, exchange: Exchange) -> Reply:
        response = exchange.response
        headers_at = response.t if response else 0.0
        delay = self._scaled(headers_at)
        if delay:
            await anyio.sleep(delay)  # time to headers (or to the error)
        request_id = response.request_id if response else None
        if response is not None and response.status != 200:
            body = response.error or error_envelope(f"HTTP {response.status}", "server_error")
            return Reply(status=response.status, body=body, request_id=request_id)
        events: list[Chunk | Drop] = []
        previous = headers_at
        for chunk in exchange.chunks:
            events.append(Chunk(chunk.data, delay=self._scaled(chunk.t - previous)))
            previous = chunk.t
        end = exchange.end
        if response is None or end is None:
            events.append(Drop())  # never got a response (connection error), or the recording broke off
        elif end.how == "dropped":
            events.append(Drop(delay=self._scaled(end.t - previous)))
        elif end.how == "cancelled":
            gate = cast(anyio.Event, _CutGate(self._cut_event(exchange.n)))
            events.append(Chunk({"never": "sent"}, gate=gate))
        elif end.how == "error":
            events.append(Chunk({"error": {"message": end.error or "error", "type": "server_error"}}))
        return Reply(events=tuple(events), request_id=request_id)


# ---- tools -----------------------------------------------------------------------------------------
