"""Secrets never logged: turns with a distinctive API key, DEBUG on every logger, happy and error paths;
every captured record, formatted with its traceback, is searched for the key and for auth headers."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fast_retry
from voiceagent import logs
from voiceagent.agent import Agent
from voiceagent.llm import LLMClient, ReadPath
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
@pytest.mark.parametrize("read_path", ["auto", "sdk"])
async def test_no_log_record_carries_the_api_key_or_an_auth_header(
    captured: Capture, read_path: ReadPath
) -> None:
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
        retry = fast_retry(max_attempts=2)
        llm = LLMClient(base_url=server.base_url, api_key=KEY, retry=retry, read_path=read_path)
        agent = Agent(llm=llm, sink=RecordingSink(), system_prompt="Be brief.", tools=[lookup])
        first = await agent.respond("Where is my order?")
        rejected = await agent.respond("And now?")
        overloaded = await agent.respond("Still there?")
        await llm.aclose()
        # The key was really sent, so a leak would have had something to leak.
        assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"

    unreachable = LLMClient(base_url=refused_url(), api_key=KEY, retry=retry, read_path=read_path)
    refused = await Agent(llm=unreachable, sink=RecordingSink(), system_prompt="x").respond("hi")
    await unreachable.aclose()

    assert first.error is None and first.tool_calls[0].is_error
    assert rejected.error is not None and "401" in rejected.error
    assert overloaded.error is not None and "503" in overloaded.error
    assert refused.error is not None and "could not reach" in refused.error
    names = {r.name.split(".")[0] for r in captured.records}
    # DEBUG really was on for the SDK's loggers (its HTTP stack logs only on its own read path).
    assert ({"openai", "httpx2", "voiceagent"} if read_path == "sdk" else {"voiceagent"}) <= names
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


# ---- secrets in cassettes, results, round records and what the model reads ------------------------

TW_TOKEN = "9c1f0e7d2b3a4c5d6e7f8091a2b3c4d5"  # Twilio auth tokens are 32 hex digits: no shape to spot
TW_SID = "AC" + "5f" * 16
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.mark.anyio
async def test_a_recorded_session_holds_no_registered_secret_or_token_shape(tmp_path: Path) -> None:
    """A Twilio token given to register_secret, and token shapes nobody registered, reach every place a
    cassette records: the prompt, a tool's exception, the stream, an HTTP error body. None is written;
    the error strings of the result and its round records, and the tool error the model reads, neither."""
    from voiceagent.replay.cassette import Cassette, CassetteWriter
    from voiceagent.replay.recorder import Recorder

    register_secret(TW_TOKEN)
    url = f"https://{TW_SID}:{TW_TOKEN}@api.twilio.com/2010-04-01/Accounts/{TW_SID}/Messages.json"

    @tool
    def send_sms(to: str) -> str:
        """Text the caller."""
        raise ConnectionError(f"POST {url} failed")

    # Streamed a word per chunk: each token is whole in its chunk (see docs/reliability.md on split ones).
    leaky_words = f"Your key {AWS_KEY} and eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlXyQ are safe."
    async with FakeOpenAIServer() as server:
        server.enqueue(
            tool_reply([("send_sms", {"to": "+33612345678"})], filler="One moment."),
            text_reply(leaky_words),
            error_reply(401, f"Incorrect API key provided: {KEY}; account {TW_SID} token {TW_TOKEN}"),
        )
        llm = LLMClient(base_url=server.base_url, api_key=KEY, retry=RetryPolicy(max_attempts=1))
        agent = Agent(
            llm=llm,
            sink=RecordingSink(),
            system_prompt=f"You work for account {TW_SID} (auth token {TW_TOKEN}).",
            tools=[send_sms],
        )
        path = tmp_path / "session.jsonl"
        with CassetteWriter(path) as writer:
            recorder = Recorder(writer)
            recorder.attach(agent)
            first = await recorder.respond(agent, "Text me the details.")
            rejected = await recorder.respond(agent, "Again?")
        await llm.aclose()
        tool_message = server.requests[1].body["messages"][-1]

    text = path.read_text()
    cassette = Cassette.load(path)
    assert cassette.tools and cassette.turns and len(cassette.exchanges) == 3  # it all was recorded
    for secret in (TW_TOKEN, TW_SID, AWS_KEY, KEY, "eyJzdWIiOiIx", "SECRET123"):
        assert secret not in text, secret
    assert REDACTED in text and "api.twilio.com" in text
    # What the model read of the tool's failure, and the errors the app sees.
    assert tool_message["role"] == "tool" and "ConnectionError" in tool_message["content"]
    assert TW_TOKEN not in tool_message["content"] and TW_SID not in tool_message["content"]
    assert first.tool_calls[0].is_error and TW_TOKEN not in first.tool_calls[0].result
    assert rejected.error is not None and "401" in rejected.error
    for error in (rejected.error, *(r.error or "" for r in rejected.rounds)):
        assert KEY not in error and TW_TOKEN not in error and TW_SID not in error and REDACTED in error


def test_redact_knows_common_token_shapes_and_leaves_digests_alone() -> None:
    digest = "ac" + "0f" * 31  # a sha256 digest (lowercase) that begins like a Twilio SID
    cases = {
        f"sid {TW_SID}.": f"sid {REDACTED}.",
        f"id {AWS_KEY}": f"id {REDACTED}",
        "https://bob:hunter2@example.com/x": f"https://{REDACTED}@example.com/x",
        "redis://:pw123456@10.0.0.1:6379/0": f"redis://{REDACTED}@10.0.0.1:6379/0",
        "Authorization: Basic dXNlcjpwYXNz": f"Authorization: {REDACTED}",
        "?token=abc123&page=2": f"?token={REDACTED}&page=2",
        "password: hunter2": f"password: {REDACTED}",
        "ghp_" + "a" * 36: REDACTED,
        "xoxb-1234567890-abcdef": REDACTED,
        digest: digest,
        "prompt_tokens=10 completion_tokens=5": "prompt_tokens=10 completion_tokens=5",
        "https://example.com/a:b@c": "https://example.com/a:b@c",  # no credentials before the host
    }
    for raw, clean in cases.items():
        assert redact(raw) == clean, raw


def test_secrets_in_the_environment_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    from voiceagent.logs import register_env_secrets

    token = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", token)
    monkeypatch.setenv("VOICEAGENT_TEST_DEBUG", "verbose-enough")  # not named like a secret: kept
    assert register_env_secrets() >= 1
    assert redact(f"401 for {token}: verbose-enough") == f"401 for {REDACTED}: verbose-enough"


@pytest.mark.anyio
async def test_a_secret_the_model_streams_split_over_chunks_is_masked_in_every_chunk(tmp_path: Path) -> None:
    """The model repeats a registered token from its prompt, and a Bearer credential, a few characters per
    chunk, and passes the token to a tool in argument fragments: no piece of either reaches the cassette,
    and the recorded chunks still join into the (redacted) answer."""
    from voiceagent.replay.cassette import Cassette, CassetteWriter
    from voiceagent.replay.recorder import Recorder

    register_secret(TW_TOKEN)

    @tool
    def send(token: str) -> str:
        """Send it."""
        return "sent"

    answer = f"Your token is {TW_TOKEN} and the header is Bearer abcDEF123456ghiJKL789 okay."
    async with FakeOpenAIServer() as server:
        server.enqueue(
            tool_reply([("send", {"token": TW_TOKEN})], arg_pieces=9),
            text_reply(answer, pieces=len(answer) // 5),  # 5 characters a chunk
        )
        llm = LLMClient(base_url=server.base_url, api_key=KEY)
        agent = Agent(llm=llm, sink=RecordingSink(), system_prompt=f"Token {TW_TOKEN}.", tools=[send])
        path = tmp_path / "split.jsonl"
        with CassetteWriter(path) as writer:
            recorder = Recorder(writer)
            recorder.attach(agent)
            result = await recorder.respond(agent, "What is my token?")
        await llm.aclose()

    assert result.heard_text.endswith(answer)  # the caller heard the model: redaction is for records only
    assert TW_TOKEN not in path.read_text()
    exchanges = Cassette.load(path).exchanges

    def joined(n: int, field: str) -> str:
        deltas = [c.data["choices"][0].get("delta", {}) for c in exchanges[n].chunks if c.data.get("choices")]
        if field == "content":
            return "".join(d.get("content") or "" for d in deltas)
        return "".join(t["function"].get("arguments", "") for d in deltas for t in d.get("tool_calls", ()))

    # Each chunk alone holds only a few harmless characters; joined, the stream must still hold none.
    assert joined(1, "content") == f"Your token is {REDACTED} and the header is Bearer {REDACTED} okay."
    assert TW_TOKEN not in joined(0, "arguments") and REDACTED in joined(0, "arguments")
    assert exchanges[1].end is not None and exchanges[1].end.chunks == len(exchanges[1].chunks)


def test_split_secret_guard_masks_a_secret_wherever_the_stream_is_cut() -> None:
    from voiceagent.replay.cassette import ChunkRecord
    from voiceagent.replay.recorder import _SplitSecretGuard

    register_secret(TW_TOKEN)
    text = f"a {TW_TOKEN} b Bearer xyz123456 c"
    expected = f"a {REDACTED} b Bearer {REDACTED} c"

    def chunk(piece: str) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": {"content": piece}}]}

    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1, 3):
            written: list[ChunkRecord] = []
            guard = _SplitSecretGuard(written.append)
            pieces = [text[:i], text[i:j], text[j:]]
            for k, piece in enumerate(pieces):
                guard.add(ChunkRecord(1, float(k), chunk(piece)))
            guard.close()
            assert len(written) == 3 and [r.t for r in written] == [0.0, 1.0, 2.0]
            assert "".join(r.data["choices"][0]["delta"]["content"] for r in written) == expected, (i, j)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 40])
def test_split_secret_guard_on_a_long_stream_released_as_it_goes(size: int) -> None:
    from voiceagent.replay.cassette import ChunkRecord
    from voiceagent.replay.recorder import _SplitSecretGuard

    register_secret(TW_TOKEN)
    filler = "lorem ipsum dolor sit amet " * 4  # longer than the hold window: records are let go early
    text = f"{filler}{TW_TOKEN}{filler}Bearer xyz123456789 {filler}{AWS_KEY} {filler}end"
    expected = f"{filler}{REDACTED}{filler}Bearer {REDACTED} {filler}{REDACTED} {filler}end"
    written: list[ChunkRecord] = []
    guard = _SplitSecretGuard(written.append)
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    for k, piece in enumerate(pieces):
        guard.add(ChunkRecord(1, float(k), {"choices": [{"index": 0, "delta": {"content": piece}}]}))
        assert len(written) <= k + 1
    early = len(written)
    guard.close()
    assert 0 < early < len(pieces) == len(written)  # written as the stream went, all of it at the end
    assert "".join(r.data["choices"][0]["delta"]["content"] for r in written) == expected
