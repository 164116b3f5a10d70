from __future__ import annotations

import enum
import json
import logging
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, TypedDict

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


async def run_one(t: Tool, arguments: str | dict[str, object], **kw: Any) -> ToolResult:
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


# ---- hardening: thread budget, any BaseException, result size, JSON, redaction ---------------------

GATE_TIMEOUT = 10.0  # a generous bound: only reached when the behaviour under test is broken


@tool
def hello() -> str:
    """Say hello."""
    return "hello"


@pytest.mark.anyio
async def test_one_calls_stuck_sync_tools_do_not_delay_another_calls_instant_tool() -> None:
    """40 sync tools of one call stuck in threads (anyio's process-wide default is 40 threads): another
    call's instant sync tool still runs at once, from its own runner's budget."""
    release = threading.Event()
    lock = threading.Lock()
    started = 0
    budget_full = anyio.Event()

    @tool(timeout=60)
    def stuck() -> str:
        """Block on an upstream that never answers."""
        nonlocal started
        with lock:
            started += 1
            if started == busy_call.max_threads:
                anyio.from_thread.run_sync(budget_full.set)
        release.wait(GATE_TIMEOUT * 3)
        return "late"

    @tool
    def instant() -> str:
        """Answer at once."""
        return "now"

    busy_call, other_call = ToolRunner([stuck]), ToolRunner([instant])
    results: list[ToolResult] = []

    async def run_stuck(i: int) -> None:
        results.append(await busy_call.run(f"a{i}", "stuck", "{}"))

    try:
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(run_stuck, i)
            with anyio.fail_after(GATE_TIMEOUT):
                await budget_full.wait()  # the busy call's whole budget is stuck
                other = await other_call.run("b1", "instant", "{}")
            assert other.content == "now" and not other.is_error
            assert started == busy_call.max_threads  # the budget held: no 9th thread for the busy call
            release.set()
    finally:
        release.set()
    assert len(results) == 40 and all(r.content == "late" for r in results)  # the queued ones ran too


class Fatal(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True], ids=["thread", "async"])
@pytest.mark.parametrize("exc", [SystemExit(2), KeyboardInterrupt(), Fatal("boom")], ids=repr)
async def test_any_base_exception_from_a_tool_is_an_error_result(is_async: bool, exc: BaseException) -> None:
    def fail() -> str:
        raise exc

    async def fail_async() -> str:
        raise exc

    t = tool(name="cli", description="Run argparse.")(fail_async if is_async else fail)
    result = await run_one(t, "{}")
    assert result.is_error and result.content.startswith(f"Error: cli failed: {type(exc).__name__}")


@pytest.mark.anyio
async def test_a_tool_raising_cancelled_error_by_itself_is_an_error_result() -> None:
    @tool
    async def flaky() -> str:
        """Call a client library that leaks its own cancellation."""
        raise anyio.get_cancelled_exc_class()()

    result = await run_one(flaky, "{}")
    assert result.is_error and "CancelledError" in result.content
    # The runner, and the task, go on as usual afterwards.
    await anyio.lowlevel.checkpoint()
    assert (await run_one(hello, "{}")).content == "hello"


@pytest.mark.anyio
async def test_a_real_cancellation_during_a_tool_that_swallows_and_reraises_still_propagates() -> None:
    started = anyio.Event()

    @tool
    async def wrapper() -> str:
        """Re-raise a cancellation as a fresh CancelledError, as some client libraries do."""
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            raise anyio.get_cancelled_exc_class()() from None
        return ""

    runner = ToolRunner([wrapper])
    outcome: list[ToolResult] = []
    with anyio.fail_after(GATE_TIMEOUT):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    outcome.append(await runner.run("c1", "wrapper", "{}"))

                tg.start_soon(call)
                await started.wait()
                scope.cancel()
    assert scope.cancelled_caught and outcome == []


@pytest.mark.anyio
async def test_a_huge_result_is_cut_with_a_note() -> None:
    @tool
    def dump() -> str:
        """Return everything."""
        return "x" * 10_000_000

    result = await run_one(dump, "{}", max_result_chars=1000)
    assert not result.is_error and result.content.startswith("x" * 1000)
    assert result.content[1000:] == (
        "\n[truncated: the tool returned 10,000,000 characters; only the first 1,000 are shown]"
    )
    default = await run_one(dump, "{}")
    assert default.content.startswith("x" * 16_000) and "only the first 16,000" in default.content
    assert (await run_one(hello, "{}", max_result_chars=5)).content == "hello"  # at the cap: kept whole


@pytest.mark.anyio
async def test_nan_and_infinity_in_a_result_still_give_valid_json() -> None:
    @dataclass
    class Reading:
        temp: float
        history: list[float]

    @tool
    def sensor() -> dict[str, object]:
        """Read the sensor."""
        return {"now": Reading(float("nan"), [1.5, float("inf"), -float("inf")]), "ok": True}

    result = await run_one(sensor, "{}")

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    assert not result.is_error
    assert json.loads(result.content, parse_constant=refuse) == {
        "now": {"temp": None, "history": [1.5, None, None]},
        "ok": True,
    }


@pytest.mark.anyio
async def test_tool_error_text_sent_to_the_model_is_redacted() -> None:
    from voiceagent.logs import REDACTED, register_secret

    token = "f3a9c0d1e2b34567a8b9c0d1e2f3a4b5"  # a Twilio auth token: 32 hex digits, no prefix
    register_secret(token)
    sid = "AC" + "0123456789abcdef" * 2

    @tool
    def send_sms(to: str) -> str:
        """Send a text message."""
        raise ConnectionError(
            f"POST https://{sid}:{token}@api.twilio.com/2010-04-01 failed; sk_live_ABCDEF12"
        )

    @tool
    def whoami() -> str:
        """Say which account this is."""
        return f"account {sid}, token {token}"

    result = await run_one(send_sms, {"to": "+33612345678"})
    assert result.is_error and token not in result.content and sid not in result.content
    assert "sk_live_ABCDEF12" not in result.content and "api.twilio.com" in result.content
    assert REDACTED in result.content
    ok = await run_one(whoami, "{}")
    # A successful result is data: only registered secrets are replaced there, never a mere shape.
    assert ok.content == f"account {sid}, token {REDACTED}"
