"""DeltaAccumulator: example streams in the shapes providers send, and property tests."""

import collections
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from voiceagent.accumulator import DeltaAccumulator
from voiceagent.events import StreamFinished, TextDelta, ToolCallReady, ToolCallStarted, Usage, UsageReported


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if delta is not None:
        choice["delta"] = delta
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "electron", "choices": [choice]}


def first_fragment(index: int, call_id: str, name: str) -> dict[str, Any]:
    return chunk(
        {
            "tool_calls": [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
    )


def arg_fragment(index: int, text: str) -> dict[str, Any]:
    return chunk({"tool_calls": [{"index": index, "function": {"arguments": text}}]})


USAGE = {
    "choices": [],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 17,
        "total_tokens": 137,
        "prompt_tokens_details": {"cached_tokens": 96},
    },
}


def feed_all(acc: DeltaAccumulator, chunks: list[dict[str, Any]]) -> list[Any]:
    events: list[Any] = []
    for c in chunks:
        events.extend(acc.feed(c))
    events.extend(acc.end())
    return events


def test_content_then_usage_chunk_with_empty_choices() -> None:
    acc = DeltaAccumulator()
    events = feed_all(
        acc,
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo."}),
            chunk({}, finish="stop"),
            USAGE,
        ],
    )
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo."),
        StreamFinished("stop"),
        UsageReported(Usage(120, 17, 96)),
    ]
    assert acc.content == "Hello."
    assert acc.usage == Usage(120, 17, 96)
    assert not acc.has_tool_calls


def test_call_is_ready_the_moment_its_json_closes_before_finish() -> None:
    acc = DeltaAccumulator()
    assert acc.feed(chunk({"content": "Let me check."})) == [TextDelta("Let me check.")]
    assert acc.feed(first_fragment(0, "call_a", "get_weather")) == [
        ToolCallStarted(0, "call_a", "get_weather")
    ]
    assert acc.feed(arg_fragment(0, '{"city": ')) == []
    assert acc.feed(arg_fragment(0, '"Paris"}')) == [
        ToolCallReady(0, "call_a", "get_weather", '{"city": "Paris"}')
    ]
    # Electron's finish chunk has no delta key at all.
    assert acc.feed(chunk(None, finish="tool_calls")) == [StreamFinished("tool_calls")]
    assert acc.ready_calls == [ToolCallReady(0, "call_a", "get_weather", '{"city": "Paris"}')]


def test_parallel_calls_argumentless_call_waits_for_finish() -> None:
    acc = DeltaAccumulator()
    acc.feed(first_fragment(0, "c0", "no_args"))
    # Empty arguments never parse as an object; a higher index is no signal (fragments may interleave).
    assert acc.feed(first_fragment(1, "c1", "get_time")) == [ToolCallStarted(1, "c1", "get_time")]
    acc.feed(arg_fragment(1, '{"tz": "UTC"'))
    assert acc.feed(chunk(None, finish="tool_calls")) == [
        ToolCallReady(0, "c0", "no_args", ""),
        ToolCallReady(1, "c1", "get_time", '{"tz": "UTC"'),  # malformed: the tool runner reports it
        StreamFinished("tool_calls"),
    ]
    assert [c.id for c in acc.ready_calls] == ["c0", "c1"]


def test_interleaved_fragments_of_two_calls_each_get_their_own_arguments() -> None:
    acc = DeltaAccumulator()
    events = feed_all(
        acc,
        [
            first_fragment(0, "c0", "get_weather"),
            first_fragment(1, "c1", "get_time"),
            arg_fragment(0, '{"city": '),
            arg_fragment(1, '{"tz": '),
            arg_fragment(0, '"Oslo"}'),
            arg_fragment(1, '"UTC"}'),
            chunk(None, finish="tool_calls"),
        ],
    )
    ready = [e for e in events if isinstance(e, ToolCallReady)]
    assert ready == [
        ToolCallReady(0, "c0", "get_weather", '{"city": "Oslo"}'),
        ToolCallReady(1, "c1", "get_time", '{"tz": "UTC"}'),
    ]
    assert acc.late_fragments == []


