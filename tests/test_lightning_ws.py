from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from tests.audio_helpers import tone_power
from voiceagent import audio
from voiceagent.adapters.lightning import LightningSink, split_text
from voiceagent.adapters.lightning.fake import FakeLightningServer, flat_error, spec_error
from voiceagent.adapters.lightning.protocol import ErrorFrame, parse_frame
from voiceagent.audio_output import CollectingOutput
from voiceagent.errors import TTSError, TTSInterruptedError
from voiceagent.limiter import ConcurrencyLimiter
from voiceagent.testing.outputs import GatedOutput
from voiceagent.tts import TTSSink

pytestmark = pytest.mark.anyio


@pytest.fixture
def key() -> str:
    # A fresh key per test: the per-account limiter is process-wide.
    return f"key-{uuid.uuid4().hex}"


@pytest.fixture
async def server(key: str) -> AsyncIterator[FakeLightningServer]:
    async with FakeLightningServer(api_key=key, extra_keys=(key + "-b",)) as server:
        yield server


def make_sink(server: FakeLightningServer, key: str, output: Any = None, **kwargs: Any) -> LightningSink:
    kwargs.setdefault("keepalive_interval", None)
    return LightningSink(
        output if output is not None else CollectingOutput(16000),
        api_key=key,
        voice_id="magnus",
        url=server.ws_url,
        **kwargs,
    )


def requests(server: FakeLightningServer) -> list[dict[str, Any]]:
    return [m for m in server.messages if m.get("text", "").strip() or m.get("flush")]


async def test_speaks_incrementally_then_flushes(server: FakeLightningServer, key: str) -> None:
    out = CollectingOutput(16000)
    async with make_sink(server, key, out, model="lightning_v3.1_pro", speed=1.25) as sink:
        as_protocol: TTSSink = sink
        assert isinstance(as_protocol, TTSSink)
        await sink.speak("Hello there.")
        await sink.speak("How are you today?")
        await sink.flush()
    upgrade = server.upgrades[0]
    assert upgrade.headers["authorization"] == f"Bearer {key}"
    assert upgrade.path == "/waves/v1/tts/live"
    msgs = server.messages
    assert [(m["text"], m.get("continue"), m.get("flush")) for m in msgs] == [
        ("Hello there.", True, None),
        ("", None, True),
        ("How are you today?", True, None),
        ("", None, True),
    ]
    assert all(m["model"] == "lightning_v3.1_pro" and m["voice_id"] == "magnus" for m in msgs)
    assert all(m["sample_rate"] == 16000 and m["speed"] == 1.25 for m in msgs)
    # the audio is exactly what the server synthesized, in order
    assert out.pcm16 == b"".join(u.pcm16 for u in server.utterances)
    assert [c.text_span for c in out.chunks if c.text_span] == ["Hello there.", "How are you today?"]
    assert [t.text for t in sink.ttfb] == ["Hello there.", "How are you today?"]
    assert sink.played_chars == len("Hello there.") + len("How are you today?")
    assert [s.audio_seconds for s in sink.spoken_spans] == pytest.approx(
        [server.seconds_for("Hello there."), server.seconds_for("How are you today?")]
    )
    assert sink.request_ids == ["req-1", "req-2"]
    assert server.connections_opened == 1  # one socket reused


async def test_resamples_when_the_output_rate_is_not_a_lightning_rate(
    server: FakeLightningServer, key: str
) -> None:
    out = CollectingOutput(22050)
    async with make_sink(server, key, out) as sink:
        await sink.speak("Resample me please.")
    assert server.messages[0]["sample_rate"] == 24000
    assert abs(out.written_seconds - server.seconds_for("Resample me please.")) < 0.01
    assert tone_power(out.pcm16, 22050, 440) > 100 * tone_power(out.pcm16, 22050, 1500)


