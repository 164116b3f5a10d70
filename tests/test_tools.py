from __future__ import annotations

import enum
import json
import logging
import threading
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, TypedDict

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from voiceagent.errors import ToolDefinitionError
from voiceagent.tool_runner import ToolResult, ToolRunner
from voiceagent.tools import Tool, tool, tools_schema


class Address(TypedDict):
    street: str
    zip: int


@dataclass
class Booking:
    table: int
    name: str


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


@tool
def get_weather(
    city: Annotated[str, "City name, e.g. Paris"],
    days: int,
    threshold: float,
    alerts: bool,
    detail: Literal["short", "full"],
    unit: Unit,
    tags: list[str],
    country: Optional[str] = None,  # noqa: UP045 - Optional[...] is part of what is tested
    region: str | None = None,
    limit: int = 3,
) -> str:
    """Get the weather forecast for a city.

    This second paragraph is long, for humans only, and must never reach the prompt.
    """
    return f"{city}:{days}:{threshold}:{alerts}:{detail}:{unit.name}:{tags}:{country}:{region}:{limit}"


EXPECTED_WEATHER_SCHEMA = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "days": {"type": "integer"},
                "threshold": {"type": "number"},
                "alerts": {"type": "boolean"},
                "detail": {"type": "string", "enum": ["short", "full"]},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "country": {"type": ["string", "null"]},
                "region": {"type": ["string", "null"]},
                "limit": {"type": "integer"},
            },
            "required": ["city", "days", "threshold", "alerts", "detail", "unit", "tags"],
            "additionalProperties": False,
        },
    },
}

GOOD_WEATHER_ARGS = {
    "city": "Paris",
    "days": 2,
    "threshold": 1,
    "alerts": True,
    "detail": "full",
    "unit": "celsius",
    "tags": ["a"],
}


# ---- definitions -----------------------------------------------------------------------------


def test_schema_matches_exactly_and_is_byte_stable() -> None:
    assert isinstance(get_weather, Tool)
    assert get_weather.schema() == EXPECTED_WEATHER_SCHEMA
    # Same text, same key order: the schema is part of the cached prompt prefix.
    assert json.dumps(get_weather.schema()) == json.dumps(EXPECTED_WEATHER_SCHEMA)
    rebuilt = tool(get_weather.fn)
    assert json.dumps(tools_schema([rebuilt])) == json.dumps([EXPECTED_WEATHER_SCHEMA])


def test_only_the_first_docstring_line_is_the_description() -> None:
    @tool
    def hang_up() -> None:
        """

        End the call politely.
        Then free the line.
        """

    assert hang_up.description == "End the call politely."
    assert "second paragraph" not in json.dumps(get_weather.schema())
    assert hang_up.parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_decorator_with_options() -> None:
    @tool(name="book", description="Book a table.", timeout=2.5, on_cancel="finish")
    async def book_table(people: int) -> str:
        """Ignored because description= is given."""
        return f"booked {people}"

    assert book_table.name == "book"
    assert book_table.description == "Book a table."
    assert book_table.timeout == 2.5
    assert book_table.on_cancel == "finish"
    assert book_table.is_async


def test_typeddict_dict_and_nested_optional_schema() -> None:
    @tool
    def ship(
        to: Address,
        extras: dict[str, int],
        sizes: list[Literal[1, 2]] | None = None,
        mixed: Literal["a", 1] | None = None,
    ) -> str:
        """Ship a parcel."""
        return "ok"

    assert ship.parameters["properties"] == {
        "to": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "integer"}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        },
        "extras": {"type": "object", "additionalProperties": {"type": "integer"}},
        "sizes": {"type": ["array", "null"], "items": {"type": "integer", "enum": [1, 2]}},
        "mixed": {"enum": ["a", 1, None]},
    }


def test_unsupported_type_names_the_parameter() -> None:
    with pytest.raises(ToolDefinitionError, match=r'parameter "when": unsupported type .*bytes'):

        @tool
        def f(city: str, when: bytes) -> str:
            """Do it."""
            return ""

    with pytest.raises(ToolDefinitionError, match=r'parameter "x": unions are only supported as Optional'):

        @tool
        def g(x: int | str) -> str:
            """Do it."""
            return ""

    with pytest.raises(ToolDefinitionError, match=r'parameter "y" has no type hint'):

        @tool
        def h(y) -> str:  # type: ignore[no-untyped-def]
            """Do it."""
            return ""

    with pytest.raises(ToolDefinitionError, match="has no description"):

        @tool
        def nodoc(y: int) -> str:
            return ""