def test_repeated_or_clashing_ids_are_made_distinct() -> None:
    acc = DeltaAccumulator()
    feed_all(
        acc,
        [
            first_fragment(0, "dup", "f"),
            arg_fragment(0, "{}"),
            first_fragment(1, "dup", "g"),
            arg_fragment(1, "{}"),
            first_fragment(2, "call_3", "h"),
            chunk({"tool_calls": [{"index": 3, "function": {"name": "k", "arguments": "{}"}}]}),
        ],
    )
    assert [c.id for c in acc.ready_calls] == ["dup", "dup_1", "call_3_2", "call_3"]


def test_whole_call_in_one_fragment_and_two_calls_in_one_chunk() -> None:
    acc = DeltaAccumulator()
    both = chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "a",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"x": 1}'},
                },
                {
                    "index": 1,
                    "id": "b",
                    "type": "function",
                    "function": {"name": "g", "arguments": '{"y": 2}'},
                },
            ]
        }
    )
    events = acc.feed(both)
    assert events == [
        ToolCallStarted(0, "a", "f"),
        ToolCallReady(0, "a", "f", '{"x": 1}'),
        ToolCallStarted(1, "b", "g"),
        ToolCallReady(1, "b", "g", '{"y": 2}'),
    ]


def test_stream_end_without_finish_reason_dispatches_pending_and_infers_reason() -> None:
    acc = DeltaAccumulator()
    acc.feed(first_fragment(0, "c0", "f"))
    assert acc.end() == [ToolCallReady(0, "c0", "f", ""), StreamFinished("tool_calls")]


def test_fragments_after_dispatch_are_kept_not_lost() -> None:
    acc = DeltaAccumulator()
    acc.feed(first_fragment(0, "c0", "f"))
    acc.feed(arg_fragment(0, "{}"))
    acc.feed(arg_fragment(0, " "))
    assert acc.late_fragments == [(0, " ")]


def test_missing_ids_get_stable_synthetic_ones() -> None:
    acc = DeltaAccumulator()
    acc.feed(chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}))
    assert acc.ready_calls[0].id == "call_0"


def test_garbage_shapes_are_ignored_not_fatal() -> None:
    acc = DeltaAccumulator()
    for bad in [
        {},
        {"choices": None},
        {"choices": ["x"]},
        {"choices": [{"index": 1, "delta": {"content": "no"}}]},
        chunk({"content": None}),
        chunk({"tool_calls": ["x"]}),
        {"usage": None},
    ]:
        assert acc.feed(bad) == []
    assert acc.content == ""


def test_tool_name_streamed_in_pieces_is_concatenated() -> None:
    # Gemini's OpenAI layer and Mistral-style servers: "edit_ex" + "isting_file" (continuedev/continue#5849).
    acc = DeltaAccumulator()
    events = feed_all(
        acc,
        [
            chunk({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "get_", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "wea"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "ther", "arguments": '{"city":'}}]}),
            arg_fragment(0, ' "Oslo"}'),
            chunk(None, finish="tool_calls"),
        ],
    )
    assert acc.ready_calls == [ToolCallReady(0, "c0", "get_weather", '{"city": "Oslo"}')]
    assert [e for e in events if isinstance(e, ToolCallStarted)] == [ToolCallStarted(0, "c0", "get_")]


def test_name_and_id_repeated_on_every_fragment_are_kept_once() -> None:
    # MiniMax via NVIDIA NIM resends the whole name (NousResearch/hermes-agent#11984); vLLM the id.
    acc = DeltaAccumulator()
    feed_all(
        acc,
        [
            chunk(
                {"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "read_file", "arguments": ""}}]}
            ),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c0", "function": {"name": "read_file", "arguments": "{"}}
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c0", "function": {"name": "read_file", "arguments": "}"}}
                    ]
                }
            ),
        ],
    )
    assert acc.ready_calls == [ToolCallReady(0, "c0", "read_file", "{}")]


