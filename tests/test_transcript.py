"""TurnTranscript: truncation to what was heard, with plain strings (no server, no sink)."""

from __future__ import annotations

from voiceagent.conversation import Message
from voiceagent.transcript import TurnTranscript


def _assistant(content: str | None, *calls: str) -> Message:
    message: Message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": c, "type": "function", "function": {"name": "f", "arguments": "{}"}} for c in calls
        ]
    return message


def test_chunks_spoken_apart_get_a_space_and_a_round_keeps_its_own_words() -> None:
    t = TurnTranscript()
    t.say(1, "One moment.", filler=True)
    t.say(1, "It is")
    t.say(1, " sunny.")
    t.say(2, "Anything else?")
    assert t.spoken_text == "One moment. It is sunny. Anything else?"
    assert t.said_model_words


def test_an_unstopped_turn_was_heard_in_full_whatever_the_sink_counted() -> None:
    t = TurnTranscript()
    t.say(1, "Hello there.")
    assert t.heard_chars(0, stopped=False) == len("Hello there.")
    assert t.heard_chars(5, stopped=True) == 5
    assert t.heard_chars(10_000, stopped=True) == len("Hello there.")
    assert t.heard_chars(-3, stopped=True) == 0


def test_truncation_keeps_the_heard_prefix_of_the_cut_round_only() -> None:
    t = TurnTranscript(messages=[{"role": "user", "content": "weather?"}])
    t.say(1, "One moment.", filler=True)
    t.add_round(1, _assistant(None, "c1"), [{"role": "tool", "tool_call_id": "c1", "content": "sunny"}])
    t.say(2, "It is sunny and warm today.")
    t.add_round(2, _assistant("It is sunny and warm today."))
    t.truncate_to_heard(len("One moment.") + len(" It is sunny"))  # the filler, then part of round 2
    assert [m["role"] for m in t.messages] == ["user", "assistant", "tool", "assistant"]
    assert t.messages[1]["content"] is None and t.messages[1]["tool_calls"]  # calls stay answered
    assert t.messages[3]["content"] == "It is sunny"


def test_a_round_nobody_heard_loses_its_assistant_message_but_never_a_call() -> None:
    t = TurnTranscript(messages=[{"role": "user", "content": "hi"}])
    t.say(1, "Let me check.")
    t.add_round(
        1, _assistant("Let me check.", "c1"), [{"role": "tool", "tool_call_id": "c1", "content": "x"}]
    )
    t.say(2, "Here it is.")
    t.add_round(2, _assistant("Here it is."))
    t.truncate_to_heard(0)
    roles = [(m["role"], m.get("content")) for m in t.messages]
    # round 1 keeps its call (content gone), round 2 had neither words heard nor calls: dropped
    assert roles == [("user", "hi"), ("assistant", None), ("tool", "x")]


def test_the_cut_round_keeps_only_what_was_heard_even_when_every_chunk_played() -> None:
    # The chunker may still have held words of the round in flight: its message is what was heard.
    t = TurnTranscript(messages=[{"role": "user", "content": "hi"}])
    t.say(1, "Hello")
    t.add_round(1, _assistant("Hello, and the words the chunker still held"))
    t.truncate_to_heard(len("Hello"), cut_round=1)
    assert t.messages[-1]["content"] == "Hello"
    u = TurnTranscript(messages=[{"role": "user", "content": "hi"}])
    u.say(1, "Hello")
    u.add_round(1, _assistant("Hello, and more"))
    u.truncate_to_heard(len("Hello"))  # a finished round heard in full keeps its whole message
    assert u.messages[-1]["content"] == "Hello, and more"