# ---- runner ----------------------------------------------------------------------------------


async def run_one(t: Tool, arguments: str | dict[str, object], **kw: float) -> ToolResult:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return await ToolRunner([t], **kw).run("call_1", t.name, text)


@pytest.mark.anyio
async def test_sync_tool_runs_in_a_worker_thread_with_converted_arguments() -> None:
    seen: list[int] = []

    @tool
    def where(x: float, unit: Unit) -> dict[str, object]:
        """Report the thread."""
        seen.append(threading.get_ident())
        assert isinstance(x, float) and unit is Unit.FAHRENHEIT
        return {"x": x, "unit": unit}

    result = await run_one(where, {"x": 3, "unit": "fahrenheit"})
    assert not result.is_error, result.content
    assert result.content == '{"x": 3.0, "unit": "fahrenheit"}'
    assert seen and seen[0] != threading.get_ident()
    assert result.call_id == "call_1" and result.name == "where"
    assert result.finished_at >= result.started_at


@pytest.mark.anyio
async def test_async_tool_and_result_encoding() -> None:
    @tool
    async def book(name: str) -> Booking:
        """Book a table."""
        await anyio.lowlevel.checkpoint()
        return Booking(7, name)

    @tool
    async def nothing() -> None:
        """Do nothing."""

    @tool
    def greet(name: str) -> str:
        """Greet."""
        return f"Bonjour {name}"

    assert (await run_one(book, {"name": "Zoë"})).content == '{"table": 7, "name": "Zoë"}'
    assert (await run_one(nothing, "")).content == "null"
    assert (await run_one(greet, {"name": "Ana"})).content == "Bonjour Ana"
    all_args = await run_one(get_weather, {**GOOD_WEATHER_ARGS, "country": None, "limit": 5.0})
    assert all_args.content == "Paris:2:1.0:True:full:CELSIUS:['a']:None:None:5"


@pytest.mark.anyio
async def test_tool_exception_becomes_error_result() -> None:
    @tool
    def explode(city: str) -> str:
        """Fail."""
        raise ValueError(f"no station near {city}")

    result = await run_one(explode, {"city": "Atlantis"})
    assert result.is_error
    assert result.content == "Error: explode failed: ValueError: no station near Atlantis"


@pytest.mark.anyio
async def test_timeout_becomes_error_result() -> None:
    @tool(timeout=0.05)
    async def hang() -> str:
        """Never answer."""
        await anyio.sleep_forever()
        return ""

    result = await run_one(hang, "{}")
    assert result.is_error
    assert result.content == "Error: hang timed out after 0.05 s."

    @tool
    def slow_sync() -> str:
        """Block a thread."""
        release.wait(10)
        return "late"

    release = threading.Event()
    try:
        result = await run_one(slow_sync, "{}", default_timeout=0.05)
    finally:
        release.set()
    assert result.content == "Error: slow_sync timed out after 0.05 s." and result.is_error


@pytest.mark.anyio
async def test_tool_raising_its_own_timeout_error_is_not_reported_as_our_timeout() -> None:
    @tool
    async def upstream() -> str:
        """Call upstream."""
        raise TimeoutError("upstream slow")

    result = await run_one(upstream, "{}")
    assert result.content == "Error: upstream failed: TimeoutError: upstream slow"


@pytest.mark.anyio
async def test_unknown_tool_name() -> None:
    @tool
    def book_table(people: int) -> str:
        """Book."""
        return ""

    runner = ToolRunner([get_weather, book_table])
    result = await runner.run("c9", "get_wether", "{}")
    assert result == ToolResult(
        "c9",
        "get_wether",
        'Error: unknown tool "get_wether". Available: get_weather, book_table.',
        True,
        result.started_at,
        result.finished_at,
    )


@pytest.mark.anyio
async def test_malformed_json_and_non_object_arguments() -> None:
    result = await run_one(get_weather, '{"city": "Paris"')
    assert result.is_error
    assert result.content.startswith("Error: arguments for get_weather are not valid JSON (")
    result = await run_one(get_weather, "[1, 2]")
    assert result.content == "Error: arguments for get_weather must be a JSON object, got array."