def test_whole_calls_sharing_one_index_are_separate_calls() -> None:
    # Ollama's /v1 sends every call at index 0 (ollama/ollama#15457); so do LiteLLM and Gemini proxies.
    acc = DeltaAccumulator()
    whole = [
        chunk({"tool_calls": [{"index": 0, "id": i, "function": {"name": n, "arguments": a}}]})
        for i, n, a in [("a", "f", '{"x": 1}'), ("b", "g", ""), ("c", "f", '{"x": 3}')]
    ]
    events = feed_all(acc, [*whole, chunk(None, finish="tool_calls")])
    ready = [e for e in events if isinstance(e, ToolCallReady)]
    # "b" has no arguments: it is over when "c" takes its index, not only at the finish.
    assert ready == [
        ToolCallReady(0, "a", "f", '{"x": 1}'),
        ToolCallReady(0, "b", "g", ""),
        ToolCallReady(0, "c", "f", '{"x": 3}'),
    ]
    assert acc.ready_calls == ready and acc.late_fragments == []


def test_a_new_name_without_id_after_a_finished_call_at_its_index_is_a_new_call() -> None:
    acc = DeltaAccumulator()
    feed_all(
        acc,
        [
            chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "g", "arguments": '{"y": 2}'}}]}),
        ],
    )
    assert acc.ready_calls == [
        ToolCallReady(0, "call_0", "f", "{}"),
        ToolCallReady(0, "call_0_1", "g", '{"y": 2}'),
    ]


def test_unknown_call_fields_are_kept_as_received() -> None:
    # Gemini 3 rejects the next round unless extra_content.google.thought_signature comes back.
    extra = {"extra_content": {"google": {"thought_signature": "sig=="}}}
    acc = DeltaAccumulator()
    fragment = {"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    feed_all(acc, [chunk({"tool_calls": [{**fragment, **extra}]}), chunk(None, finish="tool_calls")])
    assert acc.ready_calls == [ToolCallReady(0, "c0", "f", "{}", extra)]


def test_reasoning_is_kept_apart_and_never_a_text_delta() -> None:
    acc = DeltaAccumulator()
    events = feed_all(
        acc,
        [
            chunk({"role": "assistant", "reasoning_content": "The user "}),
            chunk({"reasoning": "greets me."}),
            chunk({"reasoning_content": "Same", "reasoning": "Same"}),  # both keys: one text
            chunk({"content": "Hi!"}),
            chunk({}, finish="stop"),
        ],
    )
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("Hi!")]
    assert acc.reasoning == "The user greets me.Same" and acc.content == "Hi!"


