"""Property tests beyond test_accumulator.py / test_chunker.py: adversarial but structurally valid chunk
sequences for the DeltaAccumulator, the SpeechChunker flushed mid-stream (as a turn does when a tool
call starts), and Pulse's server messages checked against an independent reference parser."""

from __future__ import annotations

import itertools
import json
import math
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent.accumulator import DeltaAccumulator
from voiceagent.adapters.pulse import (
    PulseErrorMessage,
    PulseOtherMessage,
    PulseProtocolError,
    PulseSpeechEvent,
    PulseTranscript,
    parse_server_message,
)
from voiceagent.adapters.pulse.fake import error_message, speech_ended, speech_started, transcript
from voiceagent.adapters.pulse.messages import PulseMessage
from voiceagent.chunker import SpeechChunker, _MarkdownFilter
from voiceagent.events import StreamEvent, TextDelta, ToolCallReady, ToolCallStarted, Usage, UsageReported


def choice_chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if delta is not None:
        choice["delta"] = delta
    return {"id": "chatcmpl-x", "object": "chat.completion.chunk", "choices": [choice]}


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


def pieces(draw: st.DrawFn, text: str, max_cuts: int = 4) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=max_cuts)))
    return [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]


arguments = st.dictionaries(
    st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=6), st.booleans()), max_size=3
)


Stream = tuple[list[dict[str, Any]], str, list[tuple[str, dict[str, Any]]], bool]


@st.composite
def adversarial_stream(draw: st.DrawFn) -> Stream:
    """Content, the fragments of up to 4 parallel calls, usage and finish chunks, interleaved at random.

    Each call's own fragments stay in order (first the one with id and name); everything else (other
    calls, content, usage chunks) may come anywhere; ids may repeat or be missing. Finish chunks come
    anywhere too when ``finish_anywhere`` (drawn), else only at the end.
    """
    content = draw(st.text(max_size=40))
    calls = draw(st.lists(st.tuples(st.sampled_from(["f", "g", "h"]), arguments), max_size=4))
    streams: list[list[dict[str, Any]]] = [[choice_chunk({"content": p}) for p in pieces(draw, content)]]
    for index, (name, args) in enumerate(calls):
        call_id = draw(st.sampled_from([None, "", "dup", f"id{index}", "call_1"]))
        first: dict[str, Any] = {"index": index, "type": "function", "function": {"name": name}}
        if call_id is not None:
            first["id"] = call_id
        fragments = pieces(draw, json.dumps(args))
        first["function"]["arguments"] = fragments[0]
        own = [choice_chunk({"tool_calls": [first]})]
        own += [
            choice_chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]})
            for f in fragments[1:]
        ]
        streams.append(own)
    finish_anywhere = draw(st.booleans())
    finishes = [choice_chunk(None, "stop"), choice_chunk({}, "tool_calls")] if finish_anywhere else []
    extras = draw(
        st.lists(
            st.one_of(
                st.builds(usage_chunk, st.integers(0, 999), st.integers(0, 99)),
                st.sampled_from([*finishes, choice_chunk({})]),
            ),
            max_size=3,
        )
    )
    streams += [[e] for e in extras]
    merged: list[dict[str, Any]] = []
    while any(streams):
        live = [s for s in streams if s]
        merged.append(draw(st.sampled_from(live)).pop(0))
    if not finish_anywhere:
        merged.append(choice_chunk(None, "tool_calls" if calls else "stop"))
    return merged, content, calls, finish_anywhere


