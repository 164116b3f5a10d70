"""Secrets never logged: turns with a distinctive API key, DEBUG on every logger, happy and error paths;
every captured record, formatted with its traceback, is searched for the key and for auth headers."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator

import pytest

from voiceagent import logs
from voiceagent.agent import Agent
from voiceagent.llm import LLMClient
from voiceagent.logs import REDACTED, RedactingFilter, redact, register_secret
from voiceagent.retry import RetryPolicy
from voiceagent.testing.openai_server import FakeOpenAIServer, error_reply, text_reply, tool_reply
from voiceagent.testing.sinks import RecordingSink
from voiceagent.tools import tool

KEY = "sk_live_SECRET123"
NOISY_LOGGERS = (
    "",
    "openai",
    "openai._base_client",
    "httpx2",
    "httpcore2",
    "httpx",
    "httpcore",
    "voiceagent",
)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    """Every record of every logger at DEBUG, as the root logger receives it (no filter of ours)."""
    handler = Capture()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def leaks(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    found = []
    for record in records:
        text = formatter.format(record) + repr(record.args) + str(record.msg)
        if KEY in text or "SECRET123" in text or "Bearer" in text or "authorization" in text.lower():
            found.append(text[:300])
    return found


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.mark.anyio
async def test_no_log_record_carries_the_api_key_or_an_auth_header(captured: Capture) -> None:
    @tool
    def lookup(order: str) -> str:
        """Look up an order."""
        raise RuntimeError("upstream said: invalid token")

    async with FakeOpenAIServer() as server:
        server.enqueue(
            tool_reply([("lookup", {"order": "A1"})], filler="One moment."),
            text_reply("It has shipped."),
            # Some servers echo the key they rejected: that must not reach a log line either.
            error_reply(401, f"Incorrect API key provided: {KEY}"),
            *[error_reply(503, "overloaded")] * 2,
        )
        retry = RetryPolicy(base_delay=0.001, max_delay=0.002, max_attempts=2)
        llm = LLMClient(base_url=server.base_url, api_key=KEY, retry=retry)
        agent = Agent(llm=llm, sink=RecordingSink(), system_prompt="Be brief.", tools=[lookup])
        first = await agent.respond("Where is my order?")
        rejected = await agent.respond("And now?")
        overloaded = await agent.respond("Still there?")
        await llm.aclose()
        # The key was really sent, so a leak would have had something to leak.
        assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"

    unreachable = LLMClient(base_url=refused_url(), api_key=KEY, retry=retry)
    refused = await Agent(llm=unreachable, sink=RecordingSink(), system_prompt="x").respond("hi")
    await unreachable.aclose()

    assert first.error is None and first.tool_calls[0].is_error
    assert rejected.error is not None and "401" in rejected.error
    assert overloaded.error is not None and "503" in overloaded.error
    assert refused.error is not None and "could not reach" in refused.error
    names = {r.name.split(".")[0] for r in captured.records}
    assert {"openai", "httpx2", "voiceagent"} <= names  # DEBUG really was on for the SDK's loggers
    assert any("401" in r.getMessage() and REDACTED in r.getMessage() for r in captured.records)
    assert leaks(captured.records) == []


def test_redact_patterns_and_registered_secrets() -> None:
    register_secret("AC0123456789abcdef-twilio-token")
    cases = {
        f"key {KEY} rejected": f"key {REDACTED} rejected",
        "Authorization: Bearer abc.DEF-123": f"Authorization: {REDACTED}",
        "headers={'authorization': 'Bearer sk-proj-AAAA1111'}": f"headers={{'authorization': '{REDACTED}'}}",
        '{"api_key": "zzz999"}': f'{{"api_key": "{REDACTED}"}}',
        "token=AC0123456789abcdef-twilio-token&x=1": f"token={REDACTED}&x=1",
        "auth_token: s3cr3t": f"auth_token: {REDACTED}",
        "skip the sk-ip, ask a task": "skip the sk-ip, ask a task",
    }
    for raw, clean in cases.items():
        assert redact(raw) == clean


def test_redacting_filter_covers_args_and_tracebacks() -> None:
    record = logging.LogRecord(
        "openai", logging.DEBUG, __file__, 1, "headers %s", ({"Authorization": KEY},), None
    )
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert KEY not in text and "SECRET" not in text and REDACTED in text


def test_configure_installs_redaction_on_its_handler() -> None:
    voiceagent_logger = logging.getLogger("voiceagent")
    saved = (voiceagent_logger.handlers[:], voiceagent_logger.level)
    try:
        logs.configure(logging.DEBUG)
        handler = voiceagent_logger.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        out = io.StringIO()
        handler.setStream(out)
        # A plain logger (not get_logger): only the handler's filter stands between it and the output.
        logging.getLogger("voiceagent.someone_else").warning("sent Authorization: Bearer %s", KEY)
        assert "SECRET" not in out.getvalue() and f"Authorization: {REDACTED}" in out.getvalue()
    finally:
        voiceagent_logger.handlers[:], level = saved
        voiceagent_logger.setLevel(level)


TWILIO_TOKEN = "tw_authtoken_SECRET_7f3a9c"


@pytest.mark.anyio
async def test_twilio_auth_token_never_reaches_a_log_line(captured: Capture) -> None:
    """A rejected upgrade is logged; the token that checked it must not be, even if code logs it."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer
    from voiceagent.logs import get_logger

    async def handler(stream: TwilioMediaStream) -> None:
        await stream.wait_closed()

    public = "wss://bot.example.com/media"
    async with TwilioServer(handler, auth_token=TWILIO_TOKEN, public_url=public) as server:
        with pytest.raises(InvalidStatus):
            await connect(server.url, additional_headers={"X-Twilio-Signature": "bogus"})
    # The worst case: application code logging the token through a voiceagent logger.
    get_logger("voiceagent.app").warning("token in use: %s", TWILIO_TOKEN)
    texts = [logging.Formatter("%(message)s").format(r) for r in captured.records]
    assert any("[REDACTED]" in t for t in texts)
    assert not [t for t in texts if TWILIO_TOKEN in t]