def test_usage_only_inside_x_groq_is_used() -> None:
    acc = DeltaAccumulator()
    groq = {"id": "x", "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}}
    feed_all(acc, [chunk({"content": "Hi"}), {**chunk({}, finish="stop"), "x_groq": groq}])
    assert acc.usage == Usage(40, 9, 0)


def test_deepseek_cache_hit_tokens_count_as_cached() -> None:
    usage = {"prompt_tokens": 50, "completion_tokens": 5, "prompt_cache_hit_tokens": 32}
    assert Usage.from_dict(usage) == Usage(50, 5, 32)


def test_accumulating_arguments_is_linear_in_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every fragment ends in "}" but the object only closes at the end: each used to re-join and
    # re-parse the whole text (5 MB took ~3 minutes of CPU).
    import voiceagent.accumulator as module

    parsed: list[int] = []
    real = module._is_complete_object

    def counting(text: str) -> bool:
        parsed.append(len(text))
        return real(text)

    monkeypatch.setattr(module, "_is_complete_object", counting)
    fragments = 20_000
    acc = DeltaAccumulator()
    acc.feed(first_fragment(0, "c0", "f"))
    acc.feed(arg_fragment(0, '{"a": "'))
    for _ in range(fragments):
        acc.feed(arg_fragment(0, "}}}}}"))
    acc.feed(arg_fragment(0, '"}'))
    acc.end()  # past 1 KB the closing brace may not be tried at once: the finish dispatches it
    total = len(acc.ready_calls[0].arguments)
    assert json.loads(acc.ready_calls[0].arguments) == {"a": "}" * 5 * fragments}
    assert sum(parsed) <= 4 * total + module._SMALL_ARGUMENTS**2


def test_hostile_nesting_in_arguments_does_not_raise() -> None:
    acc = DeltaAccumulator()
    acc.feed(first_fragment(0, "c0", "f"))
    deep = '{"a": ' + "[" * 200_000 + "]" * 200_000 + "}"
    assert acc.feed(arg_fragment(0, deep)) == []  # not parseable here: it waits for the finish
    assert acc.end()[0] == ToolCallReady(0, "c0", "f", deep)


def test_late_fragments_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    acc = DeltaAccumulator()
    acc.feed(first_fragment(0, "c0", "f"))
    acc.feed(arg_fragment(0, "{}"))
    with caplog.at_level("WARNING", logger="voiceagent.accumulator"):
        acc.feed(arg_fragment(0, " x"))
        acc.feed(arg_fragment(0, " y"))
    assert acc.late_fragments == [(0, " x"), (0, " y")]
    assert len([r for r in caplog.records if "late_fragments" in r.getMessage()]) == 1


# ---- properties --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
calls_strategy = st.lists(
    st.tuples(
        st.sampled_from(["get_weather", "book", "lookup"]),
        st.dictionaries(st.text(min_size=1, max_size=6), json_values, max_size=3),
    ),
    max_size=4,
)


@given(content=st.text(max_size=60), calls=calls_strategy, data=st.data())
def test_any_fragmentation_reassembles_content_and_calls(content: str, calls: list[Any], data: Any) -> None:
    chunks: list[dict[str, Any]] = []
    cuts = data.draw(st.lists(st.integers(0, len(content)), max_size=6))
    bounds = [0, *sorted(cuts), len(content)]
    chunks += [chunk({"content": content[a:b]}) for a, b in itertools.pairwise(bounds)]
    for index, (name, args) in enumerate(calls):
        text = json.dumps(args)
        # The name too may come in pieces (Gemini): the first with the id, the rest on their own.
        cuts = sorted(set(data.draw(st.lists(st.integers(1, len(name) - 1), max_size=2))))
        names = [name[a:b] for a, b in itertools.pairwise([0, *cuts, len(name)])]
        chunks.append(first_fragment(index, f"id{index}", names[0]))
        chunks += [chunk({"tool_calls": [{"index": index, "function": {"name": n}}]}) for n in names[1:]]
        pieces = data.draw(st.lists(st.integers(0, len(text)), max_size=4))
        pb = [0, *sorted(pieces), len(text)]
        chunks += [arg_fragment(index, text[a:b]) for a, b in itertools.pairwise(pb)]
    chunks += [chunk(None, finish="tool_calls" if calls else "stop"), USAGE]
    acc = DeltaAccumulator()
    events = feed_all(acc, chunks)
    assert acc.content == content
    ready = [e for e in events if isinstance(e, ToolCallReady)]
    assert [(r.name, json.loads(r.arguments)) for r in ready] == [(n, a) for n, a in calls]
    assert [r.id for r in ready] == [f"id{i}" for i in range(len(calls))]
    # Every call is announced before it is ready, and ready exactly once.
    started = [e.index for e in events if isinstance(e, ToolCallStarted)]
    assert started == list(range(len(calls)))
    assert acc.usage == Usage(120, 17, 96)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["choices", "usage", "id", "delta", "index", "prompt_tokens"]),
            json_values,
            max_size=3,
        ),
        max_size=8,
    )
)
def test_feed_never_raises_on_arbitrary_dicts(chunks: list[dict[str, Any]]) -> None:
    acc = DeltaAccumulator()
    for c in chunks:
        acc.feed(c)
    acc.end()


# One branch for every odd (non-dict, non-list, wrong-type) value, so the real shapes stay likely.
odd_values = st.sampled_from([None, 0, 1, -1, True, "", "x", 1.5])
fragments = st.one_of(
    odd_values,
    st.fixed_dictionaries(
        {},
        optional={
            "index": st.one_of(st.integers(0, 2), odd_values),
            "id": st.one_of(st.sampled_from(["a", "b", ""]), odd_values),
            "function": st.one_of(
                odd_values,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.one_of(st.sampled_from(["f", "g"]), odd_values),
                        "arguments": st.one_of(st.sampled_from(["{", '"x": 1', "}", "{}", ""]), odd_values),
                    },
                ),
            ),
        },
    ),
)
deltas = st.one_of(
    odd_values,
    st.fixed_dictionaries(
        {},
        optional={
            "content": st.one_of(st.text(max_size=4), odd_values),
            "reasoning": st.one_of(st.text(max_size=4), odd_values),
            "reasoning_content": st.one_of(st.text(max_size=4), odd_values),
            "tool_calls": st.one_of(st.lists(fragments, max_size=3), odd_values),
        },
    ),
)
choices = st.one_of(
    odd_values,
    st.fixed_dictionaries(
        {},
        optional={
            "index": st.one_of(st.integers(0, 1), odd_values),
            "delta": deltas,
            "finish_reason": st.one_of(st.sampled_from(["stop", "tool_calls", ""]), odd_values),
        },
    ),
)
counts = st.one_of(st.integers(-1, 9), odd_values)
usages = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": counts,
        "completion_tokens": counts,
        "prompt_tokens_details": st.one_of(
            st.fixed_dictionaries({}, optional={"cached_tokens": counts}), odd_values
        ),
        "prompt_cache_hit_tokens": counts,  # DeepSeek
    },
)
chunk_shapes = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.just("c1"), odd_values),
        "choices": st.one_of(st.lists(choices, max_size=2), odd_values),
        "usage": st.one_of(usages, odd_values),
        "x_groq": st.one_of(
            st.fixed_dictionaries({}, optional={"usage": st.one_of(usages, odd_values)}), odd_values
        ),
    },
)