async def test_text_over_250_chars_is_split(server: FakeLightningServer, key: str) -> None:
    text = "This is one sentence of a long answer. " * 12
    async with make_sink(server, key) as sink:
        await sink.speak(text)
    texts = [m["text"] for m in server.messages if m.get("continue")]
    assert len(texts) == 2 and all(len(t) <= 250 for t in texts)
    assert "".join(texts) == text
    assert sink.played_chars == len(text)
    assert split_text("a" * 251) == ["a" * 250, "a"]


async def test_word_timestamps(server: FakeLightningServer, key: str) -> None:
    async with make_sink(server, key, word_timestamps=True) as sink:
        await sink.speak("one two three four five six seven eight nine ten eleven")
    assert server.messages[0]["word_timestamps"] is True
    assert [w.word for w in sink.word_timestamps][:3] == ["one", "two", "three"]
    assert all(w.end > w.start for w in sink.word_timestamps)


@pytest.mark.parametrize(
    ("frame", "message", "code"),
    [
        (spec_error("Voice not found", "VOICE_NOT_FOUND"), "Voice not found", "VOICE_NOT_FOUND"),
        (flat_error("Something broke"), "Something broke", None),
    ],
)
async def test_error_frames_of_both_shapes(
    server: FakeLightningServer, key: str, frame: dict[str, Any], message: str, code: str | None
) -> None:
    out = CollectingOutput(16000)
    async with make_sink(server, key, out) as sink:
        server.fail_next(frame)
        with pytest.raises(TTSError) as info:
            await sink.speak("This fails.")
        assert info.value.message == f"Lightning: {message}" and info.value.code == code
        assert sink.played_chars == 0 and out.chunks == []
        await sink.speak("This works.")
    assert sink.played_chars == len("This works.")


def test_parse_frame_shapes() -> None:
    assert parse_frame('{"status":"error","error":{"message":"m","code":42}}') == ErrorFrame("m", "42")
    idle = parse_frame('{"status":"error","message":"Connection timed out after 60 seconds of inactivity"}')
    assert isinstance(idle, ErrorFrame) and idle.is_idle_timeout
    with pytest.raises(TTSError, match="not JSON"):
        parse_frame("<html>")
    with pytest.raises(TTSError, match="base64"):
        parse_frame('{"status":"chunk","data":{"audio":"***"}}')


async def test_idle_timeout_then_reconnect(server: FakeLightningServer, key: str) -> None:
    async with make_sink(server, key, idle_timeout=120) as sink:
        assert server.upgrades[0].path == "/waves/v1/tts/live?timeout=120"
        await sink.speak("Before the timeout.")
        assert await server.expire_idle() == 1
        await server.wait_until(lambda: server.connections_closed == 1)
        await sink.speak("After the timeout.")
    assert server.connections_opened == 2
    assert [u.text for u in server.utterances] == ["Before the timeout.", "After the timeout."]
    assert sink.played_chars == len("Before the timeout.") + len("After the timeout.")


async def test_the_server_really_times_out_idle_sockets(server: FakeLightningServer, key: str) -> None:
    # ?timeout is honoured by the fake; the sink notices the closed socket and reconnects
    async with make_sink(server, key, idle_timeout=1) as sink:
        await server.wait_until(lambda: server.connections_closed == 1)
        await sink.speak("Reconnected.")
    assert server.connections_opened == 2 and sink.played_chars == len("Reconnected.")


async def test_server_closing_after_complete(server: FakeLightningServer, key: str) -> None:
    server.close_after_complete = True
    async with make_sink(server, key) as sink:
        for text in ["One.", "Two.", "Three."]:
            await sink.speak(text)
    assert server.connections_opened == 3
    assert [u.text for u in server.utterances] == ["One.", "Two.", "Three."]
    assert sink.played_chars == len("One.Two.Three.")


