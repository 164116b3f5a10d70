"""The end-of-turn detector, on its own: it is pure (it is told the time), so every rule is checked with
exact times and no clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voiceagent.endpointing import EndOfTurnDetector, EndpointingDetector
from voiceagent.stt import SpeechEnded, SpeechStarted, Transcript


def test_segment_finals_inside_speech_are_one_turn_ended_by_speech_ended_plus_the_delay() -> None:
    d = EndpointingDetector(delay=0.4, words_timeout=math.inf)
    assert isinstance(d, EndOfTurnDetector)
    d.observe(SpeechStarted(), 0.0)
    d.observe(Transcript("I would like", False), 0.5)
    d.observe(Transcript("I would like a table", True), 1.0)  # a segment: the caller is still speaking
    assert d.ends_at() is None and d.draft() is None
    d.observe(Transcript("for two", True), 1.6)
    assert d.ends_at() is None
    assert d.observe(SpeechEnded(), 2.0) is False  # nothing open: no need to ask for a final
    assert d.ends_at() == pytest.approx(2.4)
    assert d.draft() == "I would like a table for two"
    assert d.take() == "I would like a table for two"
    assert d.ends_at() is None and d.heard() == ""


def test_speech_ended_with_words_still_open_asks_for_a_final_and_waits_for_it() -> None:
    d = EndpointingDetector(delay=0.4, final_wait=1.0)
    d.observe(SpeechStarted(), 0.0)
    d.observe(Transcript("book a", False), 0.5)
    assert d.observe(SpeechEnded(), 1.0) is True  # the session sends finalize
    assert d.draft() is None and d.ends_at() == pytest.approx(2.0)  # the final may still come
    d.observe(Transcript("book a table", True, end_of_turn=True), 1.1)
    assert d.draft() == "book a table" and d.ends_at() == pytest.approx(1.5)
    # Had the final never come, the turn ends on the partial after final_wait.
    d2 = EndpointingDetector(delay=0.4, final_wait=1.0)
    d2.observe(SpeechStarted(), 0.0)
    d2.observe(Transcript("book a", False), 0.5)
    d2.observe(SpeechEnded(), 1.0)
    assert d2.take() == "book a"


def test_a_caller_who_starts_again_within_the_delay_keeps_the_turn_open() -> None:
    d = EndpointingDetector(delay=0.4, words_timeout=math.inf)
    d.observe(SpeechStarted(), 0.0)
    d.observe(Transcript("book a table", True), 0.8)
    d.observe(SpeechEnded(), 1.0)
    assert d.draft() == "book a table"
    d.observe(SpeechStarted(), 1.3)  # within 0.4 s
    assert d.ends_at() is None and d.draft() is None
    # A stale answer to our finalize, after the caller started again, does not end the turn.
    d.observe(Transcript("", True, end_of_turn=True), 1.35)
    d.observe(Transcript("for two", True, end_of_turn=True), 1.4)
    assert d.ends_at() is None
    d.observe(SpeechEnded(), 2.0)
    assert d.take() == "book a table for two"


def test_a_false_start_is_no_turn() -> None:
    d = EndpointingDetector()
    d.observe(SpeechStarted(), 0.0)
    d.observe(SpeechEnded(), 0.3)  # a cough: speech, no words
    assert d.ends_at() is None and d.draft() is None


def test_without_vad_every_final_ends_an_utterance_and_new_words_reopen_it() -> None:
    d = EndpointingDetector(delay=0.3, vad=False)
    d.observe(Transcript("yes", True), 1.0)
    assert d.ends_at() == pytest.approx(1.3)
    d.observe(Transcript("and", False), 1.1)
    assert d.ends_at() is None
    d.observe(Transcript("and also", True), 1.5)
    assert d.ends_at() == pytest.approx(1.8) and d.take() == "yes and also"


def test_a_final_the_vad_missed_ends_the_utterance_and_a_stuck_vad_times_out() -> None:
    d = EndpointingDetector(delay=0.3)
    d.observe(Transcript("yes", True), 1.0)  # no speech_started: the VAD missed quiet speech
    assert d.ends_at() == pytest.approx(1.3)
    stuck = EndpointingDetector(delay=0.3, words_timeout=2.5)
    stuck.observe(SpeechStarted(), 0.0)  # and it never hears the end (noise)
    stuck.observe(Transcript("book it", True), 1.0)
    assert stuck.ends_at() == pytest.approx(3.5)


def test_speculation_modes() -> None:
    on_final = EndpointingDetector(speculate="final")
    on_final.observe(SpeechStarted(), 0.0)
    on_final.observe(Transcript("book a table", True), 1.0)
    assert on_final.draft() == "book a table"  # at the first final, while the caller still speaks
    on_final.observe(Transcript("for", False), 1.1)
    assert on_final.draft() is None  # more words are coming
    off = EndpointingDetector(speculate="off")
    off.observe(Transcript("yes", True), 1.0)
    assert off.draft() is None
    with pytest.raises(ValueError):
        EndpointingDetector(speculate="always")  # type: ignore[arg-type]


@given(st.lists(st.text(alphabet="abc ", min_size=1, max_size=8), min_size=1, max_size=6))
def test_the_turn_is_every_final_joined_in_order(segments: list[str]) -> None:
    d = EndpointingDetector()
    d.observe(SpeechStarted(), 0.0)
    for i, text in enumerate(segments):
        d.observe(Transcript(text, True), 0.1 * (i + 1))
    d.observe(SpeechEnded(), 1.0)
    assert d.take() == " ".join(t.strip() for t in segments if t.strip())