# ---- an independent oracle (shares no code with voiceagent/accumulator.py) -------------------------


def _as_count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


class _PlainOracle:
    """What the spec (PROTOCOLS.md §5) says feed() makes of content, reasoning, finish and usage, written
    from the spec: only the first choice counts, empty strings say nothing, the usage is the chunk's own
    or else Groq's ``x_groq.usage``, and a stream ending without a finish says ``tool_calls`` if any
    tool-call fragment came, else ``stop``."""

    def __init__(self) -> None:
        self.content = ""
        self.reasoning = ""
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.saw_fragment = False
        self.argument_pieces: list[str] = []  # every argument text fed, in order
        self.opens_or_finishes = False  # the last chunk finished, or brought an id (a call may end)

    def feed(self, chunk: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        self.opens_or_finishes = False
        all_choices = chunk.get("choices")
        for choice in all_choices if type(all_choices) is list else []:
            if type(choice) is not dict or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            delta = delta if type(delta) is dict else {}
            text = delta.get("content")
            if type(text) is str and text != "":
                self.content += text
                out.append(TextDelta(text))
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if type(thought) is str:
                self.reasoning += thought
            calls = delta.get("tool_calls")
            for fragment in calls if type(calls) is list else []:
                if type(fragment) is not dict:
                    continue
                self.saw_fragment = True
                call_id = fragment.get("id")
                if type(call_id) is str and call_id != "":
                    self.opens_or_finishes = True
                function = fragment.get("function")
                if type(function) is dict:
                    piece = function.get("arguments")
                    if type(piece) is str and piece != "":
                        self.argument_pieces.append(piece)
            why = choice.get("finish_reason")
            if type(why) is str and why != "":
                self.finish_reason = why
                self.opens_or_finishes = True
                out.append(StreamFinished(why))
        usage = chunk.get("usage")
        if type(usage) is not dict:
            groq = chunk.get("x_groq")
            usage = groq.get("usage") if type(groq) is dict else None
        if type(usage) is dict and "prompt_tokens" in usage:
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if type(details) is dict else None
            if cached is None:
                cached = usage.get("prompt_cache_hit_tokens")
            self.usage = Usage(
                _as_count(usage.get("prompt_tokens")),
                _as_count(usage.get("completion_tokens")),
                _as_count(cached),
            )
            out.append(UsageReported(self.usage))
        return out

    def end(self) -> list[Any]:
        self.opens_or_finishes = True
        if self.finish_reason is not None:
            return []
        self.finish_reason = "tool_calls" if self.saw_fragment else "stop"
        return [StreamFinished(self.finish_reason)]


def _is_object(text: str) -> bool:
    try:
        return type(json.loads(text)) is dict
    except ValueError:
        return False


class _CallChecker:
    """Invariants of the tool-call events that hold on any input, however hostile."""

    def __init__(self) -> None:
        self.ready: list[ToolCallReady] = []
        self.open_starts: dict[int, list[ToolCallStarted]] = {}  # started, not yet ready, per index

    def check(self, events: list[Any], may_end_unparsed: bool) -> None:
        for event in events:
            if isinstance(event, ToolCallStarted):
                # A call is announced once: the index has no other announced call still pending.
                assert not self.open_starts.get(event.index), (event, self.open_starts)
                self.open_starts.setdefault(event.index, []).append(event)
            elif isinstance(event, ToolCallReady):
                assert isinstance(event.id, str) and event.id, event
                assert event.id not in {r.id for r in self.ready}, ("id dispatched twice", event, self.ready)
                assert all(event is not r for r in self.ready)
                # Early (no finish, no new call) only when the arguments are a whole JSON object.
                assert may_end_unparsed or _is_object(event.arguments), ("ready too early", event)
                pending = self.open_starts.get(event.index)
                if pending:
                    assert event.name.startswith(pending.pop().name), event
                self.ready.append(event)
            elif isinstance(event, StreamFinished):
                # Whatever was announced is dispatched before the finish is reported.
                assert not any(self.open_starts.values()), ("finished with calls pending", self.open_starts)


# Chunks that do carry (hostile) tool-call fragments, so the call invariants get exercised too.
tool_chunks = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {"delta": st.fixed_dictionaries({"tool_calls": st.lists(fragments, min_size=1, max_size=3)})},
                optional={"finish_reason": st.sampled_from(["stop", "tool_calls", "", None])},
            ),
            min_size=1,
            max_size=1,
        )
    }
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(chunk_shapes, tool_chunks), max_size=10))
def test_feed_matches_the_oracle_on_any_shape(chunks: list[dict[str, Any]]) -> None:
    acc, oracle, calls = DeltaAccumulator(), _PlainOracle(), _CallChecker()
    tool_events = (ToolCallStarted, ToolCallReady)
    for c in chunks:
        events = acc.feed(c)
        assert [e for e in events if not isinstance(e, tool_events)] == oracle.feed(c)
        calls.check(events, oracle.opens_or_finishes)
    events = acc.end()
    assert [e for e in events if not isinstance(e, tool_events)] == oracle.end()
    calls.check(events, True)
    assert not any(calls.open_starts.values())
    assert (acc.content, acc.reasoning, acc.finish_reason, acc.usage) == (
        oracle.content,
        oracle.reasoning,
        oracle.finish_reason,
        oracle.usage,
    )
    assert acc.has_tool_calls == oracle.saw_fragment
    assert acc.chunks_seen == len(chunks)
    # ready_calls: the dispatched calls, each once, in index order (dispatch order within an index).
    assert acc.ready_calls == sorted(calls.ready, key=lambda r: r.index)
    assert all(isinstance(i, int) and isinstance(t, str) and t for i, t in acc.late_fragments)
    # No argument text is lost or invented: it is in a dispatched call or among the late fragments.
    given_text = collections.Counter("".join(oracle.argument_pieces))
    kept = collections.Counter(
        "".join([r.arguments for r in calls.ready] + [t for _, t in acc.late_fragments])
    )
    assert kept == given_text