async def test_drop_before_any_audio_is_retried(server: FakeLightningServer, key: str) -> None:
    out = CollectingOutput(16000)
    async with make_sink(server, key, out) as sink:
        server.drop_next(after_chunks=0)
        await sink.speak("Retried transparently.")
    assert server.connections_opened == 2
    assert out.pcm16 == server.utterances[-1].pcm16  # no duplicated or partial audio
    assert sink.played_chars == len("Retried transparently.")


async def test_drop_mid_utterance_is_an_error_not_a_repeat(server: FakeLightningServer, key: str) -> None:
    out = CollectingOutput(16000)
    text = "A long sentence that the server drops in the middle of."
    async with make_sink(server, key, out) as sink:
        server.drop_next(after_chunks=2)
        with pytest.raises(TTSInterruptedError, match="mid-utterance"):
            await sink.speak(text)
        assert len(out.chunks) == 2  # what arrived was delivered, nothing was resent
        [span] = sink.spoken_spans
        assert 0 < span.audio_seconds < server.seconds_for(text)
        assert 0 < sink.played_chars < len(text)
        await sink.speak("Next.")
    assert server.connections_opened == 2
    assert sink.spoken_spans[-1].text == "Next." and sink.spoken_spans[-1].fully_played


async def test_slow_first_byte_then_ttfb_recorded(server: FakeLightningServer, key: str) -> None:
    server.first_byte_gate = anyio.Event()
    out = CollectingOutput(16000)
    async with make_sink(server, key, out) as sink:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, "Slow to start.")
            await server.wait_until(lambda: server.requests_started == 1)
            await anyio.wait_all_tasks_blocked()
            assert out.chunks == [] and sink.ttfb == []
            server.first_byte_gate.set()
    assert len(sink.ttfb) == 1 and sink.ttfb[0].text == "Slow to start." and sink.ttfb[0].seconds > 0


async def test_cancel_during_slow_first_byte_closes_and_reconnects(
    server: FakeLightningServer, key: str
) -> None:
    server.first_byte_gate = anyio.Event()
    out = CollectingOutput(16000)
    async with make_sink(server, key, out) as sink:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, "Interrupted before it began.")
            await server.wait_until(lambda: server.requests_started == 1)
            await sink.cancel()
        # barge-in: the socket was closed (no cancel message exists) and a new one opened
        await server.wait_until(lambda: server.closed_by_client == 1 and server.connections_opened == 2)
        assert sink.played_chars == 0 and sink.spoken_spans == [] and out.clears == 1
        server.first_byte_gate.set()
        await sink.speak("Next turn.")
    assert sink.played_chars == len("Next turn.")
    assert server.concurrency_violations == 0


async def test_cancel_mid_stream_keeps_only_what_played(server: FakeLightningServer, key: str) -> None:
    out = GatedOutput(16000, free_writes=3, auto_play=False)
    text = "We were talking about the weather in Paris when you interrupted."
    async with make_sink(server, key, out) as sink:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, text)
            await out.blocked.wait()
            out.play(out.written_seconds / 2)
            await sink.cancel()
            out.release()
        await server.wait_until(lambda: server.closed_by_client == 1)
        heard = sink.played_chars
        [span] = sink.spoken_spans
        assert span.played_seconds == pytest.approx(out.written_seconds)
        assert 0 <= heard < len(text) and (heard == 0 or text[heard] == " ")
        await sink.speak("Sorry, go on.")
        out.play()
    assert sink.played_chars == heard + len("Sorry, go on.")


async def test_upgrade_rejected_with_429(server: FakeLightningServer, key: str) -> None:
    server.reject_status = 429
    with pytest.raises(TTSError) as info:
        async with make_sink(server, key):
            pass
    assert info.value.status_code == 429 and "Too many requests" in str(info.value)


async def test_bad_key_is_401(server: FakeLightningServer, key: str) -> None:
    with pytest.raises(TTSError) as info:
        async with make_sink(server, "wrong-key"):
            pass
    assert info.value.status_code == 401 and "Invalid API key" in info.value.message


