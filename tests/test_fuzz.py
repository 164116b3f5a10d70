"""Property tests beyond test_accumulator.py / test_chunker.py: adversarial but structurally valid chunk
sequences for the DeltaAccumulator, and the SpeechChunker flushed mid-stream (as a turn does when a tool
call starts)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent.accumulator import DeltaAccumulator
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