# ---- well-formed OpenAI streams: the openai SDK's own assembly is the reference ----------------------

wf_arguments = st.one_of(
    st.just(""),  # a call without arguments: ready only at the finish
    st.dictionaries(st.text(min_size=1, max_size=6), json_values, max_size=3).map(json.dumps),
)
wf_calls = st.lists(st.tuples(st.sampled_from(["get_weather", "book", "lookup"]), wf_arguments), max_size=4)


def _pieces(data: Any, text: str) -> list[str]:
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(len(text) - 1, 1)), max_size=4))))
    return [p for p in (text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])) if p]


def _sdk_assembles(chunks: list[dict[str, Any]]) -> Any:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for c in chunks:
        full = {"object": "chat.completion.chunk", "created": 0, "model": "m", "id": "chatcmpl-1", **c}
        state.handle_chunk(ChatCompletionChunk.model_validate(full))
    return state.current_completion_snapshot


@settings(max_examples=150, deadline=None)
@given(content=st.text(max_size=40), reasoning=st.text(max_size=20), calls=wf_calls, data=st.data())
def test_well_formed_streams_assemble_as_the_openai_sdk_does(
    content: str, reasoning: str, calls: list[tuple[str, str]], data: Any
) -> None:
    # Each call: its first fragment (index, id, type, name, "" arguments), then its argument pieces.
    per_call = [
        [
            {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": ""}},
            *({"index": i, "function": {"arguments": p}} for p in _pieces(data, args)),
        ]
        for i, (name, args) in enumerate(calls)
    ]
    # Parallel calls' argument pieces may interleave; each call's own stay in order, and calls open in
    # index order (as OpenAI sends them; the SDK cannot take index 1 before index 0).
    fragments: list[dict[str, Any]] = []
    queues = [list(q) for q in per_call]
    while any(queues):
        opened = sum(len(q) < len(p) for q, p in zip(queues, per_call, strict=True))
        movable = [i for i, q in enumerate(queues) if q and (len(q) < len(per_call[i]) or i == opened)]
        fragments.append(queues[data.draw(st.sampled_from(movable))].pop(0))
    items: list[tuple[str, Any]] = [("reasoning_content", p) for p in _pieces(data, reasoning)]
    items += [("content", p) for p in _pieces(data, content)] + [("tool_calls", f) for f in fragments]
    # Consecutive items share a chunk at random cut points.
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(len(items), 1)), max_size=len(items)))))
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    ]
    for a, b in itertools.pairwise([0, *cuts, len(items)]):
        delta: dict[str, Any] = {}
        for key, value in items[a:b]:
            if key == "tool_calls":
                delta.setdefault(key, []).append(value)
            else:
                delta[key] = delta.get(key, "") + value
        if delta:
            chunks.append({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    finish = "tool_calls" if calls else "stop"
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})

    acc = DeltaAccumulator()
    ready_at: dict[str, int] = {}
    for n, c in enumerate(chunks):
        ready_at.update((e.id, n) for e in acc.feed(c) if isinstance(e, ToolCallReady))
    acc.end()
    snapshot = _sdk_assembles(chunks)
    message = snapshot.choices[0].message
    assert acc.content == (message.content or "")
    assert acc.reasoning == ((message.model_extra or {}).get("reasoning_content") or "")
    sdk_calls = [(t.id, t.function.name, t.function.arguments) for t in message.tool_calls or []]
    assert [(r.id, r.name, r.arguments) for r in acc.ready_calls] == sdk_calls
    assert acc.finish_reason == snapshot.choices[0].finish_reason
    assert snapshot.usage is not None and acc.usage == Usage(9, 4, 0)
    for r in acc.ready_calls:
        assert r.arguments == "" or _is_object(r.arguments)
        # Ready the moment its last argument piece arrives (no waiting for the finish), or at the
        # finish when it has no arguments.
        last = max(
            (n for n, c in enumerate(chunks) for f in _fragments_of(c) if f["index"] == r.index),
            default=-1,
        )
        assert ready_at[r.id] == (last if r.arguments else len(chunks) - 2), (r, ready_at)