async def test_unreachable_server_is_a_clear_error(key: str) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    sink = LightningSink(CollectingOutput(16000), api_key=key, voice_id="v", url=f"ws://127.0.0.1:{port}/x")
    with pytest.raises(TTSError, match="cannot connect to Lightning"):
        async with sink:
            pass


async def test_speak_outside_async_with_is_a_clear_error(server: FakeLightningServer, key: str) -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await make_sink(server, key).speak("hello")


def test_bad_options() -> None:
    out = CollectingOutput(16000)
    with pytest.raises(ValueError, match="unknown Lightning model"):
        LightningSink(out, api_key="k", voice_id="v", model="lightning-v2")
    with pytest.raises(ValueError, match="sample_rate"):
        LightningSink(out, api_key="k", voice_id="v", sample_rate=22050)
    with pytest.raises(ValueError, match="speed"):
        LightningSink(out, api_key="k", voice_id="v", speed=3)


async def test_keepalive_when_quiet(server: FakeLightningServer, key: str) -> None:
    async with make_sink(server, key, keepalive_interval=0.01) as sink:
        with anyio.fail_after(10):
            await server.wait_until(lambda: server.keepalives >= 2)
        await sink.speak("Still here.")
    keepalive = next(m for m in server.messages if m["text"] == " ")
    # Pipecat's shape, without `continue`: the fake (like the service, UNCONFIRMED) answers `complete`
    assert keepalive == {"text": " ", "voice_id": "magnus", "model": "lightning_v3.1", "language": "en"}
    assert sink.keepalives_sent >= 2 and server.connections_opened == 1
    assert [u.text.strip() for u in server.utterances] == ["Still here."]


async def test_one_request_in_flight_per_account(server: FakeLightningServer, key: str) -> None:
    server.first_byte_gate = anyio.Event()
    outs = [CollectingOutput(16000), CollectingOutput(16000)]
    async with make_sink(server, key, outs[0]) as first, make_sink(server, key, outs[1]) as second:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.speak, "First caller.")
            await server.wait_until(lambda: server.requests_started == 1)
            tg.start_soon(second.speak, "Second caller.")
            await anyio.wait_all_tasks_blocked()
            # the second sink waits for the account slot instead of sending and getting an error
            assert len(requests(server)) == 2  # the first request's text and flush only
            server.first_byte_gate.set()
    assert server.max_in_flight == 1 and server.concurrency_violations == 0
    assert first.played_chars == len("First caller.") and second.played_chars == len("Second caller.")


async def test_without_the_shared_limiter_the_server_refuses(server: FakeLightningServer, key: str) -> None:
    # proves the fake enforces the limit, so the test above can fail
    server.first_byte_gate = anyio.Event()
    a = make_sink(server, key, limiter=ConcurrencyLimiter(1))
    b = make_sink(server, key, limiter=ConcurrencyLimiter(1))
    async with a, b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.speak, "First caller.")
            await server.wait_until(lambda: server.requests_started == 1)
            with pytest.raises(TTSError, match="Concurrency limit"):
                await b.speak("Second caller.")
            server.first_byte_gate.set()
    assert server.concurrency_violations == 1


async def test_different_accounts_run_concurrently(server: FakeLightningServer, key: str) -> None:
    server.first_byte_gate = anyio.Event()
    async with make_sink(server, key) as a, make_sink(server, key + "-b") as b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.speak, "Account A.")
            tg.start_soon(b.speak, "Account B.")
            await server.wait_until(lambda: server.requests_started == 2)
            server.first_byte_gate.set()
    assert a.played_chars == len("Account A.") and b.played_chars == len("Account B.")


async def test_audio_is_real_pcm(server: FakeLightningServer, key: str) -> None:
    out = CollectingOutput(8000)
    async with make_sink(server, key, out) as sink:
        await sink.speak("Tone check for the phone line.")
    assert tone_power(out.pcm16, 8000, 440) > 100 * tone_power(out.pcm16, 8000, 1500)
    assert len(audio.pcm16_to_twilio(out.pcm16, 8000)) == len(out.pcm16) // 2