@settings(max_examples=400, deadline=None)
@given(adversarial_stream(), st.booleans())
def test_accumulator_on_adversarial_interleavings(stream: Stream, clean_end: bool) -> None:
    chunks, content, calls, finish_anywhere = stream
    acc = DeltaAccumulator()
    events: list[StreamEvent] = []
    for chunk in chunks:
        events += acc.feed(chunk)
    if clean_end:  # a cut stream never gets end(): its unfinished calls must simply not be dispatched
        events += acc.end()

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == content == acc.content
    ready = [e for e in events if isinstance(e, ToolCallReady)]
    # Never dispatched twice, never two calls with one id.
    assert len({r.index for r in ready}) == len(ready)
    assert len({r.id for r in ready}) == len(ready) and all(r.id for r in ready)
    assert sorted(ready, key=lambda r: r.index) == acc.ready_calls
    started = {e.index for e in events if isinstance(e, ToolCallStarted)}
    assert {r.index for r in ready} <= started
    for r in ready:
        name, args = calls[r.index]
        late = "".join(text for index, text in acc.late_fragments if index == r.index)
        assert r.name == name
        # Nothing is lost: what a premature finish cut off is kept as late fragments...
        assert r.arguments + late == json.dumps(args)
        if not finish_anywhere:
            # ...and interleaving alone never mixes up arguments: each call carries its own JSON.
            assert json.loads(r.arguments) == args and not late
    if clean_end or not finish_anywhere:
        assert len(ready) == len(calls)
    usages = [e for e in events if isinstance(e, UsageReported)]
    if usages:
        assert acc.usage == usages[-1].usage
        assert isinstance(acc.usage, Usage)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.text(max_size=30), st.booleans()), max_size=15),
    st.integers(1, 30),
    st.integers(0, 10),
    st.booleans(),
)
def test_chunker_flushed_mid_stream_loses_nothing(
    deltas: list[tuple[str, bool]], max_chars: int, min_first: int, markdown: bool
) -> None:
    """A turn flushes when a tool call starts, then keeps pushing: every character still comes out once,
    in order, and every chunk keeps the size and non-blank rules."""
    chunker = SpeechChunker(max_chars=max_chars, min_first_chars=min_first, strip_markdown=markdown)
    emitted: list[str] = []
    segments: list[str] = [""]
    for delta, flush_after in deltas:
        emitted += chunker.push(delta)
        segments[-1] += delta
        if flush_after:
            emitted += chunker.flush()
            segments.append("")
    emitted += chunker.flush()
    for chunk in emitted:
        assert chunk.strip() and len(chunk.strip()) <= max_chars, chunk
    expected = ""
    for segment in segments:
        if markdown:
            md = _MarkdownFilter()  # markdown state resets at every flush, as documented
            segment = md.feed(segment) + md.finish()
        expected += segment
    # Whitespace-only text stays held (it leads the next chunk): it is pending, not lost.
    assert "".join(emitted) + chunker.pending == expected


# ---- Pulse server messages: an oracle, not just "no crash" -------------------------------------------
# ``pulse_expected`` is an independent reference for parse_server_message, written from PROTOCOLS.md §3
# (current and legacy shapes): the parsed message, or None where it must raise PulseProtocolError.


def _real(value: Any) -> float:
    """A VAD timestamp: a finite JSON number as a float; anything else (Infinity, NaN, an integer beyond
    float range, not a number) counts as 0."""
    if (type(value) is float and math.isfinite(value)) or (
        type(value) is int and abs(value) <= sys.float_info.max
    ):
        return float(value)
    return 0.0


def pulse_expected(doc: Any) -> PulseMessage | None:
    if type(doc) is not dict:
        return None
    kind = doc.get("type")
    # A self-hosted server's bare {"error": ...} (no type, no transcript) is an error too (LiveKit).
    bare = bool(doc.get("error")) and kind is None and "transcript" not in doc and "transcription" not in doc
    if "error" in (kind, doc.get("status")) or bare:
        text = next((v for v in (doc.get("message"), doc.get("error")) if v), "unknown error")
        if type(text) is dict:  # {"error": {"message": ...}}
            text = text.get("message") or json.dumps(text)
        return PulseErrorMessage(str(text))
    if kind == "speech_started" or kind == "speech_ended":
        return PulseSpeechEvent(kind == "speech_started", _real(doc.get("timestamp")))
    if kind == "transcription" or {"is_final", "transcript"} & doc.keys():
        text = doc["transcript"] if "transcript" in doc else doc.get("transcription", "")
        if type(text) is not str:
            return None
        flags = {
            key: doc.get(key) is True for key in ("is_final", "is_last", "from_finalize", "speech_final")
        }
        strings = {key: doc[key] if type(doc.get(key)) is str else None for key in ("language", "session_id")}
        return PulseTranscript(text, **flags, **strings)
    return PulseOtherMessage(str(kind))


