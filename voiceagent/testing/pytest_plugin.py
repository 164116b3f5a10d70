"""pytest plugin shipped with voiceagent: registered by the ``pytest11`` entry point, nothing to load.

``replay`` fixture: ``server = await replay("tests/cassettes/my_call.jsonl", speed=0)`` (or a cassette
shipped with voiceagent by name: ``"weather"``, ``"parallel_tools"``, ``"barge_in"``) starts a
``ReplayServer`` for the test (closed after it). A request that differs from the recording fails the
test with the diff, even when the agent swallowed the HTTP 400 (it speaks its fallback instead); a
test that expects a mismatch takes it with ``server.take_mismatches()``.

The fixture is synchronous and each server runs on its own event loop in its own thread, so it works the
same in any set-up: pytest-asyncio (strict with ``@pytest.mark.asyncio``, or auto), anyio's plugin
(``@pytest.mark.anyio``, any backend), or a plain sync test driving its own ``anyio.run``. Nothing of
the server lives in the test's event loop, so no task group spans the fixture's setup and teardown.

voiceagent itself is imported only when a fixture runs, so ``pytest --cov`` measures all of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from voiceagent.replay import ReplayMismatch, ReplayServer
    from voiceagent.replay.cassette import Cassette

ReplayFactory = Callable[..., Awaitable["ReplayServer"]]

_SERVERS = pytest.StashKey[list["ReplayServer"]]()


def _resolve(cassette: Cassette | str | Path, rootpath: Path) -> Cassette | Path:
    if not isinstance(cassette, str | Path):
        return cassette
    path = Path(cassette)
    if path.is_absolute() or path.exists():
        return path
    if (rootpath / path).exists():
        return rootpath / path  # relative to the project root, wherever pytest was started
    from voiceagent.commands.cassettes import resolve

    return resolve(path)  # a cassette shipped with voiceagent by name ("weather"), else the path as given


@pytest.fixture
def replay(request: pytest.FixtureRequest) -> Iterator[ReplayFactory]:
    """A factory: ``await replay(cassette, *, speed=1.0, allow_changed_tail=False, substitute_tools=())``."""
    import anyio.to_thread

    from voiceagent.replay import ReplayServer

    servers: list[ReplayServer] = []
    request.node.stash[_SERVERS] = servers
    with ExitStack() as stack:

        async def start(cassette: Cassette | str | Path, **options: Any) -> ReplayServer:
            server = ReplayServer(_resolve(cassette, request.config.rootpath), strict=False, **options)
            # The server's thread starts in a worker thread: the test's loop is not blocked meanwhile.
            await anyio.to_thread.run_sync(stack.enter_context, server.in_thread())
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
    from voiceagent.replay import ReplayMismatch

    for server in item.stash.get(_SERVERS, []):
        try:
            server.check()
        except ReplayMismatch as mismatch:
            server.take_mismatches()
            return mismatch
    return None