async def test_cancel_between_utterances_keeps_the_socket(server: FakeLightningServer, key: str) -> None:
    async with make_sink(server, key) as sink:
        await sink.speak("Done speaking.")
        await sink.cancel()
        await sink.speak("Same socket.")
        assert server.connections_opened == 1 and server.closed_by_client == 0


async def test_missing_complete_ends_the_text_and_replaces_the_socket(
    server: FakeLightningServer, key: str
) -> None:
    server.omit_complete = True
    # One audio frame per text: once it is in, the missing `complete` is all that is left to wait for, so
    # the short timeout is the only way out and never races the audio on a loaded machine.
    server.chunk_seconds = 60.0
    out = CollectingOutput(16000)
    async with make_sink(server, key, out, complete_timeout=0.2) as sink:
        await sink.speak("No complete follows.")
        assert out.pcm16 == server.utterances[0].pcm16
        server.omit_complete = False
        sink.engine.complete_timeout = 30.0  # the healthy request gets a generous margin
        await sink.speak("Fresh socket.")
    assert server.connections_opened == 2
    assert sink.played_chars == len("No complete follows.") + len("Fresh socket.")


async def test_no_audio_at_all_is_an_error(server: FakeLightningServer, key: str) -> None:
    server.first_byte_gate = anyio.Event()
    async with make_sink(server, key, first_byte_timeout=0.2) as sink:
        with pytest.raises(TTSError, match="no audio within"):
            await sink.speak("Stuck server.")  # the gate is shut: the timeout is the only way out
        server.first_byte_gate.set()
        sink.engine.first_byte_timeout = 30.0  # the healthy request gets a generous margin
        await sink.speak("Working again.")
    assert sink.played_chars == len("Working again.") and server.connections_opened == 2


async def test_a_late_keepalive_answer_is_not_taken_for_the_requests_complete(
    server: FakeLightningServer, key: str
) -> None:
    server.hold_keepalive_replies = True  # each keepalive's `complete` arrives just before the next audio
    out = CollectingOutput(16000)
    async with make_sink(server, key, out, keepalive_interval=0.01) as sink:
        with anyio.fail_after(10):
            await server.wait_until(lambda: server.keepalives >= 2)
            await sink.speak("Heard in full.")
    assert out.pcm16 == server.utterances[0].pcm16
    assert sink.played_chars == len("Heard in full.")


# ---- default voice and the start-up voice check ----------------------------------------------------


@pytest.mark.parametrize(("model", "voice"), [("lightning_v3.1", "magnus"), ("lightning_v3.1_pro", "meher")])
async def test_the_default_voice_is_a_documented_voice_of_the_model(
    server: FakeLightningServer, key: str, model: str, voice: str
) -> None:
    sink = LightningSink(
        CollectingOutput(16000), api_key=key, model=model, url=server.ws_url, keepalive_interval=None
    )
    async with sink:
        await sink.speak("Default voice.")
    assert {m["voice_id"] for m in server.messages} == {voice}
    assert len(server.voice_lookups) == 1 and server.voice_lookups[0]["authorization"] == f"Bearer {key}"


async def test_an_unknown_voice_fails_at_start_up_before_any_socket(
    server: FakeLightningServer, key: str
) -> None:
    with pytest.raises(TTSError, match="no voice 'emily'") as info:
        async with LightningSink(CollectingOutput(16000), api_key=key, voice_id="emily", url=server.ws_url):
            pass
    assert info.value.code == "UNKNOWN_VOICE" and server.connections_opened == 0
    async with LightningSink(
        CollectingOutput(16000), api_key=key, voice_id="emily", url=server.ws_url, check_voice=False
    ) as sink:  # opted out: the voice goes to the service as given
        await sink.speak("Unchecked.")
    assert len(server.voice_lookups) == 1