def _fragments_of(c: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for ch in c["choices"] for f in ch["delta"].get("tool_calls", [])]


def test_null_unknown_fields_are_not_kept_and_nested_ones_merge() -> None:
    acc = DeltaAccumulator()
    first = {
        "index": 0,
        "id": "c0",
        "function": {"name": "f", "arguments": "{"},
        "provider_specific_fields": None,
    }
    more = {"index": 0, "function": {"arguments": "}"}, "extra_content": {"google": {"b": 2}}}
    acc.feed(chunk({"tool_calls": [{**first, "extra_content": {"google": {"a": 1}}}]}))
    acc.feed(chunk({"tool_calls": [more]}))
    assert acc.ready_calls[0].extra == {"extra_content": {"google": {"a": 1, "b": 2}}}
    plain = DeltaAccumulator()
    plain.feed(chunk({"tool_calls": [first]}))
    plain.feed(arg_fragment(0, "}"))
    assert plain.ready_calls[0].extra is None


def test_arguments_ending_in_a_brace_are_not_complete_until_the_json_is() -> None:
    """A nested object's "}" or a "}" inside a string is not the end of the arguments: the call waits."""
    acc = DeltaAccumulator()
    acc.feed(first_fragment(0, "call_a", "book"))
    assert acc.feed(arg_fragment(0, '{"where": {"city": "Paris"}')) == []
    assert acc.feed(arg_fragment(0, ', "note": "}')) == []
    assert acc.feed(arg_fragment(0, '"}')) == [
        ToolCallReady(0, "call_a", "book", '{"where": {"city": "Paris"}, "note": "}"}')
    ]
