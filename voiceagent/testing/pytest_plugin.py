"""pytest plugin shipped with voiceagent (``-p voiceagent.testing.pytest_plugin``).

Tests are anyio tests (``@pytest.mark.anyio``) on the asyncio backend.

``replay`` fixture: ``server = await replay("examples/cassettes/weather.jsonl", speed=0)`` starts a
``ReplayServer`` for the test (closed after it). A request that differs from the recording fails the
test with the diff, even when the agent swallowed the HTTP 400 (it speaks its fallback instead); a
test that expects a mismatch takes it with ``server.take_mismatches()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from voiceagent.cassette import Cassette
from voiceagent.testing.replay import ReplayMismatch, ReplayServer

ReplayFactory = Callable[..., Awaitable[ReplayServer]]

_SERVERS = pytest.StashKey[list[ReplayServer]]()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _resolve(cassette: Cassette | str | Path, rootpath: Path) -> Cassette | Path:
    if isinstance(cassette, Cassette):
        return cassette
    path = Path(cassette)
    if not path.is_absolute() and not path.exists() and (rootpath / path).exists():
        path = rootpath / path  # relative to the project root, wherever pytest was started
    return path


@pytest.fixture
async def replay(request: pytest.FixtureRequest) -> AsyncIterator[ReplayFactory]:
    """A factory: ``await replay(cassette, *, speed=1.0, allow_changed_tail=False, substitute_tools=())``."""
    servers: list[ReplayServer] = []
    request.node.stash[_SERVERS] = servers
    async with AsyncExitStack() as stack:

        async def start(cassette: Cassette | str | Path, **options: Any) -> ReplayServer:
            server = ReplayServer(_resolve(cassette, request.config.rootpath), strict=False, **options)
            await stack.enter_async_context(server)
            servers.append(server)
            return server

        yield start


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Report replay mismatches as the test's failure, diff first, whatever else went wrong."""
    __tracebackhide__ = True
    try:
        yield
    except BaseException as exc:
        mismatch = _pending_mismatch(item)
        if mismatch is not None:
            raise mismatch from exc
        raise
    mismatch = _pending_mismatch(item)
    if mismatch is not None:
        raise mismatch


def _pending_mismatch(item: pytest.Item) -> ReplayMismatch | None:
    __tracebackhide__ = True
    for server in item.stash.get(_SERVERS, []):
        try:
            server.check()
        except ReplayMismatch as mismatch:
            server.take_mismatches()
            return mismatch
    return None