async def test_cloned_voices_are_not_looked_up_and_the_catalog_is_fetched_once(
    server: FakeLightningServer, key: str
) -> None:
    async with LightningSink(CollectingOutput(16000), api_key=key, voice_id="voice_Ab12", url=server.ws_url):
        pass
    assert server.voice_lookups == []
    for _ in range(2):
        async with make_sink(server, key):
            pass
    assert len(server.voice_lookups) == 1  # shared by the sinks of one process (cached)


async def test_an_unreachable_catalog_is_logged_not_fatal(
    server: FakeLightningServer, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    async with make_sink(server, key, voices_url=f"http://127.0.0.1:{port}/x/get_voices") as sink:
        await sink.speak("Spoken anyway.")
    assert sink.played_chars == len("Spoken anyway.")
    assert "not checked" in caplog.text


async def test_a_voice_not_tagged_with_the_language_is_a_warning(
    server: FakeLightningServer, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_sink(server, key, language="hi"):
        pass
    assert "tagged english, not hindi" in caplog.text
    caplog.clear()
    async with make_sink(server, key, language="auto"):
        pass
    assert "tagged" not in caplog.text


# ---- barge-in: the reconnect is off the next turn's path --------------------------------------------


async def test_cancel_does_not_wait_for_the_old_sockets_close(server: FakeLightningServer, key: str) -> None:
    server.first_byte_gate = anyio.Event()
    sink_ref: list[LightningSink] = []

    class ClearProbe(CollectingOutput):
        closed_at_clear: int | None = None

        async def clear(self) -> None:
            self.closed_at_clear = sink_ref[0].retired_sockets_closed
            await super().clear()

    out = ClearProbe(16000)
    async with make_sink(server, key, out) as sink:
        sink_ref.append(sink)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, "Interrupted.")
            await server.wait_until(lambda: server.requests_started == 1)
            server.freeze_reads()  # the old socket's close handshake cannot finish
            await sink.cancel()
        # the output was cleared while the old socket was still closing, and a new one is already up
        assert out.closed_at_clear == 0 and out.clears == 1
        await server.wait_until(lambda: server.connections_opened == 2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, "Next turn.")
            await anyio.wait_all_tasks_blocked()
            # one request per account: the next one waits until the old socket is gone
            assert server.requests_started == 1
            server.thaw_reads()
            server.first_byte_gate.set()
    assert sink.retired_sockets_closed == 1 and sink.played_chars == len("Next turn.")
    assert server.concurrency_violations == 0 and server.closed_by_client == 2  # the old one, then at exit


async def test_cancel_request_option_sends_livekits_cancel_on_the_old_socket(
    server: FakeLightningServer, key: str
) -> None:
    server.first_byte_gate = anyio.Event()
    async with make_sink(server, key, cancel_request=True) as sink:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.speak, "Interrupted.")
            await server.wait_until(lambda: server.requests_started == 1)
            await sink.cancel()
        await server.wait_until(lambda: server.closed_by_client == 1)
        server.first_byte_gate.set()
        await sink.speak("Next turn.")
    first_flush = next(m for m in server.messages if m.get("flush"))
    [cancel] = server.cancels
    assert cancel["cancel_request"] is True and cancel["context_id"] == first_flush["context_id"]
    assert server.cancelled_syntheses == 1 and sink.cancel_requests_sent == 1
    contexts = {m["context_id"] for m in server.messages if m.get("flush")}
    assert len(contexts) == 2  # one context per request
    assert sink.played_chars == len("Next turn.") and server.concurrency_violations == 0


async def test_without_the_option_no_context_id_is_sent(server: FakeLightningServer, key: str) -> None:
    async with make_sink(server, key) as sink:
        await sink.speak("Plain protocol.")
    assert all("context_id" not in m and "cancel_request" not in m for m in server.messages)