@pytest.mark.anyio
async def test_missing_extra_and_wrongly_typed_arguments() -> None:
    args = dict(GOOD_WEATHER_ARGS)
    del args["city"]
    result = await run_one(get_weather, {**args, "days": "3", "alerts": 1, "detail": "long", "mood": "x"})
    assert result.is_error
    assert result.content == (
        "Error: invalid arguments for get_weather: "
        'missing required argument "city"; '
        "\"days\" must be an integer, got string '3'; "
        '"alerts" must be a boolean, got integer 1; '
        "\"detail\" must be one of 'short', 'full', got 'long'; "
        'unexpected argument(s) "mood".'
    )
    result = await run_one(get_weather, {**GOOD_WEATHER_ARGS, "tags": ["ok", 2], "days": 2.5})
    assert result.content == (
        "Error: invalid arguments for get_weather: "
        '"days" must be an integer, got number 2.5; "tags[1]" must be a string, got integer 2.'
    )


@pytest.mark.anyio
async def test_cancellation_propagates_and_is_not_an_error_result() -> None:
    started = anyio.Event()
    outcome: list[object] = []

    @tool
    async def hang() -> str:
        """Hang."""
        started.set()
        await anyio.sleep_forever()
        return ""

    runner = ToolRunner([hang])

    async def call() -> None:
        outcome.append(await runner.run("c1", "hang", "{}"))

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await started.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert outcome == []


@pytest.mark.anyio
async def test_finish_policy_lets_the_tool_complete_after_cancel() -> None:
    started = anyio.Event()
    release = anyio.Event()
    results: list[ToolResult] = []

    @tool(on_cancel="finish")
    async def book() -> str:
        """Book."""
        started.set()
        await release.wait()
        return "booked"

    runner = ToolRunner([book])

    async def call() -> None:
        results.append(await runner.run("c1", "book", "{}"))

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await started.wait()
            scope.cancel()
            release.set()
    assert scope.cancelled_caught
    assert [(r.content, r.is_error) for r in results] == [("booked", False)]


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["cancel", "finish"])
async def test_sync_tool_cancel_policy(policy: Literal["cancel", "finish"]) -> None:
    started = anyio.Event()
    release = threading.Event()
    finished = threading.Event()
    results: list[ToolResult] = []

    @tool(on_cancel=policy)
    def charge_card() -> str:
        """Charge the card."""
        anyio.from_thread.run_sync(started.set)
        release.wait(10)
        finished.set()
        return "charged"

    runner = ToolRunner([charge_card])

    async def call() -> None:
        results.append(await runner.run("c1", "charge_card", "{}"))

    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await started.wait()
                scope.cancel()
                if policy == "finish":
                    release.set()
        assert scope.cancelled_caught
        if policy == "cancel":
            # The call was abandoned while its thread was still blocked: no result, no waiting for it.
            assert not finished.is_set()
            assert results == []
        else:
            assert finished.is_set()
            assert [(r.content, r.is_error) for r in results] == [("charged", False)]
    finally:
        release.set()


@pytest.mark.anyio
async def test_concurrent_calls_overlap() -> None:
    running = 0
    peak = 0

    @tool
    async def slow(n: int) -> int:
        """Sleep a little."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.2)
        running -= 1
        return n

    runner = ToolRunner([slow])
    results: dict[str, ToolResult] = {}

    async def call(i: int) -> None:
        results[f"c{i}"] = await runner.run(f"c{i}", "slow", json.dumps({"n": i}))

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(call, i)
    assert peak == 3
    assert {k: (r.content, r.is_error) for k, r in results.items()} == {
        "c0": ("0", False),
        "c1": ("1", False),
        "c2": ("2", False),
    }


@pytest.mark.anyio
async def test_logs_never_carry_argument_values_at_info(caplog: pytest.LogCaptureFixture) -> None:
    @tool
    def lookup(phone: str) -> str:
        """Find a customer."""
        return f"customer for {phone}"

    with caplog.at_level(logging.INFO, logger="voiceagent.tool_runner"):
        await run_one(lookup, {"phone": "+33612345678"})
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any("lookup" in r.getMessage() and "call_1" in r.getMessage() for r in info)
    assert all("+33612345678" not in r.getMessage() for r in info)
    with caplog.at_level(logging.DEBUG, logger="voiceagent.tool_runner"):
        await run_one(lookup, {"phone": "+33612345678"})
    assert any("+33612345678" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def test_duplicate_tool_names_are_rejected() -> None:
    with pytest.raises(ToolDefinitionError, match="two tools are named 'get_weather'"):
        ToolRunner([get_weather, get_weather])