def assert_pulse_agrees(raw: str | bytes) -> None:
    try:
        doc: Any = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None  # not JSON: must be rejected like a non-object
    want = pulse_expected(doc)
    try:
        got = parse_server_message(raw)
    except PulseProtocolError:
        assert want is None, f"rejected {raw!r}, expected {want!r}"
        return
    assert want is not None, f"accepted {raw!r} as {got!r}"
    # NaN timestamps (JSON's NaN extension) compare unequal to themselves: compare their repr instead.
    assert repr(got) == repr(want), raw


_pulse_values = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["transcription", "speech_started", "speech_ended", "error", "success", "en", ""])
    | st.lists(st.text(max_size=3), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
_pulse_keys = st.sampled_from(
    [
        "type",
        "status",
        "message",
        "error",
        "timestamp",
        "transcript",
        "transcription",
        "is_final",
        "is_last",
        "from_finalize",
        "speech_final",
        "language",
        "session_id",
        "words",
    ]
)


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_pulse_parser_on_arbitrary_input_agrees_with_the_reference(raw: bytes | str) -> None:
    assert_pulse_agrees(raw)


@settings(max_examples=600)
@given(
    st.sampled_from(
        [
            transcript("hello"),
            transcript("hello world", is_final=True),
            speech_started(0.5),
            speech_ended(1.25),
            error_message("bad audio"),
            {"status": "error", "error": "quota exceeded"},  # the error text under "error"
            {"transcript": "hi", "is_final": False, "is_last": False},  # the legacy shape
            {"type": "metadata"},
        ]
    ),
    st.lists(st.tuples(_pulse_keys, st.booleans(), _pulse_values), max_size=4),
)
def test_pulse_parser_on_near_miss_messages_agrees_with_the_reference(
    base: dict[str, Any], edits: list[tuple[str, bool, Any]]
) -> None:
    """Real message shapes with fields deleted or retyped: the parser and the reference judge alike."""
    doc = dict(base)
    for key, delete, value in edits:
        if delete:
            doc.pop(key, None)
        else:
            doc[key] = value
    assert_pulse_agrees(json.dumps(doc))


_words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=300)
@given(_words, st.booleans(), st.booleans(), st.booleans(), st.sampled_from(["en", "hi", "ja"]))
def test_pulse_transcripts_round_trip_and_match_the_official_sdk(
    text: str, is_final: bool, is_last: bool, from_finalize: bool, language: str
) -> None:
    from smallestai.waves.speech_to_text.types.transcription_event import TranscriptionEvent

    doc = transcript(text, is_final=is_final, language=language) | {
        "is_last": is_last,
        "from_finalize": from_finalize,
    }
    raw = json.dumps(doc)
    got = parse_server_message(raw)
    want = PulseTranscript(
        text, is_final, is_last, from_finalize, language if is_final else None, doc["session_id"]
    )
    assert got == want
    sdk = TranscriptionEvent.model_validate(json.loads(raw))  # the vendor's own reading of the message
    assert isinstance(got, PulseTranscript)
    assert (got.text, got.is_final, got.is_last, got.from_finalize) == (
        sdk.transcript,
        sdk.is_final,
        sdk.is_last,
        sdk.from_finalize,
    )
    assert (got.language, got.session_id) == (sdk.language, sdk.session_id)


@settings(max_examples=100)
@given(st.booleans(), st.floats(0, 1e6) | st.integers(0, 10**6))
def test_pulse_vad_events_round_trip(started: bool, timestamp: float) -> None:
    doc = speech_started(timestamp) if started else speech_ended(timestamp)
    assert parse_server_message(json.dumps(doc)) == PulseSpeechEvent(started, float(timestamp))


def test_pulse_a_huge_or_non_finite_timestamp_is_not_a_crash() -> None:
    assert_pulse_agrees('{"type": "speech_started", "timestamp": 1' + "0" * 400 + "}")
    assert_pulse_agrees('{"type": "speech_ended", "timestamp": NaN}')
    assert_pulse_agrees('{"type": "speech_ended", "timestamp": -Infinity}')
